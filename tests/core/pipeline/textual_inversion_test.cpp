// Textual inversion embeddings against diffusers' load_textual_inversion
// (tests/reference/make_textual_inversion_fixture.py): A1111's .pt and .safetensors, diffusers'
// learned_embeds (.safetensors, .bin), multi-vector words, SDXL's clip_l + clip_g; the prompt's
// conditioning and the images. Also: words found only where they stand alone, the folder
// lookup, and clear errors for files that do not fit.
#include <gtest/gtest.h>

#include <fstream>

#include <ATen/ops/allclose.h>
#include <ATen/ops/randn.h>
#include <nlohmann/json.hpp>

#include "image_parity.h"
#include "sds/clip_tokenizer.h"
#include "sds/error.h"
#include "sds/pipeline.h"
#include "sds/safetensors.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDir = sds::test::fixture_dir("textual_inversion");

struct Case {
    std::string name, model;
    std::vector<sds::EmbeddingRef> embeddings;
    std::string request_json;
};

std::vector<Case> cases() {
    std::vector<Case> out;
    for (const auto& c : sds::test::fixture_cases(kDir, "tiny-sd")) {
        Case k{c["name"], c["model"], {}, c["request"].dump()};
        for (const auto& e : c.value("embeddings", nlohmann::json::array())) {
            k.embeddings.push_back(
                {(kDir / e[0].get<std::string>()).string(), e[1].get<std::string>()});
        }
        out.push_back(k);
    }
    return out;
}

sds::Pipeline& pipeline(const std::string& model) {
    return sds::test::cached_pipeline(kDir / model);
}

const sds::SafeTensorsFile& expected() {
    return sds::test::fixture_expected(kDir);
}

at::Tensor conditioning(sds::Pipeline& p, const std::string& prompt) {
    if (p.model().is_xl()) {
        const auto [hidden, pooled] = p.encode_prompt_xl(prompt);
        return at::cat({hidden.flatten(), pooled.flatten()});
    }
    return p.encode_prompt(prompt).flatten();
}

class TextualInversionParity : public ::testing::TestWithParam<Case> {};

TEST_P(TextualInversionParity, SameConditioningAndImagesAsDiffusers) {
    const Case& c = GetParam();
    auto request = sds::GenerationRequest::from_json(c.request_json);
    auto& p = pipeline(c.model);
    request.embeddings = c.embeddings;
    const int diff =
        sds::test::expect_images(p.generate(request), expected().tensor(c.name), c.name);
    EXPECT_EQ(p.embeddings(), c.embeddings);
    const at::Tensor want = expected().tensor(c.name + ".text");
    const at::Tensor got = conditioning(p, request.prompt);
    ASSERT_EQ(got.numel(), want.numel());
    EXPECT_TRUE(at::allclose(got, want, 1e-4, 1e-5))
        << "max difference " << (got - want).abs().max().item<double>();
    std::printf("%s: max pixel difference %d/255\n", c.name.c_str(), diff);
}

INSTANTIATE_TEST_SUITE_P(Tiny, TextualInversionParity, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

std::vector<sds::EmbeddingRef> sd_embeddings() {
    return cases().front().embeddings;
}

// A word is its embedding only where it stands alone; elsewhere the prompt reads as without it.
TEST(TextualInversion, WordsCountOnlyWhereTheyStandAlone) {
    auto& p = pipeline("tiny-sd");
    p.set_embeddings({});
    const at::Tensor plain_inside = conditioning(p, "inkstyles and xinkstyle");
    const at::Tensor plain_word = conditioning(p, "a inkstyle");
    p.set_embeddings(sd_embeddings());
    EXPECT_TRUE(at::equal(conditioning(p, "inkstyles and xinkstyle"), plain_inside));
    EXPECT_FALSE(at::allclose(conditioning(p, "a inkstyle"), plain_word));
    // In any case, and next to punctuation: the word's ids (one per vector, past the
    // vocabulary) between the text's own.
    EXPECT_TRUE(at::equal(conditioning(p, "a InkStyle"), conditioning(p, "a inkstyle")));
    const auto& tok = p.tokenizer();
    const auto ink = tok.encode("inkstyle");
    ASSERT_EQ(ink.size(), 3u);  // three vectors
    EXPECT_GE(ink[0], 49408);
    const auto toy = tok.encode("<cat-toy>");
    ASSERT_EQ(toy.size(), 1u);
    auto joined = tok.encode("(");
    joined.insert(joined.end(), ink.begin(), ink.end());
    joined.push_back(toy[0]);
    const auto s = tok.encode("s");
    joined.insert(joined.end(), s.begin(), s.end());
    EXPECT_EQ(tok.encode("(inkstyle<cat-toy>s"), joined);
    EXPECT_EQ(tok.count_text("inkstyle"), "3/75");  // A1111's count shows the three
    p.set_embeddings({});
    EXPECT_EQ(tok.count_text("inkstyle"), "2/75");  // ink + style without it
    EXPECT_TRUE(at::equal(conditioning(p, "a inkstyle"), plain_word));
}

// A1111's embeddings folder: the files whose names the prompts use.
TEST(TextualInversion, FindsTheFolderFilesThePromptsName) {
    sds::GenerationRequest r;
    r.prompt = "a cat, InkStyle";
    r.negative_prompt = "badhands, inkstyles";
    r.find_embeddings(kDir.string());
    ASSERT_EQ(r.embeddings.size(), 2u);
    EXPECT_EQ(r.embeddings[0],
              (sds::EmbeddingRef{(kDir / "badhands.safetensors").string(), "badhands"}));
    EXPECT_EQ(r.embeddings[1], (sds::EmbeddingRef{(kDir / "inkstyle.pt").string(), "inkstyle"}));
    r.find_embeddings(kDir.string());  // not twice
    EXPECT_EQ(r.embeddings.size(), 2u);
    // They travel in the request's JSON.
    EXPECT_EQ(sds::GenerationRequest::from_json(r.to_json()).embeddings, r.embeddings);
    sds::GenerationRequest none;
    none.prompt = "a cat";
    none.find_embeddings(kDir.string());
    none.find_embeddings("/no/such/folder");
    EXPECT_TRUE(none.embeddings.empty());
}

std::string set_error(sds::Pipeline& p, const std::vector<sds::EmbeddingRef>& list) {
    try {
        p.set_embeddings(list);
    } catch (const sds::Error& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(TextualInversion, FilesThatDoNotFitAreRefusedByName) {
    auto& sd = pipeline("tiny-sd");
    auto& xl = pipeline("tiny-sdxl");
    const std::string xl_file = (kDir / "xlstyle.safetensors").string();
    const std::string sd_file = (kDir / "badhands.safetensors").string();
    EXPECT_NE(set_error(sd, {{xl_file, ""}}).find(xl_file + ": an SDXL embedding"),
              std::string::npos);
    EXPECT_TRUE(sd.embeddings().empty());
    EXPECT_NE(set_error(xl, {{sd_file, ""}}).find(sd_file + ": an SD 1.x/2.x embedding"),
              std::string::npos);
    const fs::path dir = sds::test::temp_dir("ti_errors");
    sds::save_safetensors(dir / "wide.safetensors", {{"emb_params", at::randn({2, 768})}});
    EXPECT_NE(set_error(sd, {{(dir / "wide.safetensors").string(), ""}})
                  .find("wide.safetensors: its vectors are 768 wide, made for another model"),
              std::string::npos);
    sds::save_safetensors(dir / "two.safetensors",
                          {{"a", at::randn({32})}, {"b", at::randn({32})}});
    EXPECT_NE(set_error(sd, {{(dir / "two.safetensors").string(), ""}})
                  .find("two.safetensors: not a textual inversion embedding"),
              std::string::npos);
    EXPECT_NE(set_error(sd, {{(dir / "none.pt").string(), ""}}).find("none.pt"), std::string::npos);
    // A failed set leaves none, and the pipeline works.
    sds::GenerationRequest r;
    r.prompt = "a badhands";
    r.steps = 2;
    r.width = r.height = 32;
    EXPECT_EQ(sd.generate(r).images.size(), 1u);
    // The word of a file: a diffusers file's key, else the file's name.
    sd.set_embeddings({});
    const at::Tensor toy_plain = conditioning(sd, "<cat-toy>");
    const at::Tensor ink_plain = conditioning(sd, "inkstyle");
    sd.set_embeddings(
        {{(kDir / "cat-toy.safetensors").string(), ""}, {(kDir / "inkstyle.pt").string(), ""}});
    EXPECT_FALSE(at::allclose(conditioning(sd, "<cat-toy>"), toy_plain));
    EXPECT_FALSE(at::allclose(conditioning(sd, "inkstyle"), ink_plain));
}

}  // namespace
