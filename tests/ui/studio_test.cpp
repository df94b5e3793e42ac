// The studio as a person uses it, offscreen: the canvas, generation with live steps, history
// and chaining, cancel, live regeneration, the grid, a responsive GUI thread, errors, and a
// history that survives a kill. With SDS_SCREENSHOTS=DIR it also saves the window at the
// moments docs/screenshots shows (made with SDS_STUDIO_TEST_MODEL=models/demo).
#include <QAction>
#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QDialog>
#include <QDir>
#include <QDirIterator>
#include <QDoubleSpinBox>
#include <QElapsedTimer>
#include <QFile>
#include <QFileInfo>
#include <QFocusEvent>
#include <QImageReader>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QMenu>
#include <QPainter>
#include <QProcess>
#include <QPushButton>
#include <QSet>
#include <QSignalSpy>
#include <QSlider>
#include <QSpinBox>
#include <QSplitter>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTest>
#include <QTimer>
#include <QToolButton>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <algorithm>

#include "grid_view.h"
#include "history_view.h"
#include "image_io.h"
#include "image_view.h"
#include "main_window.h"
#include "parameter_panel.h"
#include "plot_panel.h"
#include "prompt_edit.h"
#include "sds/error.h"
#include "sds/model_folder.h"
#include "sds/pipeline.h"
#include "sds/safetensors.h"
#include "sketch_canvas.h"
#include "step_strip.h"
#include "styles.h"
#include "test_paths.h"
#include "train_window.h"
#include "training.h"

using namespace sds;

namespace {

// The tiny random fixture model; SDS_STUDIO_TEST_MODEL=DIR runs the same checks on another
// model (the screenshots in docs/ use models/demo).
QString tiny_model() {
    return qEnvironmentVariable(
        "SDS_STUDIO_TEST_MODEL",
        QString::fromStdString((test::fixture_dir("tiny_pipeline") / "tiny-sd").string()));
}

// Waits until `done` holds, processing events; false after `ms`.
template <typename F>
bool wait_for(F done, int ms = 120000) {
    QElapsedTimer t;
    t.start();
    while (!done()) {
        if (t.elapsed() > ms) {
            return false;
        }
        QTest::qWait(5);
    }
    return true;
}

void drag(QWidget* w, QPoint from, QPoint to) {
    QTest::mousePress(w, Qt::LeftButton, {}, from);
    for (int k = 1; k <= 10; ++k) {
        QTest::mouseMove(w, from + (to - from) * k / 10);
    }
    QTest::mouseRelease(w, Qt::LeftButton, {}, to);
}

void screenshot(QWidget* w, const QString& name) {
    const QString dir = qEnvironmentVariable("SDS_SCREENSHOTS");
    if (!dir.isEmpty()) {
        QTest::qWait(50);
        w->grab().save(QDir(dir).filePath(name));
    }
}

// A training folder: pictures of a circle (one of them not square) with captions.
QString make_training_folder(const QString& dir) {
    QDir().mkpath(dir);
    const QList<std::pair<QColor, QString>> shots = {
        {Qt::red, "a red circle"}, {Qt::green, "a green circle"}, {Qt::yellow, "a yellow circle"}};
    int k = 0;
    for (const auto& [colour, caption] : shots) {
        QImage im(k == 0 ? QSize(48, 32) : QSize(40, 40), QImage::Format_RGB888);
        im.fill(QColor(30, 60, 200));
        QPainter p(&im);
        p.setBrush(colour);
        p.setPen(Qt::NoPen);
        p.drawEllipse(im.rect().adjusted(8, 8, -8, -8));
        p.end();
        const QString name = QString("shot%1").arg(k++);
        im.save(QDir(dir).filePath(name + ".png"));
        QFile f(QDir(dir).filePath(name + ".txt"));
        f.open(QIODevice::WriteOnly);
        f.write(caption.toUtf8() + "\n");
    }
    return dir;
}

// Every tensor of two safetensors files equal, by name.
bool same_weights(const QString& a, const QString& b) {
    const auto fa = SafeTensorsFile::open(a.toStdString());
    const auto fb = SafeTensorsFile::open(b.toStdString());
    if (fa.tensors().size() != fb.tensors().size()) {
        return false;
    }
    for (const auto& t : fa.tensors()) {
        if (!at::equal(fa.tensor(t.name), fb.tensor(t.name))) {
            return false;
        }
    }
    return true;
}

const char* kUnetFile = "unet/diffusion_pytorch_model.safetensors";

QJsonObject read_json(const std::filesystem::path& file) {
    QFile f(QString::fromStdString(file.string()));
    f.open(QIODevice::ReadOnly);
    return QJsonDocument::fromJson(f.readAll()).object();
}

// A ControlNet for the model in `model` as diffusers' ControlNetModel.from_unet makes one (the
// UNet's encoder half with its weights, a conditioning embedding down to the model's latents),
// written to `out`; its output convolutions are random where diffusers starts them at zero,
// which would make it do nothing.
void make_controlnet(const QString& model, const QString& out) {
    const ModelFolder m = ModelFolder::open(model.toStdString());
    QJsonObject c = read_json(m.component("unet").config);
    c["_class_name"] = "ControlNetModel";
    c.remove("up_block_types");
    const auto vae_blocks = read_json(m.component("vae").config)["block_out_channels"].toArray();
    QJsonArray cond;
    const int widths[] = {16, 32, 96, 256};
    for (int k = 0; k < vae_blocks.size(); ++k) {
        cond.append(widths[k]);
    }
    c["conditioning_embedding_out_channels"] = cond;
    QDir().mkpath(out);
    QFile config(out + "/config.json");
    config.open(QIODevice::WriteOnly);
    config.write(QJsonDocument(c).toJson());
    config.close();

    std::vector<std::pair<std::string, at::Tensor>> tensors;
    const auto unet = SafeTensorsFile::open(m.component("unet").weights.at(0));
    for (const auto& t : unet.tensors()) {
        for (const char* part :
             {"conv_in.", "time_embedding.", "add_embedding.", "down_blocks.", "mid_block."}) {
            if (t.name.rfind(part, 0) == 0) {
                tensors.emplace_back(t.name, unet.tensor(t.name).to(at::kFloat).clone());
            }
        }
    }
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
    const auto conv = [&](const std::string& name, int64_t out_c, int64_t in_c, int64_t k,
                          double scale) {
        tensors.emplace_back(name + ".weight", at::randn({out_c, in_c, k, k}, g) * scale);
        tensors.emplace_back(name + ".bias", at::randn({out_c}, g) * scale * 0.25);
    };
    std::vector<int64_t> boc;
    for (const auto& v : c["block_out_channels"].toArray()) {
        boc.push_back(v.toInt());
    }
    const std::string e = "controlnet_cond_embedding.";
    conv(e + "conv_in", widths[0], 3, 3, 0.3);
    for (int k = 0; k + 1 < vae_blocks.size(); ++k) {
        conv(e + "blocks." + std::to_string(2 * k), widths[k], widths[k], 3, 0.1);
        conv(e + "blocks." + std::to_string(2 * k + 1), widths[k + 1], widths[k], 3, 0.1);
    }
    conv(e + "conv_out", boc[0], widths[vae_blocks.size() - 1], 3, 0.05);
    const int layers = c["layers_per_block"].toInt(2);
    std::vector<int64_t> skips = {boc[0]};
    for (size_t i = 0; i < boc.size(); ++i) {
        for (int k = 0; k < layers + (i + 1 < boc.size() ? 1 : 0); ++k) {
            skips.push_back(boc[i]);
        }
    }
    for (size_t k = 0; k < skips.size(); ++k) {
        conv("controlnet_down_blocks." + std::to_string(k), skips[k], skips[k], 1, 0.2);
    }
    conv("controlnet_mid_block", boc.back(), boc.back(), 1, 0.2);
    save_safetensors((out + "/diffusion_pytorch_model.safetensors").toStdString(), tensors);
}

}  // namespace

class StudioTest : public QObject {
    Q_OBJECT
    QTemporaryDir data_;
    std::unique_ptr<ui::MainWindow> window_;

    ui::MainWindow& window() {
        if (!window_) {
            app::StudioSettings s;
            s.data_folder = data_.path();
            s.lora_folder = data_.filePath("loras");  // <lora:NAME:W> prompt tags look here
            s.embedding_folder = data_.filePath("embeddings");
            s.model = tiny_model();
            window_ = std::make_unique<ui::MainWindow>(s);
            window_->resize(1500, 900);
            window_->show();
            if (!wait_for([&] { return !window_->worker()->modelPath().isEmpty(); })) {
                qFatal("the tiny model did not load: %s", qPrintable(window_->errorText()));
            }
            QTest::qWait(50);  // the window hears modelLoaded (and applies its hints) first
        }
        return *window_;
    }

    void setSmall(ui::ParameterPanel* p, int steps) {
        GenerationRequest r;
        r.prompt = "a red circle on a blue background";
        r.steps = steps;
        r.width = r.height = 128;
        r.guidance_scale = 7.5;
        r.sampler = Sampler::EulerAncestral;
        r.seed = 42;
        r.prompt_syntax = PromptSyntax::A1111;  // the studio's default
        p->setRequest(r);
    }

  private Q_SLOTS:
    void initTestCase() {
        QStandardPaths::setTestModeEnabled(true);
        QVERIFY(data_.isValid());
    }
    void cleanupTestCase() { window_.reset(); }

    void strokeChangesCanvasAndUndoRestoresIt() {
        ui::SketchCanvas canvas;
        canvas.resize(400, 400);
        canvas.setImageSize(QSize(256, 256));
        canvas.show();
        const QImage blank = canvas.image();
        canvas.setColor(Qt::red);
        canvas.setBrushSize(20);
        drag(&canvas, QPoint(100, 100), QPoint(300, 200));
        const QImage stroked = canvas.image();
        QVERIFY(stroked != blank);
        const QPointF mid = canvas.toImage(QPointF(200, 150));
        QCOMPARE(QColor(stroked.pixel(mid.toPoint())), QColor(Qt::red));
        // A second stroke, then one undo removes only the second.
        drag(&canvas, QPoint(100, 300), QPoint(300, 300));
        QVERIFY(canvas.image() != stroked);
        canvas.undo();
        QCOMPARE(canvas.image(), stroked);
        canvas.undo();
        QCOMPARE(canvas.image(), blank);
        QVERIFY(!canvas.canUndo());
        canvas.redo();
        QCOMPARE(canvas.image(), stroked);
        // The eraser takes the paint off again; half opacity blends.
        canvas.setTool(ui::SketchCanvas::Tool::Eraser);
        canvas.setBrushSize(60);
        drag(&canvas, QPoint(100, 100), QPoint(300, 200));
        QCOMPARE(QColor(canvas.image().pixel(mid.toPoint())), QColor(Qt::white));
        canvas.setTool(ui::SketchCanvas::Tool::Brush);
        canvas.setOpacity(0.5);
        canvas.setColor(Qt::black);
        drag(&canvas, QPoint(120, 150), QPoint(280, 150));
        const int grey = qRed(canvas.image().pixel(mid.toPoint()));
        QVERIFY2(grey > 100 && grey < 160, qPrintable(QString::number(grey)));
        // Fill floods the white paper around the stroke.
        canvas.setOpacity(1.0);
        canvas.setTool(ui::SketchCanvas::Tool::Fill);
        canvas.setColor(Qt::blue);
        QTest::mouseClick(&canvas, Qt::LeftButton, {}, QPoint(60, 60));
        const QPointF corner = canvas.toImage(QPointF(60, 60));
        QCOMPARE(QColor(canvas.image().pixel(corner.toPoint())), QColor(Qt::blue));
        canvas.undo();
        QCOMPARE(QColor(canvas.image().pixel(corner.toPoint())), QColor(Qt::white));
    }

    void badModelFolderShowsAMessageAndKeepsTheStudioUsable() {
        auto& w = window();
        QVERIFY(!w.openModel(data_.filePath("no-such-model")));
        QVERIFY2(w.errorText().contains("no-such-model"), qPrintable(w.errorText()));
        QCOMPARE(w.worker()->modelPath(), tiny_model());  // the loaded model stays
        // A model folder whose weights are broken fails on the worker, also with a message.
        QTemporaryDir broken;
        QVERIFY(QProcess::execute("cp", {"-r", tiny_model(), broken.filePath("m")}) == 0);
        QFile f(broken.filePath("m/unet/diffusion_pytorch_model.safetensors"));
        QVERIFY(f.open(QIODevice::WriteOnly | QIODevice::Truncate));
        f.write("not a safetensors file");
        f.close();
        QSignalSpy failed(w.worker(), &app::InferenceWorker::modelFailed);
        QVERIFY(w.openModel(broken.filePath("m")));
        // The spy hears the worker at once; the window shows it once its event loop runs.
        QVERIFY(wait_for([&] { return failed.count() == 1 && !w.errorText().isEmpty(); }));
        qInfo("failed: %s | banner: %s", qPrintable(failed.at(0).at(1).toString()),
              qPrintable(w.errorText()));
        QVERIFY2(w.errorText().contains("diffusion_pytorch_model.safetensors"),
                 qPrintable(w.errorText()));
        QCOMPARE(w.worker()->modelPath(), tiny_model());
        QVERIFY(w.openModel(tiny_model()));
        QVERIFY(wait_for([&] { return !w.worker()->busy(); }));
    }

    // Reuse parameters / Open PNG parameters: what the panel shows is the request it was given,
    // every field (so a PNG regenerates exactly), whatever the panel showed before.
    void everyParameterSurvivesThePanel() {
        ui::ParameterPanel panel;
        GenerationRequest r;
        r.prompt = "a red fox";
        r.negative_prompt = "blurry";
        r.steps = 17;
        r.guidance_scale = 3.5;
        r.seed = 123456789012;
        r.width = 320;
        r.height = 192;
        r.sampler = Sampler::Ddim;
        r.strength = 0.45;
        r.init_image = "canvas";
        r.clip_skip = 2;
        r.eta = 0.3;
        // The second LoRA with a UNet weight of its own (A1111's <lora:b:-1.5:0.25>).
        r.loras = {{"/loras/ink.safetensors", 0.65}, {"/loras/b.safetensors", -1.5, 0.25}};
        panel.setRequest(r);
        QCOMPARE(panel.request().to_json(), r.to_json());
        QCOMPARE(panel.findChild<QTableWidget*>("loras")->item(1, 0)->text(),
                 QString("b (UNet 0.25)"));
        QVERIFY(panel.findChild<QWidget*>("eta")->isEnabled());
        QVERIFY(!panel.findChild<QWidget*>("keepUnmasked")->isEnabled());
        // Inpainting, with the unmasked pixels kept.
        r.mask_image = "canvas mask";
        r.keep_unmasked = true;
        r.mask_blur = 5;
        r.mask_padding = 16;  // only the masked area
        panel.setRequest(r);
        QCOMPARE(panel.request().to_json(), r.to_json());
        QCOMPARE(panel.mode(), ui::ParameterPanel::Mode::Inpaint);
        QVERIFY(panel.findChild<QWidget*>("keepUnmasked")->isEnabled());
        // The defaults back again, and eta is only for DDIM.
        GenerationRequest d;
        d.width = d.height = 512;
        d.sampler = Sampler::EulerAncestral;
        panel.setRequest(d);
        QCOMPARE(panel.request().to_json(), d.to_json());
        QVERIFY(!panel.findChild<QWidget*>("eta")->isEnabled());
        QVERIFY(!panel.findChild<QWidget*>("hiresStrength")->isEnabled());  // the fix is off
        // The hires fix, in text mode only.
        GenerationRequest h = d;
        h.hires_scale = 1.5;
        h.hires_strength = 0.45;
        h.hires_steps = 12;
        h.hires_upscaler = "Latent (bicubic)";
        panel.setRequest(h);
        QCOMPARE(panel.request().to_json(), h.to_json());
        QVERIFY(panel.findChild<QWidget*>("hiresStrength")->isEnabled());
        auto* upscaler = panel.findChild<QComboBox*>("hiresUpscaler");
        QVERIFY(upscaler->isEnabled());
        QCOMPARE(upscaler->count(), static_cast<int>(hires_upscalers().size()));
        upscaler->setCurrentText("Lanczos");
        QCOMPARE(panel.request().hires_upscaler, std::string("Lanczos"));
        panel.setMode(ui::ParameterPanel::Mode::Sketch);
        QCOMPARE(panel.request().hires_scale, 1.0);
        QVERIFY(!panel.findChild<QWidget*>("hiresScale")->isEnabled());
        // SDXL's refiner: the hires fix or the refiner, not both.
        GenerationRequest refined = d;
        refined.refiner = "/models/sdxl-refiner";
        refined.refiner_switch_at = 0.65;
        refined.aesthetic_score = 7.5;
        refined.negative_aesthetic_score = 1.5;
        panel.setRequest(refined);
        QCOMPARE(panel.request().to_json(), refined.to_json());
        // A ControlNet goes with it (guiding the model's steps).
        GenerationRequest both = refined;
        ControlRef scribble;
        scribble.model = "/models/scribble.pth";
        scribble.image = "canvas";
        both.controls.push_back(scribble);
        panel.setRequest(both);
        QCOMPARE(panel.request().to_json(), both.to_json());
        panel.setRequest(refined);
        QVERIFY(panel.request().controls.empty());
        QVERIFY(panel.findChild<QWidget*>("refinerSwitch")->isEnabled());
        QVERIFY(panel.findChild<QWidget*>("aestheticScore")->isEnabled());
        QVERIFY(!panel.findChild<QWidget*>("hiresScale")->isEnabled());
        // img2img (sketch mode) and inpainting take the refiner too; only the masked area not.
        panel.setMode(ui::ParameterPanel::Mode::Sketch);
        QCOMPARE(panel.request().refiner, refined.refiner);
        QVERIFY(panel.findChild<QWidget*>("refiner")->isEnabled());
        QVERIFY(panel.findChild<QWidget*>("refinerSwitch")->isEnabled());
        panel.setMode(ui::ParameterPanel::Mode::Inpaint);
        panel.findChild<QCheckBox*>("onlyMasked")->setChecked(false);
        QCOMPARE(panel.request().refiner, refined.refiner);
        QVERIFY(panel.findChild<QWidget*>("refiner")->isEnabled());
        panel.findChild<QCheckBox*>("onlyMasked")->setChecked(true);
        QCOMPARE(panel.request().refiner, std::string());
        QVERIFY(!panel.findChild<QWidget*>("refiner")->isEnabled());
        panel.findChild<QCheckBox*>("onlyMasked")->setChecked(false);
        panel.setRequest(h);
        QCOMPARE(panel.request().refiner, std::string());
        QVERIFY(!panel.findChild<QWidget*>("refiner")->isEnabled());  // the hires fix is on
        // The scores apply to a refiner: the Refiner row's, or the model when it is one.
        QVERIFY(!panel.findChild<QWidget*>("aestheticScore")->isEnabled());
        panel.setModelIsRefiner(true);
        QVERIFY(panel.findChild<QWidget*>("aestheticScore")->isEnabled());
        QVERIFY(panel.findChild<QWidget*>("negativeAestheticScore")->isEnabled());
        panel.setModelIsRefiner(false);
    }

    void theScheduleListPicksTheSamplersTwin() {
        ui::ParameterPanel panel;
        auto* sampler = panel.findChild<QComboBox*>("sampler");
        auto* schedule = panel.findChild<QComboBox*>("schedule");
        QVERIFY(sampler && schedule);
        // One entry per family, the twins in the schedule list.
        QCOMPARE(sampler->count(), 13);
        QCOMPARE(sampler->findText("DPM++ 2M Karras"), -1);
        GenerationRequest r;
        r.sampler = Sampler::Dpm2AncestralBeta;
        panel.setRequest(r);
        QCOMPARE(sampler->currentText(), QString("DPM2 a"));
        QCOMPARE(schedule->currentText(), QString("Beta"));
        QCOMPARE(panel.request().sampler, Sampler::Dpm2AncestralBeta);
        // The schedule stays when the family changes to one that has it ...
        sampler->setCurrentIndex(sampler->findText("DPM++ 2M SDE"));
        QCOMPARE(panel.request().sampler, Sampler::DpmPP2MSdeBeta);
        schedule->setCurrentIndex(schedule->findText("Exponential"));
        QCOMPARE(panel.request().sampler, Sampler::DpmPP2MSdeExponential);
        // ... and goes back to the default, the list disabled, for one that has none.
        sampler->setCurrentIndex(sampler->findText("Euler a"));
        QVERIFY(!schedule->isEnabled());
        QCOMPARE(schedule->currentText(), QString("Default"));
        QCOMPARE(panel.request().sampler, Sampler::EulerAncestral);
        sampler->setCurrentIndex(sampler->findText("Heun"));
        QVERIFY(schedule->isEnabled());
        schedule->setCurrentIndex(schedule->findText("Karras"));
        QCOMPARE(panel.request().sampler, Sampler::HeunKarras);
    }

    void thePromptSyntaxListSetsTheRequestAndTheCounter() {
        ui::ParameterPanel panel;
        auto* syntax = panel.findChild<QComboBox*>("promptSyntax");
        QVERIFY(syntax);
        // The studio reads prompts as A1111 does unless told otherwise.
        QCOMPARE(panel.request().prompt_syntax, PromptSyntax::A1111);
        GenerationRequest r;
        r.prompt_syntax = PromptSyntax::A1111NoNorm;
        panel.setRequest(r);
        QCOMPARE(syntax->currentText(), QString("A1111, no norm"));
        QCOMPARE(panel.request().prompt_syntax, PromptSyntax::A1111NoNorm);
        // The counter: A1111's counts the words without their brackets, in chunks of 75; plain
        // counts what is typed and says what is cut.
        auto tok = std::make_shared<const ClipTokenizer>(
            ClipTokenizer::load_folder((tiny_model() + "/tokenizer").toStdString()));
        panel.setTokenizer(tok);
        ui::PromptEdit* prompt = panel.prompt();
        prompt->setPlainText("a (red:1.3) cat");
        QCOMPARE(prompt->counterText(), QString("3/75"));
        QString words;
        for (int i = 0; i < 80; ++i) {
            words += " cat";
        }
        prompt->setPlainText(words);
        QCOMPARE(prompt->counterText(), QString("80/150"));
        // LoRA tags are taken out before the prompt is read: they count nothing.
        prompt->setPlainText("a (red:1.3) <lora:ink:0.5> cat <lora:film grain:1>");
        QCOMPARE(prompt->counterText(), QString("3/75"));
        // The prompt's AND parts are counted apart (the longest shows); the negative prompt
        // reads AND as a word.
        prompt->setPlainText("a red cat AND a dog:0.5");
        QCOMPARE(prompt->counterText(), QString("3/75"));
        panel.negativePrompt()->setPlainText("a red cat AND a dog:0.5");
        QCOMPARE(panel.negativePrompt()->counterText(),
                 QString("%1/75").arg(tok->encode("a red cat AND a dog:0.5").size()));
        prompt->setPlainText(words);
        syntax->setCurrentIndex(syntax->findText("Plain (diffusers)"));
        QCOMPARE(panel.request().prompt_syntax, PromptSyntax::Plain);
        QCOMPARE(prompt->counterText(), QString("80/75"));
        QVERIFY(prompt->toolTip().contains("the last 5 are not read"));
        prompt->setPlainText("a cat <lora:ink:1>");
        QCOMPARE(prompt->counterText(), QString("%1/75").arg(tok->encode("a cat ").size()));
        prompt->setPlainText("a (red:1.3) cat");
        const auto typed = static_cast<int>(tok->encode("a (red:1.3) cat").size());
        QVERIFY(typed > 3);
        QCOMPARE(prompt->counterText(), QString("%1/75").arg(typed));
        QVERIFY(prompt->toolTip().isEmpty());
    }

    // The menu's entry with this text, or nullptr.
    static QAction* menuAction(QMenu* menu, const QString& text) {
        for (QAction* a : menu->actions()) {
            if (a->text() == text) {
                return a;
            }
        }
        return nullptr;
    }

    // With SDS_SCREENSHOTS set: the panel with a tool button's menu drawn open under it (a
    // popup is a window of its own, which grabbing the panel leaves out), saved as `name`.
    static void screenshotWithMenu(ui::ParameterPanel& panel, QToolButton* button,
                                   const QString& name) {
        if (qEnvironmentVariable("SDS_SCREENSHOTS").isEmpty()) {
            return;
        }
        QMenu* menu = button->menu();
        panel.resize(420, 640);
        panel.show();
        menu->popup(button->mapToGlobal(QPoint(0, 0)));
        QTest::qWait(50);
        QPixmap shot = panel.grab();
        QPainter p(&shot);
        const QPoint at = button->mapTo(&panel, QPoint(0, 0));
        const QPixmap open = menu->grab();
        p.drawPixmap(std::min(at.x(), shot.width() - open.width()), at.y() + button->height(),
                     open);
        p.end();
        menu->hide();
        shot.save(QDir(qEnvironmentVariable("SDS_SCREENSHOTS")).filePath(name));
    }

    void theNetworksMenuPutsLorasAndEmbeddingsIntoThePrompts() {
        QTemporaryDir dir;
        const QString loras = dir.filePath("loras"), embeddings = dir.filePath("embeddings");
        QVERIFY(QDir().mkpath(loras + "/styles") && QDir().mkpath(embeddings));
        const at::Tensor t = at::zeros({2, 2});
        save_safetensors((loras + "/styles/ink.safetensors").toStdString(), {{"w", t}},
                         {{"ss_tag_frequency", R"({"10_ink": {"ink": 10, "sketch": 3}})"}});
        save_safetensors((loras + "/film grain.safetensors").toStdString(), {{"w", t}});
        save_safetensors((embeddings + "/EasyNegative.safetensors").toStdString(),
                         {{"emb_params", t}});
        ui::ParameterPanel panel;
        QMenu* menu = panel.networksButton()->menu();
        const auto action = [menu](const QString& text) { return menuAction(menu, text); };
        // No folders yet: the menu says where to set them.
        Q_EMIT menu->aboutToShow();
        QVERIFY(action("No LoRA folder: choose one in Settings"));
        QVERIFY(action("No embedding folder: choose one in Settings"));

        panel.setNetworkFolders(loras, embeddings);
        panel.prompt()->setPlainText("a cat");
        panel.negativePrompt()->setPlainText("blurry");
        Q_EMIT menu->aboutToShow();
        QAction* ink = action("styles/ink");
        QVERIFY(ink && ink->isCheckable() && !ink->isChecked());
        QVERIFY(ink->toolTip().contains("Trained on: ink, sketch"));
        ink->trigger();
        QCOMPARE(panel.prompt()->toPlainText(), QString("a cat <lora:ink:1>"));
        // A focus on the negative prompt: the embedding goes there.
        QFocusEvent focus(QEvent::FocusIn);
        QApplication::sendEvent(panel.negativePrompt(), &focus);
        Q_EMIT menu->aboutToShow();
        QVERIFY(action("styles/ink")->isChecked());
        QVERIFY(action("Embeddings (into the negative prompt)"));
        action("EasyNegative")->trigger();
        QCOMPARE(panel.negativePrompt()->toPlainText(), QString("blurry EasyNegative"));
        Q_EMIT menu->aboutToShow();
        QVERIFY(action("EasyNegative")->isChecked());
        screenshotWithMenu(panel, panel.networksButton(), "studio-networks.png");

        // What the studio generates with: the tag and the word name those files.
        GenerationRequest r = panel.request();
        r.take_lora_tags(loras.toStdString());
        r.find_embeddings(embeddings.toStdString());
        QCOMPARE(r.loras.size(), size_t(1));
        QCOMPARE(QFileInfo(QString::fromStdString(r.loras[0].file)).canonicalFilePath(),
                 QFileInfo(loras + "/styles/ink.safetensors").canonicalFilePath());
        QCOMPARE(r.embeddings.size(), size_t(1));
        QCOMPARE(r.embeddings[0].token, std::string("EasyNegative"));

        // A second click takes each out; one Ctrl+Z puts it back.
        action("styles/ink")->trigger();
        QCOMPARE(panel.prompt()->toPlainText(), QString("a cat"));
        panel.prompt()->undo();
        QCOMPARE(panel.prompt()->toPlainText(), QString("a cat <lora:ink:1>"));
        Q_EMIT menu->aboutToShow();
        action("EasyNegative")->trigger();
        QCOMPARE(panel.negativePrompt()->toPlainText(), QString("blurry"));
        // A name with a space works as A1111's tag has it.
        Q_EMIT menu->aboutToShow();
        action("film grain")->trigger();
        QCOMPARE(panel.prompt()->toPlainText(), QString("a cat <lora:ink:1> <lora:film grain:1>"));
    }

    void theStylesMenuMergesAndSavesA1111sStyles() {
        QTemporaryDir dir;
        const QString file = dir.filePath("styles.csv");
        QFile f(file);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(
            "name,prompt,negative_prompt\r\nOil & ink,\"oil painting of {prompt}, framed\","
            "blurry\r\n");
        f.close();
        ui::ParameterPanel panel;
        panel.setStylesFile(file);
        panel.prompt()->setPlainText("a cat");
        panel.negativePrompt()->setPlainText("grey");
        QMenu* menu = panel.stylesButton()->menu();
        const auto action = [menu](const QString& text) { return menuAction(menu, text); };
        Q_EMIT menu->aboutToShow();
        screenshotWithMenu(panel, panel.stylesButton(), "studio-styles.png");
        QAction* oil = action("Oil && ink");
        QVERIFY(oil);
        QVERIFY(oil->toolTip().contains("oil painting of {prompt}"));
        oil->trigger();
        QCOMPARE(panel.prompt()->toPlainText(), QString("oil painting of a cat, framed"));
        QCOMPARE(panel.negativePrompt()->toPlainText(), QString("grey, blurry"));
        QCOMPARE(panel.request().prompt, std::string("oil painting of a cat, framed"));
        panel.prompt()->undo();  // the merge is one step back
        QCOMPARE(panel.prompt()->toPlainText(), QString("a cat"));
        // The prompts saved as a style, beside the first; then the first deleted.
        panel.saveStyle("Mine");
        Q_EMIT menu->aboutToShow();
        QVERIFY(action("Mine") && action("Oil && ink"));
        panel.deleteStyle("Oil & ink");
        QCOMPARE(app::load_styles(file.toStdString()),
                 (std::vector<app::PromptStyle>{{"Mine", "a cat", "grey, blurry"}}));
        Q_EMIT menu->aboutToShow();
        QVERIFY(!action("Oil && ink"));
        // A file that cannot be read says so in the menu, and nothing is written over it.
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write("title,body\nx,y\n");
        f.close();
        Q_EMIT menu->aboutToShow();
        QCOMPARE(menu->actions().size(), 1);
        QVERIFY(!menu->actions()[0]->isEnabled());
        QVERIFY(menu->actions()[0]->text().contains("not a styles file"));
        QVERIFY_THROWS_EXCEPTION(Error, panel.applyStyle("Mine"));
    }

    void ctrlUpAndDownWeighTheWordAtTheCursor() {
        ui::PromptEdit edit(QString{});
        edit.setSyntax(PromptSyntax::A1111);
        edit.setPlainText("a red circle, blue");
        QTextCursor c = edit.textCursor();
        c.setPosition(3);  // in "red"
        edit.setTextCursor(c);
        QTest::keyClick(&edit, Qt::Key_Up, Qt::ControlModifier);
        QCOMPARE(edit.toPlainText(), QString("a (red:1.1) circle, blue"));
        QCOMPARE(edit.textCursor().selectedText(), QString("red"));
        QTest::keyClick(&edit, Qt::Key_Up, Qt::ControlModifier);
        QCOMPARE(edit.toPlainText(), QString("a (red:1.2) circle, blue"));
        QTest::keyClick(&edit, Qt::Key_Down, Qt::ControlModifier);
        QTest::keyClick(&edit, Qt::Key_Down, Qt::ControlModifier);
        QCOMPARE(edit.toPlainText(), QString("a red circle, blue"));  // back at 1: no brackets
        // A selection of several words; the cursor inside a weighted group finds it.
        c.setPosition(2);
        c.setPosition(12, QTextCursor::KeepAnchor);
        edit.setTextCursor(c);
        QTest::keyClick(&edit, Qt::Key_Down, Qt::ControlModifier);
        QCOMPARE(edit.toPlainText(), QString("a (red circle:0.9), blue"));
        c = edit.textCursor();
        c.setPosition(5);
        edit.setTextCursor(c);
        QTest::keyClick(&edit, Qt::Key_Down, Qt::ControlModifier);
        QCOMPARE(edit.toPlainText(), QString("a (red circle:0.8), blue"));
        // Written by hand, with spaces, the group is read as A1111 reads it.
        edit.setPlainText("(blue: 1.25 ) sky");
        c = edit.textCursor();
        c.setPosition(2);
        edit.setTextCursor(c);
        QTest::keyClick(&edit, Qt::Key_Up, Qt::ControlModifier);
        QCOMPARE(edit.toPlainText(), QString("(blue:1.35) sky"));
        // The plain syntax reads brackets as text: the keys leave the prompt alone.
        edit.setSyntax(PromptSyntax::Plain);
        QTest::keyClick(&edit, Qt::Key_Up, Qt::ControlModifier);
        QCOMPARE(edit.toPlainText(), QString("(blue:1.35) sky"));
    }

    void aModelsSuggestedSettingsApplyOnceWhenItOpens() {
        auto& w = window();
        QTemporaryDir dir;
        const QString hinted = dir.filePath("hinted");
        QVERIFY(QProcess::execute("cp", {"-r", tiny_model(), hinted}) == 0);
        QFile f(hinted + "/sdstudio.json");
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(R"({"guidance_scale": 4.5, "steps": 9, "sampler": "ddim"})");
        f.close();
        auto open = [&](const QString& model) {
            QVERIFY(w.openModel(model));
            QVERIFY(
                wait_for([&] { return w.worker()->modelPath() == model && !w.worker()->busy(); }));
            QTest::qWait(20);  // the window hears modelLoaded through its event loop
        };
        open(hinted);
        GenerationRequest r = w.panel()->request();
        QCOMPARE(r.guidance_scale, 4.5);
        QCOMPARE(r.steps, 9);
        QCOMPARE(r.sampler, Sampler::Ddim);
        // The person's own choice then stands: reopening the same model keeps it, and a model
        // without suggestions changes nothing.
        w.panel()->guidance()->setValue(6.0);
        open(hinted);
        QCOMPARE(w.panel()->request().guidance_scale, 6.0);
        const QString plain = dir.filePath("plain");
        QVERIFY(QProcess::execute("cp", {"-r", tiny_model(), plain}) == 0);
        QFile::remove(plain + "/sdstudio.json");
        open(plain);
        QCOMPARE(w.panel()->request().guidance_scale, 6.0);
        QCOMPARE(w.panel()->request().steps, 9);
        open(tiny_model());
    }

    // A latent consistency model (LCM scheduler, a UNet that takes the guidance as an input)
    // starts with the LCM sampler, 4 steps and 8.5 guidance; its negative prompt box is off
    // with the text kept, and back on for a model that reads it.
    void aLatentConsistencyModelOpensWithItsSettingsAndNoNegativePrompt() {
        auto& w = window();
        QTemporaryDir dir;
        const QString lcm = dir.filePath("lcm");
        QVERIFY(QProcess::execute("cp", {"-r", tiny_model(), lcm}) == 0);
        QFile::remove(lcm + "/sdstudio.json");
        const auto rewrite = [](const QString& file, const auto& edit) {
            QFile f(file);
            QVERIFY(f.open(QIODevice::ReadOnly));
            QJsonObject o = QJsonDocument::fromJson(f.readAll()).object();
            f.close();
            edit(o);
            QVERIFY(f.open(QIODevice::WriteOnly | QIODevice::Truncate));
            f.write(QJsonDocument(o).toJson());
        };
        rewrite(lcm + "/model_index.json", [](QJsonObject& o) {
            o["scheduler"] = QJsonArray{"diffusers", "LCMScheduler"};
        });
        rewrite(lcm + "/scheduler/scheduler_config.json",
                [](QJsonObject& o) { o["_class_name"] = "LCMScheduler"; });
        int64_t width = 0;
        rewrite(lcm + "/unet/config.json", [&](QJsonObject& o) {
            o["time_cond_proj_dim"] = 8;
            width = o["block_out_channels"].toArray().at(0).toInt();
        });
        const std::string weights = (lcm + "/" + kUnetFile).toStdString();
        std::vector<std::pair<std::string, at::Tensor>> tensors;
        {
            const auto unet = SafeTensorsFile::open(weights);
            for (const auto& t : unet.tensors()) {
                tensors.emplace_back(t.name, unet.tensor(t.name).clone());
            }
            tensors.emplace_back("time_embedding.cond_proj.weight",
                                 at::randn({width, 8}).to(tensors.front().second.scalar_type()));
        }
        save_safetensors(weights, tensors);

        w.panel()->negativePrompt()->setPlainText("blurry");
        const auto open = [&](const QString& model) {
            QVERIFY(w.openModel(model));
            QVERIFY(
                wait_for([&] { return w.worker()->modelPath() == model && !w.worker()->busy(); }));
            QTest::qWait(20);
        };
        open(lcm);
        GenerationRequest r = w.panel()->request();
        QCOMPARE(r.sampler, Sampler::Lcm);
        QCOMPARE(r.steps, 4);
        QCOMPARE(r.guidance_scale, 8.5);
        QVERIFY(!w.panel()->negativePrompt()->isEnabled());
        QCOMPARE(w.panel()->negativePrompt()->toPlainText(), QString("blurry"));
        setSmall(w.panel(), 4);
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        QVERIFY2(w.errorText().isEmpty(), qPrintable(w.errorText()));
        open(tiny_model());
        QVERIFY(w.panel()->negativePrompt()->isEnabled());
        w.panel()->negativePrompt()->clear();
    }

    void aSingleFileCheckpointOpensWithTheConfigsSetForIt() {
        auto& w = window();
        const auto dir = test::fixture_dir("single_file");
        const QString file = QString::fromStdString((dir / "model.safetensors").string());
        // With the default configs (SD 1.5's for an SD 1.x file) this tiny checkpoint does not
        // fit: the banner says why and where the configs came from, and the loaded model stays.
        QSignalSpy failed(w.worker(), &app::InferenceWorker::modelFailed);
        QVERIFY(w.openModel(file));
        QVERIFY(wait_for([&] { return failed.count() == 1 && !w.errorText().isEmpty(); }));
        QVERIFY2(w.errorText().contains("model.safetensors") &&
                     w.errorText().contains("configs came from"),
                 qPrintable(w.errorText()));
        QCOMPARE(w.worker()->modelPath(), tiny_model());
        QVERIFY(w.errorText().contains("sd1-config"));
        // An SD 2.x file gets SD 2.1's configs (which this tiny one does not fit either).
        const QString sd2 = QString::fromStdString(
            (test::fixture_dir("single_file_sd2") / "model.safetensors").string());
        QVERIFY(w.openModel(sd2));
        // (The spy counts in the worker's thread; the banner follows through the event loop.)
        QVERIFY(wait_for([&] { return failed.count() == 2; }));
        QVERIFY2(wait_for([&] { return w.errorText().contains("sd2-config"); }, 5000),
                 qPrintable(w.errorText()));
        QCOMPARE(w.worker()->modelPath(), tiny_model());
        QVERIFY(w.openModel(tiny_model()));
        QVERIFY(wait_for([&] { return !w.worker()->busy(); }));
        // A studio whose settings name the checkpoint's configs opens it and generates.
        QTemporaryDir data;
        app::StudioSettings s;
        s.data_folder = data.path();
        s.model = file;
        s.single_file_config = QString::fromStdString((dir / "config").string());
        ui::MainWindow other(s);
        QVERIFY2(wait_for([&] { return other.worker()->modelPath() == file; }),
                 qPrintable(other.errorText()));
        QVERIFY(other.errorText().isEmpty());
        GenerationRequest r;
        r.prompt = "a red circle";
        r.steps = 3;
        r.width = r.height = 32;
        other.panel()->setRequest(r);
        other.panel()->setImg2img(false);
        QSignalSpy done(&other, &ui::MainWindow::generationDone);
        QVERIFY(other.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        const auto e = other.history()->get(other.lastSavedId());
        QVERIFY(e.has_value());
        QCOMPARE(e->request.steps, 3);
        QCOMPARE(QImage(e->file).size(), QSize(e->request.width, e->request.height));
    }

    void sketchOverlayAndSwapCompareTheSketchWithItsResult() {
        auto& w = window();
        QImage blue(64, 64, QImage::Format_RGB32);
        blue.fill(QColor(20, 40, 220));
        w.result()->setImage(blue);
        auto* overlay = w.findChild<QCheckBox*>("overlaySketch");
        auto* opacity = w.findChild<QSlider*>("overlayOpacity");
        QVERIFY(overlay && opacity);
        QVERIFY(!opacity->isEnabled());
        const QPoint centre = w.result()->rect().center();
        auto shown = [&] { return QColor(w.result()->grab().toImage().pixel(centre)); };
        const QColor alone = shown();
        QCOMPARE(alone, QColor(20, 40, 220));
        overlay->setChecked(true);  // the (blank, white) sketch over the blue result
        QVERIFY(opacity->isEnabled());
        QCOMPARE(w.result()->overlay(), w.canvas()->image());
        const QColor half = shown();
        QVERIFY2(half.red() > 100 && half.blue() > 200, qPrintable(half.name()));
        opacity->setValue(90);
        QVERIFY(shown().red() > half.red());
        // A stroke on the canvas shows over the result at once.
        drag(w.canvas(), w.canvas()->rect().center() - QPoint(30, 0),
             w.canvas()->rect().center() + QPoint(30, 0));
        QCOMPARE(w.result()->overlay(), w.canvas()->image());
        overlay->setChecked(false);
        QVERIFY(w.result()->overlay().isNull());
        QCOMPARE(shown(), alone);
        // Swap: the result moves to the left of the sketch, and back.
        auto* splitter = w.findChild<QSplitter*>("studioSplitter");
        auto* swap = w.findChild<QToolButton*>("swapSides");
        QVERIFY(splitter && swap);
        QVERIFY(splitter->widget(0)->isAncestorOf(w.canvas()));
        swap->click();
        QVERIFY(splitter->widget(0)->isAncestorOf(w.result()));
        QVERIFY(w.result()->mapTo(&w, QPoint()).x() < w.canvas()->mapTo(&w, QPoint()).x());
        swap->click();
        QVERIFY(splitter->widget(0)->isAncestorOf(w.canvas()));
        w.canvas()->clear();
    }

    void generationDeliversOnePreviewPerStepAndAHistoryEntry() {
        auto& w = window();
        setSmall(w.panel(), 6);
        w.panel()->setImg2img(false);
        QSignalSpy steps(w.worker(), &app::InferenceWorker::stepDone);
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        const int before = w.history()->count();
        const quint64 id = w.generate();
        QVERIFY(id > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        QCOMPARE(steps.count(), 6);
        for (int i = 0; i < steps.count(); ++i) {
            const auto s = steps.at(i).at(0).value<app::StepInfo>();
            QCOMPARE(s.index, i);
            QVERIFY(!s.preview.isNull());  // latent size: 128 px / the VAE's downscale
            QCOMPARE(s.preview.size(), steps.at(0).at(0).value<app::StepInfo>().preview.size());
            QVERIFY(s.preview.width() < 128);
        }
        QCOMPARE(w.steps()->count(), 6);
        QCOMPARE(w.history()->count(), before + 1);
        const auto e = w.history()->get(w.lastSavedId());
        QVERIFY(e.has_value());
        QCOMPARE(e->request.steps, 6);
        QCOMPARE(e->request.prompt, std::string("a red circle on a blue background"));
        QCOMPARE(QImage(e->file).size(), QSize(128, 128));
        QCOMPARE(w.result()->image(),
                 QImage(e->file).convertToFormat(w.result()->image().format()));
        // The PNG carries the parameters, and "Open PNG" reads them back.
        QVERIFY(QImageReader(e->file).text("parameters").contains("Steps: 6"));
        screenshot(&w, "studio-txt2img.png");
        QVERIFY(w.openParametersFrom(e->file));
        QCOMPARE(w.panel()->request().seed, e->request.seed);
        // Scrubbing shows earlier steps.
        w.steps()->setCurrent(0);
        QCOMPARE(w.result()->image(), w.steps()->preview(0));
    }

    void chainingRecordsTheParent() {
        auto& w = window();
        const qint64 parent = w.lastSavedId();
        QVERIFY(parent > 0);
        w.useAsInput(parent);
        QCOMPARE(w.canvasParent(), parent);
        QVERIFY(w.panel()->img2img());
        // Draw over it, then generate from the sketch.
        w.canvas()->setColor(Qt::yellow);
        w.canvas()->setBrushSize(30);
        const QRectF r = w.canvas()->imageRect();
        drag(w.canvas(), r.center().toPoint() - QPoint(40, 0),
             r.center().toPoint() + QPoint(40, 0));
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        const auto child = w.history()->get(w.lastSavedId());
        QVERIFY(child.has_value());
        QCOMPARE(child->parent_id, parent);
        QVERIFY(child->request.is_img2img());
        QCOMPARE(QImageReader(child->file).text("sdstudio-parent"), QString::number(parent));
        const auto chain = w.history()->lineage(child->id);
        QCOMPARE(chain.size(), 2);
        QCOMPARE(chain.first().id, parent);
        w.historyView()->select(child->id);
        QCOMPARE(w.historyView()->lineageCount(), 2);
        screenshot(&w, "studio-img2img-from-sketch.png");
        auto* overlay = w.findChild<QCheckBox*>("overlaySketch");
        w.findChild<QSlider*>("overlayOpacity")->setValue(50);
        overlay->setChecked(true);
        screenshot(&w, "studio-sketch-overlay.png");
        overlay->setChecked(false);

        // The sketch is saved with the image, named in its parameters, and makes it again.
        const QString init = QString::fromStdString(child->request.init_image);
        QVERIFY2(QFileInfo(init).absolutePath().startsWith(w.history()->imagesFolder()),
                 qPrintable(init));
        const QImage sketch = w.canvas()->image().convertToFormat(QImage::Format_RGB888);
        QCOMPARE(QImage(init).convertToFormat(QImage::Format_RGB888), sketch);
        {
            Pipeline p = Pipeline::load(w.worker()->modelPath().toStdString(), {});
            const Image from_file = app::load_image(init);
            QCOMPARE(app::to_qimage(p.generate(child->request, &from_file).images.front()),
                     QImage(child->file).convertToFormat(QImage::Format_RGB888));
        }
        // A second generation from the same sketch shares the file.
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 2; }));
        const auto second = w.history()->get(w.lastSavedId());
        QVERIFY(second.has_value() && second->id != child->id);
        QCOMPARE(second->request.init_image, child->request.init_image);
        // Reuse parameters puts the sketch back on the canvas, with its parent.
        w.canvas()->clear();
        w.reuseParameters(child->id);
        QCOMPARE(w.canvas()->image().convertToFormat(QImage::Format_RGB888), sketch);
        QCOMPARE(w.canvasParent(), parent);
        // It goes with the last entry that names it.
        w.history()->remove(second->id);
        QVERIFY(QFileInfo::exists(init));
        w.history()->remove(child->id);
        QVERIFY(!QFileInfo::exists(init));
        w.historyView()->refresh();
    }

    void cancelStopsWithinOneStep() {
        auto& w = window();
        setSmall(w.panel(), 40);
        w.panel()->setImg2img(false);
        QSignalSpy cancelled(w.worker(), &app::InferenceWorker::jobCancelled);
        QSignalSpy finished(w.worker(), &app::InferenceWorker::jobFinished);
        int steps = 0, after_cancel = -1;
        auto c =
            connect(w.worker(), &app::InferenceWorker::stepDone, this, [&](const app::StepInfo&) {
                ++steps;
                if (steps == 3) {
                    w.cancel();
                    after_cancel = 0;
                } else if (after_cancel >= 0) {
                    ++after_cancel;
                }
            });
        QSignalSpy ended(&w, &ui::MainWindow::generationDone);
        const quint64 id = w.generate();
        QVERIFY(wait_for([&] { return ended.count() == 1; }));
        disconnect(c);
        QCOMPARE(cancelled.at(0).at(0).value<quint64>(), id);
        QCOMPARE(finished.count(), 0);
        qInfo("steps after cancel: %d (a step in flight may finish)", after_cancel);
        QVERIFY(after_cancel <= 1);
        // The pipeline is still usable.
        setSmall(w.panel(), 2);
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        QVERIFY2(w.errorText().isEmpty(), qPrintable(w.errorText()));
        QCOMPARE(finished.count(), 1);
    }

    void liveRegenerationNewestWins() {
        auto& w = window();
        setSmall(w.panel(), 30);
        QSignalSpy finished(w.worker(), &app::InferenceWorker::jobFinished);
        QSignalSpy cancelled(w.worker(), &app::InferenceWorker::jobCancelled);
        // Three slider moves in quick succession, as live regeneration sends them.
        QList<quint64> ids;
        for (double g : {3.0, 5.0, 9.0}) {
            app::Job job;
            job.policy = app::Job::Policy::Live;
            job.request = w.panel()->request();
            job.request.guidance_scale = g;
            ids << w.worker()->submit(job);
        }
        QVERIFY(wait_for([&] { return finished.count() >= 1 && !w.worker()->busy(); }));
        QCOMPARE(finished.count(), 1);
        const auto r = finished.at(0).at(0).value<app::JobResult>();
        QCOMPARE(r.job.id, ids.last());
        QCOMPARE(r.request.guidance_scale, 9.0);
        // Through the panel: moving the guidance slider with Live on regenerates.
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        w.findChild<QCheckBox*>("live")->setChecked(true);
        QVERIFY(wait_for([&] { return done.count() >= 1 && !w.worker()->busy(); }, 60000));
        const int runs = done.count();
        Q_EMIT w.panel()->guidance()->sliderMoved(4.0);
        QVERIFY(wait_for([&] { return done.count() > runs && !w.worker()->busy(); }, 60000));
        w.findChild<QCheckBox*>("live")->setChecked(false);
    }

    void guiThreadNeverStallsDuringAGeneration() {
        auto& w = window();
        setSmall(w.panel(), 30);
        w.panel()->setImg2img(false);
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        QElapsedTimer clock;
        qint64 last = 0, worst = 0;
        QTimer probe;
        probe.setInterval(5);
        connect(&probe, &QTimer::timeout, this, [&] {
            const qint64 now = clock.elapsed();
            worst = std::max(worst, now - last);
            last = now;
        });
        clock.start();
        probe.start();
        w.generate();
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        probe.stop();
        qInfo("longest GUI-thread gap during a 30-step generation: %lld ms", worst);
        QVERIFY2(worst < 50, qPrintable(QString("%1 ms").arg(worst)));
    }

    void gridFillsEveryCell() {
        auto& w = window();
        setSmall(w.panel(), 8);
        w.panel()->setImg2img(false);
        w.tabs()->setCurrentIndex(1);
        ui::GridView* g = w.grid();
        QSignalSpy finished(g, &ui::GridView::finished);
        g->start("steps", "2, 4, 8", "guidance", "1, 7.5");
        QCOMPARE(g->spec().cells(), 6);
        QVERIFY(wait_for([&] { return finished.count() == 1; }));
        QCOMPARE(g->filled(), 6);
        // Same seed everywhere; guidance 1 vs 7.5 differ; the plots have their points.
        QCOMPARE(g->spec().cell(0, 0).seed, g->spec().cell(2, 1).seed);
        QCOMPARE(g->stepSeconds().size(), 8);
        const auto conv = g->convergence();
        QCOMPARE(conv.size(), 2);
        for (const auto& line : conv) {
            QCOMPARE(line.size(), 3);
            QCOMPARE(line[2], 0.0);  // the highest-step cell against itself
            QVERIFY(line[0] > 0);
        }
        QCOMPARE(g->timePlot()->pointCount(0), 8);
        QCOMPARE(g->convergencePlot()->seriesCount(), 2);
        QCOMPARE(g->convergencePlot()->shownText(), QString());
        const QString out = data_.filePath("grid.png");
        g->exportTo(out);
        QImageReader reader(out);
        QVERIFY(reader.text("sdstudio-grid").contains("\"guidance\""));
        QVERIFY(reader.text("parameters").contains("X/Y plot"));
        const QImage sheet = reader.read();
        QVERIFY(sheet.width() >= 3 * 128 && sheet.height() >= 2 * 128);
        screenshot(&w, "studio-grid.png");
        // A bad axis value is refused before anything runs.
        bool refused = false;
        try {
            g->start("steps", "2, x", "", "");
        } catch (const sds::Error& e) {
            refused = QString(e.what()).contains("'x'");
        }
        QVERIFY(refused);
        w.tabs()->setCurrentIndex(0);
    }

    // Prompt search and replace on both axes (colours across, shapes down), as A1111's
    // "Prompt S/R": every cell is the prompt with its two words put in.
    void gridSearchesAndReplacesThePrompt() {
        auto& w = window();
        setSmall(w.panel(), 15);
        GenerationRequest r = w.panel()->request();
        r.guidance_scale = 3;  // the demo model's suggestions (its sdstudio.json)
        r.sampler = Sampler::DpmPP2M;
        w.panel()->setRequest(r);
        w.panel()->setImg2img(false);
        w.tabs()->setCurrentIndex(1);
        ui::GridView* g = w.grid();
        // Picking an axis puts example values in its field and says how values are typed.
        auto* yAxis = g->findChild<QComboBox*>("yAxis");
        auto* yValues = g->findChild<QLineEdit*>("yValues");
        yAxis->setCurrentIndex(yAxis->findData("strength"));
        Q_EMIT yAxis->activated(yAxis->currentIndex());
        QCOMPARE(yValues->text(), QString("0.3-0.9 (+0.2)"));
        QVERIFY(yValues->toolTip().contains("A-B (+step)"));
        yAxis->setCurrentIndex(yAxis->findData("prompt"));
        Q_EMIT yAxis->activated(yAxis->currentIndex());
        QCOMPARE(yValues->text(), QString());
        QVERIFY(yValues->toolTip().contains("search and replace"));

        QSignalSpy finished(g, &ui::GridView::finished);
        g->start("prompt", "red, green, yellow", "prompt", "circle, square, triangle");
        QCOMPARE(g->spec().cells(), 9);
        QCOMPARE(g->spec().cell(2, 1).prompt, std::string("a yellow square on a blue background"));
        QVERIFY(wait_for([&] { return finished.count() == 1; }));
        QCOMPARE(g->filled(), 9);
        QCOMPARE(g->findChild<QLineEdit*>("xValues")->text(), QString("red, green, yellow"));
        // Nine different prompts, nine different images.
        const QImage sheet = g->sheet();
        QSet<QByteArray> distinct;
        for (int j = 0; j < 3; ++j) {
            for (int i = 0; i < 3; ++i) {
                const QImage cell =
                    sheet.copy(app::grid_geometry(g->spec(), QSize(128, 128)).cellRect(i, j));
                distinct.insert(QByteArray(reinterpret_cast<const char*>(cell.constBits()),
                                           cell.sizeInBytes()));
            }
        }
        QCOMPARE(distinct.size(), 9);
        // No steps axis: the convergence plot says how to get one.
        QCOMPARE(g->convergencePlot()->seriesCount(), 0);
        QVERIFY(g->convergencePlot()->shownText().contains("Put steps on an axis"));
        screenshot(&w, "studio-grid-prompt.png");
        // A text in neither prompt is refused before anything runs.
        bool refused = false;
        try {
            g->start("prompt", "purple, red", "", "");
        } catch (const sds::Error& e) {
            refused = QString(e.what()).contains("'purple' is in neither");
        }
        QVERIFY(refused);
        w.tabs()->setCurrentIndex(0);
    }

    void historySurvivesAKillDuringSaves() {
        QTemporaryDir dir;
        QProcess helper;
        helper.start(qEnvironmentVariable("SDS_KILL_HELPER"), {dir.path()});
        QVERIFY(helper.waitForStarted());
        QList<qint64> reported;
        QString pending;
        QVERIFY(wait_for(
            [&] {
                pending += QString::fromUtf8(helper.readAllStandardOutput());
                while (pending.contains('\n')) {
                    const QString line = pending.left(pending.indexOf('\n'));
                    pending.remove(0, line.size() + 1);
                    reported << line.section(' ', 1).toLongLong();
                }
                return reported.size() >= 40;
            },
            60000));
        helper.kill();  // SIGKILL, mid-save
        helper.waitForFinished();
        pending += QString::fromUtf8(helper.readAllStandardOutput());
        for (const QString& line : pending.split('\n', Qt::SkipEmptyParts)) {
            reported << line.section(' ', 1).toLongLong();
        }
        app::HistoryStore store(dir.path());  // reconciles
        for (qint64 id : reported) {
            const auto e = store.get(id);
            QVERIFY2(e.has_value(), qPrintable(QString("entry %1 was lost").arg(id)));
            QVERIFY2(!QImage(e->file).isNull(), qPrintable(e->file));
            QCOMPARE(e->request.seed, id - 1);
        }
        QVERIFY(store.count() >= reported.size());
        // Every row has its file, every file a row.
        for (const auto& e : store.list({}, 100000)) {
            QVERIFY(QFileInfo::exists(e.file));
        }
        QCOMPARE(store.reconcile(), std::make_pair(0, 0));
        qInfo("killed after %lld reported saves; %d entries after reopening",
              static_cast<long long>(reported.size()), store.count());
    }

    void historySearchReuseAndDelete() {
        auto& w = window();
        app::HistoryStore& h = *w.history();
        GenerationRequest r;
        r.prompt = "a green triangle, 100% sure_thing";
        r.steps = 7;
        QImage image(64, 64, QImage::Format_RGB888);
        image.fill(Qt::green);
        const auto e = h.add(image, r, -1, "test");
        QCOMPARE(h.list("100% sure").size(), 1);
        QCOMPARE(h.list("GREEN TRI").size(), 1);
        QCOMPARE(h.list("no such prompt").size(), 0);
        w.historyView()->refresh();
        QVERIFY(w.historyView()->shownCount() >= 1);
        w.reuseParameters(e.id);
        QCOMPARE(w.panel()->request().steps, 7);
        QCOMPARE(w.panel()->request().prompt, r.prompt);
        h.remove(e.id);
        QVERIFY(!h.get(e.id).has_value());
        QVERIFY(!QFileInfo::exists(e.file));
    }

    // A LoRA made here for the loaded model (a random rank-2 change to every cross-attention
    // output projection) changes the image, travels with it (history, PNG, Reuse) and, taken
    // out, gives the model's own image back.
    void aLoraChangesTheImageAndTravelsWithIt() {
        auto& w = window();
        QDir(data_.path()).mkpath("loras/styles");
        const QString lora = data_.filePath("loras/styles/test-lora.safetensors");
        {
            const auto unet =
                ModelFolder::open(w.worker()->modelPath().toStdString()).component("unet");
            const auto file = SafeTensorsFile::open(unet.weights.at(0));
            std::vector<std::pair<std::string, at::Tensor>> tensors;
            for (const auto& t : file.tensors()) {
                const std::string suffix = "attn2.to_out.0.weight";
                if (t.name.size() > suffix.size() &&
                    t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
                    std::string key = "lora_unet_" + t.name.substr(0, t.name.size() - 7);
                    std::replace(key.begin(), key.end(), '.', '_');
                    tensors.emplace_back(key + ".lora_down.weight",
                                         at::randn({2, t.shape[1]}) * 0.3);
                    tensors.emplace_back(key + ".lora_up.weight", at::randn({t.shape[0], 2}) * 0.3);
                }
            }
            QVERIFY(!tensors.empty());
            save_safetensors(lora.toStdString(), tensors);
        }
        auto generate = [&] {
            QSignalSpy done(&w, &ui::MainWindow::generationDone);
            w.generate();
            return wait_for([&] { return done.count() == 1; });
        };
        setSmall(w.panel(), 4);
        w.panel()->setImg2img(false);
        QVERIFY(generate());
        const QImage plain = w.result()->image();
        w.panel()->addLora({lora.toStdString(), 0.8});
        QVERIFY(generate());
        QVERIFY(w.result()->image() != plain);
        const auto e = w.history()->get(w.lastSavedId());
        QVERIFY(e.has_value());
        QCOMPARE(e->request.loras.size(), size_t(1));
        QCOMPARE(e->request.loras[0].file, lora.toStdString());
        QCOMPARE(e->request.loras[0].weight, 0.8);
        const QString params = QImageReader(e->file).text("parameters");
        QVERIFY2(params.contains("Lora: \"test-lora: 0.8\""), qPrintable(params));
        screenshot(&w, "studio-lora.png");
        setSmall(w.panel(), 4);  // no LoRA: the model's own image again
        QVERIFY(w.panel()->request().loras.empty());
        QVERIFY(generate());
        QCOMPARE(w.result()->image(), plain);
        QVERIFY(w.openParametersFrom(e->file));  // Reuse brings the LoRA back
        QCOMPARE(w.panel()->request().loras, e->request.loras);
        // A1111's prompt tag finds the file in the LoRA folder (below it here) and makes the
        // image the LoRA list made; an unknown one is a message, not a generation.
        const QImage listed = QImage(e->file).convertToFormat(plain.format());
        setSmall(w.panel(), 4);
        GenerationRequest tagged = w.panel()->request();
        tagged.prompt += " <lora:test-lora:0.8>";
        w.panel()->setRequest(tagged);
        QVERIFY(generate());
        QCOMPARE(w.result()->image(), listed);
        const auto t = w.history()->get(w.lastSavedId());
        QCOMPARE(t->request.loras, e->request.loras);
        QVERIFY(t->request.prompt.find("<lora:") == std::string::npos);
        tagged.prompt += " <lora:no-such-lora>";
        w.panel()->setRequest(tagged);
        QCOMPARE(w.generate(), quint64(0));
        QVERIFY2(w.errorText().contains("<lora:no-such-lora>: no no-such-lora.safetensors"),
                 qPrintable(w.errorText()));
        setSmall(w.panel(), 4);
    }

    // A ControlNet named in the panel reads the sketch canvas (inverted: dark lines on white are
    // what a person draws) in text mode; the history keeps it with the canvas it read, and
    // Reuse parameters puts that back; weight 0 is the image without it; in Inpaint mode it
    // reads the picture being repainted.
    void aControlNetFollowsTheSketchCanvas() {
        auto& w = window();
        const QString net = data_.filePath("controlnet-test");
        make_controlnet(w.worker()->modelPath(), net);
        auto generate = [&] {
            QSignalSpy done(&w, &ui::MainWindow::generationDone);
            if (w.generate() == 0) {
                qWarning("%s", qPrintable(w.errorText()));
                return false;
            }
            return wait_for([&] { return done.count() == 1; });
        };
        // A unit's Preview runs its preprocessor off the GUI thread: nothing is shown when the
        // click returns, the status bar says it runs, and the window opens when it is done.
        auto preview = [&](const QString& button) -> QDialog* {
            qDeleteAll(w.findChildren<QDialog*>("controlPreviewDialog"));
            QTest::mouseClick(w.panel()->findChild<QToolButton*>(button), Qt::LeftButton);
            if (w.findChild<QDialog*>("controlPreviewDialog") != nullptr ||
                !w.statusBar()->currentMessage().contains("preview: running")) {
                qWarning("the preview was not made off the GUI thread (status: %s)",
                         qPrintable(w.statusBar()->currentMessage()));
                return nullptr;
            }
            if (!wait_for([&] { return w.findChild<QDialog*>("controlPreviewDialog"); })) {
                return nullptr;
            }
            return w.findChild<QDialog*>("controlPreviewDialog");
        };
        setSmall(w.panel(), 4);
        w.panel()->setImg2img(false);
        QImage sketch(128, 128, QImage::Format_RGB32);
        sketch.fill(Qt::white);
        {
            QPainter p(&sketch);
            p.setPen(QPen(Qt::black, 6));
            p.drawEllipse(QRect(30, 34, 68, 60));
            p.drawLine(20, 110, 108, 18);
        }
        w.canvas()->setPicture(sketch);
        QVERIFY(generate());
        const QImage plain = w.result()->image();
        auto* field = w.panel()->findChild<QLineEdit*>("controlnet");
        QVERIFY(field != nullptr);
        QVERIFY(!w.panel()->findChild<QWidget*>("controlScale")->isEnabled());
        field->setText(net);
        QVERIFY(w.panel()->findChild<QWidget*>("controlScale")->isEnabled());
        QVERIFY(w.panel()->findChild<QWidget*>("refiner")->isEnabled());  // both may be set
        QVERIFY(generate());
        const QImage controlled = w.result()->image();
        QVERIFY(controlled != plain);
        const auto e = w.history()->get(w.lastSavedId());
        QVERIFY(e.has_value());
        QCOMPARE(e->request.controls.size(), size_t(1));
        const ControlRef& c = e->request.controls[0];
        QCOMPARE(c.model, net.toStdString());
        QCOMPARE(c.preprocessor, std::string("invert"));
        QCOMPARE(QImage(QString::fromStdString(c.image)).convertToFormat(QImage::Format_RGB32),
                 sketch);  // the canvas it read, kept beside the images
        const QString params = QImageReader(e->file).text("parameters");
        QVERIFY2(params.contains("ControlNet 0: \"Module: invert, Model: controlnet-test"),
                 qPrintable(params));
        screenshot(&w, "studio-controlnet.png");
        // The Compare tab's ControlNet weight axis: weight 0 is the plain image, 1 this one.
        w.tabs()->setCurrentIndex(1);
        QSignalSpy finished(w.grid(), &ui::GridView::finished);
        w.grid()->start("control_weight", "0, 1", "", "");
        QVERIFY(wait_for([&] { return finished.count() == 1; }));
        const auto same = [](const QImage& a, const QImage& b) {
            return a.convertToFormat(QImage::Format_RGB32) ==
                   b.convertToFormat(QImage::Format_RGB32);
        };
        QVERIFY(same(w.grid()->cellImage(0, 0), plain));
        QVERIFY(same(w.grid()->cellImage(1, 0), controlled));
        w.tabs()->setCurrentIndex(0);
        // Another sketch, another image.
        QImage other = sketch;
        {
            QPainter p(&other);
            p.setPen(QPen(Qt::black, 6));
            p.drawRect(QRect(20, 20, 50, 50));
        }
        w.canvas()->setPicture(other);
        QVERIFY(generate());
        QVERIFY(w.result()->image() != controlled);
        // Weight 0: the model's own image.
        w.panel()->findChild<QDoubleSpinBox*>("controlScale")->setValue(0);
        QVERIFY(generate());
        QCOMPARE(w.result()->image(), plain);
        // Reuse parameters: the ControlNet and the canvas it read.
        w.reuseParameters(e->id);
        ControlRef reused = c;
        reused.image = "canvas";
        QCOMPARE(w.panel()->request().controls, std::vector<ControlRef>{reused});
        QCOMPARE(w.canvas()->image().convertToFormat(QImage::Format_RGB32), sketch);
        QVERIFY(generate());
        QCOMPARE(w.result()->image(), controlled);
        // Canny: the canvas's edges with the thresholds set (enabled for canny alone); Preview
        // shows what the ControlNet gets, which is the engine's preprocess_control of the canvas
        // at the request's size; the PNG says so as A1111 does.
        auto* preprocessor = w.panel()->findChild<QComboBox*>("controlPreprocessor");
        auto* low = w.panel()->findChild<QSpinBox*>("cannyLow");
        auto* high = w.panel()->findChild<QSpinBox*>("cannyHigh");
        QVERIFY(preprocessor && low && high);
        QCOMPARE(preprocessor->currentData().toString(), QString("invert"));
        QVERIFY(!low->isEnabled());
        preprocessor->setCurrentIndex(preprocessor->findData("canny"));
        QVERIFY(low->isEnabled() && high->isEnabled());
        low->setValue(40);
        high->setValue(90);
        const ControlRef edged = w.panel()->request().controls.at(0);
        QCOMPARE(edged.preprocessor, std::string("canny"));
        QCOMPARE(edged.canny_low, 40.0);
        QCOMPARE(edged.canny_high, 90.0);
        QDialog* shownPreview = preview("controlPreview");
        QVERIFY(shownPreview != nullptr);
        QVERIFY(w.statusBar()->currentMessage().isEmpty());
        const QImage shown = shownPreview->findChild<QLabel*>("controlPreviewImage")
                                 ->pixmap()
                                 .toImage()
                                 .convertToFormat(QImage::Format_RGB888);
        const GenerationRequest now = w.panel()->request();
        const sds::Image want = sds::preprocess_control(
            sds::resize(app::from_qimage(w.canvas()->image()), now.width, now.height), edged);
        QCOMPARE(shown, app::to_qimage(want).convertToFormat(QImage::Format_RGB888));
        QVERIFY(std::count(want.rgb.begin(), want.rgb.end(), 255) > 30);  // it found edges
        screenshot(shownPreview, "studio-controlnet-canny-preview.png");
        shownPreview->close();
        QVERIFY(generate());
        QVERIFY(w.result()->image() != controlled);
        const QString edgedParams =
            QImageReader(w.history()->get(w.lastSavedId())->file).text("parameters");
        QVERIFY2(edgedParams.contains("Module: canny, Model: controlnet-test, Weight: 1, "
                                      "Threshold A: 40, Threshold B: 90"),
                 qPrintable(edgedParams));
        // Binary: its threshold (0 shown as Otsu) enabled for binary alone, and what Preview
        // shows at it.
        auto* level = w.panel()->findChild<QSpinBox*>("binaryThreshold");
        QVERIFY(level != nullptr && !level->isEnabled());
        QCOMPARE(level->text(), QString("Otsu"));
        preprocessor->setCurrentIndex(preprocessor->findData("binary"));
        QVERIFY(level->isEnabled() && !low->isEnabled());
        level->setValue(100);
        const ControlRef dark = w.panel()->request().controls.at(0);
        QCOMPARE(dark.preprocessor, std::string("binary"));
        QCOMPARE(dark.binary_threshold, 100);
        QDialog* binaryPreview = preview("controlPreview");
        QVERIFY(binaryPreview != nullptr);
        QCOMPARE(binaryPreview->findChild<QLabel*>("controlPreviewImage")
                     ->pixmap()
                     .toImage()
                     .convertToFormat(QImage::Format_RGB888),
                 app::to_qimage(
                     sds::preprocess_control(
                         sds::resize(app::from_qimage(w.canvas()->image()), now.width, now.height),
                         dark))
                     .convertToFormat(QImage::Format_RGB888));
        binaryPreview->close();
        // Depth: the Depth Anything folder's row shows for depth alone and the request takes the
        // folder; one that is not there is an error Preview shows (what the depth maps are is
        // cli_test's, against transformers); Reuse parameters brings the folder back.
        auto* depth = w.panel()->findChild<QLineEdit*>("depthModel");
        QVERIFY(depth != nullptr && !depth->isVisibleTo(w.panel()));
        preprocessor->setCurrentIndex(preprocessor->findData("depth"));
        QVERIFY(depth->isVisibleTo(w.panel()) && !level->isEnabled());
        const QString nowhere = data_.filePath("Depth-Anything-V2-Small-hf");  // not there
        depth->setText(nowhere);
        const ControlRef deep = w.panel()->request().controls.at(0);
        QCOMPARE(deep.preprocessor, std::string("depth"));
        QCOMPARE(deep.depth_model, nowhere.toStdString());
        screenshot(&w, "studio-controlnet-depth.png");
        QVERIFY(!w.errorText().contains(nowhere));
        QTest::mouseClick(w.panel()->findChild<QToolButton*>("controlPreview"), Qt::LeftButton);
        QVERIFY(!w.errorText().contains(nowhere));  // not yet: the thread finds out
        QVERIFY(w.statusBar()->currentMessage().contains("preview: running depth"));
        QVERIFY2(wait_for([&] { return w.errorText().contains(nowhere); }, 30000),
                 qPrintable(w.errorText()));
        QVERIFY2(w.errorText().contains(nowhere + ": no such Depth Anything folder"),
                 qPrintable(w.errorText()));
        QVERIFY(w.findChild<QDialog*>("controlPreviewDialog") == nullptr);
        GenerationRequest withDepth = w.panel()->request();
        preprocessor->setCurrentIndex(preprocessor->findData("none"));
        depth->clear();
        w.panel()->setRequest(withDepth);
        QCOMPARE(w.panel()->request().controls.at(0), deep);
        QVERIFY(depth->isVisibleTo(w.panel()));
        // lineart_standard: no settings of its own; Preview shows the engine's lines.
        preprocessor->setCurrentIndex(preprocessor->findData("lineart_standard"));
        QVERIFY(!depth->isVisibleTo(w.panel()) && !level->isEnabled() && !low->isEnabled());
        QCOMPARE(w.panel()->request().controls.at(0).preprocessor, std::string("lineart_standard"));
        QDialog* linesPreview = preview("controlPreview");
        QVERIFY(linesPreview != nullptr);
        QCOMPARE(linesPreview->findChild<QLabel*>("controlPreviewImage")
                     ->pixmap()
                     .toImage()
                     .convertToFormat(QImage::Format_RGB888),
                 app::to_qimage(sds::lineart_standard(sds::resize(
                                    app::from_qimage(w.canvas()->image()), now.width, now.height)))
                     .convertToFormat(QImage::Format_RGB888));
        linesPreview->close();
        preprocessor->setCurrentIndex(preprocessor->findData("invert"));
        QVERIFY(!depth->isVisibleTo(w.panel()));
        QVERIFY(generate());
        QCOMPARE(w.result()->image(), controlled);
        // A second ControlNet with its own picture (a map, taken as it is): both guide, the
        // history keeps its picture and Reuse parameters brings the unit back; removing it
        // gives the one-ControlNet image again.
        const QString map = data_.filePath("control-map.png");
        {
            QImage m(96, 96, QImage::Format_RGB32);
            m.fill(Qt::black);
            QPainter(&m).fillRect(QRect(10, 40, 70, 20), Qt::white);
            QVERIFY(m.save(map));
        }
        auto* add = w.panel()->findChild<QToolButton*>("addControlnet");
        QVERIFY(add != nullptr && w.panel()->findChild<QLineEdit*>("controlnet2") == nullptr);
        QTest::mouseClick(add, Qt::LeftButton);
        QCOMPARE(w.panel()->controlUnitCount(), 2);
        auto* net2 = w.panel()->findChild<QLineEdit*>("controlnet2");
        auto* image2 = w.panel()->findChild<QLineEdit*>("controlImage2");
        QVERIFY(net2 && image2);
        QVERIFY(!w.panel()->findChild<QWidget*>("controlScale2")->isEnabled());
        net2->setText(net);
        image2->setText(map);
        auto* preprocessor2 = w.panel()->findChild<QComboBox*>("controlPreprocessor2");
        preprocessor2->setCurrentIndex(preprocessor2->findData("none"));
        w.panel()->findChild<QDoubleSpinBox*>("controlScale2")->setValue(0.8);
        std::vector<ControlRef> two = w.panel()->request().controls;
        QCOMPARE(two.size(), size_t(2));
        QCOMPARE(two[0].image, std::string("canvas"));
        QCOMPARE(two[1].image, map.toStdString());
        QCOMPARE(two[1].preprocessor, std::string("none"));
        QCOMPARE(two[1].scale, 0.8);
        QDialog* preview2 = preview("controlPreview2");
        QVERIFY(preview2 != nullptr);
        const GenerationRequest sized = w.panel()->request();
        QCOMPARE(
            preview2->findChild<QLabel*>("controlPreviewImage")
                ->pixmap()
                .toImage()
                .convertToFormat(QImage::Format_RGB888),
            app::to_qimage(sds::resize(app::from_qimage(QImage(map)), sized.width, sized.height))
                .convertToFormat(QImage::Format_RGB888));
        preview2->close();
        delete preview2;
        screenshot(&w, "studio-controlnet-two-units.png");
        QVERIFY(generate());
        QVERIFY2(w.errorText().isEmpty(), qPrintable(w.errorText()));
        const QImage both = w.result()->image();
        QVERIFY(both != controlled);
        const auto twice = w.history()->get(w.lastSavedId());
        QVERIFY(twice.has_value());
        QCOMPARE(twice->request.controls.size(), size_t(2));
        QCOMPARE(QImage(QString::fromStdString(twice->request.controls[1].image))
                     .convertToFormat(QImage::Format_RGB32),
                 QImage(map).convertToFormat(QImage::Format_RGB32));  // a copy beside the images
        QVERIFY2(QImageReader(twice->file)
                     .text("parameters")
                     .contains("ControlNet 1: \"Module: "
                               "none, Model: "
                               "controlnet-test, Weight: "
                               "0.8"),
                 qPrintable(QImageReader(twice->file).text("parameters")));
        QTest::mouseClick(w.panel()->findChild<QToolButton*>("controlRemove2"), Qt::LeftButton);
        QTest::qWait(1);  // the unit goes with the event loop
        QCOMPARE(w.panel()->controlUnitCount(), 1);
        QVERIFY(w.panel()->findChild<QLineEdit*>("controlnet2") == nullptr);
        QVERIFY(generate());
        QCOMPARE(w.result()->image(), controlled);
        w.reuseParameters(twice->id);
        QCOMPARE(w.panel()->controlUnitCount(), 2);
        QCOMPARE(w.panel()->request().controls[1].image, twice->request.controls[1].image);
        QVERIFY(generate());
        QCOMPARE(w.result()->image(), both);
        // Three units at most; removing the second moves the third up, as it was.
        QTest::mouseClick(add, Qt::LeftButton);
        QCOMPARE(w.panel()->controlUnitCount(), 3);
        QVERIFY(!add->isEnabled());
        w.panel()->findChild<QLineEdit*>("controlImage3")->setText(map + ".missing.png");
        w.panel()->findChild<QLineEdit*>("controlnet3")->setText(net);
        {  // a picture that is not there: the error names it, and nothing is made
            QSignalSpy done(&w, &ui::MainWindow::generationDone);
            const qint64 last = w.lastSavedId();
            QVERIFY(w.generate() > 0);
            QVERIFY(wait_for([&] { return done.count() == 1; }));
            QVERIFY2(w.errorText().contains("control-map.png.missing.png"),
                     qPrintable(w.errorText()));
            QCOMPARE(w.lastSavedId(), last);
        }
        QTest::mouseClick(w.panel()->findChild<QToolButton*>("controlRemove2"), Qt::LeftButton);
        QTest::qWait(1);
        QCOMPARE(w.panel()->controlUnitCount(), 2);
        QVERIFY(add->isEnabled());
        QCOMPARE(w.panel()->findChild<QLineEdit*>("controlImage2")->text(), map + ".missing.png");
        QTest::mouseClick(w.panel()->findChild<QToolButton*>("controlRemove2"), Qt::LeftButton);
        QTest::qWait(1);
        QCOMPARE(w.panel()->request().controls.size(), size_t(1));
        // Inpainting: the ControlNet reads the picture being repainted (the canvas); the
        // masked part follows it, so weight 0 and 1 differ there, and the history keeps it.
        QImage mask(sketch.size(), QImage::Format_RGB888);
        mask.fill(Qt::black);
        QPainter(&mask).fillRect(QRect(16, 16, 96, 96), Qt::white);
        w.canvas()->setMask(mask);
        w.panel()->setMode(ui::ParameterPanel::Mode::Inpaint);
        QVERIFY(field->isEnabled());
        QCOMPARE(w.panel()->request().controls, std::vector<ControlRef>{reused});
        QVERIFY(w.panel()->request().is_inpaint());
        QVERIFY(generate());
        QVERIFY2(w.errorText().isEmpty(), qPrintable(w.errorText()));
        const QImage inpainted = w.result()->image();
        const auto painted = w.history()->get(w.lastSavedId());
        QVERIFY(painted.has_value());
        QVERIFY(painted->request.is_inpaint());
        QCOMPARE(painted->request.controls.size(), size_t(1));
        w.panel()->findChild<QDoubleSpinBox*>("controlScale")->setValue(0);
        QVERIFY(generate());
        QVERIFY(w.result()->image() != inpainted);
        w.canvas()->clearMask();
        w.panel()->setMode(ui::ParameterPanel::Mode::Text);
        field->clear();
        QVERIFY(w.panel()->findChild<QWidget*>("refiner")->isEnabled());
        setSmall(w.panel(), 4);
    }

    // An embedding in the embeddings folder (Settings) gives its word learned vectors: the image
    // is the engine's for the request the history keeps, which names the file.
    void anEmbeddingInTheFolderGivesItsWordMeaning() {
        auto& w = window();
        QDir(data_.path()).mkpath("embeddings");
        const QString file = data_.filePath("embeddings/glowstyle.safetensors");
        {
            QFile config(
                QString::fromStdString(ModelFolder::open(w.worker()->modelPath().toStdString())
                                           .component("text_encoder")
                                           .config.string()));
            QVERIFY(config.open(QIODevice::ReadOnly));
            const int width = QJsonDocument::fromJson(config.readAll())["hidden_size"].toInt();
            QVERIFY(width > 0);
            // Drawn from a seeded generator: the global one's state depends on the tests run
            // before, and some draws hardly move the tiny model's picture.
            const at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2026);
            save_safetensors(file.toStdString(),
                             {{"emb_params", at::randn({4, width}, gen) * 2.0}});
        }
        // The prompt's counter counts its four vectors once the studio knows the file.
        auto* counter = w.panel()->prompt()->findChild<QLabel*>();
        w.panel()->prompt()->setPlainText("a glowstyle");
        QCOMPARE(counter->text(), QString("3/75"));  // a, glow, style
        w.updatePromptCounters();
        QCOMPARE(counter->text(), QString("5/75"));
        auto generate = [&] {
            QSignalSpy done(&w, &ui::MainWindow::generationDone);
            w.generate();
            return wait_for([&] { return done.count() == 1; });
        };
        setSmall(w.panel(), 3);
        w.panel()->setImg2img(false);
        GenerationRequest r = w.panel()->request();
        r.prompt = "a red circle, glowstyles";  // not the word: inside a longer one
        w.panel()->setRequest(r);
        QVERIFY(generate());
        const auto without = w.history()->get(w.lastSavedId());
        QVERIFY(without->request.embeddings.empty());
        r.prompt = "a red circle, GlowStyle";
        w.panel()->setRequest(r);
        QVERIFY(generate());
        const auto e = w.history()->get(w.lastSavedId());
        QCOMPARE(e->request.embeddings.size(), size_t(1));
        QCOMPARE(e->request.embeddings[0].file, file.toStdString());
        QCOMPARE(e->request.embeddings[0].token, std::string("glowstyle"));
        Pipeline p = Pipeline::load(w.worker()->modelPath().toStdString(), {});
        const QImage made = QImage(e->file).convertToFormat(QImage::Format_RGB888);
        QCOMPARE(made, app::to_qimage(p.generate(e->request).images.front()));
        GenerationRequest plain = e->request;
        plain.embeddings.clear();
        QVERIFY(made != app::to_qimage(p.generate(plain).images.front()));
        setSmall(w.panel(), 4);
    }

    // The hires fix: the bigger image, both passes in the step strip as one run, and the
    // engine's image for the request the history keeps.
    void hiresFixMakesTheBiggerImageWithBothPassesInTheStrip() {
        auto& w = window();
        setSmall(w.panel(), 4);
        w.panel()->setImg2img(false);
        GenerationRequest r = w.panel()->request();
        r.hires_scale = 1.5;
        r.hires_strength = 0.5;
        w.panel()->setRequest(r);
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        QCOMPARE(w.steps()->count(), 4 + 2);  // Euler a: 4 steps, then 2 at strength 0.5
        const auto e = w.history()->get(w.lastSavedId());
        QVERIFY(e.has_value());
        QCOMPARE(e->request.hires_scale, 1.5);
        const QImage made = QImage(e->file).convertToFormat(QImage::Format_RGB888);
        QCOMPARE(made.size(), QSize(192, 192));
        Pipeline p = Pipeline::load(w.worker()->modelPath().toStdString(), {});
        QCOMPARE(made, app::to_qimage(p.generate(e->request).images.front()));
        setSmall(w.panel(), 4);
    }

    // The worker loads a model with another VAE (Settings → VAE): its images are the
    // engine's with it (a copy of the model's VAE with other weights, in diffusers' names).
    void theWorkerLoadsAnotherVae() {
        const QString vae_file = data_.filePath("other-vae.safetensors");
        {
            const auto vae = ModelFolder::open(tiny_model().toStdString()).component("vae");
            const auto f = SafeTensorsFile::open(vae.weights.at(0));
            std::vector<std::pair<std::string, at::Tensor>> tensors;
            for (const auto& t : f.tensors()) {
                const at::Tensor v = f.tensor(t.name).to(at::kFloat);
                tensors.emplace_back(t.name, v + 0.05 * at::randn(v.sizes()));
            }
            save_safetensors(vae_file.toStdString(), tensors);
        }
        app::InferenceWorker worker;
        QSignalSpy loaded(&worker, &app::InferenceWorker::modelLoaded);
        worker.loadModel(tiny_model(), "cpu", "fp32", {}, vae_file);
        QVERIFY(wait_for([&] { return loaded.count() == 1; }));
        app::Job job;
        job.request.prompt = "a red circle";
        job.request.steps = 2;
        job.request.width = job.request.height = 32;
        QSignalSpy finished(&worker, &app::InferenceWorker::jobFinished);
        worker.submit(job);
        QVERIFY(wait_for([&] { return finished.count() == 1; }));
        const auto result = finished.first().first().value<app::JobResult>();
        Pipeline::Options options;
        options.vae = vae_file.toStdString();
        Pipeline with = Pipeline::load(tiny_model().toStdString(), options);
        Pipeline without = Pipeline::load(tiny_model().toStdString(), {});
        const QImage got = result.images.front().convertToFormat(QImage::Format_RGB888);
        QCOMPARE(got, app::to_qimage(with.generate(job.request).images.front()));
        QVERIFY(got != app::to_qimage(without.generate(job.request).images.front()));
    }

    void inpaintingRepaintsTheMaskedPart() {
        // Last, as the LoRA test: the GUI-stall check keeps the history it always saw.
        auto& w = window();
        if (w.lastSavedId() > 0) {  // the workflow: a result on the canvas, part of it repainted
            w.useAsInput(w.lastSavedId());
        }
        auto* mask_button = w.findChild<QToolButton*>("maskButton");
        QVERIFY(mask_button != nullptr);
        w.canvas()->clearMask();
        // Inpaint mode with nothing masked turns the Mask tool on; another mode turns it off.
        w.panel()->setMode(ui::ParameterPanel::Mode::Inpaint);
        QVERIFY(mask_button->isChecked());
        w.panel()->setMode(ui::ParameterPanel::Mode::Sketch);
        QVERIFY(!mask_button->isChecked());
        mask_button->setChecked(true);  // the Mask tool turns Inpaint mode on
        QCOMPARE(w.panel()->mode(), ui::ParameterPanel::Mode::Inpaint);
        QVERIFY(w.canvas()->maskEditing());
        QCOMPARE(w.generate(), quint64(0));  // nothing masked yet
        QVERIFY(w.errorText().contains("Mask tool"));
        // A mask stroke changes the mask, not the sketch.
        const QImage sketch = w.canvas()->image();
        w.canvas()->setTool(ui::SketchCanvas::Tool::Brush);
        w.canvas()->setBrushSize(40);
        const QRectF r = w.canvas()->imageRect();
        drag(w.canvas(), r.center().toPoint() - QPoint(0, 50),
             r.center().toPoint() + QPoint(0, 50));
        QVERIFY(w.canvas()->hasMask());
        QCOMPARE(w.canvas()->image(), sketch);
        const QImage mask = w.canvas()->mask();
        QCOMPARE(mask.pixelColor(0, 0), QColor(Qt::black));
        QCOMPARE(mask.pixelColor(mask.width() / 2, mask.height() / 2), QColor(Qt::white));
        w.findChild<QCheckBox*>("keepUnmasked")->setChecked(true);
        w.findChild<QSpinBox*>("maskBlur")->setValue(2);
        GenerationRequest asked = w.panel()->request();
        asked.prompt = "a yellow circle on a blue background";  // something else in the mask
        w.panel()->setRequest(asked);
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        const auto e = w.history()->get(w.lastSavedId());
        QVERIFY(e.has_value());
        QVERIFY(e->request.is_inpaint());
        // The mask is kept beside the image, named in its parameters.
        const QString kept_mask = QString::fromStdString(e->request.mask_image);
        QVERIFY2(QFileInfo::exists(kept_mask), qPrintable(kept_mask));
        QCOMPARE(QImage(kept_mask).convertToFormat(QImage::Format_RGB888), mask);
        const QString kept_init = QString::fromStdString(e->request.init_image);  // the sketch too
        QCOMPARE(QImage(kept_init).convertToFormat(QImage::Format_RGB888), sketch);
        // The image is the engine's for this sketch and mask: the worker took both.
        Pipeline p = Pipeline::load(w.worker()->modelPath().toStdString(), {});
        const Image init = app::from_qimage(sketch), m = app::from_qimage(mask);
        const Image want = p.generate(e->request, &init, &m).images.front();
        const QImage made = QImage(e->file).convertToFormat(QImage::Format_RGB888);
        QCOMPARE(made, app::to_qimage(want));
        QVERIFY(e->request.keep_unmasked);
        QCOMPARE(e->request.mask_blur, 2);
        for (const QPoint pt : {QPoint(0, 0), QPoint(made.width() - 1, made.height() - 1)}) {
            QCOMPARE(made.pixel(pt), sketch.pixel(pt));  // kept: the canvas's own pixels
        }
        QVERIFY(mask_button->isChecked() && w.canvas()->maskEditing());
        screenshot(&w, "studio-inpaint.png");
        // A cancelled inpainting leaves no mask file behind.
        auto saved_masks = [&] {
            int n = 0;
            QDirIterator it(w.history()->imagesFolder(), {"*-mask.png"}, QDir::Files,
                            QDirIterator::Subdirectories);
            for (; it.hasNext(); it.next()) {
                ++n;
            }
            return n;
        };
        const int masks_before = saved_masks();
        const GenerationRequest shown = w.panel()->request();
        GenerationRequest longer = shown;
        longer.steps = 40;
        w.panel()->setRequest(longer);
        auto c =
            connect(w.worker(), &app::InferenceWorker::stepDone, this, [&](const app::StepInfo& s) {
                if (s.index == 1) {
                    w.cancel();
                }
            });
        QSignalSpy cancelled(w.worker(), &app::InferenceWorker::jobCancelled);
        QSignalSpy ended(&w, &ui::MainWindow::generationDone);
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return ended.count() == 1; }));
        QCOMPARE(cancelled.count(), 1);
        disconnect(c);
        QCOMPARE(saved_masks(), masks_before);
        w.panel()->setRequest(shown);
        // Reuse parameters puts that mask back on the canvas.
        w.canvas()->clearMask();
        w.reuseParameters(e->id);
        QCOMPARE(w.canvas()->mask(), mask);
        QCOMPARE(w.panel()->mode(), ui::ParameterPanel::Mode::Inpaint);
        // Undo takes the mask stroke back; another mode hides the mask and ends its editing.
        w.canvas()->undo();
        QVERIFY(!w.canvas()->hasMask());
        w.canvas()->redo();
        QVERIFY(w.canvas()->hasMask());
        w.panel()->setMode(ui::ParameterPanel::Mode::Sketch);
        QVERIFY(!mask_button->isChecked());
        QVERIFY(!w.canvas()->maskEditing());
        QVERIFY(!w.panel()->request().is_inpaint());
        // Invert, then clear.
        w.canvas()->invertMask();
        QCOMPARE(w.canvas()->mask().pixelColor(0, 0), QColor(Qt::white));
        w.canvas()->clearMask();
        QVERIFY(!w.canvas()->hasMask());
        // A mask image from a file (as the CLI's --mask): grey from 128 up is masked.
        QImage file_mask(w.canvas()->imageSize(), QImage::Format_RGB32);
        file_mask.fill(QColor(127, 127, 127));
        for (int y = 0; y < file_mask.height(); ++y) {
            for (int x = file_mask.width() / 2; x < file_mask.width(); ++x) {
                file_mask.setPixelColor(x, y, QColor(128, 128, 128));
            }
        }
        const QString mask_file = QDir(data_.path()).filePath("mask.png");
        QVERIFY(file_mask.save(mask_file));
        QVERIFY(w.openMask(mask_file));
        QCOMPARE(w.panel()->mode(), ui::ParameterPanel::Mode::Inpaint);
        const QImage opened = w.canvas()->mask();
        QCOMPARE(opened.pixelColor(0, 0), QColor(Qt::black));
        QCOMPARE(opened.pixelColor(opened.width() - 1, opened.height() - 1), QColor(Qt::white));
        QVERIFY(!w.openMask(QDir(data_.path()).filePath("no-such-mask.png")));
        QVERIFY(w.errorText().contains("no-such-mask.png: cannot read the image"));
        w.canvas()->clearMask();
        // Deleting the entry deletes its mask too (no other entry names it).
        w.history()->remove(e->id);
        QVERIFY(!QFileInfo::exists(kept_mask));
    }

    void outpaintingExtendsTheCanvasAndMasksTheNewArea() {
        auto& w = window();
        w.canvas()->clearMask();
        const QImage before = w.canvas()->image();
        const QSize size = before.size();
        QVERIFY(!w.extendCanvas(0, 0, ui::ParameterPanel::kMaxSide, 0));  // too big: a message
        QVERIFY(w.errorText().contains("the largest is"));
        QCOMPARE(w.canvas()->imageSize(), size);
        QVERIFY(w.extendCanvas(0, 0, 60, 0));  // rounded up to 64
        const QSize grown(size.width() + 64, size.height());
        QCOMPARE(w.canvas()->imageSize(), grown);
        const GenerationRequest r = w.panel()->request();
        QCOMPARE(QSize(r.width, r.height), grown);
        QVERIFY(r.is_inpaint());
        // The old picture where it was, its right edge repeated into the new area, which is
        // the mask.
        const QImage now = w.canvas()->image();
        const QImage mask = w.canvas()->mask();
        QCOMPARE(now.copy(QRect(QPoint(0, 0), size)), before);
        for (int y : {0, size.height() / 2, size.height() - 1}) {
            QCOMPARE(now.pixel(grown.width() - 1, y), before.pixel(size.width() - 1, y));
            QCOMPARE(mask.pixelColor(size.width() - 1, y), QColor(Qt::black));
            QCOMPARE(mask.pixelColor(size.width(), y), QColor(Qt::white));
        }
        auto* batch = w.panel()->findChild<QSpinBox*>("batch");
        batch->setValue(2);  // two entries naming one saved mask
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        const auto e = w.history()->get(w.lastSavedId());
        const auto first = w.history()->get(w.lastSavedId() - 1);
        QVERIFY(e.has_value() && first.has_value());
        QCOMPARE(first->request.mask_image, e->request.mask_image);
        const QImage made = QImage(e->file).convertToFormat(QImage::Format_RGB888);
        QCOMPARE(made.size(), grown);
        if (e->request.keep_unmasked) {  // the inpainting test left it on
            QCOMPARE(made.pixel(0, 0), now.pixel(0, 0));
        }
        screenshot(&w, "studio-outpaint.png");
        // The mask goes with the last entry that names it.
        const QString mask_file = QString::fromStdString(e->request.mask_image);
        w.history()->remove(first->id);
        QVERIFY(QFileInfo::exists(mask_file));
        w.history()->remove(e->id);
        QVERIFY(!QFileInfo::exists(mask_file));
        batch->setValue(1);
    }
    // Model → Fine-tune: a folder of captioned pictures, checked and shown; a run with the
    // window's settings makes the same model as sds::train with them; the tuned model opens in
    // the studio and generates.
    // "Only masked": the box around the mask is repainted at the size set and put back; the
    // image has the canvas's size and is the engine's for that canvas, mask and request.
    void onlyMaskedRepaintsTheBoxAroundTheMask() {
        auto& w = window();
        QImage picture(96, 64, QImage::Format_RGB888);
        for (int y = 0; y < picture.height(); ++y) {
            for (int x = 0; x < picture.width(); ++x) {
                picture.setPixelColor(x, y, QColor((x * 5) % 256, (y * 7) % 256, 120));
            }
        }
        w.canvas()->setPicture(picture);
        QImage mask(picture.size(), QImage::Format_RGB888);
        mask.fill(Qt::black);
        QPainter(&mask).fillRect(QRect(60, 20, 12, 10), Qt::white);
        w.canvas()->setMask(mask);
        setSmall(w.panel(), 3);
        w.panel()->setMode(ui::ParameterPanel::Mode::Inpaint);
        w.panel()->findChild<QCheckBox*>("onlyMasked")->setChecked(true);
        w.panel()->findChild<QSpinBox*>("maskPadding")->setValue(4);
        GenerationRequest r = w.panel()->request();
        QCOMPARE(r.mask_padding, 4);
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        QVERIFY2(w.errorText().isEmpty(), qPrintable(w.errorText()));
        const auto e = w.history()->get(w.lastSavedId());
        QVERIFY(e.has_value());
        QCOMPARE(e->request.mask_padding, 4);
        const QImage made = QImage(e->file).convertToFormat(QImage::Format_RGB888);
        const QImage canvas = w.canvas()->image().convertToFormat(QImage::Format_RGB888);
        QCOMPARE(made.size(), canvas.size());
        Pipeline p = Pipeline::load(w.worker()->modelPath().toStdString(), {});
        const Image init = app::load_image(QString::fromStdString(e->request.init_image));
        const Image m = app::load_image(QString::fromStdString(e->request.mask_image));
        QCOMPARE(made, app::to_qimage(p.generate(e->request, &init, &m).images.front()));
        QCOMPARE(made.pixel(0, 0), canvas.pixel(0, 0));  // outside the box: the canvas
        w.panel()->findChild<QCheckBox*>("onlyMasked")->setChecked(false);
        w.canvas()->clearMask();
        setSmall(w.panel(), 4);
    }

    // File → Settings shows each path the studio keeps (the VAE, the LoRA and embeddings
    // folders, the single-file configs) with the values set.
    void settingsDialogShowsEveryPath() {
        auto& w = window();
        QStringList seen;
        QTimer::singleShot(300, [&] {
            QWidget* dialog = QApplication::activeModalWidget();
            if (dialog == nullptr) {
                return;
            }
            for (const char* name : {"singleFileConfig", "vae", "loraFolder", "embeddingFolder"}) {
                if (auto* edit = dialog->findChild<QLineEdit*>(name)) {
                    seen << QString(name) + "=" + edit->text();
                }
            }
            screenshot(dialog, "studio-settings.png");
            static_cast<QDialog*>(dialog)->reject();
        });
        QAction* settings = nullptr;
        for (QAction* a : w.findChildren<QAction*>()) {
            if (a->text().startsWith("Settings")) {
                settings = a;
            }
        }
        QVERIFY(settings != nullptr);
        settings->trigger();  // returns when the dialog is closed
        QCOMPARE(seen.size(), 4);
        QVERIFY(seen.contains("loraFolder=" + data_.filePath("loras")));
        QVERIFY(seen.contains("embeddingFolder=" + data_.filePath("embeddings")));
        QVERIFY(seen.contains("vae="));
    }

    void fineTuningTrainsOnAFolderAndOpensTheResult() {
        auto& w = window();
        w.findChild<QAction*>("fineTuneAction")->trigger();
        ui::TrainWindow* t = w.trainWindow();
        QVERIFY(t->isVisible());
        QCOMPARE(t->findChild<QLabel*>("baseModel")->text(), tiny_model());
        QCOMPARE(t->findChild<QSpinBox*>("resolution")->value(), w.worker()->nativeSize());
        QVERIFY(!t->start());  // no images chosen yet
        QVERIFY(t->errorText().contains("folder of images"));

        // A picture without its caption is named.
        const QString bad = data_.filePath("tune-bad");
        make_training_folder(bad);
        QFile::remove(QDir(bad).filePath("shot1.txt"));
        QVERIFY(!t->setDataFolder(bad));
        QVERIFY(t->findChild<QLabel*>("dataSummary")->text().contains("shot1.png"));
        QVERIFY(!t->start());
        QVERIFY(t->errorText().contains("shot1.png: no caption file"));

        const QString dir = make_training_folder(data_.filePath("tune-data"));
        QVERIFY(t->setDataFolder(dir));
        QCOMPARE(t->findChild<QListWidget*>("thumbnails")->count(), 3);
        QCOMPARE(t->findChild<QListWidget*>("thumbnails")->item(1)->text(),
                 QString("a green circle"));
        const QString out = data_.filePath("models/tune-data-tuned");  // proposed
        QCOMPARE(t->findChild<QLineEdit*>("outputFolder")->text(), out);
        const bool shots = !qEnvironmentVariable("SDS_SCREENSHOTS").isEmpty();
        const int steps = shots ? 60 : 6;
        t->findChild<QSpinBox*>("steps")->setValue(steps);
        t->findChild<QSpinBox*>("batch")->setValue(2);
        t->findChild<QSpinBox*>("seed")->setValue(7);
        t->findChild<QDoubleSpinBox*>("noiseOffset")->setValue(0.05);
        t->findChild<QSpinBox*>("checkpointEvery")->setValue(4);
        auto* lr = t->findChild<QDoubleSpinBox*>("learningRate");
        QCOMPARE(lr->text(), QString("0.0001"));
        lr->selectAll();
        QTest::keyClicks(lr, "2e-4");
        lr->interpretText();
        QCOMPARE(lr->value(), 2e-4);

        QSignalSpy ended(t, &ui::TrainWindow::runEnded);
        QTest::mouseClick(t->findChild<QPushButton*>("startTraining"), Qt::LeftButton);
        QVERIFY(t->worker()->running());
        QVERIFY(!t->findChild<QPushButton*>("startTraining")->isEnabled());
        QVERIFY(wait_for([&] { return ended.count() == 1; }, 600000));
        QVERIFY2(t->statusText().startsWith("Done"), qPrintable(t->statusText() + t->errorText()));
        QCOMPARE(t->lossPoints(), steps);
        screenshot(t, "studio-fine-tune.png");

        // What sds::train makes from the same images with the settings shown.
        TrainOptions o = t->options();
        QCOMPARE(o.unet_steps, steps);
        QCOMPARE(o.seed, uint64_t(7));
        QCOMPARE(o.noise_offset, 0.05);
        QCOMPARE(o.learning_rate, 2e-4);
        QCOMPARE(t->findChild<QLabel*>("checkpointNote")->text(),
                 QString("A run of %1 steps is there: raise Steps to train it further, or start "
                         "over.")
                     .arg(steps));
        QCOMPARE(o.base_model.string(), tiny_model().toStdString());
        o.out_dir = data_.filePath("tune-straight").toStdString();
        sds::train(app::load_training_folder(dir), o);
        QVERIFY(same_weights(QDir(out).filePath(kUnetFile),
                             QString::fromStdString((o.out_dir / kUnetFile).string())));
        QVERIFY(
            !same_weights(QDir(out).filePath(kUnetFile), QDir(tiny_model()).filePath(kUnetFile)));

        // Open in the studio: it loads and generates.
        QTest::mouseClick(t->findChild<QPushButton*>("openTuned"), Qt::LeftButton);
        QVERIFY(wait_for([&] { return w.worker()->modelPath() == out && !w.worker()->busy(); }));
        QVERIFY(wait_for([&] {  // the base follows
            return t->findChild<QLabel*>("baseModel")->text() == out;
        }));
        setSmall(w.panel(), 2);
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        QVERIFY(w.errorText().isEmpty());
        QVERIFY(w.openModel(tiny_model()));
        QVERIFY(wait_for([&] { return w.worker()->modelPath() == tiny_model(); }));
    }

    // A LoRA instead of the whole UNet: the file sds::train writes with the window's settings,
    // "Use the LoRA" puts it into the LoRA list, and the studio generates with it.
    void fineTuningALoraPutsItIntoTheLoraList() {
        auto& w = window();
        w.showTrainWindow();
        ui::TrainWindow* t = w.trainWindow();
        const QString dir = make_training_folder(data_.filePath("tune-data"));
        auto* what = t->findChild<QComboBox*>("trainWhat");
        what->setCurrentIndex(what->findData("lora"));
        QVERIFY(t->setDataFolder(dir));
        const QString out = data_.filePath("models/tune-data-lora");  // proposed for a LoRA
        QCOMPARE(t->findChild<QLineEdit*>("outputFolder")->text(), out);
        t->findChild<QSpinBox*>("steps")->setValue(4);
        t->findChild<QSpinBox*>("batch")->setValue(2);
        t->findChild<QSpinBox*>("loraRank")->setValue(2);
        t->findChild<QDoubleSpinBox*>("learningRate")->setValue(1e-2);
        QSignalSpy ended(t, &ui::TrainWindow::runEnded);
        QVERIFY(t->start());
        QVERIFY(wait_for([&] { return ended.count() == 1; }, 600000));
        const QString file = QDir(out).filePath("tune-data-lora.safetensors");
        QVERIFY2(
            t->statusText().contains(file) && t->statusText().contains("<lora:tune-data-lora>"),
            qPrintable(t->statusText() + t->errorText()));
        TrainOptions o = t->options();
        QCOMPARE(o.lora_rank, 2);
        o.out_dir = data_.filePath("tune-data-lora").toStdString();
        sds::train(app::load_training_folder(dir), o);
        QVERIFY(same_weights(file, QString::fromStdString(lora_file(o).string())));
        auto* use = t->findChild<QPushButton*>("openTuned");
        QCOMPARE(use->text(), QString("Use the LoRA"));
        setSmall(w.panel(), 3);
        QTest::mouseClick(use, Qt::LeftButton);
        const auto loras = w.panel()->request().loras;
        QCOMPARE(loras.size(), size_t(1));
        QCOMPARE(QString::fromStdString(loras[0].file), file);
        QSignalSpy done(&w, &ui::MainWindow::generationDone);
        QVERIFY(w.generate() > 0);
        QVERIFY(wait_for([&] { return done.count() == 1; }));
        const auto e = w.history()->get(w.lastSavedId());
        Pipeline p = Pipeline::load(w.worker()->modelPath().toStdString(), {});
        QCOMPARE(QImage(e->file).convertToFormat(QImage::Format_RGB888),
                 app::to_qimage(p.generate(e->request).images.front()));
        what->setCurrentIndex(what->findData("unet"));
        setSmall(w.panel(), 4);
    }

    // Stop writes a checkpoint; Start continues from it and ends where an uninterrupted run
    // ends. Closing the window (the studio) during a run stops it with a checkpoint too.
    void fineTuningStopsWithACheckpointAndContinues() {
        auto& w = window();
        w.showTrainWindow();
        ui::TrainWindow* t = w.trainWindow();
        const QString dir = make_training_folder(data_.filePath("tune-data"));
        QVERIFY(t->setDataFolder(dir));
        const QString out = data_.filePath("tune-stopped");
        t->setOutputFolder(out);
        t->findChild<QSpinBox*>("steps")->setValue(40);
        t->findChild<QSpinBox*>("batch")->setValue(1);
        t->findChild<QSpinBox*>("checkpointEvery")->setValue(0);  // only when stopped or done
        QVERIFY(t->findChild<QLabel*>("checkpointNote")->text().isEmpty());

        QSignalSpy ended(t, &ui::TrainWindow::runEnded);
        QSignalSpy steps(t->worker(), &app::TrainingWorker::progress);
        QVERIFY(t->start());
        QVERIFY(wait_for([&] { return steps.count() > 0; }));
        QTest::mouseClick(t->findChild<QPushButton*>("stopTraining"), Qt::LeftButton);
        QVERIFY(wait_for([&] { return ended.count() == 1; }));
        const int at = app::read_training_checkpoint(out).step;
        QVERIFY2(at > 0 && at < 40, qPrintable(t->statusText()));
        QVERIFY2(t->statusText().contains(QString("UNet step %1").arg(at)),
                 qPrintable(t->statusText()));
        QVERIFY(
            t->findChild<QLabel*>("checkpointNote")->text().contains(QString("step %1").arg(at)));
        QVERIFY(!t->findChild<QCheckBox*>("startOver")->isHidden());
        QVERIFY(!QFileInfo::exists(QDir(out).filePath(kUnetFile)));

        steps.clear();
        QVERIFY(t->start());
        QVERIFY(wait_for([&] { return ended.count() == 2; }, 600000));
        QVERIFY2(t->statusText().startsWith("Done"), qPrintable(t->statusText() + t->errorText()));
        QCOMPARE(steps.first().at(1).toInt(), at + 1);  // continued, not started over
        TrainOptions o = t->options();
        o.out_dir = data_.filePath("tune-unstopped").toStdString();
        sds::train(app::load_training_folder(dir), o);
        QVERIFY(same_weights(QDir(out).filePath(kUnetFile),
                             QString::fromStdString((o.out_dir / kUnetFile).string())));

        // A window closed mid-run (the studio quitting) leaves a checkpoint.
        const QString closed = data_.filePath("tune-closed");
        {
            ui::TrainWindow lone;
            lone.setBaseModel(tiny_model(), {}, 32);
            QVERIFY(lone.setDataFolder(dir));
            lone.setOutputFolder(closed);
            lone.findChild<QSpinBox*>("steps")->setValue(100000);
            QSignalSpy going(lone.worker(), &app::TrainingWorker::progress);
            QVERIFY(lone.start());
            QVERIFY(wait_for([&] { return going.count() > 0; }));
        }
        QVERIFY(app::read_training_checkpoint(closed).step > 0);
    }
};

QTEST_MAIN(StudioTest)
#include "studio_test.moc"
