// sdstudio: the GUI.
#include <QApplication>
#include <QCommandLineParser>

#include "main_window.h"
#include "settings.h"

int main(int argc, char** argv) {
    QApplication app(argc, argv);
    QApplication::setOrganizationName("SD Studio");
    QApplication::setApplicationName("SD Studio");
    QCommandLineParser parser;
    parser.addHelpOption();
    parser.addPositionalArgument("model",
                                 "A diffusers model folder or a single-file SD 1.x checkpoint.");
    const QCommandLineOption config(
        "config",
        "The configs single-file checkpoints open with: a diffusers folder (remembered in the "
        "settings; default: SD 1.5's).",
        "dir");
    parser.addOption(config);
    parser.process(app);
    sds::app::StudioSettings settings = sds::app::StudioSettings::load();
    if (parser.isSet(config)) {
        settings.single_file_config = parser.value(config);
    }
    if (!parser.positionalArguments().isEmpty()) {
        settings.model.clear();  // opened below, after the window is up
    }
    if (settings.model.isEmpty() && parser.positionalArguments().isEmpty()) {
        settings.model = sds::app::bundled_model_folder();  // works out of the box
    }
    sds::ui::MainWindow window(settings);
    if (!parser.positionalArguments().isEmpty()) {
        window.openModel(parser.positionalArguments().first());
    }
    window.show();
    return app.exec();
}
