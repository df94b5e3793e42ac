// Saves images into a history as fast as it can and prints "saved ID" after each entry is
// committed, until it is killed. studio_test kills it mid-save and checks that every entry it
// reported is still there.
#include <QCoreApplication>
#include <QGuiApplication>
#include <QImage>
#include <QPainter>

#include <cstdio>

#include "history_store.h"

int main(int argc, char** argv) {
    QGuiApplication app(argc, argv);
    if (argc < 2) {
        std::fprintf(stderr, "usage: history_kill_helper FOLDER\n");
        return 2;
    }
    sds::app::HistoryStore store(QString::fromLocal8Bit(argv[1]));
    for (int i = 0;; ++i) {
        QImage image(256, 256, QImage::Format_RGB888);
        image.fill(QColor::fromHsv(i * 37 % 360, 200, 200));
        QPainter(&image).drawText(20, 40, QString::number(i));
        sds::GenerationRequest r;
        r.prompt = "kill test " + std::to_string(i);
        r.seed = i;
        const auto e = store.add(image, r, i > 0 ? i : -1, "helper");
        std::printf("saved %lld\n", static_cast<long long>(e.id));
        std::fflush(stdout);
    }
}
