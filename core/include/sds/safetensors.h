#pragma once
// Reading and writing safetensors files. Reading maps the file and hands out tensors that use
// the mapped bytes in place when the dtype's alignment allows (copy-on-write: writing to such a
// tensor never changes the file); otherwise the tensor is a copy. Reading also takes a PyTorch
// checkpoint (torch.save's zip: .ckpt, .pt, .bin), interpreted without running it
// (sds/torch_checkpoint.h), so every weight file is read the same way.
#include <filesystem>
#include <memory>
#include <unordered_map>
#include <utility>

#include <ATen/core/Tensor.h>

#include "sds/safetensors_header.h"

namespace sds {

class SafeTensorsFile {
  public:
    // Maps and validates the file (safetensors, or a torch.save zip archive: told apart by its
    // first bytes); throws sds::FileError naming it.
    static SafeTensorsFile open(const std::filesystem::path& path);

    const std::filesystem::path& path() const { return path_; }
    const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
    const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
    bool contains(const std::string& name) const { return index_.count(name) != 0; }
    const TensorInfo& info(const std::string& name) const;

    // A CPU tensor of the stored dtype. It keeps the mapping alive.
    at::Tensor tensor(const std::string& name) const;

  private:
    struct Mapping;
    std::filesystem::path path_;
    std::shared_ptr<Mapping> map_;
    SafeTensorsHeader header_;
    std::unordered_map<std::string, size_t> index_;
};

at::ScalarType to_scalar_type(DType dtype);

// Writes tensors (any device, contiguous or not) to `path`, atomically: a temporary file in the
// same folder is renamed over the target when complete.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace sds
