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

namespace {
const QColor kMaskColour(255, 40, 80);
constexpr double kMaskOverlayOpacity = 0.45;

// `image` scaled to fit `target`, keeping its aspect, drawn in the middle (how an opened
// picture, and a mask opened for it, lie on the canvas).
void draw_fitted(QImage& target, const QImage& image) {
    QPainter p(&target);
    const QImage scaled =
        image.scaled(target.size(), Qt::KeepAspectRatio, Qt::SmoothTransformation);
    p.drawImage((target.width() - scaled.width()) / 2, (target.height() - scaled.height()) / 2,
                scaled);
}
}  // namespace

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
    mask_ = paint_;
}

void SketchCanvas::setImageSize(QSize size) {
    if (size == picture_.size() || size.isEmpty()) {
        return;
    }
    picture_ = picture_.scaled(size, Qt::IgnoreAspectRatio, Qt::SmoothTransformation);
    paint_ = paint_.scaled(size, Qt::IgnoreAspectRatio, Qt::SmoothTransformation);
    mask_ = mask_.scaled(size, Qt::IgnoreAspectRatio, Qt::FastTransformation);
    undo_.clear();
    redo_.clear();
    Q_EMIT undoStateChanged();
    update();
}

QImage SketchCanvas::composited() const {
    QImage out = picture_.convertToFormat(QImage::Format_RGB32);
    QPainter p(&out);
    p.drawImage(0, 0, paint_);
    if (drawing_ && tool_ == Tool::Brush && !maskEditing_) {
        p.setOpacity(opacity_);
        p.drawImage(0, 0, stroke_);
    }
    return out;
}

QImage SketchCanvas::image() const {
    return composited().convertToFormat(QImage::Format_RGB888);
}

QImage SketchCanvas::mask() const {
    QImage out(mask_.size(), QImage::Format_RGB888);
    for (int y = 0; y < mask_.height(); ++y) {
        const QRgb* in = reinterpret_cast<const QRgb*>(mask_.constScanLine(y));
        uchar* line = out.scanLine(y);
        for (int x = 0; x < mask_.width(); ++x) {
            const uchar v = qAlpha(in[x]) >= 128 ? 255 : 0;
            line[3 * x] = line[3 * x + 1] = line[3 * x + 2] = v;
        }
    }
    return out;
}

bool SketchCanvas::hasMask() const {
    for (int y = 0; y < mask_.height(); ++y) {
        const QRgb* in = reinterpret_cast<const QRgb*>(mask_.constScanLine(y));
        if (std::any_of(in, in + mask_.width(), [](QRgb c) { return qAlpha(c) >= 128; })) {
            return true;
        }
    }
    return false;
}

void SketchCanvas::setMaskEditing(bool on) {
    maskEditing_ = on;
    update();
}

void SketchCanvas::setMaskShown(bool on) {
    maskShown_ = on;
    update();
}

void SketchCanvas::setMask(const QImage& image) {
    if (image.isNull()) {
        return;
    }
    QImage grey(picture_.size(), QImage::Format_Grayscale8);
    grey.fill(Qt::black);
    draw_fitted(grey, image);
    pushUndo();
    mask_.fill(Qt::transparent);
    for (int y = 0; y < grey.height(); ++y) {
        const uchar* in = grey.constScanLine(y);
        QRgb* out = reinterpret_cast<QRgb*>(mask_.scanLine(y));
        for (int x = 0; x < grey.width(); ++x) {
            if (in[x] >= 128) {
                out[x] = kMaskColour.rgb();
            }
        }
    }
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::clearMask() {
    pushUndo();
    mask_.fill(Qt::transparent);
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::invertMask() {
    pushUndo();
    QImage inverted(mask_.size(), QImage::Format_ARGB32_Premultiplied);
    inverted.fill(kMaskColour);
    QPainter p(&inverted);
    p.setCompositionMode(QPainter::CompositionMode_DestinationOut);
    p.drawImage(0, 0, mask_);
    p.end();
    mask_ = inverted;
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::extend(int left, int top, int right, int bottom) {
    left = std::max(0, left), top = std::max(0, top);
    right = std::max(0, right), bottom = std::max(0, bottom);
    if (left + top + right + bottom == 0) {
        return;
    }
    const QImage old = composited();
    const int w = old.width(), h = old.height();
    QImage picture(w + left + right, h + top + bottom, QImage::Format_RGB32);
    for (int y = 0; y < picture.height(); ++y) {
        const QRgb* in =
            reinterpret_cast<const QRgb*>(old.constScanLine(std::clamp(y - top, 0, h - 1)));
        QRgb* out = reinterpret_cast<QRgb*>(picture.scanLine(y));
        for (int x = 0; x < picture.width(); ++x) {
            out[x] = in[std::clamp(x - left, 0, w - 1)];
        }
    }
    QImage mask(picture.size(), QImage::Format_ARGB32_Premultiplied);
    mask.fill(kMaskColour);
    {
        QPainter p(&mask);
        p.setCompositionMode(QPainter::CompositionMode_Source);
        p.fillRect(QRect(left, top, w, h), Qt::transparent);
        p.setCompositionMode(QPainter::CompositionMode_SourceOver);
        p.drawImage(left, top, mask_);
    }
    picture_ = picture;
    paint_ = QImage(picture.size(), QImage::Format_ARGB32_Premultiplied);
    paint_.fill(Qt::transparent);
    mask_ = mask;
    undo_.clear();
    redo_.clear();
    Q_EMIT undoStateChanged();
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::restore(const State& s) {
    picture_ = s.picture, paint_ = s.paint, mask_ = s.mask;
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
    undo_.push_back(state());
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
    redo_.push_back(state());
    restore(undo_.takeLast());
    Q_EMIT undoStateChanged();
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::redo() {
    if (redo_.isEmpty()) {
        return;
    }
    undo_.push_back(state());
    restore(redo_.takeLast());
    Q_EMIT undoStateChanged();
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::clear() {
    pushUndo();
    picture_.fill(Qt::white);
    paint_.fill(Qt::transparent);
    mask_.fill(Qt::transparent);
    Q_EMIT strokeFinished();
    update();
}

void SketchCanvas::setPicture(const QImage& image) {
    if (image.isNull()) {
        return;
    }
    pushUndo();
    picture_.fill(Qt::white);
    draw_fitted(picture_, image);
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
    if (maskShown_ || maskEditing_) {
        p.setOpacity(kMaskOverlayOpacity);
        p.drawImage(r, mask_);
        if (drawing_ && tool_ == Tool::Brush && maskEditing_) {
            p.drawImage(r, stroke_);
        }
        p.setOpacity(1.0);
    }
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
    const QColor ink = tool_ == Tool::Eraser ? QColor(Qt::gray)
                       : maskEditing_        ? kMaskColour
                                             : QColor(color_.rgb());
    p.setPen(QPen(ink, w, Qt::SolidLine, Qt::RoundCap, Qt::RoundJoin));
    if (pos == last_) {
        p.setPen(Qt::NoPen);
        p.setBrush(ink);
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
    QPainter p(&target());
    if (tool_ == Tool::Eraser) {
        p.setCompositionMode(QPainter::CompositionMode_DestinationOut);
    }
    p.setOpacity(maskEditing_ ? 1.0 : opacity_);  // the mask is all or nothing
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
    const QRgb picked = seen.pixel(start);
    const int w = seen.width(), h = seen.height();
    auto close = [&](QRgb c) {
        return std::abs(qRed(c) - qRed(picked)) + std::abs(qGreen(c) - qGreen(picked)) +
                   std::abs(qBlue(c) - qBlue(picked)) <=
               24;
    };
    QImage region(seen.size(), QImage::Format_Alpha8);
    region.fill(0);
    std::vector<QPoint> todo{start};
    region.scanLine(start.y())[start.x()] = 255;
    while (!todo.empty()) {
        const QPoint pt = todo.back();
        todo.pop_back();
        const QPoint next[4] = {pt + QPoint(1, 0), pt - QPoint(1, 0), pt + QPoint(0, 1),
                                pt - QPoint(0, 1)};
        for (const QPoint& n : next) {
            if (n.x() < 0 || n.y() < 0 || n.x() >= w || n.y() >= h ||
                region.constScanLine(n.y())[n.x()] || !close(seen.pixel(n))) {
                continue;
            }
            region.scanLine(n.y())[n.x()] = 255;
            todo.push_back(n);
        }
    }
    pushUndo();
    QImage fill(seen.size(), QImage::Format_ARGB32_Premultiplied);
    fill.fill(maskEditing_ ? kMaskColour : QColor(color_.rgb()));
    {
        QPainter m(&fill);
        m.setCompositionMode(QPainter::CompositionMode_DestinationIn);
        m.drawImage(0, 0, region);
    }
    QPainter p(&target());
    p.setOpacity(maskEditing_ ? 1.0 : opacity_);
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
