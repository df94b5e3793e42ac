#pragma once
// Loading a module's weights from safetensors files by name. Parameter and buffer names are
// the checkpoint's keys, so loading is a walk down the module tree, then a check that nothing
// is missing, left over or of the wrong shape.
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "sds/safetensors.h"
#include "sds/tensor_source.h"

namespace sds {

class WeightFiles {
  public:
    explicit WeightFiles(const std::vector<std::filesystem::path>& files);
    bool contains(const std::string& name) const;
    at::Tensor tensor(const std::string& name) const;
    const std::filesystem::path& file_of(const std::string& name) const;
    std::vector<std::string> names() const;
    std::string describe() const;  // the file name(s), for messages

  private:
    std::vector<SafeTensorsFile> files_;
    std::unordered_map<std::string, size_t> owner_;
};

struct LoadOptions {
    std::string prefix;                // prepended to module names ("text_model.")
    std::set<std::string> may_ignore;  // checkpoint keys that are fine to leave unused
    std::string config_hint;           // appended to shape errors: which config fields
    // (new, old) name pieces: a tensor missing under its name is looked up with `new`
    // replaced by `old` (checkpoints saved by older diffusers).
    std::vector<std::pair<std::string, std::string>> legacy_names;
    // A checkpoint with other names than the module's (the original single-file layout): the key
    // (or the slice of one) of a module name, `prefix` added after. Its 1x1 convolution weights
    // also fill linear weights ([O, I, 1, 1] for [O, I]).
    std::function<TensorSource(const std::string&)> rename;
    // When set, only checkpoint keys that start with it can be left over (a single file holds
    // the other components too).
    std::string scope;
};

// For messages: "[64, 4]"; and the first five names, then "and N more".
std::string shape_text(at::IntArrayRef shape);
std::string list_some(const std::vector<std::string>& names);

// Fills every parameter and buffer of `module` from `files`, keeping the module's device and
// dtype: a CPU tensor of the file's dtype uses the mapped file in place (no copy); otherwise the
// values are copied and converted. Throws sds::ModelError naming the file for a missing, unexpected
// or mis-shaped tensor.
void load_weights_into(torch::nn::Module& module, const WeightFiles& files,
                       const LoadOptions& opts);

}  // namespace sds
