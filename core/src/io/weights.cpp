#include "io/weights.h"

#include <torch/types.h>

#include "sds/error.h"

namespace sds {

namespace fs = std::filesystem;

WeightFiles::WeightFiles(const std::vector<fs::path>& files) {
    for (const auto& path : files) {
        files_.push_back(SafeTensorsFile::open(path));
        for (const auto& t : files_.back().tensors()) {
            if (!owner_.emplace(t.name, files_.size() - 1).second) {
                throw ModelError(path.string() + ": tensor '" + t.name +
                                 "' is also in another shard");
            }
        }
    }
}

bool WeightFiles::contains(const std::string& name) const {
    return owner_.count(name) != 0;
}

at::Tensor WeightFiles::tensor(const std::string& name) const {
    return files_.at(owner_.at(name)).tensor(name);
}

const fs::path& WeightFiles::file_of(const std::string& name) const {
    return files_.at(owner_.at(name)).path();
}

std::vector<std::string> WeightFiles::names() const {
    std::vector<std::string> out;
    for (const auto& f : files_) {
        for (const auto& t : f.tensors()) {
            out.push_back(t.name);
        }
    }
    return out;
}

std::string WeightFiles::describe() const {
    std::string s;
    for (const auto& f : files_) {
        s += (s.empty() ? "" : ", ") + f.path().string();
    }
    return s;
}

std::string shape_text(at::IntArrayRef s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) {
        out += (i ? ", " : "") + std::to_string(s[i]);
    }
    return out + "]";
}

std::string list_some(const std::vector<std::string>& names) {
    std::string out;
    for (size_t i = 0; i < names.size() && i < 5; ++i) {
        out += (i ? ", " : "") + names[i];
    }
    if (names.size() > 5) {
        out += " and " + std::to_string(names.size() - 5) + " more";
    }
    return out;
}

void load_weights_into(torch::nn::Module& module, const WeightFiles& files,
                       const LoadOptions& opts) {
    torch::NoGradGuard no_grad;
    std::vector<std::string> missing;
    std::set<std::string> used;
    auto load_one = [&](const std::string& name, at::Tensor& dst) {
        const TensorSource source = opts.rename ? opts.rename(name) : TensorSource(name);
        std::string key = opts.prefix + source.key;
        for (const auto& [now, old] : opts.legacy_names) {
            if (files.contains(key)) {
                break;
            }
            if (const size_t at = key.find(now); at != std::string::npos) {
                std::string legacy = key;
                legacy.replace(at, now.size(), old);
                if (files.contains(legacy)) {
                    key = legacy;
                }
            }
        }
        if (!files.contains(key)) {
            missing.push_back(key);
            return;
        }
        used.insert(key);
        at::Tensor src = files.tensor(key);
        if (source.parts > 1) {
            if (src.dim() == 0 || src.size(0) % source.parts != 0) {
                throw ModelError(files.file_of(key).string() + ": tensor '" + key + "' has shape " +
                                 shape_text(src.sizes()) + ", which does not split into " +
                                 std::to_string(source.parts) + " equal parts");
            }
            src = src.chunk(source.parts, 0)[source.part];  // a view of the mapped file
        }
        std::string stored;  // for a transposed tensor, the shape the file gives
        if (source.transposed) {
            stored = shape_text(src.sizes());
            if (src.dim() != 2) {
                throw ModelError(files.file_of(key).string() + ": tensor '" + key + "' has shape " +
                                 stored + " where a matrix was expected");
            }
            src = src.t().contiguous();
        }
        if (opts.rename && src.dim() == 4 && dst.dim() == 2 && src.size(2) == 1 &&
            src.size(3) == 1) {
            src = src.flatten(1);  // a 1x1 convolution's weight as a linear one's, still mapped
        }
        if (src.sizes() != dst.sizes()) {
            throw ModelError(
                files.file_of(key).string() + ": tensor '" + key + "' has shape " +
                (stored.empty() ? shape_text(src.sizes()) : stored + " (used transposed)") +
                " but the model's config expects " +
                (stored.empty() ? shape_text(dst.sizes()) : shape_text(dst.t().sizes())) +
                (opts.config_hint.empty() ? "" : " (" + opts.config_hint + ")"));
        }
        if (src.scalar_type() == dst.scalar_type() && dst.device().is_cpu()) {
            dst.set_data(src);  // use the mapped file in place (copy-on-write)
        } else {
            dst.copy_(src);
        }
    };
    for (auto& item : module.named_parameters(/*recurse=*/true)) {
        load_one(item.key(), item.value());
    }
    for (auto& item : module.named_buffers(/*recurse=*/true)) {
        load_one(item.key(), item.value());
    }
    if (!missing.empty()) {
        throw ModelError(files.describe() + ": " + std::to_string(missing.size()) +
                         " tensor(s) the model needs are missing: " + list_some(missing));
    }
    std::vector<std::string> unexpected;
    for (const auto& name : files.names()) {
        if (!used.count(name) && !opts.may_ignore.count(name) &&
            name.compare(0, opts.scope.size(), opts.scope) == 0) {
            unexpected.push_back(name);
        }
    }
    if (!unexpected.empty()) {
        throw ModelError(files.describe() + ": " + std::to_string(unexpected.size()) +
                         " tensor(s) do not belong to this model (wrong component or config?): " +
                         list_some(unexpected));
    }
}

}  // namespace sds
