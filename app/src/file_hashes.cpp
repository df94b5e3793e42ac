#include "file_hashes.h"

#include <QCryptographicHash>
#include <QDateTime>
#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QJsonDocument>
#include <QJsonObject>
#include <QSaveFile>

#include <iterator>
#include <mutex>

#include "sds/error.h"
#include "settings.h"

namespace sds::app {

namespace {

std::mutex cache_mutex;  // the cache file, between the studio's threads

QJsonObject read_cache(const QString& path) {
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly)) {
        return {};
    }
    // A cache that cannot be read is no cache: the hashes are computed again.
    return QJsonDocument::fromJson(f.readAll()).object();
}

QString hash_of(const QString& file, bool after_header) {
    QFile f(file);
    if (!f.open(QIODevice::ReadOnly)) {
        throw FileError(file.toStdString() + ": cannot be read to hash it (" +
                        f.errorString().toStdString() + ")");
    }
    if (after_header) {
        // A .safetensors file: 8 bytes of header length (little-endian), the header, the data.
        const QByteArray n = f.read(8);
        uint64_t length = 0;
        for (int i = 7; n.size() == 8 && i >= 0; --i) {
            length = (length << 8) | static_cast<uint8_t>(n[i]);
        }
        if (n.size() != 8 || length > static_cast<uint64_t>(f.size()) - 8 ||
            !f.seek(static_cast<qint64>(8 + length))) {
            throw FileError(file.toStdString() + ": not a .safetensors file (its header's length " +
                            "is past its end)");
        }
    }
    QCryptographicHash hash(QCryptographicHash::Sha256);
    if (!hash.addData(&f)) {
        throw FileError(file.toStdString() + ": cannot be read to hash it");
    }
    return QString::fromLatin1(hash.result().toHex());
}

}  // namespace

QString hash_cache_file() {
    return QDir(StudioSettings::load().dataFolder()).filePath("hashes.json");
}

std::string file_sha256(const QString& file, bool after_header) {
    const QFileInfo info(file);
    const QString key = (after_header ? "safetensors-data:" : "file:") + info.absoluteFilePath();
    const QString cache_path = hash_cache_file();
    const auto stamp = [&](QJsonObject& o) {
        o["size"] = QString::number(info.size());
        o["mtime"] = QString::number(info.lastModified().toMSecsSinceEpoch());
    };
    QJsonObject entry;
    stamp(entry);
    {
        std::lock_guard lock(cache_mutex);
        const QJsonObject cached = read_cache(cache_path).value(key).toObject();
        if (cached.value("size") == entry.value("size") &&
            cached.value("mtime") == entry.value("mtime") &&
            cached.value("sha256").toString().size() == 64) {
            return cached.value("sha256").toString().toStdString();
        }
    }
    const QString sha = hash_of(file, after_header);  // outside the lock: it may take a while
    entry["sha256"] = sha;
    std::lock_guard lock(cache_mutex);
    QJsonObject cache = read_cache(cache_path);  // again: another process may have added some
    // Files gone since are let go, so that the cache does not grow without end.
    for (auto it = cache.begin(); it != cache.end();) {
        const QString path = it.key().section(':', 1);
        it = QFileInfo::exists(path) ? std::next(it) : cache.erase(it);
    }
    cache[key] = entry;
    QDir().mkpath(QFileInfo(cache_path).absolutePath());
    QSaveFile out(cache_path);
    // Not kept is no harm: the hash is computed again next time.
    if (out.open(QIODevice::WriteOnly)) {
        out.write(QJsonDocument(cache).toJson());
        out.commit();
    }
    return sha.toStdString();
}

A1111Files a1111_files(const GenerationRequest& r, const QString& model, const QString& vae) {
    A1111Files files;
    const QFileInfo m(model);
    if (m.isFile()) {
        files.model = m.completeBaseName().toStdString();
        files.model_hash = file_sha256(model).substr(0, 10);
    } else {
        files.model = m.fileName().toStdString();
    }
    if (!vae.isEmpty()) {
        const QFileInfo v(vae);
        files.vae = v.fileName().toStdString();
        if (v.isFile()) {
            files.vae_hash = file_sha256(vae).substr(0, 10);
        }
    }
    const auto is_safetensors = [](const QString& f) {
        return f.endsWith(".safetensors", Qt::CaseInsensitive);
    };
    for (const LoraRef& l : r.loras) {
        const QString f = QString::fromStdString(l.file);
        files.lora_hashes.emplace_back(QFileInfo(f).completeBaseName().toStdString(),
                                       file_sha256(f, is_safetensors(f)).substr(0, 12));
    }
    for (const EmbeddingRef& e : r.embeddings) {
        const QString f = QString::fromStdString(e.file);
        files.ti_hashes.emplace_back(
            e.token.empty() ? QFileInfo(f).completeBaseName().toStdString() : e.token,
            file_sha256(f).substr(0, 12));
    }
    return files;
}

}  // namespace sds::app
