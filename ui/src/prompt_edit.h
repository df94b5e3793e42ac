#pragma once
// A prompt box with an A1111-style token counter ("23/75") in its corner.
#include <QLabel>
#include <QPlainTextEdit>

#include <memory>

#include "sds/prompt_syntax.h"

namespace sds::ui {

class PromptEdit : public QPlainTextEdit {
    Q_OBJECT
  public:
    explicit PromptEdit(const QString& placeholder, QWidget* parent = nullptr);
    void setTokenizer(std::shared_ptr<const ClipTokenizer> tokenizer);
    // How the prompt is read, which the counter follows: A1111's counts the tokens after its
    // brackets are read, in chunks of 75 ("80/150"); plain shows what is cut after 75.
    void setSyntax(PromptSyntax syntax);
    QString counterText() const { return counter_->text(); }

  protected:
    void resizeEvent(QResizeEvent* event) override;

  private:
    void updateCounter();
    QLabel* counter_;
    std::shared_ptr<const ClipTokenizer> tokenizer_;
    PromptSyntax syntax_ = PromptSyntax::Plain;
};

}  // namespace sds::ui
