#include "tokenizer/detokenizer.h"

#include "tokenizer/utf8.h"

namespace vlmforge::tokenizer {

std::string IncrementalDetokenizer::push(TokenId id) {
  const std::string_view bytes = tokenizer_.token_bytes(id);
  if (skip_special_tokens_ && tokenizer_.is_special(id)) return {};
  pending_.append(bytes);
  std::string text;
  const size_t consumed = append_replacing_invalid_utf8(pending_, text, /*keep_truncated_tail=*/true);
  pending_.erase(0, consumed);
  return text;
}

std::string IncrementalDetokenizer::finish() {
  std::string text;
  append_replacing_invalid_utf8(pending_, text, /*keep_truncated_tail=*/false);
  pending_.clear();
  return text;
}

}  // namespace vlmforge::tokenizer
