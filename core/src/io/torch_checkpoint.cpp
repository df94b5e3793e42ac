// Reading torch.save's zip archives: a zip directory reader (with ZIP64) and a pickle
// interpreter that builds values but never calls anything. Every read is bounds-checked; values
// live in one arena, so cycles a hostile pickle builds cost nothing to free.
#include "sds/torch_checkpoint.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <optional>
#include <unordered_map>
#include <vector>

#include "sds/error.h"

namespace sds {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
    throw FileError(path + ": not a readable PyTorch checkpoint: " + what);
}

uint64_t le(const uint8_t* p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) {
        v = (v << 8) | p[i];
    }
    return v;
}

// ---- zip ----------------------------------------------------------------------------------

struct ZipRecord {
    std::string name;
    uint64_t data = 0;  // offset of the record's bytes in the file
    uint64_t size = 0;
    bool stored = true;  // not compressed
};

class ZipReader {
  public:
    ZipReader(const uint8_t* d, size_t n, const std::string& path) : d_(d), n_(n), path_(path) {}

    std::vector<ZipRecord> records() {
        if (n_ < 22) {
            fail(path_, "the zip archive is truncated (no end-of-directory record)");
        }
        size_t eocd = n_ - 22;
        const size_t lowest = n_ - 22 > 65535 ? n_ - 22 - 65535 : 0;
        while (le(d_ + eocd, 4) != 0x06054b50) {
            if (eocd == lowest) {
                fail(path_, "the zip archive is truncated (no end-of-directory record)");
            }
            --eocd;
        }
        uint64_t entries = le(d_ + eocd + 10, 2);
        uint64_t dir_size = le(d_ + eocd + 12, 4);
        uint64_t dir_offset = le(d_ + eocd + 16, 4);
        if (entries == 0xFFFF || dir_size == 0xFFFFFFFF || dir_offset == 0xFFFFFFFF) {
            // ZIP64: a locator just before the record points at the 64-bit end record.
            if (eocd < 20 || le(d_ + eocd - 20, 4) != 0x07064b50) {
                fail(path_, "the zip archive's ZIP64 locator is missing");
            }
            const uint64_t z = le(d_ + eocd - 20 + 8, 8);
            need(z, 56, "the ZIP64 end-of-directory record");
            if (le(d_ + z, 4) != 0x06064b50) {
                fail(path_, "the zip archive's ZIP64 end-of-directory record is missing");
            }
            entries = le(d_ + z + 32, 8);
            dir_size = le(d_ + z + 40, 8);
            dir_offset = le(d_ + z + 48, 8);
        }
        need(dir_offset, dir_size, "the zip directory");
        if (entries > dir_size / 46) {
            fail(path_, "the zip directory lists more entries than it holds");
        }
        std::vector<ZipRecord> out;
        uint64_t p = dir_offset;
        const uint64_t dir_end = dir_offset + dir_size;
        for (uint64_t i = 0; i < entries; ++i) {
            if (p + 46 > dir_end || le(d_ + p, 4) != 0x02014b50) {
                fail(path_, "the zip directory is damaged (entry " + std::to_string(i) + ")");
            }
            const uint64_t flags = le(d_ + p + 8, 2);
            const uint64_t method = le(d_ + p + 10, 2);
            uint64_t packed = le(d_ + p + 20, 4);
            uint64_t size = le(d_ + p + 24, 4);
            const uint64_t name_len = le(d_ + p + 28, 2);
            const uint64_t extra_len = le(d_ + p + 30, 2);
            const uint64_t comment_len = le(d_ + p + 32, 2);
            uint64_t local = le(d_ + p + 42, 4);
            const uint64_t end = p + 46 + name_len + extra_len + comment_len;
            if (end > dir_end) {
                fail(path_, "the zip directory is damaged (entry " + std::to_string(i) + ")");
            }
            ZipRecord r;
            r.name.assign(reinterpret_cast<const char*>(d_ + p + 46), name_len);
            // ZIP64 extra field: the 64-bit values of the fields set to all ones, in order.
            for (uint64_t x = p + 46 + name_len; x + 4 <= p + 46 + name_len + extra_len;) {
                const uint64_t id = le(d_ + x, 2);
                const uint64_t len = le(d_ + x + 2, 2);
                uint64_t q = x + 4;
                const uint64_t xend = q + len;
                if (xend > p + 46 + name_len + extra_len) {
                    break;
                }
                if (id == 0x0001) {
                    for (uint64_t* field : {&size, &packed, &local}) {
                        if (*field == 0xFFFFFFFF && q + 8 <= xend) {
                            *field = le(d_ + q, 8);
                            q += 8;
                        }
                    }
                }
                x = xend;
            }
            if ((flags & 1) != 0) {
                fail(path_, "the zip entry " + r.name + " is encrypted");
            }
            need(local, 30, "the zip entry " + r.name);
            if (le(d_ + local, 4) != 0x04034b50) {
                fail(path_, "the zip entry " + r.name +
                                " has no local header where the "
                                "directory says");
            }
            r.data = local + 30 + le(d_ + local + 26, 2) + le(d_ + local + 28, 2);
            r.stored = method == 0;
            r.size = r.stored ? size : packed;
            if (r.stored && packed != size) {
                fail(path_, "the zip entry " + r.name + " has different stored and full sizes");
            }
            need(r.data, r.size, "the zip entry " + r.name);
            out.push_back(std::move(r));
            p = end;
        }
        return out;
    }

  private:
    void need(uint64_t at, uint64_t len, const std::string& what) const {
        if (at > n_ || len > n_ - at) {
            fail(path_, what + " runs past the end of the file (" + std::to_string(n_) +
                            " bytes); the file may be truncated");
        }
    }
    const uint8_t* d_;
    size_t n_;
    const std::string& path_;
};

// ---- pickle -------------------------------------------------------------------------------

enum class Kind : uint8_t {
    None,
    Bool,
    Int,
    Float,
    Str,
    Bytes,
    Tuple,
    List,
    Dict,
    Global,   // s = "module.name"
    Storage,  // s = record key, i = element count, dtype
    Tensor,
    Other,  // an object this reader does not model: never called, never looked into
};

struct Node {
    Kind kind = Kind::Other;
    bool has_dtype = false;
    DType dtype = DType::U8;
    int64_t i = 0;
    std::string s;
    std::vector<size_t> items;  // Tuple, List; Dict: key, value, key, value, ...
    // Tensor
    size_t storage = 0;
    int64_t offset = 0;
    std::vector<int64_t> shape, strides;
};

std::optional<DType> storage_dtype(const std::string& type) {
    static const std::pair<const char*, DType> kTypes[] = {
        {"torch.DoubleStorage", DType::F64}, {"torch.FloatStorage", DType::F32},
        {"torch.HalfStorage", DType::F16},   {"torch.BFloat16Storage", DType::BF16},
        {"torch.LongStorage", DType::I64},   {"torch.IntStorage", DType::I32},
        {"torch.ShortStorage", DType::I16},  {"torch.CharStorage", DType::I8},
        {"torch.ByteStorage", DType::U8},    {"torch.BoolStorage", DType::BOOL},
        {"torch.UntypedStorage", DType::U8},
    };
    for (const auto& [name, dtype] : kTypes) {
        if (type == name) {
            return dtype;
        }
    }
    return std::nullopt;
}

std::optional<DType> torch_dtype(const std::string& name) {
    static const std::pair<const char*, DType> kTypes[] = {
        {"torch.float64", DType::F64},
        {"torch.double", DType::F64},
        {"torch.float32", DType::F32},
        {"torch.float", DType::F32},
        {"torch.float16", DType::F16},
        {"torch.half", DType::F16},
        {"torch.bfloat16", DType::BF16},
        {"torch.int64", DType::I64},
        {"torch.long", DType::I64},
        {"torch.int32", DType::I32},
        {"torch.int", DType::I32},
        {"torch.int16", DType::I16},
        {"torch.short", DType::I16},
        {"torch.int8", DType::I8},
        {"torch.uint8", DType::U8},
        {"torch.bool", DType::BOOL},
        {"torch.uint16", DType::U16},
        {"torch.uint32", DType::U32},
        {"torch.uint64", DType::U64},
        {"torch.float8_e4m3fn", DType::F8_E4M3},
        {"torch.float8_e5m2", DType::F8_E5M2},
    };
    for (const auto& [n, dtype] : kTypes) {
        if (name == n) {
            return dtype;
        }
    }
    return std::nullopt;
}

class Unpickler {
  public:
    Unpickler(const uint8_t* d, size_t n, const std::string& path) : d_(d), n_(n), path_(path) {
        nodes_.reserve(1024);
    }

    // Runs the pickle to its STOP; returns the result's node.
    size_t run() {
        while (true) {
            const size_t at = pos_;
            const uint8_t op = byte();
            switch (op) {
                case 0x80:  // PROTO
                    if (byte() > 5) {
                        fail(path_, "data.pkl uses a pickle protocol newer than 5");
                    }
                    break;
                case 0x95:  // FRAME: the frame's bytes follow inline
                    take(8);
                    break;
                case '.':  // STOP
                    return pop(at);
                case '(':  // MARK
                    marks_.push_back(stack_.size());
                    break;
                case '0':  // POP (a mark when nothing is above it)
                    if (stack_.size() <= floor() && !marks_.empty()) {
                        marks_.pop_back();
                    } else {
                        pop(at);
                    }
                    break;
                case '1':  // POP_MARK
                    pop_mark(at);
                    break;
                case '2':  // DUP
                    push_index(top(at));
                    break;
                case 'N':
                    push(Kind::None);
                    break;
                case 0x88:  // NEWTRUE
                case 0x89:  // NEWFALSE
                    push(Kind::Bool).i = op == 0x88;
                    break;
                case 'J':  // BININT
                    push(Kind::Int).i = static_cast<int32_t>(le(take(4), 4));
                    break;
                case 'K':  // BININT1
                    push(Kind::Int).i = byte();
                    break;
                case 'M':  // BININT2
                    push(Kind::Int).i = static_cast<int64_t>(le(take(2), 2));
                    break;
                case 0x8a:  // LONG1
                    long_int(byte());
                    break;
                case 0x8b:  // LONG4
                    long_int(le(take(4), 4));
                    break;
                case 'I':  // INT (text; 00 and 01 are False and True)
                    text_int(line(), /*is_long=*/false);
                    break;
                case 'L':  // LONG (text)
                    text_int(line(), /*is_long=*/true);
                    break;
                case 'G':  // BINFLOAT (no number here is read as a float)
                    take(8);
                    push(Kind::Float);
                    break;
                case 'F':  // FLOAT (text)
                    line();
                    push(Kind::Float);
                    break;
                case 'X':  // BINUNICODE
                    text(Kind::Str, le(take(4), 4));
                    break;
                case 0x8c:  // SHORT_BINUNICODE
                    text(Kind::Str, byte());
                    break;
                case 0x8d:  // BINUNICODE8
                    text(Kind::Str, le(take(8), 8));
                    break;
                case 'V':  // UNICODE (raw-unicode-escape text)
                    push(Kind::Str).s = unescape_raw_unicode(line());
                    break;
                case 'T':  // BINSTRING (Python 2 str)
                    text(Kind::Str, le(take(4), 4));
                    break;
                case 'U':  // SHORT_BINSTRING
                    text(Kind::Str, byte());
                    break;
                case 'S': {  // STRING (quoted text)
                    std::string s = line();
                    if (s.size() >= 2 && (s.front() == '\'' || s.front() == '"') &&
                        s.back() == s.front()) {
                        s = s.substr(1, s.size() - 2);
                    }
                    push(Kind::Str).s = std::move(s);
                    break;
                }
                case 'B':  // BINBYTES
                    text(Kind::Bytes, le(take(4), 4));
                    break;
                case 'C':  // SHORT_BINBYTES
                    text(Kind::Bytes, byte());
                    break;
                case 0x8e:  // BINBYTES8
                case 0x96:  // BYTEARRAY8
                    text(Kind::Bytes, le(take(8), 8));
                    break;
                case ')':  // EMPTY_TUPLE
                    push(Kind::Tuple);
                    break;
                case 't': {  // TUPLE
                    std::vector<size_t> items = pop_mark(at);
                    push(Kind::Tuple).items = std::move(items);
                    break;
                }
                case 0x85:    // TUPLE1
                case 0x86:    // TUPLE2
                case 0x87: {  // TUPLE3
                    const size_t k = op - 0x84u;
                    if (stack_.size() < k + floor()) {
                        underflow(at);
                    }
                    std::vector<size_t> items(stack_.end() - static_cast<ptrdiff_t>(k),
                                              stack_.end());
                    stack_.resize(stack_.size() - k);
                    push(Kind::Tuple).items = std::move(items);
                    break;
                }
                case ']':  // EMPTY_LIST
                    push(Kind::List);
                    break;
                case 'l': {  // LIST
                    std::vector<size_t> items = pop_mark(at);
                    push(Kind::List).items = std::move(items);
                    break;
                }
                case 'a': {  // APPEND
                    const size_t v = pop(at);
                    append(top(at), {v});
                    break;
                }
                case 'e': {  // APPENDS
                    std::vector<size_t> items = pop_mark(at);
                    append(top(at), items);
                    break;
                }
                case '}':  // EMPTY_DICT
                    push(Kind::Dict);
                    break;
                case 'd': {  // DICT
                    std::vector<size_t> items = pop_mark(at);
                    if (items.size() % 2 != 0) {
                        fail(path_,
                             "data.pkl is malformed (a dict with an odd item count at "
                             "byte " +
                                 std::to_string(at) + ")");
                    }
                    const size_t dict = new_node(Kind::Dict);
                    set_items(dict, items);
                    push_index(dict);
                    break;
                }
                case 's': {  // SETITEM
                    const size_t v = pop(at);
                    const size_t k = pop(at);
                    set_items(top(at), {k, v});
                    break;
                }
                case 'u': {  // SETITEMS
                    std::vector<size_t> items = pop_mark(at);
                    if (items.size() % 2 != 0) {
                        fail(path_,
                             "data.pkl is malformed (SETITEMS with an odd item count at "
                             "byte " +
                                 std::to_string(at) + ")");
                    }
                    set_items(top(at), items);
                    break;
                }
                case 0x8f:  // EMPTY_SET
                    push(Kind::Other);
                    break;
                case 0x90:  // ADDITEMS
                    pop_mark(at);
                    top(at);
                    break;
                case 0x91:  // FROZENSET
                    pop_mark(at);
                    push(Kind::Other);
                    break;
                case 'c': {  // GLOBAL
                    std::string module = line();
                    std::string name = line();
                    push(Kind::Global).s = module + "." + name;
                    break;
                }
                case 0x93: {  // STACK_GLOBAL
                    const size_t name = pop(at);
                    const size_t module = pop(at);
                    Node& g = nodes_[push_index(new_node(Kind::Global))];
                    g.s = nodes_[module].s + "." + nodes_[name].s;
                    break;
                }
                case 'R': {  // REDUCE: a call, interpreted for torch's rebuild functions only
                    const size_t args = pop(at);
                    const size_t fn = pop(at);
                    push_index(reduce(fn, args));
                    break;
                }
                case 'b':  // BUILD: the state of an object, which nothing here reads
                    pop(at);
                    top(at);
                    break;
                case 0x81:  // NEWOBJ
                    pop(at);
                    pop(at);
                    push(Kind::Other);
                    break;
                case 0x92:  // NEWOBJ_EX
                    pop(at);
                    pop(at);
                    pop(at);
                    push(Kind::Other);
                    break;
                case 'o':  // OBJ
                    pop_mark(at);
                    push(Kind::Other);
                    break;
                case 'i':  // INST
                    line();
                    line();
                    pop_mark(at);
                    push(Kind::Other);
                    break;
                case 0x82:  // EXT1
                    take(1);
                    push(Kind::Other);
                    break;
                case 0x83:  // EXT2
                    take(2);
                    push(Kind::Other);
                    break;
                case 0x84:  // EXT4
                    take(4);
                    push(Kind::Other);
                    break;
                case 'P':  // PERSID (text ids; torch's are tuples)
                    line();
                    push(Kind::Other);
                    break;
                case 'Q':  // BINPERSID
                    push_index(storage(pop(at)));
                    break;
                case 'p':  // PUT
                    memo_[parse_u64(line(), at)] = top(at);
                    break;
                case 'q':  // BINPUT
                    memo_[byte()] = top(at);
                    break;
                case 'r':  // LONG_BINPUT
                    memo_[le(take(4), 4)] = top(at);
                    break;
                case 0x94:  // MEMOIZE
                    memo_[memo_.size()] = top(at);
                    break;
                case 'g':  // GET
                    push_index(memo(parse_u64(line(), at), at));
                    break;
                case 'h':  // BINGET
                    push_index(memo(byte(), at));
                    break;
                case 'j':  // LONG_BINGET
                    push_index(memo(le(take(4), 4), at));
                    break;
                case 0x97:  // NEXT_BUFFER
                case 0x98:  // READONLY_BUFFER
                    fail(path_,
                         "data.pkl uses out-of-band buffers, which torch.save never "
                         "writes");
                default:
                    fail(path_, "data.pkl is malformed (byte " + std::to_string(at) +
                                    " is not a pickle opcode)");
            }
        }
    }

    const Node& node(size_t i) const { return nodes_[i]; }

  private:
    uint8_t byte() { return *take(1); }
    const uint8_t* take(uint64_t k) {
        if (k > n_ - pos_) {
            fail(path_, "data.pkl is truncated (it ends inside an opcode at byte " +
                            std::to_string(pos_) + ")");
        }
        const uint8_t* p = d_ + pos_;
        pos_ += k;
        return p;
    }
    std::string line() {
        const void* nl = std::memchr(d_ + pos_, '\n', n_ - pos_);
        if (nl == nullptr) {
            fail(path_, "data.pkl is truncated (a text line has no end)");
        }
        const size_t len = static_cast<const uint8_t*>(nl) - (d_ + pos_);
        std::string s(reinterpret_cast<const char*>(d_ + pos_), len);
        pos_ += len + 1;
        return s;
    }
    void text(Kind kind, uint64_t len) {
        const uint8_t* p = take(len);
        push(kind).s.assign(reinterpret_cast<const char*>(p), len);
    }
    void long_int(uint64_t len) {
        const uint8_t* p = take(len);
        if (len > 8) {
            push(Kind::Other);  // beyond int64: no torch field is that large
            return;
        }
        uint64_t v = len == 0 ? 0 : le(p, static_cast<int>(len));
        if (len > 0 && len < 8 && (p[len - 1] & 0x80) != 0) {
            v |= ~uint64_t{0} << (8 * len);  // sign-extend
        }
        push(Kind::Int).i = static_cast<int64_t>(v);
    }
    void text_int(std::string s, bool is_long) {
        if (!is_long && (s == "00" || s == "01")) {
            push(Kind::Bool).i = s == "01";
            return;
        }
        if (!s.empty() && s.back() == 'L') {
            s.pop_back();
        }
        int64_t v = 0;
        const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
        if (r.ec != std::errc() || r.ptr != s.data() + s.size()) {
            push(Kind::Other);
            return;
        }
        push(Kind::Int).i = v;
    }
    static void append_utf8(std::string& out, uint32_t c) {
        if (c < 0x80) {
            out += static_cast<char>(c);
        } else if (c < 0x800) {
            out += static_cast<char>(0xC0 | (c >> 6));
            out += static_cast<char>(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            out += static_cast<char>(0xE0 | (c >> 12));
            out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (c & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | ((c >> 18) & 0x07));
            out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (c & 0x3F));
        }
    }
    // raw-unicode-escape: \uXXXX and \UXXXXXXXX are code points, other bytes are Latin-1.
    static std::string unescape_raw_unicode(const std::string& s) {
        std::string out;
        for (size_t k = 0; k < s.size(); ++k) {
            const size_t digits = s[k] == '\\' && k + 1 < s.size() ? (s[k + 1] == 'u'   ? 4
                                                                      : s[k + 1] == 'U' ? 8
                                                                                        : 0)
                                                                   : 0;
            uint32_t c = 0;
            if (digits > 0 && k + 2 + digits <= s.size() &&
                std::from_chars(s.data() + k + 2, s.data() + k + 2 + digits, c, 16).ptr ==
                    s.data() + k + 2 + digits &&
                c <= 0x10FFFF) {
                append_utf8(out, c);
                k += 1 + digits;
            } else {
                append_utf8(out, static_cast<unsigned char>(s[k]));
            }
        }
        return out;
    }
    uint64_t parse_u64(const std::string& s, size_t at) const {
        uint64_t v = 0;
        const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
        if (r.ec != std::errc() || r.ptr != s.data() + s.size()) {
            fail(path_,
                 "data.pkl is malformed (a bad memo index at byte " + std::to_string(at) + ")");
        }
        return v;
    }

    size_t new_node(Kind kind) {
        nodes_.emplace_back();
        nodes_.back().kind = kind;
        return nodes_.size() - 1;
    }
    Node& push(Kind kind) { return nodes_[push_index(new_node(kind))]; }
    size_t push_index(size_t i) {
        stack_.push_back(i);
        return i;
    }
    size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
    [[noreturn]] void underflow(size_t at) const {
        fail(path_,
             "data.pkl is malformed (its stack runs empty at byte " + std::to_string(at) + ")");
    }
    size_t top(size_t at) const {
        if (stack_.size() <= floor()) {
            underflow(at);
        }
        return stack_.back();
    }
    size_t pop(size_t at) {
        const size_t v = top(at);
        stack_.pop_back();
        return v;
    }
    std::vector<size_t> pop_mark(size_t at) {
        if (marks_.empty()) {
            fail(path_, "data.pkl is malformed (no mark for the opcode at byte " +
                            std::to_string(at) + ")");
        }
        const size_t m = marks_.back();
        marks_.pop_back();
        std::vector<size_t> items(stack_.begin() + static_cast<ptrdiff_t>(m), stack_.end());
        stack_.resize(m);
        return items;
    }
    size_t memo(uint64_t key, size_t at) const {
        auto it = memo_.find(key);
        if (it == memo_.end()) {
            fail(path_, "data.pkl is malformed (it reads a memo entry it never stored, at byte " +
                            std::to_string(at) + ")");
        }
        return it->second;
    }
    void append(size_t list, const std::vector<size_t>& items) {
        if (nodes_[list].kind == Kind::List) {
            nodes_[list].items.insert(nodes_[list].items.end(), items.begin(), items.end());
        }
    }
    // dict[key] = value for each pair, a later key replacing an equal string key.
    void set_items(size_t dict, const std::vector<size_t>& items) {
        if (nodes_[dict].kind != Kind::Dict) {
            return;
        }
        for (size_t k = 0; k + 1 < items.size(); k += 2) {
            std::vector<size_t>& d = nodes_[dict].items;
            bool replaced = false;
            if (nodes_[items[k]].kind == Kind::Str) {
                auto it = str_keys_[dict].find(nodes_[items[k]].s);
                if (it != str_keys_[dict].end()) {
                    d[it->second + 1] = items[k + 1];
                    replaced = true;
                } else {
                    str_keys_[dict].emplace(nodes_[items[k]].s, d.size());
                }
            }
            if (!replaced) {
                d.push_back(items[k]);
                d.push_back(items[k + 1]);
            }
        }
    }

    // torch's persistent id: ("storage", storage type, key, location, element count).
    size_t storage(size_t pid) {
        const Node& t = nodes_[pid];
        if (t.kind == Kind::Tuple && t.items.size() == 5 && nodes_[t.items[0]].kind == Kind::Str &&
            nodes_[t.items[0]].s == "storage" && nodes_[t.items[1]].kind == Kind::Global &&
            nodes_[t.items[2]].kind == Kind::Str && nodes_[t.items[4]].kind == Kind::Int) {
            const std::optional<DType> dtype = storage_dtype(nodes_[t.items[1]].s);
            const std::string key = nodes_[t.items[2]].s;
            const int64_t count = nodes_[t.items[4]].i;
            const size_t s = new_node(Kind::Storage);
            nodes_[s].has_dtype = dtype.has_value();
            nodes_[s].dtype = dtype.value_or(DType::U8);
            nodes_[s].s = key;
            nodes_[s].i = count;
            return s;
        }
        return new_node(Kind::Other);
    }

    bool int_tuple(size_t i, std::vector<int64_t>& out) const {
        if (nodes_[i].kind != Kind::Tuple) {
            return false;
        }
        out.clear();
        for (size_t v : nodes_[i].items) {
            if (nodes_[v].kind != Kind::Int) {
                return false;
            }
            out.push_back(nodes_[v].i);
        }
        return true;
    }

    size_t reduce(size_t fn, size_t args) {
        if (nodes_[fn].kind != Kind::Global || nodes_[args].kind != Kind::Tuple) {
            return new_node(Kind::Other);
        }
        const std::string name = nodes_[fn].s;
        const std::vector<size_t> a = nodes_[args].items;
        if (name == "collections.OrderedDict" || name == "builtins.dict" ||
            name == "__builtin__.dict") {
            return new_node(a.empty() ? Kind::Dict : Kind::Other);
        }
        if ((name == "torch._utils._rebuild_parameter" ||
             name == "torch._utils._rebuild_parameter_with_state") &&
            !a.empty() && nodes_[a[0]].kind == Kind::Tensor) {
            return a[0];
        }
        const bool v2 =
            name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor";
        const bool v3 = name == "torch._utils._rebuild_tensor_v3";
        if ((v2 && a.size() >= 4) || (v3 && a.size() >= 7)) {
            std::vector<int64_t> shape, strides;
            if (nodes_[a[0]].kind == Kind::Storage && nodes_[a[1]].kind == Kind::Int &&
                int_tuple(a[2], shape) && int_tuple(a[3], strides) &&
                shape.size() == strides.size()) {
                const size_t t = new_node(Kind::Tensor);
                Node& n = nodes_[t];
                n.storage = a[0];
                n.offset = nodes_[a[1]].i;
                n.shape = std::move(shape);
                n.strides = std::move(strides);
                if (v3) {
                    const std::optional<DType> d = nodes_[a[6]].kind == Kind::Global
                                                       ? torch_dtype(nodes_[a[6]].s)
                                                       : std::nullopt;
                    n.has_dtype = d.has_value();
                    n.dtype = d.value_or(DType::U8);
                } else {
                    n.has_dtype = nodes_[a[0]].has_dtype;
                    n.dtype = nodes_[a[0]].dtype;
                }
                return t;
            }
        }
        return new_node(Kind::Other);
    }

    const uint8_t* d_;
    size_t n_;
    const std::string& path_;
    size_t pos_ = 0;
    std::vector<Node> nodes_;
    std::vector<size_t> stack_;
    std::vector<size_t> marks_;
    std::unordered_map<uint64_t, size_t> memo_;
    std::unordered_map<size_t, std::unordered_map<std::string, size_t>> str_keys_;
};

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
    return __builtin_mul_overflow(a, b, out);
}

}  // namespace

bool looks_like_zip(const uint8_t* data, size_t size) {
    return size >= 4 && le(data, 4) == 0x04034b50;
}

bool is_legacy_torch_file(const uint8_t* data, size_t size) {
    // PROTO 2, then LONG1 of 10 bytes: torch's magic number 0x1950a86a20f9469cfc6c.
    static const uint8_t kMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                     0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    return size >= sizeof kMagic && std::memcmp(data, kMagic, sizeof kMagic) == 0;
}

SafeTensorsHeader parse_torch_checkpoint(const uint8_t* data, size_t size,
                                         const std::string& path) {
    std::vector<ZipRecord> records = ZipReader(data, size, path).records();
    std::unordered_map<std::string, const ZipRecord*> by_name;
    const ZipRecord* pickle = nullptr;
    for (const ZipRecord& r : records) {
        by_name.emplace(r.name, &r);
        const size_t slash = r.name.find('/');
        if (pickle == nullptr && slash != std::string::npos && slash > 0 &&
            r.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
            pickle = &r;
        }
    }
    if (pickle == nullptr) {
        fail(path, "a zip archive without data.pkl, so not something torch.save wrote");
    }
    const std::string prefix = pickle->name.substr(0, pickle->name.size() - 8);  // "NAME/"
    auto compressed = [&](const ZipRecord& r) {
        fail(path, "the zip entry " + r.name +
                       " is compressed, so it cannot be read in place (torch.save stores its "
                       "entries uncompressed; was the file re-zipped? Unzip it and zip it "
                       "again with `zip -0`)");
    };
    if (auto bo = by_name.find(prefix + "byteorder"); bo != by_name.end()) {
        const ZipRecord& r = *bo->second;
        const std::string order(reinterpret_cast<const char*>(data + r.data),
                                r.stored ? r.size : 0);
        if (r.stored && order != "little") {
            fail(path, "its tensors are stored " + order +
                           "-endian; SD Studio reads little-endian checkpoints");
        }
    }
    if (!pickle->stored) {
        compressed(*pickle);
    }
    Unpickler up(data + pickle->data, pickle->size, path);
    size_t root = up.run();
    // {"state_dict": {...}} as Lightning and the original SD code save it, possibly nested; an
    // A1111 embedding's {"string_to_param": {"*": vectors}, "name": ..., "step": ...}.
    for (bool found = true; found;) {
        found = false;
        const Node& n = up.node(root);
        if (n.kind != Kind::Dict) {
            break;
        }
        for (size_t k = 0; k + 1 < n.items.size(); k += 2) {
            const Node& key = up.node(n.items[k]);
            if (key.kind == Kind::Str && (key.s == "state_dict" || key.s == "string_to_param") &&
                up.node(n.items[k + 1]).kind == Kind::Dict) {
                root = n.items[k + 1];
                found = true;
                break;
            }
        }
    }
    if (up.node(root).kind != Kind::Dict) {
        fail(path, "it holds no dictionary of tensors (a state dict)");
    }
    SafeTensorsHeader header;
    header.data_start = 0;
    const Node& dict = up.node(root);
    for (size_t k = 0; k + 1 < dict.items.size(); k += 2) {
        const Node& key = up.node(dict.items[k]);
        const Node& t = up.node(dict.items[k + 1]);
        if (key.kind != Kind::Str || t.kind != Kind::Tensor || !t.has_dtype) {
            continue;  // not a tensor, or of a kind SD Studio has no use for
        }
        const Node& st = up.node(t.storage);
        const std::string where = "tensor '" + key.s + "'";
        auto rec = by_name.find(prefix + "data/" + st.s);
        if (rec == by_name.end()) {
            fail(path, where + ": its storage " + prefix + "data/" + st.s + " is missing");
        }
        const ZipRecord& r = *rec->second;
        if (!r.stored) {
            compressed(r);
        }
        const uint64_t esize = dtype_size(t.dtype);
        TensorInfo info;
        info.name = key.s;
        info.dtype = t.dtype;
        info.shape = t.shape;
        uint64_t numel = 1, last = 0;  // `last`: element index of the last element
        bool contiguous = true;
        uint64_t expected_stride = 1;
        bool ok = t.offset >= 0;
        for (size_t dim = t.shape.size(); ok && dim-- > 0;) {
            const int64_t n = t.shape[dim], s = t.strides[dim];
            ok = n >= 0 && s >= 0 && !mul_overflows(numel, static_cast<uint64_t>(n), &numel);
            uint64_t reach = 0;
            ok = ok && (n == 0 || (!mul_overflows(static_cast<uint64_t>(n - 1),
                                                  static_cast<uint64_t>(s), &reach) &&
                                   !__builtin_add_overflow(last, reach, &last)));
            contiguous = contiguous && (n <= 1 || static_cast<uint64_t>(s) == expected_stride);
            ok = ok &&
                 !mul_overflows(expected_stride, static_cast<uint64_t>(std::max<int64_t>(n, 1)),
                                &expected_stride);
        }
        uint64_t first = 0, begin = 0, span = 0;
        ok = ok && !__builtin_add_overflow(static_cast<uint64_t>(t.offset), last, &last) &&
             !mul_overflows(static_cast<uint64_t>(t.offset), esize, &first) &&
             !mul_overflows(numel == 0 ? static_cast<uint64_t>(t.offset) : last + 1, esize, &span);
        if (!ok || span > r.size) {
            fail(path, where + " reaches past the end of its storage (" + std::to_string(r.size) +
                           " bytes)");
        }
        begin = r.data + first;
        info.begin = begin;
        info.end = numel == 0 ? begin : r.data + span;
        if (!contiguous && numel > 0) {
            info.strides = t.strides;
        }
        header.tensors.push_back(std::move(info));
    }
    if (header.tensors.empty()) {
        fail(path, "it holds no tensors");
    }
    std::stable_sort(header.tensors.begin(), header.tensors.end(),
                     [](const TensorInfo& a, const TensorInfo& b) { return a.begin < b.begin; });
    return header;
}

}  // namespace sds
