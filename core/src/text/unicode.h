#pragma once
// The Unicode pieces the tokenizer needs (classes and mappings from unicode_tables.inc).
#include <string>
#include <string_view>

namespace sds::unicode {

// Lenient UTF-8 decoding: an invalid byte becomes U+FFFD.
std::u32string decode_utf8(std::string_view s);
std::string encode_utf8(std::u32string_view s);
void append_utf8(std::string& out, char32_t c);

bool is_whitespace(char32_t c);  // as `\s` in the reference's normalizer
bool is_letter(char32_t c);      // as `\p{L}`
bool is_number(char32_t c);      // as `\p{N}`

std::u32string nfc(std::u32string_view s);
std::u32string lowercase(std::u32string_view s);

}  // namespace sds::unicode
