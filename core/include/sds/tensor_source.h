#pragma once
// Where a model's tensor is in a checkpoint: a key, or one of `parts` equal slices along the
// first dimension of the tensor under that key (OpenCLIP keeps an attention's q, k and v
// stacked in one in_proj tensor), or the transpose of a matrix (OpenCLIP's text projection is
// multiplied from the right, a linear layer's weight from the left).
#include <string>
#include <utility>

namespace sds {

struct TensorSource {
    TensorSource(std::string k, int part_ = 0, int parts_ = 1)  // NOLINT: a key alone converts
        : key(std::move(k)), part(part_), parts(parts_) {}
    static TensorSource transposed_of(std::string k) {
        TensorSource s(std::move(k));
        s.transposed = true;
        return s;
    }
    std::string key;
    int part = 0;
    int parts = 1;
    bool transposed = false;
    bool operator==(const TensorSource&) const = default;
};

}  // namespace sds
