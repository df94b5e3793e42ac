#pragma once
// The parameter panel: prompt and negative prompt with token counters, text / sketch / inpaint
// mode, steps, guidance, strength, seed (random or locked), sampler (with DDIM's eta), clip skip,
// how the prompts are read (A1111's syntax or plain), size and batch count, the hires fix, SDXL's
// refiner, a ControlNet that reads the sketch canvas, LoRAs with their weights; Generate, Cancel
// and the Live toggle. A Styles menu merges A1111's prompt styles into the prompts and saves them;
// a Networks menu puts the LoRA and embedding folders' files into the prompts as A1111's extra
// networks do.
#include <QWidget>

#include <functional>
#include <memory>

#include "sds/generation_request.h"
#include "sds/model_folder.h"

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLineEdit;
class QPushButton;
class QRadioButton;
class QSlider;
class QSpinBox;
class QTableWidget;
class QToolButton;

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

  Q_SIGNALS:
    void generateRequested();
    void cancelRequested();
    void liveChanged(bool on);
    // Guidance, strength or a LoRA's weight moved by the person (for live regeneration).
    void liveParameterMoved();
    void sizeChanged(QSize size);
    void modeChanged(Mode mode);
    // The ControlNet row's eye: show what the ControlNet would see of the canvas.
    void controlPreviewRequested();

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
    std::function<void()> enableRefiner_;  // the hires, refiner and ControlNet rows' states
    QLineEdit* controlnet_;  // a ControlNet folder or file (empty: none); reads the canvas
    QDoubleSpinBox* controlScale_;
    QDoubleSpinBox* controlStart_;
    QDoubleSpinBox* controlEnd_;
    // The preprocessor (ControlRef::preprocessor): "invert" (the canvas's dark lines on white
    // made white on black, the default), "none" (a map put on the canvas), "canny" (a picture's
    // edges, with the thresholds below).
    QComboBox* controlPreprocessor_;
    QSpinBox* cannyLow_;
    QSpinBox* cannyHigh_;
    QSpinBox* width_;
    QSpinBox* height_;
    QSpinBox* batch_;
    QTableWidget* loras_;
    QPushButton* generate_;
    QPushButton* cancel_;
    QCheckBox* live_;
};

}  // namespace sds::ui
