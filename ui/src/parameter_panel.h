#pragma once
// The parameter panel: prompt and negative prompt with token counters, text / sketch / inpaint
// mode, steps, guidance, strength, seed (random or locked), sampler (with DDIM's eta), clip skip,
// how the prompts are read (A1111's syntax or plain), size and batch count, the hires fix, SDXL's
// refiner, ControlNets (the first reads the sketch canvas), LoRAs with their weights; Generate,
// Cancel and the Live toggle. A Styles menu merges A1111's prompt styles into the prompts and saves
// them; a Networks menu puts the LoRA and embedding folders' files into the prompts as A1111's
// extra networks do.
#include <QWidget>

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "sds/generation_request.h"
#include "sds/model_folder.h"

class QCheckBox;
class QComboBox;
class QLabel;
class QDoubleSpinBox;
class QLineEdit;
class QPushButton;
class QRadioButton;
class QSlider;
class QSpinBox;
class QTableWidget;
class QToolButton;
class QVBoxLayout;

namespace sds {
class ClipTokenizer;
}

namespace sds::ui {

class PromptEdit;

// A slider with its value in a spin box beside it (type to set; double-click the slider to
// reset to the default).
class ValueSlider : public QWidget {
    Q_OBJECT
  public:
    ValueSlider(double min, double max, double step, int decimals, double value,
                QWidget* parent = nullptr);
    double value() const;
    void setValue(double v);
    QSlider* slider() const { return slider_; }

  Q_SIGNALS:
    void valueChanged(double v);
    void sliderMoved(double v);  // by the person (drag, wheel, typing), not by setValue

  protected:
    bool eventFilter(QObject* o, QEvent* e) override;

  private:
    QSlider* slider_;
    QDoubleSpinBox* spin_;
    double min_, step_, default_;
};

// One ControlNet unit: the ControlNet (a folder or file), its image, weight, preprocessor and
// the part of the way it guides. The first unit reads the canvas, as A1111's ControlNet takes the
// img2img or inpaint picture when its unit has none; a later one reads its image file, or the
// canvas where it names none. Its widgets' object names are the first unit's ("controlnet",
// "controlScale", "controlStart", "controlEnd", "controlPreprocessor", "cannyLow", "cannyHigh",
// "binaryThreshold", "controlPreview") with the unit's number after them from the second on
// ("controlnet2",
// ...; "controlImage2", "controlRemove2").
class ControlUnit : public QWidget {
    Q_OBJECT
  public:
    explicit ControlUnit(int index, QWidget* parent = nullptr);
    int index() const { return index_; }
    void setIndex(int index);  // its number, shown and in its widgets' names
    // The unit's ControlNet; none while no ControlNet is chosen.
    std::optional<ControlRef> control() const;
    // Shows `c` (its image too, for a unit after the first; "canvas" shows as none).
    void setControl(const ControlRef& c);

  Q_SIGNALS:
    void previewRequested();
    void removeRequested();  // a unit after the first: its remove button
    void changed();          // its ControlNet chosen or cleared

  private:
    void updateEnabled();
    int index_;
    QLineEdit* model_;
    QLabel* title_ = nullptr;     // units after the first: "ControlNet 2"
    QLineEdit* image_ = nullptr;  // units after the first: a picture file (empty: the canvas)
    QToolButton* remove_ = nullptr;
    QDoubleSpinBox* scale_;
    QDoubleSpinBox* start_;
    QDoubleSpinBox* end_;
    // ControlRef::preprocessor: "invert" (the canvas's dark lines on white made white on black,
    // the default), "none" (a map as it is), "canny" (a picture's edges, with the thresholds),
    // "binary" (its dark parts, with binaryThreshold_: 0 shown as "Otsu"), "depth" (its depth
    // map, by the Depth Anything folder in depthModel_, whose row shows for depth alone).
    QComboBox* preprocessor_;
    QSpinBox* cannyLow_;
    QSpinBox* cannyHigh_;
    QSpinBox* binaryThreshold_;
    QWidget* depthRow_;
    QLineEdit* depthModel_;
    QToolButton* preview_;
};

class ParameterPanel : public QWidget {
    Q_OBJECT
  public:
    explicit ParameterPanel(QWidget* parent = nullptr);

    enum class Mode { Text, Sketch, Inpaint };
    static constexpr int kMaxSide = 2048;  // the largest width or height the panel takes
    // The request as the panel shows it. Sketch mode sets init_image to "canvas", inpaint mode
    // also mask_image to "canvas mask".
    GenerationRequest request() const;
    // Shows a request's values (Reuse parameters); the seed is locked so it is kept.
    void setRequest(const GenerationRequest& r);
    // Before an explicit Generate: a fresh random seed unless the seed is locked.
    void rollSeedUnlessLocked();
    Mode mode() const;
    void setMode(Mode mode);
    bool img2img() const { return mode() != Mode::Text; }  // sketch or inpaint: from the canvas
    void setImg2img(bool on);  // on: sketch mode, unless inpaint mode is on; off: text mode
    bool live() const;
    void setTokenizer(std::shared_ptr<const ClipTokenizer> tokenizer);
    void setNativeSize(int size);  // the model's size, used when a model loads
    // Width and height at once (one sizeChanged, with both), e.g. after the canvas grew.
    void setImageSize(QSize size);
    // A newly opened model's suggested guidance, steps and sampler (its sdstudio.json).
    void applyHints(const ModelHints& hints);
    // The open model is an SDXL refiner (its aesthetic scores apply without the Refiner row).
    void setModelIsRefiner(bool refiner);
    // The model's UNet takes the guidance as an input (ModelFolder::guidance_distilled): the
    // negative prompt box is off (its text kept), as the model runs without one.
    void setModelIsGuidanceDistilled(bool distilled);
    void setBusy(bool busy);
    // Adds a LoRA row (file and weight); Add LoRA… asks for the file.
    void addLora(const LoraRef& lora);

    // The prompt styles file (A1111's styles.csv) the Styles menu reads, each time it opens,
    // and writes.
    void setStylesFile(const QString& file);
    QString stylesFile() const { return stylesFile_; }
    // A style merged into the prompt and negative prompt boxes, as A1111's "apply styles"
    // (undoable there with Ctrl+Z). sds::Error where the file cannot be read or has no such
    // style.
    void applyStyle(const QString& name);
    // The boxes' prompts saved as the style `name`, replacing one of that name.
    void saveStyle(const QString& name);
    void deleteStyle(const QString& name);
    QToolButton* stylesButton() const { return styles_; }

    // The folders the Networks menu lists, each time it opens (the settings' LoRA and
    // embeddings folders).
    void setNetworkFolders(const QString& loraFolder, const QString& embeddingFolder);
    // A1111's extra networks: "<lora:NAME:1>" put into the prompt, or taken out where it is
    // there; an embedding's word put into (or taken out of) the prompt box last in focus, the
    // prompt or the negative prompt. Each is one step of that box's undo history.
    void toggleLora(const QString& name);
    void toggleEmbedding(const QString& word);
    QToolButton* networksButton() const { return networks_; }

    PromptEdit* prompt() const { return prompt_; }
    PromptEdit* negativePrompt() const { return negative_; }
    ValueSlider* guidance() const { return guidance_; }
    ValueSlider* strength() const { return strength_; }
    QPushButton* generateButton() const { return generate_; }
    // The ControlNet units (at least one; "+ ControlNet" adds one, up to kMaxControlUnits).
    static constexpr int kMaxControlUnits = 3;
    int controlUnitCount() const { return static_cast<int>(controlUnits_.size()); }
    ControlUnit* controlUnit(int k) const { return controlUnits_.at(static_cast<size_t>(k)); }
    ControlUnit* addControlUnit();
    void removeControlUnit(ControlUnit* unit);  // not the first

  Q_SIGNALS:
    void generateRequested();
    void cancelRequested();
    void liveChanged(bool on);
    // Guidance, strength or a LoRA's weight moved by the person (for live regeneration).
    void liveParameterMoved();
    void sizeChanged(QSize size);
    void modeChanged(Mode mode);
    // A ControlNet unit's Preview: show what that unit's ControlNet would get of its image.
    void controlPreviewRequested(int unit);

  protected:
    bool eventFilter(QObject* o, QEvent* e) override;  // which prompt box was last in focus

  private:
    Sampler sampler() const;  // the family's twin with the chosen schedule
    void showSampler(Sampler s);
    PromptSyntax promptSyntax() const;
    void fillStylesMenu();
    void fillNetworksMenu();
    PromptEdit* prompt_;
    QToolButton* styles_;
    QString stylesFile_;
    QToolButton* networks_;
    QString loraFolder_, embeddingFolder_;
    PromptEdit* lastPrompt_;  // the prompt box last in focus: where embeddings go
    PromptEdit* negative_;
    QRadioButton* textMode_;
    QRadioButton* sketchMode_;
    QRadioButton* inpaintMode_;
    QCheckBox* keepUnmasked_;
    QSpinBox* maskBlur_;
    QCheckBox* onlyMasked_;
    QSpinBox* maskPadding_;
    ValueSlider* steps_;
    ValueSlider* guidance_;
    ValueSlider* strength_;
    QLineEdit* seed_;
    QPushButton* dice_;
    QCheckBox* lock_;
    QComboBox* sampler_;   // the family, by its own name ("euler")
    QComboBox* schedule_;  // A1111's schedule type: a NoiseSchedule, where the family has it
    QDoubleSpinBox* eta_;
    QSpinBox* clipSkip_;
    QComboBox* syntax_;  // how the prompts are read (A1111's syntax first: the studio's default)
    QDoubleSpinBox* hiresScale_;
    QDoubleSpinBox* hiresStrength_;
    QSpinBox* hiresSteps_;
    QComboBox* hiresUpscaler_;  // "Lanczos" or A1111's latent upscalers
    QLineEdit* refiner_;        // SDXL's refiner folder (empty: none)
    QDoubleSpinBox* refinerSwitch_;
    QDoubleSpinBox* aesthetic_;
    QDoubleSpinBox* negativeAesthetic_;
    bool modelIsRefiner_ = false;
    std::function<void()> enableRefiner_;  // the hires and refiner rows' states
    std::vector<ControlUnit*> controlUnits_;
    QVBoxLayout* controlLayout_;
    QToolButton* addControl_;
    QSpinBox* width_;
    QSpinBox* height_;
    QSpinBox* batch_;
    QTableWidget* loras_;
    QPushButton* generate_;
    QPushButton* cancel_;
    QCheckBox* live_;
};

}  // namespace sds::ui
