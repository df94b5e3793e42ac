#include "prompt_edit.h"

#include <QKeyEvent>
#include <QRegularExpression>

#include <cmath>
#include <set>
#include <string>

#include "sds/clip_tokenizer.h"
#include "sds/error.h"
#include "sds/generation_request.h"

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

void PromptEdit::setComposable(bool composable) {
    composable_ = composable;
    updateCounter();
}

void PromptEdit::updateCounter() {
    QString text = QStringLiteral("–/75");
    QString tip;
    bool warn = false;
    if (tokenizer_) {
        // Without its LoRA tags, which are taken out before the prompt is read (A1111 counts
        // without its extra networks' tags too).
        const std::string prompt = without_lora_tags(toPlainText().toStdString());
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
                // The longest of its texts, as A1111 counts: each part's (AND), each step's
                // (prompt editing, alternation; each of the 100 calls an entry, chunked once).
                ChunkedPrompt longest;
                std::set<std::string> seen;
                const auto parts =
                    composable_ ? split_and(prompt) : std::vector<PromptPart>{{prompt, 1.0}};
                for (const PromptPart& part : parts) {
                    for (const TimedPrompt& t : prompt_schedule(part.text, 100)) {
                        if (!seen.insert(t.text).second) {
                            continue;
                        }
                        ChunkedPrompt c = chunk_prompt(*tokenizer_, t.text);
                        if (c.token_count >= longest.token_count) {
                            longest = std::move(c);
                        }
                    }
                }
                text = QString::fromStdString(longest.count_text());
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

void PromptEdit::keyPressEvent(QKeyEvent* event) {
    if ((event->modifiers() & Qt::ControlModifier) &&
        (event->key() == Qt::Key_Up || event->key() == Qt::Key_Down) &&
        syntax_ != PromptSyntax::Plain) {
        adjustWeight(event->key() == Qt::Key_Up ? 0.1 : -0.1);
        return;
    }
    QPlainTextEdit::keyPressEvent(event);
}

void PromptEdit::adjustWeight(double delta) {
    if (syntax_ == PromptSyntax::Plain) {
        return;
    }
    const QString all = toPlainText();
    QTextCursor cursor = textCursor();
    // ":W)" right after the weighed text.
    static const QRegularExpression weightAfter(R"(^:\s*([+-]?[0-9]*\.?[0-9]+)\s*\))");
    int start = cursor.selectionStart(), end = cursor.selectionEnd();
    if (!cursor.hasSelection()) {
        const int at = cursor.position();
        // Inside a "(text:W)" group: its text.
        const int open = at > 0 ? static_cast<int>(all.lastIndexOf('(', at - 1)) : -1;
        const int close = static_cast<int>(all.indexOf(')', at));
        const int colon = close > 0 ? static_cast<int>(all.lastIndexOf(':', close)) : -1;
        const int closedBefore = at > 0 ? static_cast<int>(all.lastIndexOf(')', at - 1)) : -1;
        if (open >= 0 && close >= 0 && colon > open && closedBefore < open &&
            all.mid(colon, close + 1 - colon).contains(weightAfter)) {
            start = open + 1;
            end = colon;
        } else {  // the word at the cursor
            const auto inWord = [&](int i) {
                return i >= 0 && i < all.size() &&
                       (all[i].isLetterOrNumber() || all[i] == '_' || all[i] == '-' ||
                        all[i] == '\'');
            };
            start = end = at;
            while (inWord(start - 1)) {
                --start;
            }
            while (inWord(end)) {
                ++end;
            }
        }
    }
    if (start >= end) {
        return;
    }
    const QString text = all.mid(start, end - start);
    double weight = 1.0;
    int from = start, to = end;  // what is replaced
    const auto match = weightAfter.match(all.mid(end));
    if (start > 0 && all[start - 1] == '(' && match.hasMatch()) {
        weight = match.captured(1).toDouble();
        from = start - 1;
        to = end + static_cast<int>(match.capturedLength());
    }
    weight = std::round((weight + delta) * 100) / 100;
    QString replacement = text;
    int inner = from;  // where the text starts after the change
    if (std::abs(weight - 1.0) > 1e-9) {
        QString number = QString::number(weight, 'f', 2);
        while (number.endsWith('0')) {
            number.chop(1);
        }
        if (number.endsWith('.')) {
            number.chop(1);
        }
        replacement = "(" + text + ":" + number + ")";
        inner = from + 1;
    }
    cursor.beginEditBlock();  // one undo step
    cursor.setPosition(from);
    cursor.setPosition(to, QTextCursor::KeepAnchor);
    cursor.insertText(replacement);
    cursor.endEditBlock();
    cursor.setPosition(inner);
    cursor.setPosition(inner + static_cast<int>(text.size()), QTextCursor::KeepAnchor);
    setTextCursor(cursor);
}

void PromptEdit::resizeEvent(QResizeEvent* event) {
    QPlainTextEdit::resizeEvent(event);
    updateCounter();
}

}  // namespace sds::ui
