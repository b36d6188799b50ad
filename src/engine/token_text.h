#pragma once
// Generated token ids as bytes and as text, for infer's, score's and the server's output.
#include <cstdint>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"

namespace vlmforge {

// The bytes of a generated id. A model's vocabulary is padded past the tokenizer's (Qwen2.5:
// 151,936 rows, 151,665 tokens); such ids decode to nothing, as Hugging Face tokenizers skip ids
// they do not know.
std::string_view generated_token_bytes(const tokenizer::Tokenizer& tokenizer, int32_t id);

// Token bytes as valid UTF-8 text (invalid sequences become U+FFFD).
std::string display_text(std::string_view bytes);

}  // namespace vlmforge
