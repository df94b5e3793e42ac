#pragma once
// The studio's main window. So far: choose a model folder, see what it holds, and write
// prompts with a live token counter. Generation arrives with the engine (issue 3) and the
// full studio (issue 4).
#include <QMainWindow>

class QLabel;
class QTextBrowser;

namespace sds::ui {

class PromptEdit;

class MainWindow : public QMainWindow {
    Q_OBJECT
  public:
    explicit MainWindow(QWidget* parent = nullptr);
    // Opens a diffusers model folder; on error shows the message and keeps the previous one.
    bool openModel(const QString& dir);

  protected:
    void closeEvent(QCloseEvent* event) override;

  private:
    void chooseModel();
    PromptEdit* prompt_;
    PromptEdit* negative_;
    QTextBrowser* modelInfo_;
    QLabel* modelLabel_;
};

}  // namespace sds::ui
