#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

#include "tokenizer/utf8.h"
#include "util/error.h"

namespace vlmforge::tokenizer {
namespace {

struct FreeDeleter {
  void operator()(utf8proc_uint8_t* p) const { std::free(p); }
};

void append_nfc(std::string_view text, std::string& out) {
  utf8proc_uint8_t* raw = nullptr;
  const utf8proc_ssize_t length =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                   &raw, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  const std::unique_ptr<utf8proc_uint8_t, FreeDeleter> owned(raw);
  if (length < 0) throw Error(std::string("NFC normalization failed: ") + utf8proc_errmsg(length));
  out.append(reinterpret_cast<const char*>(raw), static_cast<size_t>(length));
}

// Characters that NFC leaves alone whatever their neighbours, except that a following character
// may compose with them: NFC_Quick_Check=Yes, canonical combining class 0, and never the second
// character of a composition. Conservative ranges covering the bulk of English, Chinese, Japanese
// kana, Korean syllables and code; anything else goes through utf8proc.
bool nfc_inert(char32_t c) {
  return c < 0x300 || (c >= 0x400 && c <= 0x482) || (c >= 0x48A && c <= 0x4FF) || (c >= 0x2010 && c <= 0x2027) ||
         (c >= 0x3000 && c <= 0x3029) || (c >= 0x3041 && c <= 0x3096) || (c >= 0x30A1 && c <= 0x30FA) ||
         (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xAC00 && c <= 0xD7A3) ||
         (c >= 0xFF01 && c <= 0xFF5E);
}

}  // namespace

std::string nfc(std::string_view text) {
  std::string out;
  append_nfc(text, out);
  return out;
}

void append_normalized(Normalization normalization, std::string_view text, std::string& out) {
  if (normalization == Normalization::kNone) {
    out.append(text);
    return;
  }
  // Copy inert characters as they are; run utf8proc only over each stretch of other characters,
  // together with the inert character before it (which they may compose with). Inert characters
  // are starters that nothing composes into, so stretches are independent.
  size_t copied = 0;        // text[0, copied) is in `out`
  size_t last_char = 0;     // start of the previous character
  size_t pos = 0;
  while (pos < text.size()) {
    // ASCII is inert (NFC of ASCII is itself): skip a run of it without decoding.
    if (const size_t ascii_end = ascii_run_end(text, pos); ascii_end > pos) {
      last_char = ascii_end - 1;
      pos = ascii_end;
      continue;
    }
    // Lead bytes E5..E9 start U+5000..U+9FFF (the text is valid UTF-8): CJK ideographs, inert.
    if (const auto lead = static_cast<uint8_t>(text[pos]); lead >= 0xE5 && lead <= 0xE9) {
      last_char = pos;
      pos += 3;
      continue;
    }
    const Utf8Step step = decode_utf8(text, pos);
    if (nfc_inert(step.codepoint)) {
      last_char = pos;
      pos += step.length;
      continue;
    }
    const size_t stretch_start = pos > 0 ? last_char : 0;
    size_t stretch_end = pos + step.length;
    while (stretch_end < text.size()) {
      const Utf8Step next = decode_utf8(text, stretch_end);
      if (nfc_inert(next.codepoint)) break;
      stretch_end += next.length;
    }
    out.append(text.substr(copied, stretch_start - copied));
    append_nfc(text.substr(stretch_start, stretch_end - stretch_start), out);
    copied = stretch_end;
    pos = stretch_end;
    last_char = stretch_end;  // only used once another inert character has been seen
  }
  out.append(text.substr(copied));
}

}  // namespace vlmforge::tokenizer
