#pragma once
// Shows one image scaled to fit, keeping its aspect (nearest-neighbour when enlarged a lot, so a
// small latent preview stays crisp), with an optional caption line and an optional overlay drawn
// over the image's frame, half transparent (the sketch over its result, to compare them).
#include <QImage>
#include <QWidget>

namespace sds::ui {

class ImageView : public QWidget {
    Q_OBJECT
  public:
    explicit ImageView(QWidget* parent = nullptr);
    void setImage(const QImage& image, const QString& caption = QString());
    QImage image() const { return image_; }
    void setPlaceholder(const QString& text);
    // `overlay` scaled to the image's frame at `opacity` (0..1); a null image removes it.
    void setOverlay(const QImage& overlay, double opacity = 0.5);
    QImage overlay() const { return overlay_; }

  Q_SIGNALS:
    void clicked();

  protected:
    void paintEvent(QPaintEvent*) override;
    void mouseReleaseEvent(QMouseEvent*) override;

  private:
    QImage image_, overlay_;
    double overlayOpacity_ = 0.5;
    QString caption_, placeholder_;
};

}  // namespace sds::ui
