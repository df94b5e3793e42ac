#pragma once
// The safetensors header: parsing and validation, without LibTorch (the fuzz target).
//
// File = u64 little-endian N, N bytes of UTF-8 JSON, then the data buffer. The checks are those
// of the reference reader (safetensors' Rust crate); each failure throws sds::FileError naming
// the file and the problem.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sds {

enum class DType : uint8_t {
    BOOL,
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F16,
    BF16,
    F32,
    F64,
    F8_E4M3,
    F8_E5M2
};

// "F16" -> DType::F16; throws sds::FileError for an unknown name.
DType dtype_from_name(const std::string& name, const std::string& context);
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // offsets relative to the start of the data buffer
    uint64_t end = 0;
    // Elements between neighbours along each dimension, for a strided view read from a PyTorch
    // checkpoint (sds/torch_checkpoint.h); empty for contiguous data (always so in safetensors).
    std::vector<int64_t> strides;
    uint64_t numel() const;
};

struct SafeTensorsHeader {
    std::vector<TensorInfo> tensors;  // in file order of their offsets
    std::map<std::string, std::string> metadata;
    uint64_t data_start = 0;  // 8 + N
};

// Largest header the reference accepts.
inline constexpr uint64_t kMaxSafeTensorsHeader = 100'000'000;

// Validates a whole file image (`size` bytes at `data`). `path` is only used in messages.
SafeTensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& path);

}  // namespace sds
