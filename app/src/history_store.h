#pragma once
// The studio's history: every image with its full request, as PNG files (A1111 "parameters" +
// our JSON chunk) under one folder and one row per image in SQLite (WAL), with the parent each
// img2img came from.
//
// Durability: the PNG is committed (QSaveFile: written, synced, renamed) before its row is
// inserted, and an entry is reported saved only after its row committed. open() reconciles:
// rows whose file is gone are dropped, PNGs without a row (the app was killed between the two
// writes) are added from their own metadata. Nothing shown as saved is lost to a kill.
#include <QDateTime>
#include <QImage>
#include <QList>
#include <QString>

#include "sds/generation_request.h"

namespace sds::app {

struct HistoryEntry {
    qint64 id = -1;
    qint64 parent_id = -1;  // -1: none
    QDateTime created;
    QString file;  // absolute path of the PNG
    QString model;
    GenerationRequest request;  // this image's own request (its seed, batch of one)
    QImage thumbnail;           // at most 160 px on the longer side
};

class HistoryStore {
  public:
    // `folder` holds history.sqlite and images/; created when missing. Throws sds::FileError
    // when the database cannot be opened.
    explicit HistoryStore(const QString& folder);
    ~HistoryStore();
    HistoryStore(const HistoryStore&) = delete;
    HistoryStore& operator=(const HistoryStore&) = delete;

    QString folder() const { return folder_; }
    QString imagesFolder() const;  // where new PNGs go

    // Rows whose file vanished are removed, PNGs in imagesFolder() without a row are added.
    // Returns {removed, added}. Called by the constructor.
    std::pair<int, int> reconcile();

    // Records an already committed PNG (written with metadata_for, optionally a
    // "sdstudio-parent" chunk). Returns the new entry.
    HistoryEntry addFile(const QString& file, const GenerationRequest& request, qint64 parent_id,
                         const QString& model, const QImage& image = QImage());
    // Writes the PNG (its A1111 text naming `files`, else the model alone) and records it.
    HistoryEntry add(const QImage& image, const GenerationRequest& request, qint64 parent_id,
                     const QString& model, const A1111Files& files = {});

    // Newest first; `filter` matches the prompt or negative prompt (case-insensitive).
    QList<HistoryEntry> list(const QString& filter = QString(), int limit = 500) const;
    std::optional<HistoryEntry> get(qint64 id) const;
    // Root first, ending with `id`.
    QList<HistoryEntry> lineage(qint64 id) const;
    QList<HistoryEntry> children(qint64 id) const;
    int count() const;
    // Removes the row, then the file; children keep their parent id (shown as removed).
    void remove(qint64 id);

  private:
    QString folder_;
    QString connection_;
};

}  // namespace sds::app
