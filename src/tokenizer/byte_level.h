#pragma once
// The ByteLevel mapping of GPT-2 style tokenizers: every byte is shown as one printable Unicode
// character (printable Latin-1 bytes as themselves, the others as U+0100 + n), so vocab entries are
// text. Internally vlmforge works on raw bytes; this mapping is needed only to read the vocab and
// to display tokens.
#include <optional>
#include <string>
#include <string_view>

namespace vlmforge::tokenizer {

// Raw bytes -> their byte-level spelling (e.g. " world" -> "Ġworld").
std::string bytes_to_byte_level(std::string_view raw);

// Byte-level spelling -> raw bytes; nullopt when `text` holds a character outside the mapping or
// is not valid UTF-8.
std::optional<std::string> byte_level_to_bytes(std::string_view text);

}  // namespace vlmforge::tokenizer
