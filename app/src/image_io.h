#pragma once
// Image files: PNG with text chunks (A1111 "parameters" + our request JSON under "sdstudio"),
// through Qt. The one image <-> tensor conversion lives in core (sds/image.h); these only move
// pixels between sds::Image and QImage.
#include <QImage>
#include <QMap>
#include <QString>

#include "sds/generation_request.h"
#include "sds/image.h"

namespace sds::app {

QImage to_qimage(const Image& image);
Image from_qimage(const QImage& image);

// Reads any image Qt reads (PNG, JPEG, ...); throws sds::FileError naming the file.
Image load_image(const QString& path);

// Writes a PNG atomically (QSaveFile) with the given text chunks; throws sds::FileError.
void save_png(const QString& path, const QImage& image, const QMap<QString, QString>& text);

// DIR/STEM without an extension, free for STEM.png and STEM-*.png: STEM itself, else STEM-2,
// STEM-3, ... (so that a new image never replaces one made before).
QString free_png_stem(const QString& dir, const QString& stem);

// The request of image `index` of a generation on its own: its seed (seed + index), a batch of
// one. What history rows and PNG metadata record.
GenerationRequest request_for_image(const GenerationRequest& request, int index);

// The chunks SD Studio writes for image `index` of a generation: A1111's parameters text
// (naming `files`, a1111_files) and the request as JSON.
QMap<QString, QString> metadata_for(const GenerationRequest& request, int index,
                                    const A1111Files& files);

// The request stored in a PNG: our JSON chunk if present, else A1111's parameters text;
// throws sds::FileError when the file has neither.
GenerationRequest read_request(const QString& path);

}  // namespace sds::app
