#pragma once
// The studio's settings, kept with QSettings (per user): the model folder and recent ones,
// device, precision, where images go, the preview interval, and the window layout.
#include <QByteArray>
#include <QString>
#include <QStringList>

namespace sds::app {

// A folder under the bundled models/ (default: the demo model, models/demo): installed beside
// the executables (../share/sdstudio/models/NAME) or in the source tree this was built from;
// empty when neither is there. The studio and the CLI use the demo model when no model is
// chosen.
QString bundled_model_folder(const QString& name = QStringLiteral("demo"));
// The configs a single-file checkpoint is opened with unless told otherwise: SD 2.1's
// (models/sd2-config) for an SD 2.x file, SDXL 1.0 base's (models/sdxl-config) for an SDXL
// file, else SD 1.5's (models/sd1-config).
QString single_file_config_folder(const QString& checkpoint = {});

struct StudioSettings {
    QString model;  // the model folder (or single-file checkpoint) last opened
    // The configs single-file checkpoints open with (a diffusers folder, weights optional);
    // empty: the bundled ones for the file's SD version (single_file_config_folder()).
    QString single_file_config;
    QString vae;         // a VAE instead of the model's (folder or file); empty: the model's own
    QStringList recent;  // most recent first, at most kMaxRecent
    QString device = "auto";   // auto | cpu | cuda
    QString dtype = "auto";    // auto | fp32 | bf16 | fp16
    QString data_folder;       // history database and images; default: the user's data folder
    QString lora_folder;       // where A1111's <lora:NAME:W> prompt tags find NAME.safetensors
    QString embedding_folder;  // textual inversion files, used where a prompt word names one
    int decode_every = 0;      // full VAE decode of the preview every N steps (0: never)
    QByteArray geometry, window_state;

    static constexpr int kMaxRecent = 8;
    static StudioSettings load();
    void save() const;
    void addRecent(const QString& folder);
    // data_folder, or the platform's per-user data folder when empty.
    QString dataFolder() const;
    // The prompt styles (A1111's styles.csv): styles.csv in dataFolder().
    QString stylesFile() const;
    // single_file_config, or the bundled configs for `checkpoint` when empty.
    QString singleFileConfig(const QString& checkpoint) const;
};

}  // namespace sds::app
