#include "engine/token_text.h"

#include "tokenizer/utf8.h"

namespace vlmforge {

std::string_view generated_token_bytes(const tokenizer::Tokenizer& tokenizer, int32_t id) {
  return id >= 0 && static_cast<size_t>(id) < tokenizer.vocab_size() ? tokenizer.token_bytes(id) : std::string_view();
}

std::string display_text(std::string_view bytes) {
  std::string out;
  tokenizer::append_replacing_invalid_utf8(bytes, out, false);
  return out;
}

}  // namespace vlmforge
