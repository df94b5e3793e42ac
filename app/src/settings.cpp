#include "settings.h"

#include <QCoreApplication>
#include <QDir>
#include <QFileInfo>
#include <QSettings>
#include <QStandardPaths>

#include "sds/model_folder.h"

namespace sds::app {

QString bundled_model_folder(const QString& name) {
    const QStringList candidates = {
        QDir(QCoreApplication::applicationDirPath()).filePath("../share/sdstudio/models/" + name),
        QStringLiteral(SDS_SOURCE_MODELS_DIR "/") + name};
    for (const QString& c : candidates) {
        if (QFileInfo::exists(QDir(c).filePath("model_index.json"))) {
            return QDir(c).absolutePath();
        }
    }
    return QString();
}

QString single_file_config_folder(const QString& checkpoint) {
    SingleFileKind kind = SingleFileKind::SD1;
    int64_t unet_channels = 0;
    if (!checkpoint.isEmpty() && QFileInfo(checkpoint).isFile()) {
        try {
            kind = ModelFolder::single_file_kind(checkpoint.toStdString());
            unet_channels = ModelFolder::single_file_unet_in_channels(checkpoint.toStdString());
        } catch (const std::exception&) {
            // unreadable: opening it says so
        }
    }
    switch (kind) {
        case SingleFileKind::SD2:
            // SD 2's inpainting model (512-inpainting-ema) is a 512 px epsilon model, as 2.1
            // base is; diffusers' from_single_file takes it so too.
            return bundled_model_folder(unet_channels == 9 ? QStringLiteral("sd2-base-config")
                                                           : QStringLiteral("sd2-config"));
        case SingleFileKind::SDXL:
            return bundled_model_folder(QStringLiteral("sdxl-config"));
        default:
            return bundled_model_folder(QStringLiteral("sd1-config"));
    }
}

StudioSettings StudioSettings::load() {
    QSettings s;
    StudioSettings out;
    out.model = s.value("model/folder").toString();
    out.recent = s.value("model/recent").toStringList();
    out.single_file_config = s.value("model/single_file_config").toString();
    out.vae = s.value("model/vae").toString();
    out.device = s.value("engine/device", out.device).toString();
    out.dtype = s.value("engine/dtype", out.dtype).toString();
    out.data_folder = s.value("output/folder").toString();
    out.lora_folder = s.value("model/lora_folder").toString();
    out.embedding_folder = s.value("model/embedding_folder").toString();
    out.decode_every = s.value("preview/decode_every", 0).toInt();
    out.geometry = s.value("window/geometry").toByteArray();
    out.window_state = s.value("window/state").toByteArray();
    return out;
}

void StudioSettings::save() const {
    QSettings s;
    s.setValue("model/folder", model);
    s.setValue("model/recent", recent);
    s.setValue("model/single_file_config", single_file_config);
    s.setValue("engine/device", device);
    s.setValue("engine/dtype", dtype);
    s.setValue("output/folder", data_folder);
    s.setValue("model/lora_folder", lora_folder);
    s.setValue("model/vae", vae);
    s.setValue("model/embedding_folder", embedding_folder);
    s.setValue("preview/decode_every", decode_every);
    s.setValue("window/geometry", geometry);
    s.setValue("window/state", window_state);
    s.sync();
}

void StudioSettings::addRecent(const QString& folder) {
    recent.removeAll(folder);
    recent.prepend(folder);
    while (recent.size() > kMaxRecent) {
        recent.removeLast();
    }
}

QString StudioSettings::singleFileConfig(const QString& checkpoint) const {
    return single_file_config.isEmpty() ? single_file_config_folder(checkpoint)
                                        : single_file_config;
}

QString StudioSettings::dataFolder() const {
    return data_folder.isEmpty()
               ? QStandardPaths::writableLocation(QStandardPaths::AppLocalDataLocation)
               : data_folder;
}

QString StudioSettings::stylesFile() const {
    return dataFolder() + QStringLiteral("/styles.csv");
}

}  // namespace sds::app
