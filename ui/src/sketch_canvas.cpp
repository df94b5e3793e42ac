#include "sketch_canvas.h"

#include <QApplication>
#include <QClipboard>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QImageReader>
#include <QMimeData>
#include <QMouseEvent>
#include <QPainter>
#include <QPainterPath>
#include <QTabletEvent>

#include <algorithm>
#include <vector>

namespace sds::ui {

SketchCanvas::SketchCanvas(QWidget* parent) : QWidget(parent) {
    setAcceptDrops(true);
    setAttribute(Qt::WA_OpaquePaintEvent);
    setMinimumSize(200, 200);
    setCursor(Qt::CrossCursor);
    setFocusPolicy(Qt::StrongFocus);
    picture_ = QImage(512, 512, QImage::Format_RGB32);
    picture_.fill(Qt::white);
    paint_ = QImage(picture_.size(), QImage::Format_ARGB32_Premultiplied);
    paint_.fill(Qt::transparent);
}

void SketchCanvas::setImageSize(QSize size) {
    if (size == picture_.size() || size.isEmpty()) {
        return;
    }
    picture_ = picture_.scaled(size, Qt::IgnoreAspectRatio, Qt::SmoothTransformation);
    paint_ = paint_.scaled(size, Qt::IgnoreAspectRatio, Qt::SmoothTransformation);
    undo_.clear();
    redo_.clear();
    Q_EMIT undoStateChanged();
    update();
}

QImage SketchCanvas::composited() const {
    QImage out = picture_.convertToFormat(QImage::Format_RGB32);
    QPainter p(&out);
    p.drawImage(0, 0, paint_);
    if (drawing_ && tool_ == Tool::Brush) {
        p.setOpacity(opacity_);
        p.drawImage(0, 0, stroke_);
    }
    return out;
}

QImage SketchCanvas::image() const {
    return composited().convertToFormat(QImage::Format_RGB888);
}

void SketchCanvas::setTool(Tool tool) {
    tool_ = tool;
}
void SketchCanvas::setBrushSize(int px) {
    brushSize_ = std::clamp(px, 1, 400);
}
void SketchCanvas::setColor(const QColor& color) {
    color_ = color;
}
void SketchCanvas::setOpacity(double opacity) {
    opacity_ = std::clamp(opacity, 0.0, 1.0);
}

void SketchCanvas::pushUndo() {
    undo_.push_back({picture_, paint_});
    if (undo_.size() > kMaxUndo) {
        undo_.pop_front();
    }
    redo_.clear();
    Q_EMIT undoStateChanged();
}

void SketchCanvas::undo() {
    if (undo_.isEmpty()) {
        return;
    }
    redo_.push_back({picture_, paint_});
    const State s = undo_.takeLast();
    picture_ = s.picture, paint_ = s.paint;
    Q_EMIT undoStateChanged();
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::redo() {
    if (redo_.isEmpty()) {
        return;
    }
    undo_.push_back({picture_, paint_});
    const State s = redo_.takeLast();
    picture_ = s.picture, paint_ = s.paint;
    Q_EMIT undoStateChanged();
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::clear() {
    pushUndo();
    picture_.fill(Qt::white);
    paint_.fill(Qt::transparent);
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::setPicture(const QImage& image) {
    if (image.isNull()) {
        return;
    }
    pushUndo();
    picture_.fill(Qt::white);
    QPainter p(&picture_);
    const QImage scaled =
        image.scaled(picture_.size(), Qt::KeepAspectRatio, Qt::SmoothTransformation);
    p.drawImage((picture_.width() - scaled.width()) / 2, (picture_.height() - scaled.height()) / 2,
                scaled);
    p.end();
    paint_.fill(Qt::transparent);
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::pasteFromClipboard() {
    const QImage image = QApplication::clipboard()->image();
    if (image.isNull()) {
        Q_EMIT message(tr("The clipboard holds no image."));
        return;
    }
    setPicture(image);
}

QRectF SketchCanvas::imageRect() const {
    const QSizeF s = QSizeF(picture_.size()).scaled(QSizeF(size()), Qt::KeepAspectRatio);
    return QRectF(QPointF((width() - s.width()) / 2, (height() - s.height()) / 2), s);
}

QPointF SketchCanvas::toImage(const QPointF& pos) const {
    const QRectF r = imageRect();
    return QPointF((pos.x() - r.x()) * picture_.width() / r.width(),
                   (pos.y() - r.y()) * picture_.height() / r.height());
}

void SketchCanvas::paintEvent(QPaintEvent*) {
    QPainter p(this);
    p.fillRect(rect(), palette().window());
    p.setRenderHint(QPainter::SmoothPixmapTransform);
    const QRectF r = imageRect();
    p.drawImage(r, composited());
    p.setPen(QPen(palette().mid().color(), 1));
    p.drawRect(r.adjusted(-0.5, -0.5, 0.5, 0.5));
    // Eraser preview: the stroke so far, drawn as a faint outline.
    if (drawing_ && tool_ == Tool::Eraser) {
        p.setOpacity(0.25);
        p.drawImage(r, stroke_);
    }
}

void SketchCanvas::begin(const QPointF& pos, double pressure) {
    if (tool_ == Tool::Fill) {
        fillAt(pos);
        return;
    }
    drawing_ = true;
    stroke_ = QImage(picture_.size(), QImage::Format_ARGB32_Premultiplied);
    stroke_.fill(Qt::transparent);
    last_ = pos;
    extend(pos, pressure);
}

void SketchCanvas::extend(const QPointF& pos, double pressure) {
    if (!drawing_) {
        return;
    }
    QPainter p(&stroke_);
    p.setRenderHint(QPainter::Antialiasing);
    const double w = std::max(1.0, brushSize_ * pressure);
    p.setPen(QPen(tool_ == Tool::Eraser ? QColor(Qt::gray) : QColor(color_.rgb()), w, Qt::SolidLine,
                  Qt::RoundCap, Qt::RoundJoin));
    if (pos == last_) {
        p.setPen(Qt::NoPen);
        p.setBrush(tool_ == Tool::Eraser ? QColor(Qt::gray) : QColor(color_.rgb()));
        p.drawEllipse(pos, w / 2, w / 2);
    } else {
        p.drawLine(last_, pos);
    }
    last_ = pos;
    update();
}

void SketchCanvas::end() {
    if (!drawing_) {
        return;
    }
    pushUndo();
    QPainter p(&paint_);
    if (tool_ == Tool::Eraser) {
        p.setCompositionMode(QPainter::CompositionMode_DestinationOut);
        p.setOpacity(opacity_);
    } else {
        p.setOpacity(opacity_);
    }
    p.drawImage(0, 0, stroke_);
    p.end();
    drawing_ = false;
    stroke_ = QImage();
    update();
    Q_EMIT strokeFinished();
}

void SketchCanvas::fillAt(const QPointF& pos) {
    const QPoint start = pos.toPoint();
    if (!QRect(QPoint(0, 0), picture_.size()).contains(start)) {
        return;
    }
    const QImage seen = composited();
    const QRgb target = seen.pixel(start);
    const int w = seen.width(), h = seen.height();
    auto close = [&](QRgb c) {
        return std::abs(qRed(c) - qRed(target)) + std::abs(qGreen(c) - qGreen(target)) +
                   std::abs(qBlue(c) - qBlue(target)) <=
               24;
    };
    QImage mask(seen.size(), QImage::Format_Alpha8);
    mask.fill(0);
    std::vector<QPoint> todo{start};
    mask.scanLine(start.y())[start.x()] = 255;
    while (!todo.empty()) {
        const QPoint pt = todo.back();
        todo.pop_back();
        const QPoint next[4] = {pt + QPoint(1, 0), pt - QPoint(1, 0), pt + QPoint(0, 1),
                                pt - QPoint(0, 1)};
        for (const QPoint& n : next) {
            if (n.x() < 0 || n.y() < 0 || n.x() >= w || n.y() >= h ||
                mask.constScanLine(n.y())[n.x()] || !close(seen.pixel(n))) {
                continue;
            }
            mask.scanLine(n.y())[n.x()] = 255;
            todo.push_back(n);
        }
    }
    pushUndo();
    QImage fill(seen.size(), QImage::Format_ARGB32_Premultiplied);
    fill.fill(QColor(color_.rgb()));
    {
        QPainter m(&fill);
        m.setCompositionMode(QPainter::CompositionMode_DestinationIn);
        m.drawImage(0, 0, mask);
    }
    QPainter p(&paint_);
    p.setOpacity(opacity_);
    p.drawImage(0, 0, fill);
    p.end();
    update();
    Q_EMIT strokeFinished();
}

void SketchCanvas::mousePressEvent(QMouseEvent* e) {
    if (e->button() == Qt::LeftButton) {
        begin(toImage(e->position()), 1.0);
    }
}
void SketchCanvas::mouseMoveEvent(QMouseEvent* e) {
    if (e->buttons() & Qt::LeftButton) {
        extend(toImage(e->position()), 1.0);
    }
}
void SketchCanvas::mouseReleaseEvent(QMouseEvent* e) {
    if (e->button() == Qt::LeftButton) {
        end();
    }
}

void SketchCanvas::tabletEvent(QTabletEvent* e) {
    const double pressure = std::max(0.05, static_cast<double>(e->pressure()));
    switch (e->type()) {
        case QEvent::TabletPress:
            begin(toImage(e->position()), pressure);
            break;
        case QEvent::TabletMove:
            extend(toImage(e->position()), pressure);
            break;
        case QEvent::TabletRelease:
            end();
            break;
        default:
            break;
    }
    e->accept();
}

void SketchCanvas::dragEnterEvent(QDragEnterEvent* e) {
    if (e->mimeData()->hasUrls() || e->mimeData()->hasImage()) {
        e->acceptProposedAction();
    }
}

void SketchCanvas::dropEvent(QDropEvent* e) {
    const QMimeData* m = e->mimeData();
    if (m->hasImage()) {
        setPicture(qvariant_cast<QImage>(m->imageData()));
    } else if (m->hasUrls() && !m->urls().isEmpty()) {
        const QString path = m->urls().first().toLocalFile();
        QImageReader reader(path);
        const QImage image = reader.read();
        if (image.isNull()) {
            Q_EMIT message(tr("%1: cannot read the image: %2").arg(path, reader.errorString()));
            return;
        }
        setPicture(image);
    }
    e->acceptProposedAction();
}

}  // namespace sds::ui
