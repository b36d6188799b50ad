#pragma once
// The normalizers vlmforge supports from tokenizer.json: none, or Unicode NFC (Qwen2's).
#include <string>
#include <string_view>

namespace vlmforge::tokenizer {

enum class Normalization { kNone, kNfc };

// Appends `text` (valid UTF-8) normalized to `out`.
void append_normalized(Normalization normalization, std::string_view text, std::string& out);

// NFC of valid UTF-8 text, through utf8proc (the reference used by tests and the fast path).
std::string nfc(std::string_view text);

}  // namespace vlmforge::tokenizer
