#include "image_view.h"

#include <algorithm>

#include <QMouseEvent>
#include <QPainter>

namespace sds::ui {

ImageView::ImageView(QWidget* parent) : QWidget(parent) {
    setMinimumSize(200, 200);
}

void ImageView::setImage(const QImage& image, const QString& caption) {
    image_ = image;
    caption_ = caption;
    update();
}

void ImageView::setPlaceholder(const QString& text) {
    placeholder_ = text;
    update();
}

void ImageView::setOverlay(const QImage& overlay, double opacity) {
    overlay_ = overlay;
    overlayOpacity_ = std::clamp(opacity, 0.0, 1.0);
    update();
}

void ImageView::paintEvent(QPaintEvent*) {
    QPainter p(this);
    p.fillRect(rect(), palette().window());
    const int caption_h = caption_.isEmpty() ? 0 : fontMetrics().height() + 6;
    const QRect area = rect().adjusted(0, 0, 0, -caption_h);
    if (image_.isNull()) {
        p.setPen(palette().placeholderText().color());
        p.drawText(area, Qt::AlignCenter | Qt::TextWordWrap, placeholder_);
        return;
    }
    const QSizeF s = QSizeF(image_.size()).scaled(QSizeF(area.size()), Qt::KeepAspectRatio);
    const QRectF r(QPointF(area.x() + (area.width() - s.width()) / 2,
                           area.y() + (area.height() - s.height()) / 2),
                   s);
    p.setRenderHint(QPainter::SmoothPixmapTransform, s.width() < image_.width() * 3);
    p.drawImage(r, image_);
    if (!overlay_.isNull()) {
        p.setOpacity(overlayOpacity_);
        p.drawImage(r, overlay_);
        p.setOpacity(1.0);
    }
    p.setPen(palette().mid().color());
    p.drawRect(r.adjusted(-0.5, -0.5, 0.5, 0.5));
    if (caption_h) {
        p.setPen(palette().text().color());
        p.drawText(QRect(0, height() - caption_h, width(), caption_h), Qt::AlignCenter, caption_);
    }
}

void ImageView::mouseReleaseEvent(QMouseEvent* e) {
    if (e->button() == Qt::LeftButton) {
        Q_EMIT clicked();
    }
}

}  // namespace sds::ui
