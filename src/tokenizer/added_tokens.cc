#include "tokenizer/added_tokens.h"

#include <utf8proc.h>

#include <algorithm>

#include "tokenizer/utf8.h"

namespace vlmforge::tokenizer {
namespace {

// Rust's char::is_whitespace (Unicode White_Space), which tokenizers uses for lstrip/rstrip.
bool is_whitespace(char32_t c) {
  if (c == ' ' || (c >= '\t' && c <= '\r') || c == 0x85) return true;
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category == UTF8PROC_CATEGORY_ZS || category == UTF8PROC_CATEGORY_ZL || category == UTF8PROC_CATEGORY_ZP;
}

// tokenizers' single_word boundary test: alphanumeric or underscore.
bool is_word_character(char32_t c) {
  if (c == '_') return true;
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO) ||
         (category >= UTF8PROC_CATEGORY_ND && category <= UTF8PROC_CATEGORY_NO);
}

// The character ending just before `pos` (text is valid UTF-8).
Utf8Step previous_character(std::string_view text, size_t pos) {
  size_t start = pos - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return decode_utf8(text, start);
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  std::erase_if(tokens_, [](const AddedToken& t) { return t.content.empty(); });
  for (uint32_t i = 0; i < tokens_.size(); ++i) {
    by_first_byte_[static_cast<uint8_t>(tokens_[i].content[0])].push_back(i);
  }
  for (auto& candidates : by_first_byte_) {
    std::stable_sort(candidates.begin(), candidates.end(),
                     [&](uint32_t a, uint32_t b) { return tokens_[a].content.size() > tokens_[b].content.size(); });
  }
}

std::optional<AddedTokenMatch> AddedTokenMatcher::match_at(std::string_view text, size_t from, size_t pos) const {
  for (const uint32_t index : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
    const AddedToken& token = tokens_[index];
    if (text.compare(pos, token.content.size(), token.content) != 0) continue;
    size_t start = pos, end = pos + token.content.size();
    if (token.single_word) {
      if (start > 0 && is_word_character(previous_character(text, start).codepoint)) continue;
      if (end < text.size() && is_word_character(decode_utf8(text, end).codepoint)) continue;
    }
    while (token.lstrip && start > from) {
      const Utf8Step before = previous_character(text, start);
      if (!is_whitespace(before.codepoint)) break;
      start -= before.length;
    }
    while (token.rstrip && end < text.size()) {
      const Utf8Step after = decode_utf8(text, end);
      if (!is_whitespace(after.codepoint)) break;
      end += after.length;
    }
    return AddedTokenMatch{start, end, token.id};
  }
  return std::nullopt;
}

std::optional<AddedTokenMatch> AddedTokenMatcher::find(std::string_view text, size_t from) const {
  if (tokens_.empty()) return std::nullopt;
  for (size_t pos = from; pos < text.size(); ++pos) {
    if (by_first_byte_[static_cast<uint8_t>(text[pos])].empty()) continue;
    if (auto match = match_at(text, from, pos)) return match;
  }
  return std::nullopt;
}

}  // namespace vlmforge::tokenizer
