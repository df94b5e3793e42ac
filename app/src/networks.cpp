#include "networks.h"

#include <QJsonDocument>
#include <QJsonObject>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <sstream>
#include <utility>

#include "sds/generation_request.h"
#include "sds/safetensors.h"

namespace sds::app {

namespace {
namespace fs = std::filesystem;

constexpr size_t kTrainedOnShown = 8;

std::vector<NetworkFile> listed(const std::string& folder, const std::vector<fs::path>& files) {
    std::vector<NetworkFile> out;
    for (const fs::path& f : files) {
        NetworkFile n;
        n.name = f.stem().string();
        n.shown = f.lexically_relative(folder).replace_extension().generic_string();
        n.path = f.string();
        out.push_back(std::move(n));
    }
    return out;
}

// kohya-ss's ss_tag_frequency: {"dataset": {"tag": count, ...}, ...}, counted over the
// datasets, most frequent first (ties by name).
std::vector<std::string> trained_on(const fs::path& file) {
    std::map<std::string, std::string> metadata;
    try {
        metadata = SafeTensorsFile::open(file).metadata();
    } catch (const std::exception&) {
        return {};  // a generation that names it says what is wrong with it
    }
    const auto it = metadata.find("ss_tag_frequency");
    if (it == metadata.end()) {
        return {};
    }
    std::map<std::string, double> counts;
    const QJsonObject datasets =
        QJsonDocument::fromJson(QByteArray::fromStdString(it->second)).object();
    for (auto d = datasets.begin(); d != datasets.end(); ++d) {
        const QJsonObject tags = d.value().toObject();
        for (auto t = tags.begin(); t != tags.end(); ++t) {
            const std::string tag = t.key().trimmed().toStdString();
            if (!tag.empty()) {
                counts[tag] += t.value().toDouble();
            }
        }
    }
    std::vector<std::pair<std::string, double>> sorted(counts.begin(), counts.end());
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    std::vector<std::string> out;
    for (size_t i = 0; i < sorted.size() && i < kTrainedOnShown; ++i) {
        out.push_back(sorted[i].first);
    }
    return out;
}

// `prompt` without the spans [begin, end) (in order, not overlapping), each with the
// separator before it (", " or a space), or, where none is before it, the one after it.
std::string without(const std::string& prompt, std::vector<std::pair<size_t, size_t>> spans) {
    const auto before = [&](size_t at, size_t floor, const std::string& sep) {
        return at >= floor + sep.size() && prompt.compare(at - sep.size(), sep.size(), sep) == 0;
    };
    const auto after = [&](size_t at, const std::string& sep) {
        return prompt.compare(at, sep.size(), sep) == 0;
    };
    std::string out;
    size_t last = 0;
    for (auto [begin, end] : spans) {
        if (before(begin, last, ", ")) {
            begin -= 2;
        } else if (before(begin, last, " ")) {
            begin -= 1;
        } else if (after(end, ", ")) {
            end += 2;
        } else if (after(end, " ")) {
            end += 1;
        }
        out += prompt.substr(last, begin - last);
        last = end;
    }
    return out + prompt.substr(last);
}

// `text` at the end of `prompt`, after a space unless the prompt is empty or ends in white space.
std::string appended(const std::string& prompt, const std::string& text) {
    const bool space = !prompt.empty() && !std::isspace(static_cast<unsigned char>(prompt.back()));
    return prompt + (space ? " " : "") + text;
}

std::string number(double v) {
    std::ostringstream s;
    s << v;  // 1 -> "1", 0.5 -> "0.5", as A1111 writes the multiplier
    return s.str();
}
}  // namespace

std::vector<NetworkFile> list_loras(const std::string& folder) {
    std::vector<NetworkFile> out = listed(folder, lora_files(folder));
    for (NetworkFile& n : out) {
        if (fs::path(n.path).extension() == ".safetensors") {
            n.trained_on = trained_on(n.path);
        }
    }
    return out;
}

std::vector<NetworkFile> list_embeddings(const std::string& folder) {
    return listed(folder, embedding_files(folder));
}

bool has_lora(const std::string& prompt, const std::string& name) {
    const auto tags = lora_tags(prompt);
    return std::any_of(tags.begin(), tags.end(), [&](const LoraTag& t) { return t.name == name; });
}

std::string toggle_lora(const std::string& prompt, const std::string& name, double weight) {
    std::vector<std::pair<size_t, size_t>> spans;
    for (const LoraTag& t : lora_tags(prompt)) {
        if (t.name == name) {
            spans.emplace_back(t.position, t.position + t.length);
        }
    }
    if (spans.empty()) {
        return appended(prompt, "<lora:" + name + ":" + number(weight) + ">");
    }
    return without(prompt, std::move(spans));
}

bool has_word(const std::string& prompt, const std::string& word) {
    return find_word(prompt, word) != std::string::npos;
}

std::string toggle_word(const std::string& prompt, const std::string& word) {
    std::vector<std::pair<size_t, size_t>> spans;
    for (size_t at = find_word(prompt, word); at != std::string::npos;
         at = find_word(prompt, word, at + word.size())) {
        spans.emplace_back(at, at + word.size());
    }
    if (spans.empty()) {
        return appended(prompt, word);
    }
    return without(prompt, std::move(spans));
}

}  // namespace sds::app
