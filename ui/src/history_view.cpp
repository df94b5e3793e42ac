#include "history_view.h"

#include <QGridLayout>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QMenu>
#include <QPushButton>
#include <QVBoxLayout>

namespace sds::ui {

namespace {
constexpr int kIdRole = Qt::UserRole + 1;

QListWidgetItem* item_for(const app::HistoryEntry& e) {
    auto* item =
        new QListWidgetItem(QIcon(QPixmap::fromImage(e.thumbnail)), QString("#%1").arg(e.id));
    item->setData(kIdRole, e.id);
    QString tip = QString::fromStdString(e.request.prompt);
    tip += QString("\nseed %1 · %2 steps · CFG %3")
               .arg(e.request.seed)
               .arg(e.request.steps)
               .arg(e.request.guidance_scale);
    if (e.parent_id >= 0) {
        tip += QString("\nfrom #%1 (strength %2)").arg(e.parent_id).arg(e.request.strength);
    }
    tip += "\n" + e.created.toString("yyyy-MM-dd HH:mm:ss");
    item->setToolTip(tip);
    return item;
}
}  // namespace

HistoryView::HistoryView(QWidget* parent) : QWidget(parent) {
    search_ = new QLineEdit;
    search_->setPlaceholderText(tr("Search prompts"));
    search_->setClearButtonEnabled(true);
    list_ = new QListWidget;
    list_->setViewMode(QListView::IconMode);
    list_->setIconSize(QSize(72, 72));
    list_->setResizeMode(QListView::Adjust);
    list_->setMovement(QListView::Static);
    list_->setContextMenuPolicy(Qt::CustomContextMenu);
    lineage_ = new QListWidget;
    lineage_->setViewMode(QListView::IconMode);
    lineage_->setFlow(QListView::LeftToRight);
    lineage_->setWrapping(false);
    lineage_->setIconSize(QSize(48, 48));
    lineage_->setFixedHeight(86);
    lineage_->setMovement(QListView::Static);
    use_ = new QPushButton(tr("Use as input"));
    reuse_ = new QPushButton(tr("Reuse parameters"));
    export_ = new QPushButton(tr("Export..."));
    delete_ = new QPushButton(tr("Delete"));
    auto* buttons = new QGridLayout;
    buttons->addWidget(use_, 0, 0);
    buttons->addWidget(reuse_, 0, 1);
    buttons->addWidget(export_, 1, 0);
    buttons->addWidget(delete_, 1, 1);
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(4, 4, 4, 4);
    v->addWidget(search_);
    v->addWidget(list_, 1);
    v->addLayout(buttons);
    v->addWidget(new QLabel(tr("Lineage (img2img chain)")));
    v->addWidget(lineage_);

    connect(search_, &QLineEdit::textChanged, this, &HistoryView::refresh);
    connect(list_, &QListWidget::currentItemChanged, this, [this] {
        updateLineage();
        if (selectedId() >= 0) {
            Q_EMIT showRequested(selectedId());
        }
    });
    connect(lineage_, &QListWidget::itemClicked, this, [this](QListWidgetItem* item) {
        Q_EMIT showRequested(item->data(kIdRole).toLongLong());
    });
    auto with_selection = [this](void (HistoryView::*sig)(qint64)) {
        return [this, sig] {
            if (selectedId() >= 0) {
                Q_EMIT(this->*sig)(selectedId());
            }
        };
    };
    connect(use_, &QPushButton::clicked, this, with_selection(&HistoryView::useAsInputRequested));
    connect(reuse_, &QPushButton::clicked, this, with_selection(&HistoryView::reuseRequested));
    connect(export_, &QPushButton::clicked, this, with_selection(&HistoryView::exportRequested));
    connect(delete_, &QPushButton::clicked, this, with_selection(&HistoryView::deleteRequested));
    connect(list_, &QListWidget::customContextMenuRequested, this,
            [this, with_selection](const QPoint& pos) {
                if (!list_->itemAt(pos)) {
                    return;
                }
                QMenu menu;
                menu.addAction(tr("Use as input"), this,
                               with_selection(&HistoryView::useAsInputRequested));
                menu.addAction(tr("Reuse parameters"), this,
                               with_selection(&HistoryView::reuseRequested));
                menu.addAction(tr("Export..."), this,
                               with_selection(&HistoryView::exportRequested));
                menu.addSeparator();
                menu.addAction(tr("Delete"), this, with_selection(&HistoryView::deleteRequested));
                menu.exec(list_->viewport()->mapToGlobal(pos));
            });
}

void HistoryView::setStore(app::HistoryStore* store) {
    store_ = store;
    refresh();
}

void HistoryView::refresh() {
    const qint64 keep = selectedId();
    QSignalBlocker block(list_);
    list_->clear();
    if (!store_) {
        return;
    }
    for (const auto& e : store_->list(search_->text())) {
        list_->addItem(item_for(e));
    }
    if (keep >= 0) {
        select(keep);
    }
    updateLineage();
}

qint64 HistoryView::selectedId() const {
    const QListWidgetItem* item = list_->currentItem();
    return item ? item->data(kIdRole).toLongLong() : -1;
}

void HistoryView::select(qint64 id) {
    for (int i = 0; i < list_->count(); ++i) {
        if (list_->item(i)->data(kIdRole).toLongLong() == id) {
            QSignalBlocker block(list_);
            list_->setCurrentRow(i);
            updateLineage();
            return;
        }
    }
}

int HistoryView::shownCount() const {
    return list_->count();
}
int HistoryView::lineageCount() const {
    return lineage_->count();
}

void HistoryView::updateLineage() {
    lineage_->clear();
    const qint64 id = selectedId();
    if (!store_ || id < 0) {
        return;
    }
    const auto chain = store_->lineage(id);
    for (int i = 0; i < chain.size(); ++i) {
        auto* item = item_for(chain[i]);
        item->setText((i ? QString::fromUtf8("\u2192 ") : QString()) + item->text());
        lineage_->addItem(item);
    }
    for (const auto& child : store_->children(id)) {
        auto* item = item_for(child);
        item->setText(QString::fromUtf8("\u21b3 ") + item->text());
        item->setForeground(palette().placeholderText());
        lineage_->addItem(item);
    }
}

}  // namespace sds::ui
