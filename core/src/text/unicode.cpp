#include "text/unicode.h"

#include <algorithm>
#include <cstdint>

namespace sds::unicode {
namespace {

struct CodeRange {
    char32_t first, last;
};
struct CaseMapping {
    char32_t from;
    char32_t to[3];
};
struct CombiningClass {
    char32_t cp;
    uint8_t ccc;
};
struct Decomposition {
    char32_t cp, first, second;  // second == 0: a singleton
};
struct Composition {
    char32_t first, second, composite;
};

#include "text/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t c) {
    auto it = std::upper_bound(std::begin(table), std::end(table), c,
                               [](char32_t v, const CodeRange& r) { return v < r.first; });
    return it != std::begin(table) && c <= std::prev(it)->last;
}

template <typename T, size_t N, typename Key>
const T* find(const T (&table)[N], char32_t c, Key key) {
    auto it = std::lower_bound(std::begin(table), std::end(table), c,
                               [&](const T& row, char32_t v) { return key(row) < v; });
    return it != std::end(table) && key(*it) == c ? &*it : nullptr;
}

uint8_t combining_class(char32_t c) {
    const auto* row = find(kCombiningClass, c, [](const CombiningClass& r) { return r.cp; });
    return row ? row->ccc : 0;
}

// Hangul syllables decompose and compose by arithmetic (Unicode ch. 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
              kSCount = kLCount * kNCount;

void decompose(char32_t c, std::u32string& out) {
    if (c >= kSBase && c < kSBase + kSCount) {
        const int s = static_cast<int>(c - kSBase);
        out.push_back(kLBase + s / kNCount);
        out.push_back(kVBase + (s % kNCount) / kTCount);
        if (s % kTCount != 0) {
            out.push_back(kTBase + s % kTCount);
        }
        return;
    }
    const auto* row = find(kDecomposition, c, [](const Decomposition& r) { return r.cp; });
    if (row == nullptr) {
        out.push_back(c);
        return;
    }
    decompose(row->first, out);
    if (row->second != 0) {
        decompose(row->second, out);
    }
}

char32_t compose(char32_t a, char32_t b) {
    if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
        return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    }
    if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
        b < kTBase + kTCount) {
        return a + (b - kTBase);
    }
    auto it = std::lower_bound(std::begin(kComposition), std::end(kComposition), std::pair{a, b},
                               [](const Composition& r, std::pair<char32_t, char32_t> v) {
                                   return r.first < v.first ||
                                          (r.first == v.first && r.second < v.second);
                               });
    if (it != std::end(kComposition) && it->first == a && it->second == b) {
        return it->composite;
    }
    return 0;
}

}  // namespace

std::u32string decode_utf8(std::string_view s) {
    std::u32string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        const auto b0 = static_cast<uint8_t>(s[i]);
        int len = b0 < 0x80         ? 1
                  : (b0 >> 5) == 6  ? 2
                  : (b0 >> 4) == 14 ? 3
                  : (b0 >> 3) == 30 ? 4
                                    : 0;
        char32_t c = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
        bool ok = len > 0 && i + len <= s.size();
        for (int k = 1; ok && k < len; ++k) {
            const auto b = static_cast<uint8_t>(s[i + k]);
            ok = (b >> 6) == 2;
            c = (c << 6) | (b & 0x3F);
        }
        // Reject overlong forms, surrogates and values past U+10FFFF.
        static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
        ok = ok && c >= kMin[len] && c <= 0x10FFFF && !(c >= 0xD800 && c <= 0xDFFF);
        if (!ok) {
            out.push_back(0xFFFD);
            ++i;
            continue;
        }
        out.push_back(c);
        i += len;
    }
    return out;
}

void append_utf8(std::string& out, char32_t c) {
    if (c < 0x80) {
        out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (c >> 6)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (c >> 12)));
        out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (c >> 18)));
        out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
}

std::string encode_utf8(std::u32string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char32_t c : s) {
        append_utf8(out, c);
    }
    return out;
}

bool is_whitespace(char32_t c) {
    return in_ranges(kWhitespace, c);
}
bool is_letter(char32_t c) {
    return in_ranges(kLetters, c);
}
bool is_number(char32_t c) {
    return in_ranges(kNumbers, c);
}

std::u32string nfc(std::u32string_view s) {
    // 1. Full canonical decomposition, then canonical ordering of combining marks.
    std::u32string d;
    d.reserve(s.size());
    for (char32_t c : s) {
        decompose(c, d);
    }
    for (size_t i = 0; i < d.size();) {
        if (combining_class(d[i]) == 0) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < d.size() && combining_class(d[j]) != 0) {
            ++j;
        }
        std::stable_sort(d.begin() + i, d.begin() + j, [](char32_t a, char32_t b) {
            return combining_class(a) < combining_class(b);
        });
        i = j;
    }
    // 2. Canonical composition.
    std::u32string out;
    out.reserve(d.size());
    long starter = -1;
    int last_class = -1;
    for (char32_t c : d) {
        const int cc = combining_class(c);
        if (starter >= 0 && (last_class < cc || last_class == 0)) {
            if (char32_t comp = compose(out[starter], c); comp != 0) {
                out[starter] = comp;
                continue;
            }
        }
        if (cc == 0) {
            starter = static_cast<long>(out.size());
        }
        last_class = cc;
        out.push_back(c);
    }
    return out;
}

std::u32string lowercase(std::u32string_view s) {
    std::u32string out;
    out.reserve(s.size());
    for (char32_t c : s) {
        const auto* row = find(kLowercase, c, [](const CaseMapping& r) { return r.from; });
        if (row == nullptr) {
            out.push_back(c);
            continue;
        }
        for (char32_t m : row->to) {
            if (m != 0) {
                out.push_back(m);
            }
        }
    }
    return out;
}

}  // namespace sds::unicode
