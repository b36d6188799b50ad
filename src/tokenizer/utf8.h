#pragma once
// UTF-8 decoding with the "maximal subpart" rule for ill-formed input (Unicode ch. 3, U+FFFD
// substitution): each maximal ill-formed subsequence becomes one U+FFFD. This is what Python's
// errors="replace" and Rust's String::from_utf8_lossy do, so replaced text matches transformers.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace vlmforge::tokenizer {

inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

enum class Utf8Status { kValid, kInvalid, kTruncated };

struct Utf8Step {
  Utf8Status status;
  // kValid: bytes of the sequence; kInvalid: bytes replaced by one U+FFFD; kTruncated: bytes left
  // in the text, all of them a valid prefix of a sequence that more input could complete.
  size_t length;
  char32_t codepoint;  // meaningful for kValid only
};

// Decodes the sequence starting at text[pos] (pos < text.size()).
Utf8Step decode_utf8(std::string_view text, size_t pos);

// End of the run of ASCII bytes that starts at text[pos]: most text is mostly ASCII, and ASCII
// needs no decoding, validation or normalization. Checks eight bytes at a time.
inline size_t ascii_run_end(std::string_view text, size_t pos) {
  constexpr uint64_t kHighBits = 0x8080808080808080ULL;
  while (pos + sizeof(uint64_t) <= text.size()) {
    uint64_t word;
    std::memcpy(&word, text.data() + pos, sizeof word);
    if (word & kHighBits) break;
    pos += sizeof word;
  }
  while (pos < text.size() && static_cast<uint8_t>(text[pos]) < 0x80) ++pos;
  return pos;
}

// Offset of the first ill-formed or truncated sequence, or std::string_view::npos.
size_t find_invalid_utf8(std::string_view text);

// Appends `text` to `out` with ill-formed subsequences replaced by U+FFFD. A truncated sequence at
// the very end is replaced too, unless `keep_truncated_tail`, in which case it is left out and its
// offset returned (for streaming: more bytes may complete it). Returns the number of bytes consumed.
size_t append_replacing_invalid_utf8(std::string_view text, std::string& out, bool keep_truncated_tail);

void append_utf8(char32_t codepoint, std::string& out);

}  // namespace vlmforge::tokenizer
