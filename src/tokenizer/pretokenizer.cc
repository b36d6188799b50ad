#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

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

}  // namespace

struct RegexSplitter::Compiled {
  std::unique_ptr<pcre2_code, CodeDeleter> code;
  bool jit = false;
};

RegexSplitter::RegexSplitter(std::string_view pattern, std::string_view source)
    : pattern_(pattern), compiled_(std::make_unique<Compiled>()) {
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

void RegexSplitter::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  const std::unique_ptr<pcre2_match_data, MatchDataDeleter> match(
      pcre2_match_data_create_from_pattern(compiled_->code.get(), nullptr));
  if (!match) throw Error("out of memory creating regex match data");
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap_start = 0;  // start of the text not yet emitted
  size_t search = 0;     // where the next match may start
  while (search < text.size()) {
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
}

}  // namespace vlmforge::tokenizer
