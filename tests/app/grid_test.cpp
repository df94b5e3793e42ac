// X/Y grid axes: how typed values expand (commas, quotes, ranges), what each value sets in a
// cell's request (prompt search and replace included), the labels and A1111's parameters text.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "grid.h"
#include "sds/error.h"

using namespace sds;
using sds::app::expand_grid_values;
using sds::app::make_grid_axis;

namespace {

QStringList values(const char* axis, const char* text) {
    return expand_grid_values(axis, QString::fromUtf8(text));
}

std::string error_of(const char* axis, const char* text) {
    try {
        make_grid_axis(axis, QString::fromUtf8(text));
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

app::GridSpec spec_of(const char* x, const char* y = nullptr) {
    app::GridSpec spec;
    spec.base.prompt = "a red circle on a blue background";
    spec.base.negative_prompt = "red noise";
    spec.base.seed = 7;
    spec.x = app::parse_grid_axis(x);
    if (y) {
        spec.y = app::parse_grid_axis(y);
    }
    return spec;
}

}  // namespace

TEST(GridValues, CommasSeparateAndQuotesKeepCommas) {
    EXPECT_EQ(values("steps", " 5, 10 ,20,"), (QStringList{"5", "10", "20"}));
    EXPECT_EQ(values("prompt", R"(red, "deep blue, dark" , "say ""hi""", "")"),
              (QStringList{"red", "deep blue, dark", "say \"hi\"", ""}));
    EXPECT_EQ(values("prompt", R"(" padded ",x)"), (QStringList{" padded ", "x"}));
    EXPECT_NE(error_of("prompt", R"(red, "open)").find("quote that is not closed"),
              std::string::npos);
    EXPECT_NE(error_of("prompt", R"("a"b, c)").find("text after a closing quote"),
              std::string::npos);
    EXPECT_NE(error_of("steps", " , ").find("axis 'steps' has no values"), std::string::npos);
}

TEST(GridValues, IntegerRanges) {
    EXPECT_EQ(values("steps", "10-40 (+10)"), (QStringList{"10", "20", "30", "40"}));
    EXPECT_EQ(values("steps", "1-3, 8"), (QStringList{"1", "2", "3", "8"}));
    EXPECT_EQ(values("steps", "10-50 [3]"), (QStringList{"10", "30", "50"}));
    EXPECT_EQ(values("steps", "10-12 [4]"), (QStringList{"10", "10", "11", "12"}));  // truncated
    EXPECT_EQ(values("seed", "5-3"), (QStringList{"5", "4", "3"}));
    EXPECT_EQ(values("seed", "9-1 (-4)"), (QStringList{"9", "5", "1"}));
    EXPECT_EQ(values("steps", "10-35 (+10)"), (QStringList{"10", "20", "30"}));  // stops at B
    EXPECT_EQ(values("seed", "4-4"), (QStringList{"4"}));
    EXPECT_NE(error_of("steps", "10-1 (+2)").find("never reaches its end"), std::string::npos);
    EXPECT_NE(error_of("steps", "1-5 (+0)").find("never reaches its end"), std::string::npos);
    EXPECT_NE(error_of("seed", "0-5000").find("gives 5001 values (at most 1000)"),
              std::string::npos);
    EXPECT_NE(error_of("steps", "1-9 [0]").find("asks for 0 values"), std::string::npos);
    // Not a range on an integer axis: a bad value, named.
    EXPECT_NE(error_of("steps", "1.5-3").find("axis steps: '1.5-3' is not a valid value"),
              std::string::npos);
}

TEST(GridValues, DecimalRanges) {
    EXPECT_EQ(values("guidance", "2-14 [4]"), (QStringList{"2", "6", "10", "14"}));
    EXPECT_EQ(values("strength", "0.2-1 (+0.2)"),
              (QStringList{"0.2", "0.4", "0.6", "0.8", "1"}));  // no 0.6000000000000001
    EXPECT_EQ(values("guidance", "1.5-3"), (QStringList{"1.5", "2.5"}));
    EXPECT_EQ(values("eta", ".5-0 [3]"), (QStringList{"0.5", "0.25", "0"}));
    EXPECT_EQ(values("guidance", "7.5"), (QStringList{"7.5"}));
    // Text axes take a dash as it is.
    EXPECT_EQ(values("prompt", "red-blue, 1-3"), (QStringList{"red-blue", "1-3"}));
}

TEST(GridAxes, EachValueSetsItsParameter) {
    const auto spec = spec_of("clip_skip=0-2", "eta=0, 0.5");
    EXPECT_EQ(spec.cells(), 6);
    EXPECT_EQ(spec.cell(2, 1).clip_skip, 2);
    EXPECT_EQ(spec.cell(2, 1).eta, 0.5);
    EXPECT_EQ(spec.cell(0, 0).clip_skip, 0);
    EXPECT_EQ(spec.cell(1, 0).seed, 7);  // the same seed in every cell
    const auto read = spec_of("prompt_syntax=plain, a1111, a1111-no-norm");
    EXPECT_EQ(read.cell(0, 0).prompt_syntax, PromptSyntax::Plain);
    EXPECT_EQ(read.cell(2, 0).prompt_syntax, PromptSyntax::A1111NoNorm);
    EXPECT_EQ(app::grid_label(read.x, 1), QString("Prompts: a1111"));
    EXPECT_NE(error_of("prompt_syntax", "a1111, A1111")
                  .find("'A1111' is not one of plain, a1111, a1111-no-norm"),
              std::string::npos);
    const auto s = spec_of("sampler=DPM++ 2M Karras, ddim", "steps=3-4");
    EXPECT_EQ(s.cell(0, 1).sampler, Sampler::DpmPP2MKarras);
    EXPECT_EQ(s.cell(1, 1).steps, 4);
    EXPECT_EQ(s.cell(1, 0).prompt, s.base.prompt);
    // Out of range values fail on the cell, before anything runs.
    EXPECT_THROW(spec_of("clip_skip=10-12").validate(), Error);
    EXPECT_THROW(spec_of("eta=0.5-1.5 (+0.5)").validate(), Error);
    EXPECT_NE(error_of("sampler", "euler, dpm_fast").find("unknown sampler 'dpm_fast'"),
              std::string::npos);
    EXPECT_NE(error_of("colour", "red")
                  .find("unknown axis 'colour' (steps, guidance, strength, "
                        "seed, sampler, schedule, prompt, clip_skip, prompt_syntax, eta, "
                        "lora_weight, control_weight, control_end, canny_low, canny_high, "
                        "binary_threshold, refiner_switch)"),
              std::string::npos);
}

TEST(GridAxes, ScheduleRespacesTheSamplerOfEitherAxis) {
    auto spec = spec_of("schedule=default, Karras, exponential, beta", "sampler=euler, dpmpp_2m");
    spec.validate();
    EXPECT_EQ(spec.cell(0, 0).sampler, Sampler::Euler);
    EXPECT_EQ(spec.cell(1, 0).sampler, Sampler::EulerKarras);
    EXPECT_EQ(spec.cell(2, 1).sampler, Sampler::DpmPP2MExponential);
    EXPECT_EQ(spec.cell(3, 1).sampler, Sampler::DpmPP2MBeta);
    EXPECT_EQ(app::grid_label(spec.x, 3), QString("Schedule: beta"));
    const auto swapped = spec_of("sampler=DPM2 a Karras, heun", "schedule=uniform, beta");
    EXPECT_EQ(swapped.cell(0, 0).sampler, Sampler::Dpm2Ancestral);
    EXPECT_EQ(swapped.cell(1, 1).sampler, Sampler::HeunBeta);
    auto no_twins = spec_of("schedule=default, karras");
    no_twins.base.sampler = Sampler::EulerAncestral;
    try {
        no_twins.validate();
        ADD_FAILURE() << "Euler a with Karras was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("Euler a has no karras schedule"), std::string::npos)
            << e.what();
    }
    EXPECT_NE(
        error_of("schedule", "karras, sgm_uniform").find("unknown schedule type 'sgm_uniform'"),
        std::string::npos);
}

TEST(GridAxes, LoraWeightSetsTheFirstLoras) {
    auto spec = spec_of("lora_weight=0-1 [3]");
    EXPECT_THROW(spec.validate(), Error);  // no LoRA chosen
    spec.base.loras = {{"a.safetensors", 1.0}, {"b.safetensors", 0.3}};
    spec.validate();
    EXPECT_EQ(spec.cell(1, 0).loras,
              (std::vector<LoraRef>{{"a.safetensors", 0.5}, {"b.safetensors", 0.3}}));
    EXPECT_EQ(app::grid_label(spec.x, 2), QString("LoRA: 1"));
}

TEST(GridAxes, ControlWeightAndEndSetTheFirstControlNets) {
    auto spec = spec_of("control_weight=0-1 [3]", "control_end=0.5, 1");
    EXPECT_THROW(spec.validate(), Error);  // no ControlNet chosen
    ControlRef a, b;
    a.model = "scribble";
    a.image = "a.png";
    b.model = "depth";
    b.image = "b.png";
    b.scale = 0.3;
    spec.base.controls = {a, b};
    spec.validate();
    const GenerationRequest cell = spec.cell(1, 0);
    EXPECT_EQ(cell.controls.at(0).scale, 0.5);
    EXPECT_EQ(cell.controls.at(0).end, 0.5);
    EXPECT_EQ(cell.controls.at(1), b);
    EXPECT_EQ(spec.cell(2, 1).controls.at(0).end, 1.0);
    EXPECT_EQ(app::grid_label(spec.x, 2), QString("ControlNet: 1"));
    EXPECT_THROW(spec_of("control_weight=0, 6").validate(), Error);  // no ControlNet, and 6 > 5
}

TEST(GridAxes, RefinerSwitchSetsWhereTheRefinerTakesOver) {
    auto spec = spec_of("refiner_switch=0.5-0.9 (+0.2)");
    EXPECT_THROW(spec.validate(), Error);  // no refiner chosen
    spec.base.refiner = "/models/sdxl-refiner";
    spec.validate();
    EXPECT_EQ(spec.x.values, QStringList({"0.5", "0.7", "0.9"}));
    EXPECT_EQ(spec.cell(1, 0).refiner_switch_at, 0.7);
    EXPECT_EQ(spec.cell(1, 0).refiner, spec.base.refiner);
    EXPECT_EQ(app::grid_label(spec.x, 2), QString("Switch at: 0.9"));
    auto whole = spec_of("refiner_switch=0.5, 1");
    whole.base.refiner = "/models/sdxl-refiner";
    EXPECT_THROW(whole.validate(), Error);  // 1 leaves the refiner nothing
}

TEST(GridAxes, CannyThresholdsSetTheFirstControlNetsWhenItIsCanny) {
    auto spec = spec_of("canny_low=50, 100", "canny_high=150-250 [3]");
    EXPECT_THROW(spec.validate(), Error);  // no ControlNet chosen
    ControlRef a;
    a.model = "canny";
    a.image = "photo.png";
    spec.base.controls = {a};
    EXPECT_THROW(spec.validate(), Error);  // its preprocessor is not canny
    spec.base.controls[0].preprocessor = "canny";
    spec.validate();
    const GenerationRequest cell = spec.cell(1, 2);
    EXPECT_EQ(cell.controls.at(0).canny_low, 100.0);
    EXPECT_EQ(cell.controls.at(0).canny_high, 250.0);
    EXPECT_EQ(app::grid_label(spec.y, 1), QString("Canny high: 200"));
    // A low threshold above the high one fails on its cell, before anything runs.
    auto above = spec_of("canny_low=100, 300");
    above.base.controls = spec.base.controls;  // canny, high 200
    EXPECT_THROW(above.validate(), Error);
}

TEST(GridAxes, BinaryThresholdSetsTheFirstControlNetsWhenItIsBinary) {
    auto spec = spec_of("binary_threshold=0, 64-192 (+64)");
    ASSERT_EQ(spec.x.size(), 4);
    EXPECT_THROW(spec.validate(), Error);  // no ControlNet chosen
    ControlRef a;
    a.model = "scribble";
    a.image = "photo.png";
    spec.base.controls = {a};
    EXPECT_THROW(spec.validate(), Error);  // its preprocessor is not binary
    spec.base.controls[0].preprocessor = "binary";
    spec.validate();
    EXPECT_EQ(spec.cell(0, 0).controls.at(0).binary_threshold, 0);
    EXPECT_EQ(spec.cell(3, 0).controls.at(0).binary_threshold, 192);
    EXPECT_EQ(app::grid_label(spec.x, 2), QString("Binary: 128"));
    auto past = spec_of("binary_threshold=100, 300");  // past 255: fails on its cell, before
    past.base.controls = spec.base.controls;           // anything runs
    EXPECT_THROW(past.validate(), Error);
    EXPECT_THROW(spec_of("binary_threshold=1.5"), Error);  // a level is a whole number
}

TEST(GridAxes, PromptSearchAndReplaceInBothPrompts) {
    const auto spec = spec_of(R"(prompt=red, green, "deep blue", "")");
    ASSERT_EQ(spec.x.size(), 4);
    // The first value is the search text: its own cell is the prompt unchanged.
    EXPECT_EQ(spec.cell(0, 0).prompt, spec.base.prompt);
    EXPECT_EQ(spec.cell(1, 0).prompt, "a green circle on a blue background");
    EXPECT_EQ(spec.cell(1, 0).negative_prompt, "green noise");
    EXPECT_EQ(spec.cell(2, 0).prompt, "a deep blue circle on a blue background");
    EXPECT_EQ(spec.cell(3, 0).prompt, "a  circle on a blue background");
    EXPECT_EQ(spec.cell(3, 0).negative_prompt, " noise");
    // Every occurrence, as A1111 does.
    auto twice = spec_of("prompt=blue, red");
    twice.base.prompt = "blue sky, blue sea";
    EXPECT_EQ(twice.cell(1, 0).prompt, "red sky, red sea");
    // Only in the negative prompt is enough.
    auto neg = spec_of("prompt=noise, blur");
    EXPECT_EQ(neg.cell(1, 0).negative_prompt, "red blur");
    EXPECT_EQ(neg.cell(1, 0).prompt, neg.base.prompt);
    // Not found: an error naming the text, before anything runs.
    try {
        spec_of("prompt=square, circle").validate();
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("'square' is in neither the prompt nor the negative"),
                  std::string::npos);
    }
    EXPECT_NE(error_of("prompt", R"("", red)").find("it cannot be empty"), std::string::npos);
    // Two prompt axes replace two texts; other axes only once.
    const auto both = spec_of("prompt=red, green", "prompt=circle, square");
    both.validate();
    EXPECT_EQ(both.cell(1, 1).prompt, "a green square on a blue background");
    EXPECT_THROW(spec_of("steps=1,2", "steps=3").validate(), Error);
}

TEST(GridAxes, LabelsAndParametersText) {
    const auto spec = spec_of(R"(prompt=red, "green, bright")", "clip_skip=0-1");
    EXPECT_EQ(app::grid_label(spec.x, 1), "green, bright");
    EXPECT_EQ(app::grid_label(spec.y, 1), "Clip skip: 1");
    EXPECT_EQ(app::grid_label(spec_of("guidance=7.5").x, 0), "CFG: 7.5");
    EXPECT_EQ(app::grid_label(spec_of(R"(prompt=red, "")").x, 1), "(empty)");
    const std::string text = spec.parameters_text("tiny").toStdString();
    // A1111's axis types; clip skip counted as A1111 counts it.
    EXPECT_NE(
        text.find(R"(Script: X/Y plot, X Type: Prompt S/R, X Values: "red, \"green, bright\"")"),
        std::string::npos)
        << text;
    EXPECT_NE(text.find(R"(Y Type: Clip skip, Y Values: "1, 2")"), std::string::npos) << text;
    const auto json = nlohmann::json::parse(spec.to_json().toStdString());
    EXPECT_EQ(json["x"]["values"][1], "green, bright");
    EXPECT_EQ(json["y"]["text"], "0-1");
    EXPECT_EQ(json["request"]["seed"], 7);
}
