#pragma once
// A prompt box with an A1111-style token counter ("23/75") in its corner; with A1111's syntax,
// Ctrl+Up / Ctrl+Down weigh the selection (or the word or weighted group at the cursor) 0.1
// more or less, as A1111's prompt boxes do.
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
    // The prompt (not the negative prompt) reads A1111's AND: the counter counts its longest
    // part.
    void setComposable(bool composable);
    QString counterText() const { return counter_->text(); }

    // The selection, else the "(text:W)" group or the word at the cursor, weighed `delta`
    // more: "word" -> "(word:1.1)", "(word:1.1)" -> "(word:1.2)"; at weight 1 the brackets go.
    // The text stays selected, so that the keys can go on. Nothing with the plain syntax.
    void adjustWeight(double delta);

  protected:
    void resizeEvent(QResizeEvent* event) override;
    void keyPressEvent(QKeyEvent* event) override;

  private:
    void updateCounter();
    QLabel* counter_;
    std::shared_ptr<const ClipTokenizer> tokenizer_;
    PromptSyntax syntax_ = PromptSyntax::Plain;
    bool composable_ = false;
};

}  // namespace sds::ui
