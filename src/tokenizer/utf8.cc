#include "tokenizer/utf8.h"

namespace vlmforge::tokenizer {

Utf8Step decode_utf8(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) return {Utf8Status::kValid, 1, lead};
  // Table 3-7 of the Unicode standard: sequence length and the allowed range of the second byte
  // (which excludes overlongs, surrogates and code points above U+10FFFF).
  size_t length;
  uint8_t second_lo = 0x80, second_hi = 0xBF;
  char32_t codepoint;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    codepoint = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    codepoint = lead & 0x0F;
    if (lead == 0xE0) second_lo = 0xA0;
    if (lead == 0xED) second_hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    codepoint = lead & 0x07;
    if (lead == 0xF0) second_lo = 0x90;
    if (lead == 0xF4) second_hi = 0x8F;
  } else {
    return {Utf8Status::kInvalid, 1, 0};
  }
  for (size_t i = 1; i < length; ++i) {
    if (pos + i >= text.size()) return {Utf8Status::kTruncated, i, 0};
    const uint8_t b = byte(pos + i);
    const uint8_t lo = i == 1 ? second_lo : 0x80, hi = i == 1 ? second_hi : 0xBF;
    if (b < lo || b > hi) return {Utf8Status::kInvalid, i, 0};
    codepoint = (codepoint << 6) | (b & 0x3F);
  }
  return {Utf8Status::kValid, length, codepoint};
}

size_t find_invalid_utf8(std::string_view text) {
  size_t pos = 0;
  while ((pos = ascii_run_end(text, pos)) < text.size()) {
    const Utf8Step step = decode_utf8(text, pos);
    if (step.status != Utf8Status::kValid) return pos;
    pos += step.length;
  }
  return std::string_view::npos;
}

size_t append_replacing_invalid_utf8(std::string_view text, std::string& out, bool keep_truncated_tail) {
  size_t pos = 0, clean_start = 0;
  while ((pos = ascii_run_end(text, pos)) < text.size()) {
    const Utf8Step step = decode_utf8(text, pos);
    if (step.status == Utf8Status::kValid) {
      pos += step.length;
      continue;
    }
    out.append(text.substr(clean_start, pos - clean_start));
    if (step.status == Utf8Status::kTruncated && keep_truncated_tail) return pos;
    out.append(kReplacementCharacter);
    pos += step.length;
    clean_start = pos;
  }
  out.append(text.substr(clean_start));
  return text.size();
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace vlmforge::tokenizer
