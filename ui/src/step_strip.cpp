#include "step_strip.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QListWidget>
#include <QSlider>
#include <QVBoxLayout>

namespace sds::ui {

StepStrip::StepStrip(QWidget* parent) : QWidget(parent) {
    list_ = new QListWidget;
    list_->setViewMode(QListView::IconMode);
    list_->setFlow(QListView::LeftToRight);
    list_->setWrapping(false);
    list_->setIconSize(QSize(48, 48));
    list_->setFixedHeight(76);
    list_->setMovement(QListView::Static);
    list_->setUniformItemSizes(true);
    slider_ = new QSlider(Qt::Horizontal);
    slider_->setRange(0, 0);
    slider_->setEnabled(false);
    label_ = new QLabel(tr("no steps yet"));
    label_->setMinimumWidth(90);
    auto* row = new QHBoxLayout;
    row->addWidget(slider_, 1);
    row->addWidget(label_);
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(4, 4, 4, 4);
    v->addWidget(list_);
    v->addLayout(row);
    connect(slider_, &QSlider::valueChanged, this, [this](int i) {
        following_ = i == count() - 1;
        select(i);
    });
    connect(list_, &QListWidget::currentRowChanged, this, [this](int i) {
        if (i >= 0 && i != slider_->value()) {
            slider_->setValue(i);
        }
    });
}

void StepStrip::start(int total) {
    previews_.clear();
    list_->clear();
    total_ = total;
    following_ = true;
    QSignalBlocker block(slider_);
    slider_->setRange(0, 0);
    slider_->setEnabled(false);
    label_->setText(tr("step 0/%1").arg(total));
}

void StepStrip::addStep(int index, int total, const QImage& preview) {
    total_ = total;
    while (previews_.size() <= index) {
        previews_.append(QImage());
        auto* item = new QListWidgetItem(QString::number(previews_.size()));
        list_->addItem(item);
    }
    previews_[index] = preview;
    list_->item(index)->setIcon(
        QPixmap::fromImage(preview.scaled(48, 48, Qt::KeepAspectRatio, Qt::FastTransformation)));
    const bool follow = following_;
    slider_->setEnabled(true);
    {
        QSignalBlocker block(slider_);
        slider_->setRange(0, count() - 1);
    }
    if (follow) {
        QSignalBlocker block(slider_);
        slider_->setValue(index);
        QSignalBlocker block_list(list_);
        list_->setCurrentRow(index);
        list_->scrollToItem(list_->item(index));
    }
    label_->setText(tr("step %1/%2").arg(slider_->value() + 1).arg(total_));
}

int StepStrip::current() const {
    return slider_->value();
}

void StepStrip::setCurrent(int index) {
    if (index >= 0 && index < count()) {
        slider_->setValue(index);
    }
}

void StepStrip::select(int index) {
    if (index < 0 || index >= count()) {
        return;
    }
    label_->setText(tr("step %1/%2").arg(index + 1).arg(total_));
    {
        QSignalBlocker block(list_);
        list_->setCurrentRow(index);
    }
    Q_EMIT stepSelected(index, previews_[index]);
}

}  // namespace sds::ui
