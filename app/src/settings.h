#pragma once
// The studio's settings, kept with QSettings (per user): the model folder and recent ones,
// device, precision, where images go, the preview interval, and the window layout.
#include <QByteArray>
#include <QString>
#include <QStringList>

namespace sds::app {

// The bundled demo model (models/demo): installed beside the executables
// (../share/sdstudio/models/demo) or in the source tree this was built from; empty when neither
// is there. The studio and the CLI use it when no model is chosen.
QString bundled_model_folder();

struct StudioSettings {
    QString model;            // the model folder last opened
    QStringList recent;       // most recent first, at most kMaxRecent
    QString device = "auto";  // auto | cpu | cuda
    QString dtype = "auto";   // auto | fp32 | bf16 | fp16
    QString data_folder;      // history database and images; default: the user's data folder
    int decode_every = 0;     // full VAE decode of the preview every N steps (0: never)
    QByteArray geometry, window_state;

    static constexpr int kMaxRecent = 8;
    static StudioSettings load();
    void save() const;
    void addRecent(const QString& folder);
    // data_folder, or the platform's per-user data folder when empty.
    QString dataFolder() const;
};

}  // namespace sds::app
