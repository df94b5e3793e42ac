#pragma once
// A prompt box with an A1111-style token counter ("23/75") in its corner.
#include <QLabel>
#include <QPlainTextEdit>

#include <memory>

namespace sds {
class ClipTokenizer;
}

namespace sds::ui {

class PromptEdit : public QPlainTextEdit {
    Q_OBJECT
  public:
    explicit PromptEdit(const QString& placeholder, QWidget* parent = nullptr);
    void setTokenizer(std::shared_ptr<const ClipTokenizer> tokenizer);
    QString counterText() const { return counter_->text(); }

  protected:
    void resizeEvent(QResizeEvent* event) override;

  private:
    void updateCounter();
    QLabel* counter_;
    std::shared_ptr<const ClipTokenizer> tokenizer_;
};

}  // namespace sds::ui
