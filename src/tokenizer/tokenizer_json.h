#pragma once
// Reading a Hugging Face tokenizer.json into what vlmforge's byte-level BPE pipeline needs, and
// refusing (with the field named) anything that pipeline would not reproduce exactly.
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/normalizer.h"

namespace vlmforge::tokenizer {

struct TokenizerSpec {
  Normalization normalization = Normalization::kNone;
  std::string split_pattern;      // regex of the Split / ByteLevel(use_regex) pre-tokenizer
  bool add_prefix_space = false;  // ByteLevel: prepend " " to a segment not starting with one
  BpeSpec bpe;
  std::vector<AddedToken> added_tokens;
};

// `source` names the file in errors. The large "model.vocab" and "model.merges" sections are read
// straight from the SAX stream instead of through a JSON DOM, which keeps loading fast.
TokenizerSpec parse_tokenizer_json(std::string_view text, std::string_view source);

}  // namespace vlmforge::tokenizer
