#pragma once
// The history panel: thumbnails newest first, search by prompt, actions on the selected image
// (show, use as input, reuse parameters, export, delete) and the lineage of the selected image
// (the chain of img2img generations it came from, root first, and its direct children).
#include <QWidget>

#include "history_store.h"

class QLineEdit;
class QListWidget;
class QListWidgetItem;
class QPushButton;

namespace sds::ui {

class HistoryView : public QWidget {
    Q_OBJECT
  public:
    explicit HistoryView(QWidget* parent = nullptr);
    void setStore(app::HistoryStore* store);
    void refresh();
    qint64 selectedId() const;
    void select(qint64 id);
    int shownCount() const;
    int lineageCount() const;

  Q_SIGNALS:
    void showRequested(qint64 id);
    void useAsInputRequested(qint64 id);
    void reuseRequested(qint64 id);
    void exportRequested(qint64 id);
    void deleteRequested(qint64 id);

  private:
    void updateLineage();
    app::HistoryStore* store_ = nullptr;
    QLineEdit* search_;
    QListWidget* list_;
    QListWidget* lineage_;
    QPushButton* use_;
    QPushButton* reuse_;
    QPushButton* export_;
    QPushButton* delete_;
};

}  // namespace sds::ui
