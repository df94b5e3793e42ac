// Parsing and validating a safetensors header with nlohmann's SAX interface: no DOM is built,
// so hostile headers (deep nesting, huge arrays) cost no more than their size.
#include "sds/safetensors_header.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "sds/error.h"

static_assert(std::endian::native == std::endian::little, "safetensors is little-endian");

namespace sds {
namespace {

struct DTypeRow {
    DType dtype;
    const char* name;
    size_t size;
};
constexpr DTypeRow kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},           {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},   {DType::U16, "U16", 2},         {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},   {DType::I64, "I64", 8},         {DType::U64, "U64", 8},
    {DType::F16, "F16", 2},   {DType::BF16, "BF16", 2},       {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
    throw FileError(path + ": not a valid safetensors file: " + what);
}

// Builds the header from SAX events. Layout accepted (as the reference's serde types):
//   { NAME: {"dtype": str, "shape": [uint...], "data_offsets": [uint, uint], other: any},
//     "__metadata__": {str: str} }
class HeaderSax : public nlohmann::json_sax<nlohmann::json> {
  public:
    explicit HeaderSax(const std::string& path) : path_(path) {}
    SafeTensorsHeader header;

    bool null() override { return scalar("null"); }
    bool boolean(bool) override { return scalar("a boolean"); }
    bool number_integer(number_integer_t) override { return scalar("a negative number"); }
    bool number_float(number_float_t, const string_t&) override { return scalar("a fraction"); }
    bool binary(binary_t&) override { return scalar("binary"); }
    bool number_unsigned(number_unsigned_t v) override {
        if (skip_ > 0) {
            return true;
        }
        if (state_ == State::Shape) {
            if (v > static_cast<uint64_t>(INT64_MAX)) {
                fail(path_, "tensor '" + cur_.name + "' has a dimension too large");
            }
            cur_.shape.push_back(static_cast<int64_t>(v));
            return true;
        }
        if (state_ == State::Offsets) {
            if (n_offsets_ >= 2) {
                fail(path_, "tensor '" + cur_.name + "': data_offsets must have 2 entries");
            }
            (n_offsets_ == 0 ? cur_.begin : cur_.end) = v;
            ++n_offsets_;
            return true;
        }
        return scalar("a number");
    }
    bool string(string_t& s) override {
        if (skip_ > 0) {
            return true;
        }
        if (state_ == State::InfoValue && field_ == "dtype") {
            cur_.dtype = dtype_from_name(s, path_ + ": tensor '" + cur_.name + "'");
            have_dtype_ = true;
            state_ = State::Info;
            return true;
        }
        if (state_ == State::MetaValue) {
            header.metadata[meta_key_] = s;
            state_ = State::Meta;
            return true;
        }
        return scalar("a string");
    }
    bool start_object(std::size_t) override {
        if (skip_ > 0 || state_ == State::InfoValue) {
            return enter_skip();
        }
        switch (state_) {
            case State::Start:
                state_ = State::Top;
                return true;
            case State::TopValue:
                if (key_ == "__metadata__") {
                    state_ = State::Meta;
                } else {
                    cur_ = TensorInfo{};
                    cur_.name = key_;
                    have_dtype_ = have_shape_ = have_offsets_ = false;
                    info_keys_.clear();
                    state_ = State::Info;
                }
                return true;
            default:
                return scalar("an object");
        }
    }
    bool end_object() override {
        if (skip_ > 0) {
            return leave_skip();
        }
        switch (state_) {
            case State::Top:
                state_ = State::Done;
                return true;
            case State::Meta:
                state_ = State::Top;
                return true;
            case State::Info:
                if (!have_dtype_ || !have_shape_ || !have_offsets_) {
                    fail(path_,
                         "tensor '" + cur_.name + "' lacks one of dtype, shape and data_offsets");
                }
                header.tensors.push_back(std::move(cur_));
                state_ = State::Top;
                return true;
            default:
                return scalar("the end of an object");
        }
    }
    bool start_array(std::size_t) override {
        if (skip_ > 0) {
            return enter_skip();
        }
        if (state_ == State::InfoValue && field_ == "shape") {
            state_ = State::Shape;
            return true;
        }
        if (state_ == State::InfoValue && field_ == "data_offsets") {
            n_offsets_ = 0;
            state_ = State::Offsets;
            return true;
        }
        if (state_ == State::InfoValue) {
            return enter_skip();
        }
        return scalar("an array");
    }
    bool end_array() override {
        if (skip_ > 0) {
            return leave_skip();
        }
        if (state_ == State::Shape) {
            have_shape_ = true;
            state_ = State::Info;
            return true;
        }
        if (state_ == State::Offsets) {
            if (n_offsets_ != 2) {
                fail(path_, "tensor '" + cur_.name + "': data_offsets must have 2 entries");
            }
            have_offsets_ = true;
            state_ = State::Info;
            return true;
        }
        return scalar("the end of an array");
    }
    bool key(string_t& k) override {
        if (skip_ > 0) {
            return true;
        }
        switch (state_) {
            case State::Top:
                if (!top_keys_.insert(k).second) {
                    fail(path_, "the name '" + k + "' appears twice in the header");
                }
                key_ = k;
                state_ = State::TopValue;
                return true;
            case State::Info:
                if (!info_keys_.insert(k).second) {
                    fail(path_, "tensor '" + cur_.name + "' has the field '" + k + "' twice");
                }
                field_ = k;
                state_ = State::InfoValue;
                return true;
            case State::Meta:
                meta_key_ = k;
                state_ = State::MetaValue;
                return true;
            default:
                return scalar("a key");
        }
    }
    bool parse_error(std::size_t pos, const std::string&,
                     const nlohmann::detail::exception& e) override {
        fail(path_, "the header is not valid JSON (byte " + std::to_string(pos) +
                        " of the header): " + e.what());
    }

  private:
    enum class State {
        Start,
        Top,
        TopValue,
        Info,
        InfoValue,
        Shape,
        Offsets,
        Meta,
        MetaValue,
        Done
    };
    static constexpr int kMaxSkipDepth = 64;

    bool scalar(const char* what) {
        if (skip_ > 0) {
            return true;
        }
        if (state_ == State::InfoValue && field_ != "dtype" && field_ != "shape" &&
            field_ != "data_offsets") {
            state_ = State::Info;  // an unknown field with a scalar value: ignored
            return true;
        }
        std::string where = state_ == State::Start ? "the header" : "'" + key_ + "'";
        fail(path_, std::string("unexpected ") + what + " in " + where);
    }
    bool enter_skip() {
        if (++skip_ > kMaxSkipDepth) {
            fail(path_, "the header nests too deeply");
        }
        return true;
    }
    bool leave_skip() {
        if (--skip_ == 0) {
            state_ = State::Info;
        }
        return true;
    }

    const std::string& path_;
    State state_ = State::Start;
    int skip_ = 0;
    int n_offsets_ = 0;
    bool have_dtype_ = false, have_shape_ = false, have_offsets_ = false;
    std::string key_, field_, meta_key_;
    std::set<std::string> top_keys_, info_keys_;
    TensorInfo cur_;
};

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
    return __builtin_mul_overflow(a, b, out);
}

}  // namespace

DType dtype_from_name(const std::string& name, const std::string& context) {
    for (const auto& row : kDTypes) {
        if (name == row.name) {
            return row.dtype;
        }
    }
    throw FileError(context + ": unsupported dtype '" + name + "'");
}

const char* dtype_name(DType dtype) {
    return kDTypes[static_cast<size_t>(dtype)].name;
}
size_t dtype_size(DType dtype) {
    return kDTypes[static_cast<size_t>(dtype)].size;
}

uint64_t TensorInfo::numel() const {
    uint64_t n = 1;
    for (int64_t d : shape) {
        n *= static_cast<uint64_t>(d);
    }
    return n;
}

SafeTensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& path) {
    if (size < 8) {
        fail(path, "it is " + std::to_string(size) +
                       " bytes long, shorter than the 8-byte header "
                       "length");
    }
    uint64_t n = 0;
    std::memcpy(&n, data, 8);
    if (n > kMaxSafeTensorsHeader) {
        fail(path, "the header length " + std::to_string(n) + " is over the limit of " +
                       std::to_string(kMaxSafeTensorsHeader) + " bytes");
    }
    if (8 + n > size) {
        fail(path, "the header length " + std::to_string(n) + " runs past the end of the file (" +
                       std::to_string(size) + " bytes); the file may be truncated");
    }
    HeaderSax sax(path);
    const char* begin = reinterpret_cast<const char*>(data + 8);
    nlohmann::json::sax_parse(begin, begin + n, &sax, nlohmann::json::input_format_t::json,
                              /*strict=*/true);
    SafeTensorsHeader header = std::move(sax.header);
    header.data_start = 8 + n;

    auto& ts = header.tensors;
    std::stable_sort(ts.begin(), ts.end(), [](const TensorInfo& a, const TensorInfo& b) {
        return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
    });
    uint64_t expected = 0;
    for (const TensorInfo& t : ts) {
        if (t.begin != expected || t.end < t.begin) {
            fail(path, "tensor '" + t.name + "' has data_offsets [" + std::to_string(t.begin) +
                           ", " + std::to_string(t.end) + "] but the previous tensor ends at " +
                           std::to_string(expected) + " (gaps and overlaps are not allowed)");
        }
        uint64_t numel = 1;
        for (int64_t d : t.shape) {
            if (mul_overflows(numel, static_cast<uint64_t>(d), &numel)) {
                fail(path, "tensor '" + t.name + "' has a shape whose element count overflows");
            }
        }
        uint64_t bytes = 0;
        if (mul_overflows(numel, dtype_size(t.dtype), &bytes)) {
            fail(path, "tensor '" + t.name + "' has a shape whose byte size overflows");
        }
        if (t.end - t.begin != bytes) {
            fail(path, "tensor '" + t.name + "' (" + dtype_name(t.dtype) + ", " +
                           std::to_string(numel) + " elements) needs " + std::to_string(bytes) +
                           " bytes but its data_offsets span " + std::to_string(t.end - t.begin));
        }
        expected = t.end;
    }
    if (expected != size - header.data_start) {
        fail(path, "the tensors' data is " + std::to_string(expected) + " bytes but the file has " +
                       std::to_string(size - header.data_start) + " bytes after the header");
    }
    return header;
}

}  // namespace sds
