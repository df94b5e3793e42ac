#include "parameter_panel.h"

#include <QButtonGroup>
#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QEvent>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QInputDialog>
#include <QLabel>
#include <QLineEdit>
#include <QMenu>
#include <QMessageBox>
#include <QPushButton>
#include <QRadioButton>
#include <QRandomGenerator>
#include <QRegularExpressionValidator>
#include <QSignalBlocker>
#include <QSlider>
#include <QSpinBox>
#include <QTableWidget>
#include <QTextCursor>
#include <QToolButton>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

#include "networks.h"
#include "prompt_edit.h"
#include "sds/error.h"
#include "sds/scheduler.h"
#include "styles.h"

namespace sds::ui {

namespace {
// A LoRA row's UNet weight (A1111's <lora:NAME:TE:UNET>), on its name item, where it has one.
constexpr int kUnetWeightRole = Qt::UserRole + 1;

// A spin box for a number of the request: its object name, range, step, decimals, value and
// tooltip.
QDoubleSpinBox* numberBox(const char* name, double min, double max, double step, int decimals,
                          double value, const QString& tip) {
    auto* box = new QDoubleSpinBox;
    box->setObjectName(name);
    box->setRange(min, max);
    box->setSingleStep(step);
    box->setDecimals(decimals);
    box->setValue(value);
    box->setToolTip(tip);
    return box;
}
}  // namespace

ValueSlider::ValueSlider(double min, double max, double step, int decimals, double value,
                         QWidget* parent)
    : QWidget(parent), min_(min), step_(step), default_(value) {
    slider_ = new QSlider(Qt::Horizontal);
    slider_->setRange(0, static_cast<int>(std::lround((max - min) / step)));
    slider_->installEventFilter(this);
    spin_ = new QDoubleSpinBox;
    spin_->setRange(min, max);
    spin_->setSingleStep(step);
    spin_->setDecimals(decimals);
    spin_->setKeyboardTracking(false);
    spin_->setMinimumWidth(70);
    auto* h = new QHBoxLayout(this);
    h->setContentsMargins(0, 0, 0, 0);
    h->addWidget(slider_, 1);
    h->addWidget(spin_);
    setValue(value);
    connect(slider_, &QSlider::valueChanged, this, [this](int v) {
        const double value = min_ + v * step_;
        if (std::abs(spin_->value() - value) > step_ / 2) {
            QSignalBlocker b(spin_);
            spin_->setValue(value);
        }
        Q_EMIT valueChanged(value);
    });
    connect(slider_, &QSlider::actionTriggered, this, [this] {
        // actionTriggered fires before the value moves; report after it did.
        QMetaObject::invokeMethod(
            this, [this] { Q_EMIT sliderMoved(this->value()); }, Qt::QueuedConnection);
    });
    connect(slider_, &QSlider::sliderReleased, this, [this] { Q_EMIT sliderMoved(this->value()); });
    connect(spin_, &QDoubleSpinBox::valueChanged, this, [this](double v) {
        QSignalBlocker b(slider_);
        slider_->setValue(static_cast<int>(std::lround((v - min_) / step_)));
        Q_EMIT valueChanged(v);
        Q_EMIT sliderMoved(v);
    });
}

double ValueSlider::value() const {
    return spin_->value();
}

void ValueSlider::setValue(double v) {
    QSignalBlocker a(spin_), b(slider_);
    spin_->setValue(v);
    slider_->setValue(static_cast<int>(std::lround((v - min_) / step_)));
}

bool ValueSlider::eventFilter(QObject* o, QEvent* e) {
    if (o == slider_ && e->type() == QEvent::MouseButtonDblClick) {
        setValue(default_);
        Q_EMIT valueChanged(default_);
        Q_EMIT sliderMoved(default_);
        return true;
    }
    return QWidget::eventFilter(o, e);
}

ControlUnit::ControlUnit(int index, QWidget* parent) : QWidget(parent), index_(index) {
    const ControlRef control;
    model_ = new QLineEdit;
    model_->setPlaceholderText(tr("off (a ControlNet folder or file)"));
    model_->setClearButtonEnabled(true);
    model_->setToolTip(
        tr("A ControlNet (scribble, canny, depth, ...: a diffusers ControlNetModel folder, or "
           "one .safetensors or .pth file as A1111's ControlNet extension loads) or a "
           "T2I-Adapter (a diffusers T2IAdapter folder or a t2iadapter_*.pth file) that reads %1 "
           "and guides the image to "
           "follow it")
            .arg(index == 0 ? tr("the canvas")
                            : tr("its picture (the canvas where none is named)")));
    auto* pick = new QToolButton;
    pick->setText(QString::fromUtf8("…"));
    pick->setToolTip(tr("Choose the ControlNet: a folder or a file"));
    pick->setPopupMode(QToolButton::InstantPopup);
    auto* menu = new QMenu(pick);
    menu->addAction(tr("Folder (diffusers)…"), this, [this] {
        const QString dir =
            QFileDialog::getExistingDirectory(this, tr("ControlNet folder"), model_->text());
        if (!dir.isEmpty()) {
            model_->setText(dir);
        }
    });
    menu->addAction(tr("File (.safetensors, .pth)…"), this, [this] {
        const QString file =
            QFileDialog::getOpenFileName(this, tr("ControlNet file"), model_->text(),
                                         tr("ControlNet files (*.safetensors *.pth *.ckpt *.bin)"));
        if (!file.isEmpty()) {
            model_->setText(file);
        }
    });
    pick->setMenu(menu);
    scale_ = numberBox("controlScale", 0, 5, 0.05, 2, control.scale,
                       tr("How strongly the ControlNet guides (its residuals' scale; A1111's "
                          "Weight)"));
    start_ = numberBox("controlStart", 0, 0.99, 0.05, 2, control.start,
                       tr("The part of the way where the ControlNet starts guiding"));
    end_ = numberBox("controlEnd", 0.01, 1, 0.05, 2, control.end,
                     tr("The part of the way where it stops"));
    preprocessor_ = new QComboBox;
    preprocessor_->addItem(tr("invert (a sketch)"), "invert");
    preprocessor_->addItem(tr("none (a map)"), "none");
    preprocessor_->addItem(tr("canny (edges)"), "canny");
    preprocessor_->addItem(tr("binary (dark parts)"), "binary");
    preprocessor_->addItem(tr("depth (Depth Anything)"), "depth");
    preprocessor_->addItem(tr("lineart_standard (a picture's lines)"), "lineart_standard");
    preprocessor_->setToolTip(
        tr("What the ControlNet gets of its picture: invert makes dark lines on white the "
           "white lines on black that scribble and line-art ControlNets read; none gives it as "
           "it is (an edge, depth or pose map); canny finds a picture's edges, as OpenCV's "
           "Canny (A1111's canny preprocessor), for canny ControlNets; binary makes a picture's "
           "dark parts white on black, up to its threshold (A1111's binary), for scribble "
           "ControlNets; depth estimates a picture's depth map, near bright, with a Depth "
           "Anything model (A1111's depth_anything), for depth ControlNets; lineart_standard "
           "draws a picture's dark lines white on black (A1111's lineart_standard, from white "
           "background and black line), for line-art ControlNets"));
    const auto cannyBox = [](double value, const QString& tip) {
        auto* box = new QSpinBox;
        box->setRange(0, 2040);  // the largest gradient there is
        box->setValue(static_cast<int>(value));
        box->setToolTip(tip);
        return box;
    };
    cannyLow_ = cannyBox(control.canny_low,
                         tr("Canny's low threshold: weaker edges are dropped, stronger ones kept "
                            "where they touch a strong edge (A1111's Threshold A)"));
    cannyHigh_ =
        cannyBox(control.canny_high, tr("Canny's high threshold: edges stronger than this are kept "
                                        "(A1111's Threshold B)"));
    binaryThreshold_ = new QSpinBox;
    binaryThreshold_->setRange(0, 255);
    binaryThreshold_->setSpecialValueText(tr("Otsu"));  // 0 (255 too): Otsu's level
    binaryThreshold_->setValue(control.binary_threshold);
    binaryThreshold_->setToolTip(
        tr("Binary's threshold: grey levels up to it turn white, the lighter ones black; Otsu "
           "(0, or 255) finds the level that best splits the picture (A1111's Threshold A)"));
    depthModel_ = new QLineEdit(QString::fromStdString(control.depth_model));
    depthModel_->setPlaceholderText(tr("a Depth Anything folder (Depth-Anything-V2-Small-hf)"));
    depthModel_->setClearButtonEnabled(true);
    depthModel_->setToolTip(
        tr("The depth preprocessor's model: a transformers Depth Anything folder (config.json, "
           "model.safetensors), V1 or V2, such as depth-anything/Depth-Anything-V2-Small-hf"));
    auto* pickDepth = new QToolButton;
    pickDepth->setText(QString::fromUtf8("…"));
    pickDepth->setToolTip(tr("Choose the Depth Anything folder"));
    connect(pickDepth, &QToolButton::clicked, this, [this] {
        const QString dir = QFileDialog::getExistingDirectory(this, tr("Depth Anything folder"),
                                                              depthModel_->text());
        if (!dir.isEmpty()) {
            depthModel_->setText(dir);
        }
    });
    depthRow_ = new QWidget;
    auto* depthLayout = new QHBoxLayout(depthRow_);
    depthLayout->setContentsMargins(0, 0, 0, 0);
    depthLayout->addWidget(new QLabel(tr("depth model")));
    depthLayout->addWidget(depthModel_, 1);
    depthLayout->addWidget(pickDepth);
    preview_ = new QToolButton;
    preview_->setText(tr("Preview"));
    preview_->setToolTip(tr("Show what the ControlNet gets of its picture"));
    connect(preview_, &QToolButton::clicked, this, &ControlUnit::previewRequested);

    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    QToolButton* pickImage = nullptr;
    if (index > 0) {
        title_ = new QLabel;
        image_ = new QLineEdit;
        image_->setPlaceholderText(tr("its picture (none: the canvas)"));
        image_->setClearButtonEnabled(true);
        image_->setToolTip(
            tr("The picture this ControlNet reads (a map, a sketch or a photo "
               "for its preprocessor); none: the canvas"));
        pickImage = new QToolButton;
        pickImage->setText(QString::fromUtf8("…"));
        pickImage->setToolTip(tr("Choose its picture"));
        connect(pickImage, &QToolButton::clicked, this, [this] {
            const QString file =
                QFileDialog::getOpenFileName(this, tr("ControlNet picture"), image_->text(),
                                             tr("Pictures (*.png *.jpg *.jpeg *.webp *.bmp)"));
            if (!file.isEmpty()) {
                image_->setText(file);
            }
        });
        remove_ = new QToolButton;
        remove_->setText(QString::fromUtf8("✕"));
        remove_->setToolTip(tr("Remove this ControlNet"));
        connect(remove_, &QToolButton::clicked, this, &ControlUnit::removeRequested);
    }
    auto* row = new QHBoxLayout;
    if (title_ != nullptr) {
        row->addWidget(title_);
    }
    row->addWidget(model_, 1);
    row->addWidget(pick);
    row->addWidget(new QLabel(tr("weight")));
    row->addWidget(scale_);
    if (remove_ != nullptr) {
        row->addWidget(remove_);
    }
    layout->addLayout(row);
    if (image_ != nullptr) {
        auto* pictureRow = new QHBoxLayout;
        pictureRow->addWidget(new QLabel(tr("picture")));
        pictureRow->addWidget(image_, 1);
        pictureRow->addWidget(pickImage);
        layout->addLayout(pictureRow);
    }
    auto* span = new QHBoxLayout;
    span->addWidget(preprocessor_);
    span->addWidget(cannyLow_);
    span->addWidget(cannyHigh_);
    span->addWidget(binaryThreshold_);
    span->addWidget(preview_);
    span->addStretch();
    span->addWidget(new QLabel(tr("from")));
    span->addWidget(start_);
    span->addWidget(new QLabel(tr("to")));
    span->addWidget(end_);
    layout->addLayout(span);
    layout->addWidget(depthRow_);
    connect(model_, &QLineEdit::textChanged, this, [this] {
        updateEnabled();
        Q_EMIT changed();
    });
    connect(preprocessor_, &QComboBox::currentIndexChanged, this, &ControlUnit::updateEnabled);
    setIndex(index);
    updateEnabled();
}

void ControlUnit::setIndex(int index) {
    index_ = index;
    const QString n = index == 0 ? QString() : QString::number(index + 1);
    model_->setObjectName("controlnet" + n);
    scale_->setObjectName("controlScale" + n);
    start_->setObjectName("controlStart" + n);
    end_->setObjectName("controlEnd" + n);
    preprocessor_->setObjectName("controlPreprocessor" + n);
    cannyLow_->setObjectName("cannyLow" + n);
    cannyHigh_->setObjectName("cannyHigh" + n);
    binaryThreshold_->setObjectName("binaryThreshold" + n);
    depthModel_->setObjectName("depthModel" + n);
    preview_->setObjectName("controlPreview" + n);
    if (image_ != nullptr) {
        title_->setText(tr("%1.").arg(index + 1));
        image_->setObjectName("controlImage" + n);
        remove_->setObjectName("controlRemove" + n);
    }
}

void ControlUnit::updateEnabled() {
    const bool on = !model_->text().trimmed().isEmpty();
    for (QWidget* w :
         std::initializer_list<QWidget*>{scale_, start_, end_, preprocessor_, preview_}) {
        w->setEnabled(on);
    }
    const bool canny = preprocessor_->currentData().toString() == "canny";
    cannyLow_->setEnabled(on && canny);
    cannyHigh_->setEnabled(on && canny);
    binaryThreshold_->setEnabled(on && preprocessor_->currentData().toString() == "binary");
    depthRow_->setVisible(preprocessor_->currentData().toString() == "depth");
    depthRow_->setEnabled(on);
}

std::optional<ControlRef> ControlUnit::control() const {
    const QString net = model_->text().trimmed();
    if (net.isEmpty()) {
        return std::nullopt;
    }
    ControlRef c;
    c.model = net.toStdString();
    const QString image = image_ != nullptr ? image_->text().trimmed() : QString();
    c.image = image.isEmpty() ? "canvas" : image.toStdString();
    c.scale = scale_->value();
    c.start = start_->value();
    c.end = end_->value();
    c.preprocessor = preprocessor_->currentData().toString().toStdString();
    if (c.preprocessor == "canny") {  // else the defaults, as the request's JSON keeps them
        c.canny_low = cannyLow_->value();
        c.canny_high = cannyHigh_->value();
    } else if (c.preprocessor == "binary") {
        c.binary_threshold = binaryThreshold_->value();
    } else if (c.preprocessor == "depth") {
        c.depth_model = depthModel_->text().trimmed().toStdString();
    }
    return c;
}

void ControlUnit::setControl(const ControlRef& c) {
    model_->setText(QString::fromStdString(c.model));
    if (image_ != nullptr) {
        image_->setText(c.image == "canvas" ? QString() : QString::fromStdString(c.image));
    }
    scale_->setValue(c.scale);
    start_->setValue(c.start);
    end_->setValue(c.end);
    if (!c.model.empty()) {
        const int k = preprocessor_->findData(QString::fromStdString(c.preprocessor));
        preprocessor_->setCurrentIndex(std::max(k, 0));
        cannyLow_->setValue(static_cast<int>(std::lround(c.canny_low)));
        cannyHigh_->setValue(static_cast<int>(std::lround(c.canny_high)));
        binaryThreshold_->setValue(c.binary_threshold);
        if (!c.depth_model.empty()) {  // else the folder chosen before stays
            depthModel_->setText(QString::fromStdString(c.depth_model));
        }
    }
}

namespace {
QString negativePlaceholder() {
    return ParameterPanel::tr("Negative prompt: what to avoid");
}
}  // namespace

ParameterPanel::ParameterPanel(QWidget* parent) : QWidget(parent) {
    const GenerationRequest defaults;
    prompt_ = new PromptEdit(tr("Prompt: what the image shows"));
    negative_ = new PromptEdit(negativePlaceholder());
    prompt_->setComposable(true);
    prompt_->setObjectName("prompt");
    negative_->setObjectName("negative");
    prompt_->setMinimumHeight(70);
    prompt_->setMaximumHeight(160);
    negative_->setMaximumHeight(70);

    textMode_ = new QRadioButton(tr("Text"));
    sketchMode_ = new QRadioButton(tr("Sketch (img2img)"));
    inpaintMode_ = new QRadioButton(tr("Inpaint"));
    inpaintMode_->setObjectName("inpaintMode");
    inpaintMode_->setToolTip(
        tr("Repaint the masked part of the canvas (paint the mask with the canvas's Mask tool): "
           "with an inpainting model, or any SD 1.x, 2.x or SDXL model"));
    textMode_->setChecked(true);
    auto* modeGroup = new QButtonGroup(this);
    modeGroup->addButton(textMode_);
    modeGroup->addButton(sketchMode_);
    modeGroup->addButton(inpaintMode_);
    auto* modeRow = new QHBoxLayout;
    modeRow->addWidget(textMode_);
    modeRow->addWidget(sketchMode_);
    modeRow->addWidget(inpaintMode_);
    modeRow->addStretch();

    steps_ = new ValueSlider(1, 150, 1, 0, 25);
    guidance_ = new ValueSlider(1, 20, 0.5, 1, defaults.guidance_scale);
    strength_ = new ValueSlider(0.05, 1, 0.05, 2, defaults.strength);
    strength_->setEnabled(false);

    seed_ = new QLineEdit(QString::number(defaults.seed));
    seed_->setValidator(new QRegularExpressionValidator(QRegularExpression("[0-9]{1,18}"), seed_));
    dice_ = new QPushButton(QString::fromUtf8("\u2684"));
    dice_->setToolTip(tr("A new random seed"));
    dice_->setFixedWidth(32);
    lock_ = new QCheckBox(tr("Lock"));
    lock_->setToolTip(tr("Keep this seed for the next generations"));
    auto* seedRow = new QHBoxLayout;
    seedRow->addWidget(seed_, 1);
    seedRow->addWidget(dice_);
    seedRow->addWidget(lock_);

    sampler_ = new QComboBox;
    sampler_->setObjectName("sampler");
    for (const auto& name : sampler_names()) {
        const Sampler s = sampler_from_name(name);
        if (sampler_schedule(s) != NoiseSchedule::Default) {
            continue;  // a twin: the schedule combo picks it
        }
        sampler_->addItem(sampler_a1111(s), QString::fromStdString(name));
        if (s == Sampler::Lcm) {
            sampler_->setItemData(sampler_->count() - 1,
                                  tr("For a model with an LCM-LoRA: 2 to 8 steps at guidance 1 "
                                     "to 2 (at most the model's original_inference_steps, 50 "
                                     "by default)"),
                                  Qt::ToolTipRole);
        }
        if (s == Sampler::DpmPP2S) {
            sampler_->setItemData(sampler_->count() - 1,
                                  tr("DPM-Solver++ singlestep: what diffusers gives for A1111's "
                                     "DPM++ SDE, without its random noise"),
                                  Qt::ToolTipRole);
        }
    }
    sampler_->setCurrentIndex(sampler_->findData("euler_a"));
    schedule_ = new QComboBox;
    schedule_->setObjectName("schedule");
    const std::pair<NoiseSchedule, QString> schedules[] = {
        {NoiseSchedule::Default, tr("Default")},
        {NoiseSchedule::Karras, tr("Karras")},
        {NoiseSchedule::Exponential, tr("Exponential")},
        {NoiseSchedule::Beta, tr("Beta")}};
    for (const auto& [schedule, label] : schedules) {
        schedule_->addItem(label, static_cast<int>(schedule));
    }
    schedule_->setItemData(0,
                           tr("The noise levels at the sampler's own timesteps (or the schedule "
                              "the model's scheduler config asks for)"),
                           Qt::ToolTipRole);
    schedule_->setItemData(1, tr("Karras et al.'s spacing: more steps at low noise"),
                           Qt::ToolTipRole);
    schedule_->setItemData(2, tr("Noise levels evenly spaced in log"), Qt::ToolTipRole);
    schedule_->setItemData(3, tr("Beta(0.6, 0.6) quantiles: more steps at both ends"),
                           Qt::ToolTipRole);
    schedule_->setToolTip(tr("Schedule type: how the noise levels are spaced"));
    const auto enableSchedule = [this] {
        const Sampler family = sampler_from_name(sampler_->currentData().toString().toStdString());
        const bool twins = with_schedule(family, NoiseSchedule::Karras).has_value();
        schedule_->setEnabled(twins);
        if (!twins) {
            schedule_->setCurrentIndex(0);
        }
    };
    connect(sampler_, &QComboBox::currentIndexChanged, this, enableSchedule);
    enableSchedule();
    eta_ = new QDoubleSpinBox;
    eta_->setObjectName("eta");
    eta_->setRange(0, 1);
    eta_->setSingleStep(0.1);
    eta_->setDecimals(2);
    eta_->setValue(defaults.eta);
    eta_->setToolTip(tr("DDIM's eta: 0 is deterministic DDIM, 1 adds DDPM's noise at every step"));
    auto* samplerRow = new QHBoxLayout;
    samplerRow->addWidget(sampler_, 1);
    samplerRow->addWidget(schedule_);
    samplerRow->addWidget(new QLabel(tr("eta")));
    samplerRow->addWidget(eta_);
    const auto enableEta = [this] { eta_->setEnabled(sampler_->currentData() == "ddim"); };
    connect(sampler_, &QComboBox::currentIndexChanged, this, enableEta);
    enableEta();
    keepUnmasked_ = new QCheckBox(tr("Keep the rest"));
    keepUnmasked_->setObjectName("keepUnmasked");
    keepUnmasked_->setChecked(defaults.keep_unmasked);
    keepUnmasked_->setEnabled(false);
    keepUnmasked_->setToolTip(
        tr("Inpaint: put the canvas's own pixels back outside the mask, so only the masked part "
           "changes (otherwise the whole image comes from the VAE, as in diffusers)"));
    maskBlur_ = new QSpinBox;
    maskBlur_->setObjectName("maskBlur");
    maskBlur_->setRange(0, 64);  // what GenerationRequest::validate allows
    maskBlur_->setValue(defaults.mask_blur);
    maskBlur_->setSuffix(tr(" px"));
    maskBlur_->setEnabled(false);
    maskBlur_->setToolTip(
        tr("Inpaint: blur the mask first (a Gaussian of this radius), rounding "
           "its shape and softening the edge where the rest is kept"));
    onlyMasked_ = new QCheckBox(tr("Only masked"));
    onlyMasked_->setObjectName("onlyMasked");
    onlyMasked_->setEnabled(false);
    onlyMasked_->setToolTip(
        tr("Repaint only the box around the mask (plus the padding) at the size below, for "
           "detail in a small part of a big picture; the result is put back into the whole "
           "picture"));
    maskPadding_ = new QSpinBox;
    maskPadding_->setObjectName("maskPadding");
    maskPadding_->setRange(0, 4096);
    maskPadding_->setValue(32);  // A1111's default
    maskPadding_->setSuffix(tr(" px"));
    maskPadding_->setEnabled(false);
    maskPadding_->setToolTip(tr("How much of the picture around the mask the model sees"));
    connect(onlyMasked_, &QCheckBox::toggled, maskPadding_, &QWidget::setEnabled);
    auto* inpaintRow = new QHBoxLayout;
    inpaintRow->addWidget(keepUnmasked_);
    inpaintRow->addStretch();
    inpaintRow->addWidget(new QLabel(tr("Mask blur")));
    inpaintRow->addWidget(maskBlur_);
    auto* onlyMaskedRow = new QHBoxLayout;
    onlyMaskedRow->addWidget(onlyMasked_);
    onlyMaskedRow->addStretch();
    onlyMaskedRow->addWidget(new QLabel(tr("padding")));
    onlyMaskedRow->addWidget(maskPadding_);
    // A1111's hires fix (text mode): the images scaled up and made again from there.
    hiresScale_ = new QDoubleSpinBox;
    hiresScale_->setObjectName("hiresScale");
    hiresScale_->setRange(1, 4);  // what GenerationRequest::validate allows
    hiresScale_->setSingleStep(0.25);
    hiresScale_->setDecimals(2);
    hiresScale_->setPrefix(QString::fromUtf8("×"));
    hiresScale_->setSpecialValueText(tr("off"));
    hiresScale_->setValue(defaults.hires_scale);
    hiresScale_->setToolTip(
        tr("Hires fix: the images made at the size below are scaled by this and made again "
           "from there as img2img, for detail at a size the model was not trained for"));
    hiresUpscaler_ = new QComboBox;
    hiresUpscaler_->setObjectName("hiresUpscaler");
    for (const auto& name : hires_upscalers()) {
        hiresUpscaler_->addItem(QString::fromStdString(name));
    }
    hiresUpscaler_->setCurrentText(QString::fromStdString(defaults.hires_upscaler));
    hiresUpscaler_->setToolTip(
        tr("How the first pass is scaled: Lanczos scales the images; the Latent ones scale the "
           "latents, with no VAE pass between (A1111's upscalers of these names)"));
    hiresStrength_ = numberBox("hiresStrength", 0.01, 1, 0.05, 2, defaults.hires_strength,
                               tr("How much the second pass changes the scaled images"));
    hiresSteps_ = new QSpinBox;
    hiresSteps_->setObjectName("hiresSteps");
    hiresSteps_->setRange(0, 1000);
    hiresSteps_->setSpecialValueText(tr("same"));
    hiresSteps_->setValue(defaults.hires_steps);
    hiresSteps_->setToolTip(tr("The second pass's steps (same: the steps above)"));
    auto* hiresRow = new QHBoxLayout;
    hiresRow->addWidget(hiresScale_);
    hiresRow->addWidget(hiresUpscaler_, 1);
    auto* hiresPassRow = new QHBoxLayout;
    hiresPassRow->addWidget(new QLabel(tr("strength")));
    hiresPassRow->addWidget(hiresStrength_);
    hiresPassRow->addWidget(new QLabel(tr("steps")));
    hiresPassRow->addWidget(hiresSteps_);
    // SDXL's refiner (not with the hires fix or inpainting only the masked area): it takes over
    // at "switch at" of the way, as diffusers' denoising_end/denoising_start (A1111's Refiner).
    refiner_ = new QLineEdit;
    refiner_->setObjectName("refiner");
    refiner_->setPlaceholderText(tr("off (an SDXL refiner folder)"));
    refiner_->setClearButtonEnabled(true);
    refiner_->setToolTip(
        tr("An SDXL refiner (a diffusers folder) that takes over from the model at \"switch "
           "at\" of the way, on the same latents and seeds, as diffusers' ensemble of expert "
           "denoisers and A1111's Refiner"));
    auto* pickRefiner = new QToolButton;
    pickRefiner->setText(QString::fromUtf8("…"));
    pickRefiner->setToolTip(tr("Choose the refiner's folder"));
    connect(pickRefiner, &QToolButton::clicked, this, [this] {
        const QString dir =
            QFileDialog::getExistingDirectory(this, tr("SDXL refiner folder"), refiner_->text());
        if (!dir.isEmpty()) {
            refiner_->setText(dir);
        }
    });
    // The ranges: what GenerationRequest::validate allows.
    refinerSwitch_ = numberBox("refinerSwitch", 0.01, 0.99, 0.05, 2, defaults.refiner_switch_at,
                               tr("The part of the way the model goes before the refiner"));
    // A refiner's aesthetic scores (the model's, when it is a refiner, or the Refiner row's).
    const auto scoreBox = [](const char* name, double value, const QString& tip) {
        return numberBox(name, 0, 10, 0.5, 1, value, tip);
    };
    aesthetic_ =
        scoreBox("aestheticScore", defaults.aesthetic_score,
                 tr("The aesthetic score an SDXL refiner is told the prompt's images have "
                    "(diffusers' aesthetic_score, A1111's \"SDXL high aesthetic score\")"));
    negativeAesthetic_ =
        scoreBox("negativeAestheticScore", defaults.negative_aesthetic_score,
                 tr("The negative prompt's (diffusers' negative_aesthetic_score, A1111's "
                    "\"SDXL low aesthetic score\")"));
    auto* aestheticRow = new QHBoxLayout;
    aestheticRow->addWidget(new QLabel(tr("aesthetic")));
    aestheticRow->addWidget(aesthetic_);
    aestheticRow->addWidget(new QLabel(tr("negative")));
    aestheticRow->addWidget(negativeAesthetic_);
    aestheticRow->addStretch();
    auto* refinerRow = new QHBoxLayout;
    refinerRow->addWidget(refiner_, 1);
    refinerRow->addWidget(pickRefiner);
    refinerRow->addWidget(new QLabel(tr("switch at")));
    refinerRow->addWidget(refinerSwitch_);
    // ControlNets (every mode; with the refiner, for the model's steps): the first reads the
    // canvas, a later one its own picture.
    auto* controls = new QWidget;
    controlLayout_ = new QVBoxLayout(controls);
    controlLayout_->setContentsMargins(0, 0, 0, 0);
    addControl_ = new QToolButton;
    addControl_->setObjectName("addControlnet");
    addControl_->setText(tr("+ ControlNet"));
    addControl_->setToolTip(
        tr("Another ControlNet, with its own picture, guiding together with "
           "the ones above (their residuals added up)"));
    controlLayout_->addWidget(addControl_, 0, Qt::AlignLeft);
    connect(addControl_, &QToolButton::clicked, this, [this] { addControlUnit(); });
    addControlUnit();
    const auto enableHires = [this] {
        const bool text = mode() == Mode::Text;
        const bool refined = !refiner_->text().trimmed().isEmpty();
        hiresScale_->setEnabled(text && !refined);
        const bool on = text && !refined && hiresScale_->value() > 1;
        hiresStrength_->setEnabled(on);
        hiresSteps_->setEnabled(on);
        hiresUpscaler_->setEnabled(on);
        // (the hires fix applies in text mode alone; only the masked area is not refined)
        const bool onlyMasked = mode() == Mode::Inpaint && onlyMasked_->isChecked();
        refiner_->setEnabled(!onlyMasked && !(text && hiresScale_->value() > 1));
        refinerSwitch_->setEnabled(refiner_->isEnabled() && refined);
        const bool scored = modelIsRefiner_ || refinerSwitch_->isEnabled();
        aesthetic_->setEnabled(scored);
        negativeAesthetic_->setEnabled(scored);
    };
    enableRefiner_ = enableHires;
    connect(hiresScale_, &QDoubleSpinBox::valueChanged, this, enableHires);
    connect(refiner_, &QLineEdit::textChanged, this, enableHires);
    connect(onlyMasked_, &QCheckBox::toggled, this, enableHires);
    enableHires();
    clipSkip_ = new QSpinBox;
    clipSkip_->setObjectName("clipSkip");
    clipSkip_->setRange(0, 11);
    clipSkip_->setValue(defaults.clip_skip);
    clipSkip_->setSpecialValueText(tr("0 (none)"));
    clipSkip_->setToolTip(
        tr("Text encoder layers to skip at the end, as diffusers counts them: 1 is A1111's "
           "\"Clip skip: 2\""));
    syntax_ = new QComboBox;
    syntax_->setObjectName("promptSyntax");
    syntax_->addItem(tr("A1111"), prompt_syntax_name(PromptSyntax::A1111));
    syntax_->setItemData(0,
                         tr("(word) weighs a word by 1.1, (word:1.3) by 1.3, [word] by 1/1.1; "
                            "\\( is a bracket; BREAK starts a new chunk; prompts past 75 "
                            "tokens are read in chunks of 75. Ctrl+Up / Ctrl+Down weigh the "
                            "word at the cursor"),
                         Qt::ToolTipRole);
    syntax_->addItem(tr("A1111, no norm"), prompt_syntax_name(PromptSyntax::A1111NoNorm));
    syntax_->setItemData(1,
                         tr("A1111's syntax with its Emphasis \"No norm\": the weights without "
                            "keeping the mean (said to suit SDXL)"),
                         Qt::ToolTipRole);
    syntax_->addItem(tr("Plain (diffusers)"), prompt_syntax_name(PromptSyntax::Plain));
    syntax_->setItemData(2,
                         tr("The prompts as typed, brackets and all, cut after 75 tokens: what "
                            "diffusers' pipelines and sdstudio-cli (by default) do"),
                         Qt::ToolTipRole);
    syntax_->setToolTip(tr("How the prompts are read"));
    connect(syntax_, &QComboBox::currentIndexChanged, this, [this] {
        prompt_->setSyntax(promptSyntax());
        negative_->setSyntax(promptSyntax());
    });
    prompt_->setSyntax(promptSyntax());
    negative_->setSyntax(promptSyntax());
    auto* textRow = new QHBoxLayout;
    textRow->addWidget(clipSkip_);
    textRow->addWidget(new QLabel(tr("Prompts")));
    textRow->addWidget(syntax_, 1);

    width_ = new QSpinBox;
    height_ = new QSpinBox;
    for (QSpinBox* s : {width_, height_}) {
        s->setRange(64, kMaxSide);
        s->setSingleStep(8);
        s->setValue(512);
        s->setKeyboardTracking(false);
        connect(s, &QSpinBox::valueChanged, this, [this] {
            Q_EMIT sizeChanged(QSize(width_->value() / 8 * 8, height_->value() / 8 * 8));
        });
    }
    batch_ = new QSpinBox;
    batch_->setObjectName("batch");
    batch_->setRange(1, 16);
    auto* sizeRow = new QHBoxLayout;
    sizeRow->addWidget(width_);
    sizeRow->addWidget(new QLabel(QString::fromUtf8("\u00d7")));
    sizeRow->addWidget(height_);
    sizeRow->addWidget(new QLabel(tr("batch")));
    sizeRow->addWidget(batch_);

    loras_ = new QTableWidget(0, 2);
    loras_->setObjectName("loras");
    loras_->setHorizontalHeaderLabels({tr("LoRA"), tr("Weight")});
    loras_->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
    loras_->horizontalHeader()->setSectionResizeMode(1, QHeaderView::ResizeToContents);
    loras_->verticalHeader()->hide();
    loras_->setSelectionBehavior(QAbstractItemView::SelectRows);
    loras_->setEditTriggers(QAbstractItemView::NoEditTriggers);
    loras_->setMaximumHeight(96);
    loras_->setToolTip(
        tr("LoRA files (kohya-ss/A1111 or diffusers format; LyCORIS LoHa, LoKr and full) merged "
           "into the model for the next generations; their changes add up"));
    auto* addLora = new QPushButton(tr("Add LoRA…"));
    addLora->setObjectName("addLora");
    auto* removeLora = new QPushButton(tr("Remove"));
    connect(addLora, &QPushButton::clicked, this, [this] {
        const QString file = QFileDialog::getOpenFileName(
            this, tr("Add a LoRA"), loraFolder_, tr("LoRA files (*.safetensors *.pt *.ckpt)"));
        if (!file.isEmpty()) {
            this->addLora({file.toStdString(), 1.0});
        }
    });
    connect(removeLora, &QPushButton::clicked, this, [this] {
        const int row = loras_->currentRow();
        if (row >= 0) {
            loras_->removeRow(row);
            Q_EMIT liveParameterMoved();
        }
    });
    auto* loraButtons = new QHBoxLayout;
    loraButtons->addWidget(addLora);
    loraButtons->addWidget(removeLora);
    loraButtons->addStretch();
    auto* loraBox = new QVBoxLayout;
    loraBox->addWidget(loras_);
    loraBox->addLayout(loraButtons);

    generate_ = new QPushButton(tr("Generate  (Ctrl+Enter)"));
    generate_->setDefault(true);
    cancel_ = new QPushButton(tr("Cancel (Esc)"));
    cancel_->setEnabled(false);
    live_ = new QCheckBox(tr("Live: regenerate when guidance, strength or the sketch change"));
    live_->setToolTip(tr("A LoRA's weight regenerates too; the newest change wins"));
    live_->setObjectName("live");

    auto* form = new QFormLayout;
    form->addRow(tr("Mode"), modeRow);
    form->addRow(tr("Steps"), steps_);
    form->addRow(tr("Guidance"), guidance_);
    form->addRow(tr("Strength"), strength_);
    form->addRow(tr("Inpaint"), inpaintRow);
    form->addRow(QString(), onlyMaskedRow);
    form->addRow(tr("Seed"), seedRow);
    form->addRow(tr("Sampler"), samplerRow);
    form->addRow(tr("Clip skip"), textRow);
    form->addRow(tr("Size"), sizeRow);
    form->addRow(tr("Hires fix"), hiresRow);
    form->addRow(QString(), hiresPassRow);
    form->addRow(tr("Refiner"), refinerRow);
    form->addRow(QString(), aestheticRow);
    form->addRow(tr("ControlNet"), controls);
    form->addRow(tr("LoRA"), loraBox);

    styles_ = new QToolButton;
    styles_->setObjectName("styles");
    styles_->setText(tr("Styles"));
    styles_->setToolTip(
        tr("Prompt styles (A1111's styles.csv): merge one into the prompts, or "
           "save the prompts as one"));
    styles_->setPopupMode(QToolButton::InstantPopup);
    styles_->setAutoRaise(true);
    auto* stylesMenu = new QMenu(styles_);
    stylesMenu->setToolTipsVisible(true);
    styles_->setMenu(stylesMenu);
    connect(stylesMenu, &QMenu::aboutToShow, this, &ParameterPanel::fillStylesMenu);
    networks_ = new QToolButton;
    networks_->setObjectName("networks");
    networks_->setText(tr("Networks"));
    networks_->setToolTip(
        tr("A1111's extra networks: the LoRA and embeddings folders' files (Settings). A click "
           "puts one into the prompt, a second takes it out; embeddings go into the prompt box "
           "last in focus"));
    networks_->setPopupMode(QToolButton::InstantPopup);
    networks_->setAutoRaise(true);
    auto* networksMenu = new QMenu(networks_);
    networksMenu->setToolTipsVisible(true);
    networks_->setMenu(networksMenu);
    connect(networksMenu, &QMenu::aboutToShow, this, &ParameterPanel::fillNetworksMenu);
    lastPrompt_ = prompt_;
    prompt_->installEventFilter(this);
    negative_->installEventFilter(this);
    auto* promptRow = new QHBoxLayout;
    promptRow->addWidget(new QLabel(tr("Prompt")));
    promptRow->addStretch();
    promptRow->addWidget(networks_);
    promptRow->addWidget(styles_);

    auto* v = new QVBoxLayout(this);
    v->addLayout(promptRow);
    v->addWidget(prompt_, 2);
    v->addWidget(new QLabel(tr("Negative prompt")));
    v->addWidget(negative_, 1);
    v->addLayout(form);
    auto* buttons = new QHBoxLayout;
    buttons->addWidget(generate_, 1);
    buttons->addWidget(cancel_);
    v->addLayout(buttons);
    v->addWidget(live_);
    v->addStretch();

    connect(generate_, &QPushButton::clicked, this, &ParameterPanel::generateRequested);
    connect(cancel_, &QPushButton::clicked, this, &ParameterPanel::cancelRequested);
    connect(live_, &QCheckBox::toggled, this, &ParameterPanel::liveChanged);
    connect(dice_, &QPushButton::clicked, this, [this] {
        seed_->setText(QString::number(QRandomGenerator::global()->bounded(1u << 31)));
    });
    connect(modeGroup, &QButtonGroup::buttonToggled, this,
            [this, enableHires](QAbstractButton*, bool on) {
                if (on) {
                    strength_->setEnabled(img2img());
                    keepUnmasked_->setEnabled(mode() == Mode::Inpaint);
                    maskBlur_->setEnabled(mode() == Mode::Inpaint);
                    onlyMasked_->setEnabled(mode() == Mode::Inpaint);
                    maskPadding_->setEnabled(mode() == Mode::Inpaint && onlyMasked_->isChecked());
                    enableHires();
                    Q_EMIT modeChanged(mode());
                }
            });
    connect(guidance_, &ValueSlider::sliderMoved, this, &ParameterPanel::liveParameterMoved);
    connect(strength_, &ValueSlider::sliderMoved, this, &ParameterPanel::liveParameterMoved);
}

namespace {
// The whole text of a prompt box replaced as one step of its undo history.
void replaceText(QPlainTextEdit* edit, const QString& text) {
    if (edit->toPlainText() == text) {
        return;
    }
    QTextCursor c(edit->document());
    c.beginEditBlock();
    c.select(QTextCursor::Document);
    c.insertText(text);
    c.endEditBlock();
}
}  // namespace

void ParameterPanel::setStylesFile(const QString& file) {
    stylesFile_ = file;
}

void ParameterPanel::applyStyle(const QString& name) {
    const auto styles = app::load_styles(stylesFile_.toStdString());
    const app::PromptStyle* style = app::find_style(styles, name.toStdString());
    if (style == nullptr) {
        throw Error(stylesFile_.toStdString() + ": no style '" + name.toStdString() + "'");
    }
    replaceText(prompt_, QString::fromStdString(app::merge_style(
                             style->prompt, prompt_->toPlainText().toStdString())));
    replaceText(negative_, QString::fromStdString(app::merge_style(
                               style->negative_prompt, negative_->toPlainText().toStdString())));
}

void ParameterPanel::saveStyle(const QString& name) {
    auto styles = app::load_styles(stylesFile_.toStdString());
    app::put_style(styles, {name.toStdString(), prompt_->toPlainText().toStdString(),
                            negative_->toPlainText().toStdString()});
    app::save_styles(stylesFile_.toStdString(), styles);
}

void ParameterPanel::deleteStyle(const QString& name) {
    auto styles = app::load_styles(stylesFile_.toStdString());
    app::remove_style(styles, name.toStdString());
    app::save_styles(stylesFile_.toStdString(), styles);
}

void ParameterPanel::setNetworkFolders(const QString& loraFolder, const QString& embeddingFolder) {
    loraFolder_ = loraFolder;
    embeddingFolder_ = embeddingFolder;
}

void ParameterPanel::toggleLora(const QString& name) {
    replaceText(prompt_, QString::fromStdString(app::toggle_lora(
                             prompt_->toPlainText().toStdString(), name.toStdString())));
}

void ParameterPanel::toggleEmbedding(const QString& word) {
    replaceText(lastPrompt_, QString::fromStdString(app::toggle_word(
                                 lastPrompt_->toPlainText().toStdString(), word.toStdString())));
}

bool ParameterPanel::eventFilter(QObject* o, QEvent* e) {
    if (e->type() == QEvent::FocusIn && (o == prompt_ || o == negative_)) {
        lastPrompt_ = static_cast<PromptEdit*>(o);
    }
    return QWidget::eventFilter(o, e);
}

void ParameterPanel::fillNetworksMenu() {
    QMenu* menu = networks_->menu();
    menu->clear();
    const auto heading = [menu](const QString& text) {
        QAction* a = menu->addAction(text);
        a->setEnabled(false);
        QFont bold = a->font();
        bold.setBold(true);
        a->setFont(bold);
    };
    // A file a menu line: checked where the prompt has it; a click toggles it.
    const auto add = [this, menu](const app::NetworkFile& file, bool in, const QString& tip,
                                  auto toggle) {
        QAction* a =
            menu->addAction(QString::fromStdString(file.shown).replace('&', QStringLiteral("&&")));
        a->setCheckable(true);
        a->setChecked(in);
        a->setToolTip(tip);
        const QString name = QString::fromStdString(file.name);
        connect(a, &QAction::triggered, this, [this, name, toggle] { (this->*toggle)(name); });
    };
    const auto empty = [menu](const QString& folder, const QString& what) {
        menu->addAction(folder.isEmpty() ? tr("No %1 folder: choose one in Settings").arg(what)
                                         : tr("No %1 files in %2").arg(what, folder))
            ->setEnabled(false);
    };

    heading(tr("LoRA (into the prompt)"));
    const auto loras = app::list_loras(loraFolder_.toStdString());
    const std::string prompt = prompt_->toPlainText().toStdString();
    for (const app::NetworkFile& lora : loras) {
        QString tip = QString::fromStdString(lora.path);
        if (!lora.trained_on.empty()) {
            QStringList tags;
            for (const std::string& t : lora.trained_on) {
                tags << QString::fromStdString(t);
            }
            tip += "\n" + tr("Trained on: %1").arg(tags.join(", "));
        }
        add(lora, app::has_lora(prompt, lora.name), tip, &ParameterPanel::toggleLora);
    }
    if (loras.empty()) {
        empty(loraFolder_, tr("LoRA"));
    }

    menu->addSeparator();
    heading(lastPrompt_ == negative_ ? tr("Embeddings (into the negative prompt)")
                                     : tr("Embeddings (into the prompt)"));
    const auto embeddings = app::list_embeddings(embeddingFolder_.toStdString());
    const std::string target = lastPrompt_->toPlainText().toStdString();
    for (const app::NetworkFile& embedding : embeddings) {
        add(embedding, app::has_word(target, embedding.name),
            QString::fromStdString(embedding.path), &ParameterPanel::toggleEmbedding);
    }
    if (embeddings.empty()) {
        empty(embeddingFolder_, tr("embedding"));
    }
}

void ParameterPanel::fillStylesMenu() {
    QMenu* menu = styles_->menu();
    menu->clear();
    std::vector<app::PromptStyle> styles;
    try {
        styles = app::load_styles(stylesFile_.toStdString());
    } catch (const Error& e) {
        menu->addAction(QString::fromStdString(e.what()))->setEnabled(false);
        return;  // nothing saved over a file that cannot be read
    }
    const auto shown = [](const std::string& name) {
        return QString::fromStdString(name).replace('&', QStringLiteral("&&"));
    };
    const auto report = [this](const std::exception& e) {
        QMessageBox::warning(this, tr("Styles"), QString::fromUtf8(e.what()));
    };
    if (styles.empty()) {
        menu->addAction(tr("No styles yet: save the prompts as one"))->setEnabled(false);
    }
    for (const app::PromptStyle& style : styles) {
        QAction* a = menu->addAction(shown(style.name));
        a->setToolTip(tr("Prompt: %1\nNegative: %2")
                          .arg(QString::fromStdString(style.prompt),
                               QString::fromStdString(style.negative_prompt)));
        const QString name = QString::fromStdString(style.name);
        connect(a, &QAction::triggered, this, [this, name, report] {
            try {
                applyStyle(name);
            } catch (const std::exception& e) {
                report(e);
            }
        });
    }
    menu->addSeparator();
    connect(menu->addAction(tr("Save the prompts as a style…")), &QAction::triggered, this,
            [this, styles, report] {
                const QString name =
                    QInputDialog::getText(this, tr("Save style"),
                                          tr("Name (\"{prompt}\" in the prompt marks where a "
                                             "prompt goes when the style is merged):"))
                        .trimmed();
                if (name.isEmpty()) {
                    return;
                }
                if (app::find_style(styles, name.toStdString()) != nullptr &&
                    QMessageBox::question(this, tr("Save style"),
                                          tr("Replace the style \"%1\"?").arg(name)) !=
                        QMessageBox::Yes) {
                    return;
                }
                try {
                    saveStyle(name);
                } catch (const std::exception& e) {
                    report(e);
                }
            });
    if (!styles.empty()) {
        QMenu* remove = menu->addMenu(tr("Delete style"));
        for (const app::PromptStyle& style : styles) {
            const QString name = QString::fromStdString(style.name);
            connect(remove->addAction(shown(style.name)), &QAction::triggered, this,
                    [this, name, report] {
                        if (QMessageBox::question(this, tr("Delete style"),
                                                  tr("Delete the style \"%1\"?").arg(name)) !=
                            QMessageBox::Yes) {
                            return;
                        }
                        try {
                            deleteStyle(name);
                        } catch (const std::exception& e) {
                            report(e);
                        }
                    });
        }
    }
}

GenerationRequest ParameterPanel::request() const {
    GenerationRequest r;
    r.prompt = prompt_->toPlainText().toStdString();
    r.negative_prompt = negative_->toPlainText().toStdString();
    r.steps = static_cast<int>(steps_->value());
    r.guidance_scale = guidance_->value();
    r.strength = strength_->value();
    r.seed = seed_->text().toLongLong();
    r.sampler = sampler();
    r.eta = eta_->value();
    r.clip_skip = clipSkip_->value();
    r.prompt_syntax = promptSyntax();
    r.width = width_->value() / 8 * 8;
    r.height = height_->value() / 8 * 8;
    r.batch_count = batch_->value();
    r.hires_scale = mode() == Mode::Text ? hiresScale_->value() : 1.0;
    r.hires_strength = hiresStrength_->value();
    r.hires_steps = hiresSteps_->value();
    r.hires_upscaler = hiresUpscaler_->currentText().toStdString();
    r.refiner = mode() == Mode::Inpaint && onlyMasked_->isChecked()
                    ? std::string()
                    : refiner_->text().trimmed().toStdString();
    r.refiner_switch_at = refinerSwitch_->value();
    r.aesthetic_score = aesthetic_->value();
    r.negative_aesthetic_score = negativeAesthetic_->value();
    for (int row = 0; row < loras_->rowCount(); ++row) {
        const auto* weight = static_cast<QDoubleSpinBox*>(loras_->cellWidget(row, 1));
        LoraRef lora{loras_->item(row, 0)->data(Qt::UserRole).toString().toStdString(),
                     weight->value()};
        const QVariant unet = loras_->item(row, 0)->data(kUnetWeightRole);
        if (unet.isValid()) {
            lora.unet_weight = unet.toDouble();
        }
        r.loras.push_back(lora);
    }
    if (img2img()) {
        r.init_image = "canvas";
    }
    for (const ControlUnit* unit : controlUnits_) {
        if (auto c = unit->control()) {
            r.controls.push_back(*c);
        }
    }
    if (mode() == Mode::Inpaint) {
        r.mask_image = "canvas mask";
        r.keep_unmasked = keepUnmasked_->isChecked();
        r.mask_blur = maskBlur_->value();
        r.mask_padding = onlyMasked_->isChecked() ? maskPadding_->value() : -1;
    }
    return r;
}

void ParameterPanel::setRequest(const GenerationRequest& r) {
    prompt_->setPlainText(QString::fromStdString(r.prompt));
    negative_->setPlainText(QString::fromStdString(r.negative_prompt));
    steps_->setValue(r.steps);
    guidance_->setValue(r.guidance_scale);
    strength_->setValue(r.strength);
    seed_->setText(QString::number(r.seed));
    lock_->setChecked(true);
    showSampler(r.sampler);
    eta_->setValue(r.eta);
    clipSkip_->setValue(r.clip_skip);
    syntax_->setCurrentIndex(syntax_->findData(prompt_syntax_name(r.prompt_syntax)));
    hiresScale_->setValue(r.hires_scale);
    hiresStrength_->setValue(r.hires_strength);
    hiresSteps_->setValue(r.hires_steps);
    hiresUpscaler_->setCurrentText(QString::fromStdString(r.hires_upscaler));
    refiner_->setText(QString::fromStdString(r.refiner));
    refinerSwitch_->setValue(r.refiner_switch_at);
    aesthetic_->setValue(r.aesthetic_score);
    negativeAesthetic_->setValue(r.negative_aesthetic_score);
    // A unit for each ControlNet (one at least, empty where there is none).
    while (controlUnitCount() > std::max<int>(1, static_cast<int>(r.controls.size()))) {
        removeControlUnit(controlUnits_.back());
    }
    for (size_t k = 0; k < r.controls.size() && k < size_t(kMaxControlUnits); ++k) {
        (k < controlUnits_.size() ? controlUnits_[k] : addControlUnit())->setControl(r.controls[k]);
    }
    if (r.controls.empty()) {
        controlUnits_.front()->setControl(ControlRef{});
    }
    if (r.is_inpaint()) {
        keepUnmasked_->setChecked(r.keep_unmasked);
        maskBlur_->setValue(r.mask_blur);
        onlyMasked_->setChecked(r.mask_padding >= 0);
        if (r.mask_padding >= 0) {
            maskPadding_->setValue(r.mask_padding);
        }
    }
    if (r.width > 0) {
        width_->setValue(r.width);
        height_->setValue(r.height);
    }
    setMode(r.is_inpaint() ? Mode::Inpaint : (r.is_img2img() ? Mode::Sketch : Mode::Text));
    loras_->setRowCount(0);
    for (const auto& l : r.loras) {
        addLora(l);
    }
}

PromptSyntax ParameterPanel::promptSyntax() const {
    return prompt_syntax_from_name(syntax_->currentData().toString().toStdString())
        .value_or(PromptSyntax::A1111);
}

void ParameterPanel::addLora(const LoraRef& lora) {
    const QString path = QString::fromStdString(lora.file);
    const int row = loras_->rowCount();
    loras_->insertRow(row);
    auto* name = new QTableWidgetItem(QFileInfo(path).completeBaseName());
    name->setData(Qt::UserRole, path);
    name->setToolTip(path);
    loras_->setItem(row, 0, name);
    auto* weight = new QDoubleSpinBox;
    weight->setRange(-100, 100);  // what GenerationRequest::validate allows
    weight->setSingleStep(0.05);
    weight->setDecimals(2);
    weight->setValue(lora.weight);
    if (lora.unet_weight) {
        // A1111's <lora:NAME:TE:UNET>: this weight is the text encoders'; the UNet's is kept.
        name->setData(kUnetWeightRole, *lora.unet_weight);
        weight->setToolTip(
            tr("The text encoders' weight; the UNet's is %1").arg(*lora.unet_weight));
        name->setText(tr("%1 (UNet %2)").arg(name->text()).arg(*lora.unet_weight));
    }
    weight->setKeyboardTracking(false);
    connect(weight, &QDoubleSpinBox::valueChanged, this, &ParameterPanel::liveParameterMoved);
    loras_->setCellWidget(row, 1, weight);
}

void ParameterPanel::rollSeedUnlessLocked() {
    if (!lock_->isChecked()) {
        dice_->click();
    }
}

ParameterPanel::Mode ParameterPanel::mode() const {
    return inpaintMode_->isChecked() ? Mode::Inpaint
                                     : (sketchMode_->isChecked() ? Mode::Sketch : Mode::Text);
}
void ParameterPanel::setMode(Mode mode) {
    (mode == Mode::Inpaint ? inpaintMode_ : (mode == Mode::Sketch ? sketchMode_ : textMode_))
        ->setChecked(true);
}
void ParameterPanel::setImg2img(bool on) {
    if (!on || mode() != Mode::Inpaint) {
        setMode(on ? Mode::Sketch : Mode::Text);
    }
}
void ParameterPanel::setImageSize(QSize size) {
    {
        const QSignalBlocker bw(width_), bh(height_);
        width_->setValue(size.width());
        height_->setValue(size.height());
    }
    Q_EMIT sizeChanged(QSize(width_->value() / 8 * 8, height_->value() / 8 * 8));
}

bool ParameterPanel::live() const {
    return live_->isChecked();
}

void ParameterPanel::setTokenizer(std::shared_ptr<const ClipTokenizer> tokenizer) {
    prompt_->setTokenizer(tokenizer);
    negative_->setTokenizer(tokenizer);
}

void ParameterPanel::setNativeSize(int size) {
    if (size > 0) {
        width_->setValue(size);
        height_->setValue(size);
    }
}

void ParameterPanel::setModelIsRefiner(bool refiner) {
    modelIsRefiner_ = refiner;
    enableRefiner_();
}

ControlUnit* ParameterPanel::addControlUnit() {
    if (controlUnitCount() >= kMaxControlUnits) {
        return controlUnits_.back();
    }
    auto* unit = new ControlUnit(controlUnitCount());
    controlUnits_.push_back(unit);
    controlLayout_->insertWidget(controlLayout_->count() - 1, unit);  // above "+ ControlNet"
    connect(unit, &ControlUnit::previewRequested, this,
            [this, unit] { Q_EMIT controlPreviewRequested(unit->index()); });
    connect(unit, &ControlUnit::removeRequested, this, [this, unit] { removeControlUnit(unit); });
    addControl_->setEnabled(controlUnitCount() < kMaxControlUnits);
    return unit;
}

void ParameterPanel::removeControlUnit(ControlUnit* unit) {
    const auto it = std::find(controlUnits_.begin(), controlUnits_.end(), unit);
    if (it == controlUnits_.begin() || it == controlUnits_.end()) {
        return;
    }
    controlUnits_.erase(it);
    unit->hide();
    unit->deleteLater();  // it may be in its own remove button's signal
    for (size_t k = 0; k < controlUnits_.size(); ++k) {
        controlUnits_[k]->setIndex(static_cast<int>(k));  // the ones after it move up
    }
    addControl_->setEnabled(controlUnitCount() < kMaxControlUnits);
}

void ParameterPanel::setModelIsGuidanceDistilled(bool distilled) {
    negative_->setEnabled(!distilled);
    negative_->setPlaceholderText(
        distilled ? tr("No negative prompt: this model takes the guidance as an input (a latent "
                       "consistency model) and runs without one")
                  : negativePlaceholder());
}

void ParameterPanel::applyHints(const ModelHints& hints) {
    if (hints.guidance_scale) {
        guidance_->setValue(*hints.guidance_scale);
    }
    if (hints.steps) {
        steps_->setValue(*hints.steps);
    }
    if (hints.sampler) {
        try {
            showSampler(sampler_from_name(*hints.sampler));
        } catch (const Error&) {  // a name this version does not know: keep the current one
        }
    }
}

Sampler ParameterPanel::sampler() const {
    const Sampler family = sampler_from_name(sampler_->currentData().toString().toStdString());
    return with_schedule(family, static_cast<NoiseSchedule>(schedule_->currentData().toInt()))
        .value_or(family);
}

void ParameterPanel::showSampler(Sampler s) {
    const Sampler family = with_schedule(s, NoiseSchedule::Default).value_or(s);
    const int i = sampler_->findData(QString(sampler_name(family)));
    if (i >= 0) {
        sampler_->setCurrentIndex(i);
        schedule_->setCurrentIndex(schedule_->findData(static_cast<int>(sampler_schedule(s))));
    }
}

void ParameterPanel::setBusy(bool busy) {
    cancel_->setEnabled(busy);
}

}  // namespace sds::ui
