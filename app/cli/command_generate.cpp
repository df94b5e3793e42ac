// sdstudio-cli txt2img | img2img | inpaint [flags]: images as PNGs with their parameters.
#include <QDir>
#include <QFileInfo>

#include <cstdio>
#include <string_view>
#include <vector>

#include "file_hashes.h"
#include "image_io.h"
#include "request_flags.h"
#include "sds/error.h"

namespace sds::cli {

namespace {
enum class Mode { Txt2img, Img2img, Inpaint };

const char* mode_name(Mode mode) {
    return mode == Mode::Txt2img ? "txt2img" : (mode == Mode::Img2img ? "img2img" : "inpaint");
}

// One generation's flags, checked, with its init images read: everything that can be wrong
// with it, found before the model loads.
struct Job {
    GenerateFlags flags;
    InitImages images;
};

Job checked_job(const Args& args, Mode mode) {
    Job job{parse_generate_flags(args), {}};
    GenerateFlags& f = job.flags;
    if (!f.rest.empty()) {
        throw UsageError{"unknown argument '" + f.rest.front() + "'"};
    }
    const std::string name = mode_name(mode);
    if (mode == Mode::Txt2img && f.request.is_img2img()) {
        throw UsageError{"--init is for img2img and inpaint"};
    }
    if (mode != Mode::Txt2img && !f.request.is_img2img()) {
        throw UsageError{name + " needs --init IMAGE"};
    }
    if (mode == Mode::Inpaint && !f.request.is_inpaint()) {
        throw UsageError{"inpaint needs --mask IMAGE (white repaints, black keeps)"};
    }
    if (mode != Mode::Inpaint && f.request.is_inpaint()) {
        throw UsageError{"--mask is for inpaint"};
    }
    job.images = load_init_images(f.request);
    f.request.validate();
    return job;
}

// --prompts-file FILE (A1111's "Prompts from file or textbox"): a generation a line, the line
// a prompt, or flags ("--prompt "a cat" --seed 5") given after the command's own; empty lines
// and lines starting with '#' are skipped. Every line is checked before the model loads; an
// error names the file and the line.
std::vector<Job> prompts_file_jobs(const Args& base, const std::string& file, Mode mode) {
    const auto lines = read_text_lines(file);
    std::vector<Job> jobs;
    for (size_t k = 0; k < lines.size(); ++k) {
        const std::string at = file + ":" + std::to_string(k + 1) + ": ";
        std::string_view line = lines[k];
        while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
            line.remove_prefix(1);
        }
        while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) {
            line.remove_suffix(1);
        }
        if (line.empty() || line.front() == '#') {
            continue;
        }
        Args args = base;
        try {
            if (line.starts_with("--")) {
                for (std::string& a : split_command_line(line)) {
                    if (a == "--prompts-file" || a == "--model" || a == "--config" ||
                        a == "--vae" || a == "--device" || a == "--dtype" || a == "--out") {
                        throw UsageError{a +
                                         " is the command's, not a line's (one model loads "
                                         "for the whole file)"};
                    }
                    args.push_back(std::move(a));
                }
            } else {
                args.insert(args.end(), {"--prompt", std::string(line)});
            }
            jobs.push_back(checked_job(args, mode));
        } catch (const UsageError& e) {
            throw UsageError{at + e.message};
        } catch (const std::exception& e) {
            throw Error(at + e.what());
        }
    }
    if (jobs.empty()) {
        throw Error(file + ": no prompts in it (a prompt or a line of flags a line)");
    }
    return jobs;
}

int generate(const Args& in, Mode mode) {
    Args args;
    std::string prompts_file;
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] == "--prompts-file") {
            if (i + 1 >= in.size()) {
                throw UsageError{"--prompts-file needs a value"};
            }
            prompts_file = in[++i];
        } else {
            args.push_back(in[i]);
        }
    }
    std::vector<Job> jobs;
    if (prompts_file.empty()) {
        jobs.push_back(checked_job(args, mode));
    } else {
        jobs = prompts_file_jobs(args, prompts_file, mode);
    }
    const char* name = mode_name(mode);
    GenerateFlags& first = jobs.front().flags;
    Pipeline pipeline = load_pipeline(first);
    std::fprintf(stderr, "device: %s, %s\n", pipeline.device().str().c_str(),
                 c10::toString(pipeline.dtype()));
    QDir().mkpath(QString::fromStdString(first.out_dir));
    for (size_t j = 0; j < jobs.size(); ++j) {
        GenerateFlags& f = jobs[j].flags;
        if (j > 0 && !f.sampler_given) {  // the model's own, as load_pipeline set the first's
            f.request.sampler = first.request.sampler;
        }
        // Unset sizes: the model's own, as diffusers does.
        f.request.width = f.request.width ? f.request.width : pipeline.native_size();
        f.request.height = f.request.height ? f.request.height : pipeline.native_size();
        std::fprintf(stderr, "request: %s\n", f.request.to_json().c_str());
        const A1111Files files = app::a1111_files(f.request, QString::fromStdString(first.model),
                                                  QString::fromStdString(first.vae));
        Progress progress(jobs.size() == 1 ? std::string(name)
                                           : std::string(name) + " " + std::to_string(j + 1) + "/" +
                                                 std::to_string(jobs.size()));
        const GenerationResult result = pipeline.generate(
            f.request, jobs[j].images.init_or_null(), jobs[j].images.mask_or_null(),
            std::ref(progress), nullptr, jobs[j].images.controls);
        progress.done();
        for (size_t i = 0; i < result.images.size(); ++i) {
            const int64_t seed = result.request.seed + static_cast<int64_t>(i);
            const QString path = app::free_png_stem(QString::fromStdString(first.out_dir),
                                                    QString("%1-%2").arg(name).arg(seed)) +
                                 ".png";
            app::save_png(path, app::to_qimage(result.images[i]),
                          app::metadata_for(result.request, static_cast<int>(i), files));
            std::printf("%s\n", path.toStdString().c_str());
            std::fflush(stdout);
        }
    }
    return 0;
}
}  // namespace

int command_txt2img(const Args& args) {
    return generate(args, Mode::Txt2img);
}
int command_img2img(const Args& args) {
    return generate(args, Mode::Img2img);
}
int command_inpaint(const Args& args) {
    return generate(args, Mode::Inpaint);
}

}  // namespace sds::cli
