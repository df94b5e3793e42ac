#include "prompt_edit.h"

#include "sds/clip_tokenizer.h"

namespace sds::ui {

PromptEdit::PromptEdit(const QString& placeholder, QWidget* parent)
    : QPlainTextEdit(parent), counter_(new QLabel(this)) {
    setPlaceholderText(placeholder);
    setTabChangesFocus(true);
    counter_->setStyleSheet("color: palette(mid); padding: 2px 6px;");
    counter_->setAttribute(Qt::WA_TransparentForMouseEvents);
    connect(this, &QPlainTextEdit::textChanged, this, &PromptEdit::updateCounter);
    updateCounter();
}

void PromptEdit::setTokenizer(std::shared_ptr<const ClipTokenizer> tokenizer) {
    tokenizer_ = std::move(tokenizer);
    updateCounter();
}

void PromptEdit::updateCounter() {
    counter_->setText(
        tokenizer_ ? QString::fromStdString(tokenizer_->count_text(toPlainText().toStdString()))
                   : QString("–/75"));
    counter_->adjustSize();
    counter_->move(viewport()->width() - counter_->width(), 0);
}

void PromptEdit::resizeEvent(QResizeEvent* event) {
    QPlainTextEdit::resizeEvent(event);
    updateCounter();
}

}  // namespace sds::ui
