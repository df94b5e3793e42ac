#pragma once
// Every step's preview of the last run, as a strip of thumbnails with a slider to scrub through
// them (also ←/→). Selecting a step shows its preview in the result view.
#include <QImage>
#include <QList>
#include <QWidget>

class QLabel;
class QListWidget;
class QSlider;

namespace sds::ui {

class StepStrip : public QWidget {
    Q_OBJECT
  public:
    explicit StepStrip(QWidget* parent = nullptr);
    void start(int total);  // a new run: forget the old previews
    void addStep(int index, int total, const QImage& preview);
    int count() const { return static_cast<int>(previews_.size()); }
    QImage preview(int index) const { return previews_.value(index); }
    int current() const;
    void setCurrent(int index);

  Q_SIGNALS:
    void stepSelected(int index, const QImage& preview);

  private:
    void select(int index);
    QList<QImage> previews_;
    int total_ = 0;
    QListWidget* list_;
    QSlider* slider_;
    QLabel* label_;
    bool following_ = true;  // the slider follows the newest step until the person moves it
};

}  // namespace sds::ui
