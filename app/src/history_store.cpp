#include "history_store.h"

#include <QBuffer>
#include <QDir>
#include <QDirIterator>
#include <QFileInfo>
#include <QImageReader>
#include <QSet>
#include <QSqlDatabase>
#include <QSqlError>
#include <QSqlQuery>
#include <QUuid>
#include <QVariant>

#include <nlohmann/json.hpp>

#include "image_io.h"
#include "sds/error.h"

namespace sds::app {

namespace {

constexpr int kThumb = 160;

QByteArray thumbnail_png(const QImage& image) {
    QByteArray bytes;
    if (image.isNull()) {
        return bytes;
    }
    QBuffer buffer(&bytes);
    buffer.open(QIODevice::WriteOnly);
    image.scaled(kThumb, kThumb, Qt::KeepAspectRatio, Qt::SmoothTransformation)
        .save(&buffer, "PNG");
    return bytes;
}

void exec(QSqlQuery& q, const QString& what) {
    if (!q.exec()) {
        throw FileError("history database: " + what.toStdString() + ": " +
                        q.lastError().text().toStdString());
    }
}

void exec(const QSqlDatabase& db, const QString& sql) {
    QSqlQuery q(db);
    q.prepare(sql);
    exec(q, sql);
}

HistoryEntry entry_from(const QSqlQuery& q, const QString& folder) {
    HistoryEntry e;
    e.id = q.value(0).toLongLong();
    e.parent_id = q.value(1).isNull() ? -1 : q.value(1).toLongLong();
    e.created = QDateTime::fromString(q.value(2).toString(), Qt::ISODateWithMs);
    e.file = QDir(folder).filePath(q.value(3).toString());
    e.model = q.value(4).toString();
    try {
        e.request = GenerationRequest::from_json(q.value(5).toString().toStdString());
    } catch (const std::exception&) {
        // A row written by a newer version with fields we do not read: keep the defaults.
    }
    e.thumbnail.loadFromData(q.value(6).toByteArray(), "PNG");
    return e;
}

const char* const kColumns = "id, parent_id, created, file, model, request, thumbnail";

}  // namespace

HistoryStore::HistoryStore(const QString& folder)
    : folder_(QDir(folder).absolutePath()),
      connection_("history-" + QUuid::createUuid().toString(QUuid::WithoutBraces)) {
    if (!QDir().mkpath(imagesFolder())) {
        throw FileError(folder_.toStdString() + ": cannot create the history folder");
    }
    QSqlDatabase db = QSqlDatabase::addDatabase("QSQLITE", connection_);
    db.setDatabaseName(QDir(folder_).filePath("history.sqlite"));
    if (!db.open()) {
        throw FileError(db.databaseName().toStdString() + ": cannot open the history database: " +
                        db.lastError().text().toStdString());
    }
    exec(db, "PRAGMA journal_mode=WAL");
    exec(db, "PRAGMA synchronous=NORMAL");
    exec(db,
         "CREATE TABLE IF NOT EXISTS images ("
         " id INTEGER PRIMARY KEY AUTOINCREMENT, parent_id INTEGER, created TEXT NOT NULL,"
         " file TEXT NOT NULL UNIQUE, model TEXT, prompt TEXT, negative TEXT,"
         " request TEXT NOT NULL, thumbnail BLOB)");
    exec(db, "CREATE INDEX IF NOT EXISTS images_parent ON images(parent_id)");
    reconcile();
}

HistoryStore::~HistoryStore() {
    {
        QSqlDatabase db = QSqlDatabase::database(connection_, false);
        db.close();
    }
    QSqlDatabase::removeDatabase(connection_);
}

QString HistoryStore::imagesFolder() const {
    return QDir(folder_).filePath("images");
}

std::pair<int, int> HistoryStore::reconcile() {
    QSqlDatabase db = QSqlDatabase::database(connection_);
    int removed = 0, added = 0;
    QSet<QString> known;
    QList<qint64> gone;
    {
        QSqlQuery q(db);
        q.prepare("SELECT id, file FROM images");
        exec(q, "reading the rows");
        while (q.next()) {
            const QString rel = q.value(1).toString();
            known.insert(rel);
            if (!QFileInfo::exists(QDir(folder_).filePath(rel))) {
                gone << q.value(0).toLongLong();
            }
        }
    }
    for (qint64 id : gone) {
        QSqlQuery q(db);
        q.prepare("DELETE FROM images WHERE id = ?");
        q.addBindValue(id);
        exec(q, "removing a row without a file");
        ++removed;
    }
    QStringList orphans;
    QDirIterator it(imagesFolder(), {"*.png"}, QDir::Files, QDirIterator::Subdirectories);
    while (it.hasNext()) {
        const QString path = it.next();
        if (!known.contains(QDir(folder_).relativeFilePath(path))) {
            orphans << path;
        }
    }
    orphans.sort();  // file names start with the time: oldest first keeps ids in order
    for (const QString& path : orphans) {
        try {
            const GenerationRequest r = read_request(path);
            QImageReader reader(path);
            const qint64 parent = reader.text("sdstudio-parent").isEmpty()
                                      ? -1
                                      : reader.text("sdstudio-parent").toLongLong();
            addFile(path, r, parent, QString(), reader.read());
            ++added;
        } catch (const std::exception&) {
            // Not one of ours (or unreadable): leave the file alone.
        }
    }
    return {removed, added};
}

HistoryEntry HistoryStore::addFile(const QString& file, const GenerationRequest& request,
                                   qint64 parent_id, const QString& model, const QImage& image) {
    QSqlDatabase db = QSqlDatabase::database(connection_);
    HistoryEntry e;
    e.parent_id = parent_id;
    e.created = QDateTime::currentDateTime();
    e.file = QFileInfo(file).absoluteFilePath();
    e.model = model;
    e.request = request;
    const QByteArray thumb = thumbnail_png(image.isNull() ? QImage(file) : image);
    e.thumbnail.loadFromData(thumb, "PNG");
    QSqlQuery q(db);
    q.prepare(
        "INSERT INTO images (parent_id, created, file, model, prompt, negative, request, "
        "thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    q.addBindValue(parent_id >= 0 ? QVariant(parent_id) : QVariant(QMetaType(QMetaType::LongLong)));
    q.addBindValue(e.created.toString(Qt::ISODateWithMs));
    q.addBindValue(QDir(folder_).relativeFilePath(e.file));
    q.addBindValue(model);
    q.addBindValue(QString::fromStdString(request.prompt));
    q.addBindValue(QString::fromStdString(request.negative_prompt));
    q.addBindValue(QString::fromStdString(request.to_json()));
    q.addBindValue(thumb);
    exec(q, "adding " + file);
    e.id = q.lastInsertId().toLongLong();
    return e;
}

HistoryEntry HistoryStore::add(const QImage& image, const GenerationRequest& request,
                               qint64 parent_id, const QString& model, const A1111Files& files) {
    const QString day = QDateTime::currentDateTime().toString("yyyy-MM-dd");
    QDir dir(QDir(imagesFolder()).filePath(day));
    dir.mkpath(".");
    const QString stem =
        QDateTime::currentDateTime().toString("HHmmss-zzz") + "-" + QString::number(request.seed);
    QString path = dir.filePath(stem + ".png");
    for (int n = 2; QFileInfo::exists(path); ++n) {
        path = dir.filePath(stem + "-" + QString::number(n) + ".png");
    }
    A1111Files named = files;
    if (named.model.empty()) {
        named.model = model.toStdString();
    }
    auto text = metadata_for(request, 0, named);
    if (parent_id >= 0) {
        text["sdstudio-parent"] = QString::number(parent_id);
    }
    save_png(path, image, text);
    return addFile(path, request, parent_id, model, image);
}

QList<HistoryEntry> HistoryStore::list(const QString& filter, int limit) const {
    QSqlQuery q(QSqlDatabase::database(connection_));
    QString sql = QString("SELECT %1 FROM images").arg(kColumns);
    if (!filter.isEmpty()) {
        sql += " WHERE prompt LIKE ? ESCAPE '\\' OR negative LIKE ? ESCAPE '\\'";
    }
    sql += " ORDER BY id DESC LIMIT ?";
    q.prepare(sql);
    if (!filter.isEmpty()) {
        QString pattern = filter;
        pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_");
        pattern = "%" + pattern + "%";
        q.addBindValue(pattern);
        q.addBindValue(pattern);
    }
    q.addBindValue(limit);
    exec(q, "listing");
    QList<HistoryEntry> out;
    while (q.next()) {
        out << entry_from(q, folder_);
    }
    return out;
}

std::optional<HistoryEntry> HistoryStore::get(qint64 id) const {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare(QString("SELECT %1 FROM images WHERE id = ?").arg(kColumns));
    q.addBindValue(id);
    exec(q, "reading an entry");
    if (!q.next()) {
        return std::nullopt;
    }
    return entry_from(q, folder_);
}

QList<HistoryEntry> HistoryStore::lineage(qint64 id) const {
    QList<HistoryEntry> chain;
    QSet<qint64> seen;
    for (auto e = get(id); e && !seen.contains(e->id); e = get(e->parent_id)) {
        seen.insert(e->id);
        chain.prepend(*e);
        if (e->parent_id < 0) {
            break;
        }
    }
    return chain;
}

QList<HistoryEntry> HistoryStore::children(qint64 id) const {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare(QString("SELECT %1 FROM images WHERE parent_id = ? ORDER BY id").arg(kColumns));
    q.addBindValue(id);
    exec(q, "reading children");
    QList<HistoryEntry> out;
    while (q.next()) {
        out << entry_from(q, folder_);
    }
    return out;
}

int HistoryStore::count() const {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("SELECT COUNT(*) FROM images");
    exec(q, "counting");
    return q.next() ? q.value(0).toInt() : 0;
}

void HistoryStore::remove(qint64 id) {
    const auto e = get(id);
    if (!e) {
        return;
    }
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("DELETE FROM images WHERE id = ?");
    q.addBindValue(id);
    exec(q, "deleting an entry");
    QFile::remove(e->file);
    // The init image and the mask saved beside the images go with the last entry naming them.
    for (const std::string& input : {e->request.init_image, e->request.mask_image}) {
        const QString file = QString::fromStdString(input);
        if (input.empty() || !QFileInfo(file).isAbsolute() ||
            !QFileInfo(file).absolutePath().startsWith(imagesFolder())) {
            continue;  // "canvas", or a file of the person's own
        }
        QSqlQuery others(QSqlDatabase::database(connection_));
        others.prepare("SELECT COUNT(*) FROM images WHERE request LIKE ?");
        others.addBindValue("%" + QString::fromStdString(nlohmann::json(input).dump()) + "%");
        exec(others, "looking for other entries with the same input picture");
        if (others.next() && others.value(0).toLongLong() == 0) {
            QFile::remove(file);
        }
    }
}

}  // namespace sds::app
