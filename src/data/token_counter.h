#pragma once
// Text tokens of a row as the model sees it: the row rendered with the model's chat template and
// encoded with its tokenizer. Image tokens are added by the caller (they depend on image sizes).
#include <filesystem>
#include <optional>

#include "data/row_format.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace vlmforge::data {

class TokenCounter {
 public:
  // Reads DIR/tokenizer.json and picks the template from DIR/config.json (model_type).
  static TokenCounter load(const std::filesystem::path& model_dir);

  // Tokens of the rendered row, not counting the one placeholder token per image / video that
  // the processor later expands. std::nullopt when the row cannot be rendered. Thread-safe.
  std::optional<size_t> text_tokens(const NormalizedRow& row) const;

 private:
  TokenCounter(tokenizer::Tokenizer tokenizer, tokenizer::ChatTemplateKind kind)
      : tokenizer_(std::move(tokenizer)), kind_(kind) {}

  tokenizer::Tokenizer tokenizer_;
  tokenizer::ChatTemplateKind kind_;
};

}  // namespace vlmforge::data
