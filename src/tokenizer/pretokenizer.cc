#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "util/error.h"

namespace vlmforge::tokenizer {
namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

struct CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};


// Character classes of kQwen2SplitPattern. kUnknown: a character whose class is left to PCRE2
// (its Unicode tables decide, and they may differ from any table of ours); kNone: past the end.
enum class CharClass : uint8_t { kLetter, kNumber, kNewline, kSpace, kOther, kUnknown, kNone };

struct Char {
  CharClass cls;
  uint8_t length;  // bytes
};

constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> classes{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      classes[c] = CharClass::kLetter;
    } else if (c >= '0' && c <= '9') {
      classes[c] = CharClass::kNumber;
    } else if (c == '\r' || c == '\n') {
      classes[c] = CharClass::kNewline;
    } else if (c == ' ' || c == '\t' || c == '\v' || c == '\f') {
      classes[c] = CharClass::kSpace;
    } else if (c < 0x20 || c == 0x7F) {
      classes[c] = CharClass::kUnknown;  // controls: whether \s takes them varies between engines
    } else {
      classes[c] = CharClass::kOther;
    }
  }
  return classes;
}
constexpr std::array<CharClass, 128> kAsciiClasses = make_ascii_classes();

// Classes beyond ASCII only for characters whose Unicode category has never changed: the CJK
// ideographs of Unicode 1.1, the ideographic space and common CJK / full-width punctuation.
CharClass non_ascii_class(char32_t c) {
  if (c >= 0x4E00 && c <= 0x9FA5) return CharClass::kLetter;
  if (c == 0x3000) return CharClass::kSpace;
  switch (c) {
    case 0x3001: case 0x3002: case 0xFF01: case 0xFF08: case 0xFF09: case 0xFF0C: case 0xFF1A: case 0xFF1B:
    case 0xFF1F:
      return CharClass::kOther;
    default: return CharClass::kUnknown;
  }
}

// Inlined: it runs for every character of the text.
[[gnu::always_inline]] inline Char classify(std::string_view text, size_t pos) {
  if (pos >= text.size()) return {CharClass::kNone, 0};
  const auto lead = static_cast<uint8_t>(text[pos]);
  if (lead < 0x80) return {kAsciiClasses[lead], 1};
  if ((lead & 0xF0) != 0xE0) return {CharClass::kUnknown, 1};  // only 3-byte characters are classified
  // The text is valid UTF-8, so the two continuation bytes are there.
  const char32_t c = (char32_t{lead & 0x0Fu} << 12) | (char32_t{static_cast<uint8_t>(text[pos + 1]) & 0x3Fu} << 6) |
                     char32_t{static_cast<uint8_t>(text[pos + 2]) & 0x3Fu};
  return {non_ascii_class(c), 3};
}

// Returned by the hand matcher when PCRE2 must decide.
constexpr size_t kUnsure = std::string_view::npos;

// End of the run of `cls` characters from pos; kUnsure if an unknown character could extend it.
size_t run_end(std::string_view text, size_t pos, CharClass cls) {
  for (;;) {
    const Char c = classify(text, pos);
    if (c.cls == CharClass::kUnknown) return kUnsure;
    if (c.cls != cls) return pos;
    pos += c.length;
  }
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d) after the apostrophe at `after` - 1: the contraction's end, 0 for
// none, kUnsure for non-ASCII letters (caseless 's' also matches U+017F).
size_t contraction_end(std::string_view text, size_t after) {
  const auto lower = [&](size_t i) -> int {
    if (i >= text.size()) return 0;
    const auto c = static_cast<uint8_t>(text[i]);
    return c >= 0x80 ? -1 : (c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
  };
  const int first = lower(after);
  if (first < 0) return kUnsure;
  if (first == 's' || first == 't' || first == 'm' || first == 'd') return after + 1;
  if (first != 'r' && first != 'v' && first != 'l') return 0;
  const int second = lower(after + 1);
  if (second < 0) return kUnsure;
  return second == (first == 'l' ? 'l' : 'e') ? after + 2 : 0;
}

// \s*[\r\n]+|\s+(?!\S)|\s+ at a whitespace character.
size_t whitespace_match_end(std::string_view text, size_t pos) {
  size_t end = pos, last_start = pos, last_newline_end = 0;
  for (;;) {
    const Char c = classify(text, end);
    if (c.cls == CharClass::kUnknown) return kUnsure;
    if (c.cls != CharClass::kSpace && c.cls != CharClass::kNewline) break;
    if (c.cls == CharClass::kNewline) last_newline_end = end + 1;
    last_start = end;
    end += c.length;
  }
  if (last_newline_end > 0) return last_newline_end;  // \s* backtracks to the last CR/LF
  if (end == text.size() || last_start == pos) return end;
  return last_start;  // (?!\S) gives back the last whitespace character
}

// The match of kQwen2SplitPattern at pos (pos < text.size()), alternatives in the pattern's order.
// Every character class starts some alternative, so the match always begins at pos.
size_t qwen2_match_end(std::string_view text, size_t pos) {
  const Char first = classify(text, pos);
  const size_t after = pos + first.length;
  const Char second = classify(text, after);
  if (first.cls == CharClass::kUnknown || second.cls == CharClass::kUnknown) return kUnsure;
  if (text[pos] == '\'') {
    const size_t end = contraction_end(text, after);
    if (end != 0) return end;
  }
  const bool letter_prefix = first.cls == CharClass::kSpace || first.cls == CharClass::kOther;
  if (first.cls == CharClass::kLetter) return run_end(text, after, CharClass::kLetter);
  if (letter_prefix && second.cls == CharClass::kLetter) return run_end(text, after + second.length, CharClass::kLetter);
  if (first.cls == CharClass::kNumber) return after;
  if (first.cls == CharClass::kOther || (text[pos] == ' ' && second.cls == CharClass::kOther)) {
    const size_t others_end = run_end(text, first.cls == CharClass::kOther ? pos : after, CharClass::kOther);
    if (others_end == kUnsure) return kUnsure;
    size_t end = others_end;  // [\r\n]*: any other character, known or not, ends it
    while (end < text.size() && (text[end] == '\r' || text[end] == '\n')) ++end;
    return end;
  }
  return whitespace_match_end(text, pos);
}

}  // namespace

struct RegexSplitter::Compiled {
  std::unique_ptr<pcre2_code, CodeDeleter> code;
  bool jit = false;
};

RegexSplitter::RegexSplitter(std::string_view pattern, std::string_view source)
    : pattern_(pattern), compiled_(std::make_unique<Compiled>()), qwen2_pattern_(pattern == kQwen2SplitPattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  compiled_->code.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                      PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr));
  if (!compiled_->code) {
    throw Error(std::string(source) + ": unsupported pre-tokenizer regex (PCRE2: " + pcre2_message(error_code) +
                " at offset " + std::to_string(error_offset) + "): " + std::string(pattern));
  }
  // JIT is an optimisation only: without it (e.g. no executable memory) matching still works.
  compiled_->jit = pcre2_jit_compile(compiled_->code.get(), PCRE2_JIT_COMPLETE) == 0;
}

RegexSplitter::~RegexSplitter() = default;
RegexSplitter::RegexSplitter(RegexSplitter&&) noexcept = default;
RegexSplitter& RegexSplitter::operator=(RegexSplitter&&) noexcept = default;

size_t RegexSplitter::split(std::string_view text, std::vector<std::string_view>& pieces, size_t from,
                            size_t max_pieces) const {
  const std::unique_ptr<pcre2_match_data, MatchDataDeleter> match(
      pcre2_match_data_create_from_pattern(compiled_->code.get(), nullptr));
  if (!match) throw Error("out of memory creating regex match data");
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap_start = from;  // start of the text not yet emitted
  size_t search = from;     // where the next match may start
  const size_t stop_at = pieces.size() + std::min(max_pieces, SIZE_MAX - pieces.size());
  while (search < text.size()) {
    // After a match nothing is pending (gap_start == search): a later call can start here.
    if (pieces.size() >= stop_at && search == gap_start) return search;
    // The common pieces of Qwen2's pattern are matched by hand, far faster than a regex call.
    if (qwen2_pattern_ && search == gap_start) {
      if (const size_t end = qwen2_match_end(text, search); end != kUnsure) {
        pieces.push_back(text.substr(search, end - search));
        gap_start = search = end;
        continue;
      }
    }
    // The text was validated as UTF-8 before, so PCRE2 need not check it again for every match.
    int rc = compiled_->jit ? pcre2_jit_match(compiled_->code.get(), subject, text.size(), search,
                                              PCRE2_NO_UTF_CHECK, match.get(), nullptr)
                            : PCRE2_ERROR_JIT_STACKLIMIT;
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // A very long whitespace run can exhaust the JIT stack in the (?!\S) backtracking; the
      // interpreter keeps its frames on the heap.
      rc = pcre2_match(compiled_->code.get(), subject, text.size(), search, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       match.get(), nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw Error("pre-tokenizer regex failed: " + pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    const size_t start = ovector[0], end = ovector[1];
    if (start > gap_start) pieces.push_back(text.substr(gap_start, start - gap_start));
    gap_start = start;
    if (end > start) {
      pieces.push_back(text.substr(start, end - start));
      gap_start = search = end;
    } else {
      // An empty match only marks a boundary; step over one character so the search advances.
      search = start + 1;
      while (search < text.size() && (static_cast<unsigned char>(text[search]) & 0xC0) == 0x80) ++search;
    }
  }
  if (gap_start < text.size()) pieces.push_back(text.substr(gap_start));
  return text.size();
}

}  // namespace vlmforge::tokenizer
