#include "image_io.h"

#include <QBuffer>
#include <QDir>
#include <QFileInfo>
#include <QImageReader>
#include <QImageWriter>
#include <QSaveFile>

#include <cstring>

#include "sds/error.h"

namespace sds::app {

QImage to_qimage(const Image& image) {
    QImage q(image.width, image.height, QImage::Format_RGB888);
    for (int y = 0; y < image.height; ++y) {
        std::memcpy(q.scanLine(y), image.rgb.data() + static_cast<size_t>(y) * image.width * 3,
                    static_cast<size_t>(image.width) * 3);
    }
    return q;
}

Image from_qimage(const QImage& input) {
    const QImage q = input.convertToFormat(QImage::Format_RGB888);
    Image out;
    out.width = q.width();
    out.height = q.height();
    out.rgb.resize(static_cast<size_t>(out.width) * out.height * 3);
    for (int y = 0; y < out.height; ++y) {
        std::memcpy(out.rgb.data() + static_cast<size_t>(y) * out.width * 3, q.constScanLine(y),
                    static_cast<size_t>(out.width) * 3);
    }
    return out;
}

Image load_image(const QString& path) {
    QImageReader reader(path);
    QImage q = reader.read();
    if (q.isNull()) {
        throw FileError(path.toStdString() +
                        ": cannot read the image: " + reader.errorString().toStdString());
    }
    if (q.hasAlphaChannel()) {  // composite over white, as a sketch on paper
        QImage flat(q.size(), QImage::Format_RGB888);
        flat.fill(Qt::white);
        for (int y = 0; y < q.height(); ++y) {
            for (int x = 0; x < q.width(); ++x) {
                const QColor c = q.pixelColor(x, y);
                const double a = c.alphaF();
                flat.setPixelColor(
                    x, y,
                    QColor::fromRgbF(c.redF() * a + (1 - a), c.greenF() * a + (1 - a),
                                     c.blueF() * a + (1 - a)));
            }
        }
        q = flat;
    }
    return from_qimage(q);
}

QString free_png_stem(const QString& dir, const QString& stem) {
    const QDir d(dir);
    const auto taken = [&](const QString& s) {
        return QFileInfo::exists(d.filePath(s + ".png")) ||
               !d.entryList({s + "-x*-y*.png"}, QDir::Files).isEmpty();
    };
    QString s = stem;
    for (int n = 2; taken(s); ++n) {
        s = stem + "-" + QString::number(n);
    }
    return d.filePath(s);
}

void save_png(const QString& path, const QImage& image, const QMap<QString, QString>& text) {
    QSaveFile file(path);
    if (!file.open(QIODevice::WriteOnly)) {
        throw FileError(path.toStdString() + ": cannot write: " + file.errorString().toStdString());
    }
    // The text goes on the image: QImageWriter::setText would simplify it, joining the lines of
    // A1111's parameters into one.
    QImage tagged = image;
    for (auto it = text.begin(); it != text.end(); ++it) {
        tagged.setText(it.key(), it.value());
    }
    QImageWriter writer(&file, "png");
    if (!writer.write(tagged) || !file.commit()) {
        throw FileError(path.toStdString() +
                        ": writing the PNG failed: " + writer.errorString().toStdString());
    }
}

GenerationRequest request_for_image(const GenerationRequest& request, int index) {
    GenerationRequest one = request;
    one.seed = request.seed + index;
    one.batch_count = 1;
    return one;
}

QMap<QString, QString> metadata_for(const GenerationRequest& request, int index,
                                    const A1111Files& files) {
    const GenerationRequest one = request_for_image(request, index);
    return {{"parameters", QString::fromStdString(one.to_a1111(0, files))},
            {"sdstudio", QString::fromStdString(one.to_json())}};
}

GenerationRequest read_request(const QString& path) {
    QImageReader reader(path);
    // The text as the file has it: QImageReader::text() simplifies it (A1111's parameters
    // would lose their lines), the image's own text does not.
    const QImage image = reader.read();
    if (image.isNull()) {
        throw FileError(path.toStdString() +
                        ": cannot read the image: " + reader.errorString().toStdString());
    }
    const QString json = image.text("sdstudio");
    if (!json.isEmpty()) {
        return GenerationRequest::from_json(json.toStdString());
    }
    const QString a1111 = image.text("parameters");
    if (!a1111.isEmpty()) {
        return GenerationRequest::from_a1111(a1111.toStdString());
    }
    throw FileError(path.toStdString() +
                    ": has no generation parameters (no 'sdstudio' or "
                    "'parameters' text chunk)");
}

}  // namespace sds::app
