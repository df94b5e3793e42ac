#include "prompt_edit.h"

#include "sds/clip_tokenizer.h"
#include "sds/error.h"

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

void PromptEdit::setSyntax(PromptSyntax syntax) {
    syntax_ = syntax;
    updateCounter();
}

void PromptEdit::updateCounter() {
    QString text = QStringLiteral("–/75");
    QString tip;
    bool warn = false;
    if (tokenizer_) {
        const std::string prompt = toPlainText().toStdString();
        if (syntax_ == PromptSyntax::Plain) {
            const auto n = static_cast<int>(tokenizer_->encode(prompt).size());
            text = QStringLiteral("%1/75").arg(n);
            warn = n > 75;
            if (warn) {
                tip = tr("Read as typed, the prompt is cut after 75 tokens: the last %1 are "
                         "not read (A1111's prompt syntax reads them, in a second chunk)")
                          .arg(n - 75);
            }
        } else {
            try {
                text = QString::fromStdString(chunk_prompt(*tokenizer_, prompt).count_text());
            } catch (const Error& e) {
                text = tr("error");
                tip = QString::fromStdString(e.what());
                warn = true;
            }
        }
    }
    counter_->setText(text);
    setToolTip(tip);
    counter_->setStyleSheet(warn ? "color: #c0392b; padding: 2px 6px;"
                                 : "color: palette(mid); padding: 2px 6px;");
    counter_->adjustSize();
    counter_->move(viewport()->width() - counter_->width(), 0);
}

void PromptEdit::resizeEvent(QResizeEvent* event) {
    QPlainTextEdit::resizeEvent(event);
    updateCounter();
}

}  // namespace sds::ui
