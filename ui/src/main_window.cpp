#include "main_window.h"

#include <QAction>
#include <QCloseEvent>
#include <QFileDialog>
#include <QFormLayout>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QSettings>
#include <QStatusBar>
#include <QTextBrowser>
#include <QVBoxLayout>

#include "prompt_edit.h"
#include "sds/clip_tokenizer.h"
#include "sds/error.h"
#include "sds/model_folder.h"

namespace sds::ui {

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
    setWindowTitle("SD Studio");
    auto* central = new QWidget(this);
    auto* layout = new QVBoxLayout(central);
    auto* form = new QFormLayout;
    prompt_ = new PromptEdit("Prompt, e.g. a red fox in the snow, highly detailed", central);
    negative_ = new PromptEdit("Negative prompt, e.g. blurry", central);
    prompt_->setObjectName("prompt");
    negative_->setObjectName("negative");
    prompt_->setMaximumHeight(90);
    negative_->setMaximumHeight(60);
    form->addRow("Prompt", prompt_);
    form->addRow("Negative", negative_);
    layout->addLayout(form);
    modelInfo_ = new QTextBrowser(central);
    layout->addWidget(modelInfo_, 1);
    setCentralWidget(central);

    auto* file = menuBar()->addMenu("&Model");
    auto* open = file->addAction("&Open model folder…", this, &MainWindow::chooseModel);
    open->setShortcut(QKeySequence::Open);
    file->addSeparator();
    file->addAction("&Quit", QKeySequence::Quit, this, &QWidget::close);

    modelLabel_ = new QLabel("no model", this);
    statusBar()->addPermanentWidget(modelLabel_);
    statusBar()->showMessage(
        "Generating from this window is not there yet; sdstudio-cli txt2img generates with "
        "the same engine.");

    QSettings settings;
    restoreGeometry(settings.value("window/geometry").toByteArray());
    const QString last = settings.value("model/folder").toString();
    if (!last.isEmpty()) {
        openModel(last);
    } else {
        modelInfo_->setHtml(
            "<p>Open a diffusers Stable Diffusion folder with "
            "<b>Model → Open model folder…</b></p>");
    }
    resize(settings.contains("window/geometry") ? size() : QSize(900, 640));
}

void MainWindow::chooseModel() {
    const QString dir = QFileDialog::getExistingDirectory(this, "Open a diffusers model folder");
    if (!dir.isEmpty()) {
        openModel(dir);
    }
}

bool MainWindow::openModel(const QString& dir) {
    try {
        const ModelFolder model = ModelFolder::open(dir.toStdString());
        auto tokenizer = std::make_shared<const ClipTokenizer>(
            ClipTokenizer::load_folder(model.tokenizer_dir()));
        QString html = "<h3>" + QString::fromStdString(model.dir().filename().string()) +
                       "</h3><table cellpadding=4><tr><th align=left>component</th>"
                       "<th align=left>class</th><th align=right>parameters</th></tr>";
        for (const auto& [name, c] : model.components()) {
            const uint64_t params = summarize_weights(c).parameters;
            html += QString("<tr><td>%1</td><td>%2</td><td align=right>%3</td></tr>")
                        .arg(QString::fromStdString(name), QString::fromStdString(c.class_name),
                             c.weights.empty() ? "–" : QLocale().toString(qulonglong(params)));
        }
        modelInfo_->setHtml(html + "</table>");
        prompt_->setTokenizer(tokenizer);
        negative_->setTokenizer(tokenizer);
        modelLabel_->setText(QString::fromStdString(model.dir().filename().string()));
        QSettings().setValue("model/folder", dir);
        return true;
    } catch (const sds::Error& e) {
        QMessageBox::warning(this, "Cannot open the model", QString::fromStdString(e.what()));
        return false;
    }
}

void MainWindow::closeEvent(QCloseEvent* event) {
    QSettings().setValue("window/geometry", saveGeometry());
    event->accept();
}

}  // namespace sds::ui
