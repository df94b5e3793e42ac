#pragma once
// Shows one image scaled to fit, keeping its aspect (nearest-neighbour when enlarged a lot, so a
// small latent preview stays crisp), with an optional caption line.
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

  Q_SIGNALS:
    void clicked();

  protected:
    void paintEvent(QPaintEvent*) override;
    void mouseReleaseEvent(QMouseEvent*) override;

  private:
    QImage image_;
    QString caption_, placeholder_;
};

}  // namespace sds::ui
