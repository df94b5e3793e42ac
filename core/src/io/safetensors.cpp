#include "sds/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <nlohmann/json.hpp>

#include "sds/error.h"
#include "sds/torch_checkpoint.h"

namespace sds {

namespace fs = std::filesystem;

struct SafeTensorsFile::Mapping {
    void* addr = nullptr;
    size_t size = 0;
    ~Mapping() {
        if (addr != nullptr && addr != MAP_FAILED) {
            munmap(addr, size);
        }
    }
    const uint8_t* bytes() const { return static_cast<const uint8_t*>(addr); }
};

namespace {
std::string errno_text() {
    return std::strerror(errno);
}
}  // namespace

SafeTensorsFile SafeTensorsFile::open(const fs::path& path) {
    SafeTensorsFile f;
    f.path_ = path;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        throw FileError(path.string() + ": cannot open: " + errno_text());
    }
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw FileError(path.string() + ": not a regular file");
    }
    f.map_ = std::make_shared<Mapping>();
    f.map_->size = static_cast<size_t>(st.st_size);
    if (f.map_->size > 0) {
        // Private + writable: tensors handed out in place may be written to (copy-on-write)
        // without touching the file.
        f.map_->addr = mmap(nullptr, f.map_->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (f.map_->addr == MAP_FAILED) {
            int err = errno;
            ::close(fd);
            throw FileError(path.string() + ": cannot map the file: " + std::strerror(err));
        }
    }
    ::close(fd);
    static const uint8_t kEmpty[1] = {0};
    const uint8_t* bytes = f.map_->size ? f.map_->bytes() : kEmpty;
    if (is_legacy_torch_file(bytes, f.map_->size)) {
        throw FileError(path.string() +
                        ": a PyTorch checkpoint in the format before PyTorch 1.6, which SD Studio "
                        "does not read. Save it again with a newer PyTorch (torch.save), or as "
                        "safetensors");
    }
    f.header_ = looks_like_zip(bytes, f.map_->size)
                    ? parse_torch_checkpoint(bytes, f.map_->size, path.string())
                    : parse_safetensors(bytes, f.map_->size, path.string());
    for (size_t i = 0; i < f.header_.tensors.size(); ++i) {
        f.index_.emplace(f.header_.tensors[i].name, i);
    }
    return f;
}

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) {
        throw FileError(path_.string() + ": has no tensor named '" + name + "'");
    }
    return header_.tensors[it->second];
}

at::ScalarType to_scalar_type(DType dtype) {
    switch (dtype) {
        case DType::BOOL:
            return at::kBool;
        case DType::U8:
            return at::kByte;
        case DType::I8:
            return at::kChar;
        case DType::I16:
            return at::kShort;
        case DType::U16:
            return at::kUInt16;
        case DType::I32:
            return at::kInt;
        case DType::U32:
            return at::kUInt32;
        case DType::I64:
            return at::kLong;
        case DType::U64:
            return at::kUInt64;
        case DType::F16:
            return at::kHalf;
        case DType::BF16:
            return at::kBFloat16;
        case DType::F32:
            return at::kFloat;
        case DType::F64:
            return at::kDouble;
        case DType::F8_E4M3:
            return at::kFloat8_e4m3fn;
        case DType::F8_E5M2:
            return at::kFloat8_e5m2;
    }
    throw Error("unknown dtype");
}

namespace {
DType from_scalar_type(at::ScalarType t, const std::string& name) {
    for (int i = 0; i <= static_cast<int>(DType::F8_E5M2); ++i) {
        if (to_scalar_type(static_cast<DType>(i)) == t) {
            return static_cast<DType>(i);
        }
    }
    throw Error("cannot save tensor '" + name + "': dtype " + std::string(c10::toString(t)) +
                " has no safetensors name");
}
}  // namespace

at::Tensor SafeTensorsFile::tensor(const std::string& name) const {
    const TensorInfo& ti = info(name);
    const auto opts = at::TensorOptions().dtype(to_scalar_type(ti.dtype));
    uint8_t* p = static_cast<uint8_t*>(map_->addr) + header_.data_start + ti.begin;
    const size_t nbytes = ti.end - ti.begin;
    if (nbytes == 0) {
        return at::empty(ti.shape, opts);
    }
    if (!ti.strides.empty()) {  // a strided view from a PyTorch checkpoint: gathered into a copy
        at::Tensor bytes = at::empty({static_cast<int64_t>(nbytes)}, at::kByte);
        std::memcpy(bytes.data_ptr(), p, nbytes);
        return bytes.view(to_scalar_type(ti.dtype)).as_strided(ti.shape, ti.strides).contiguous();
    }
    if (reinterpret_cast<uintptr_t>(p) % dtype_size(ti.dtype) == 0) {
        auto keep = map_;  // the tensor holds the mapping
        return at::from_blob(
            p, ti.shape, [keep](void*) {}, opts);
    }
    at::Tensor t = at::empty(ti.shape, opts);
    std::memcpy(t.data_ptr(), p, nbytes);
    return t;
}

void save_safetensors(const fs::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
    // Largest element size first keeps every tensor aligned when the header is padded to 8.
    std::vector<std::pair<std::string, at::Tensor>> order;
    order.reserve(tensors.size());
    for (const auto& [name, t] : tensors) {
        order.emplace_back(name, t.detach().to(at::kCPU).contiguous());
    }
    std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
        if (a.second.element_size() != b.second.element_size()) {
            return a.second.element_size() > b.second.element_size();
        }
        return a.first < b.first;
    });
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
        header["__metadata__"] = metadata;
    }
    uint64_t offset = 0;
    for (const auto& [name, t] : order) {
        if (name == "__metadata__" || header.contains(name)) {
            throw Error("cannot save '" + path.string() + "': tensor name '" + name +
                        "' is reserved or repeated");
        }
        const uint64_t nbytes = t.numel() * t.element_size();
        header[name] = {{"dtype", dtype_name(from_scalar_type(t.scalar_type(), name))},
                        {"shape", t.sizes().vec()},
                        {"data_offsets", {offset, offset + nbytes}}};
        offset += nbytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    const uint64_t n = text.size();

    fs::path tmp = path;
    tmp += ".part";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) {
            throw FileError(tmp.string() + ": cannot create: " + errno_text());
        }
        out.write(reinterpret_cast<const char*>(&n), 8);
        out.write(text.data(), static_cast<std::streamsize>(n));
        for (const auto& [name, t] : order) {
            out.write(static_cast<const char*>(t.const_data_ptr()),
                      static_cast<std::streamsize>(t.numel() * t.element_size()));
        }
        out.flush();
        if (!out) {
            throw FileError(tmp.string() + ": write failed: " + errno_text());
        }
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        throw FileError(path.string() +
                        ": cannot rename the finished file into place: " + ec.message());
    }
}

}  // namespace sds
