#pragma once
// What `infer` and `score` share: the model and tokenizer of a directory, the generation defaults
// from generation_config.json, stop ids, and prompts rendered with the model's chat template.
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/generator.h"
#include "model/qwen2.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace vlmforge::cli {

struct InferSession {
  InferSession(const std::filesystem::path& model_dir, size_t threads,
               const std::vector<std::filesystem::path>& adapter_dirs = {});

  std::unique_ptr<Qwen2Model> model;
  tokenizer::Tokenizer tokenizer;
  tokenizer::ChatTemplateKind chat_kind;
  GenerationParams defaults;  // from generation_config.json, with eos / <|im_end|> stop ids

  // Renders messages (HF or swift form) with the generation prompt and encodes them.
  std::vector<int32_t> encode_chat(const nlohmann::ordered_json& request) const;
};

// OpenAI's logprobs.content for generated tokens.
nlohmann::json openai_logprobs(const tokenizer::Tokenizer& tokenizer, const std::vector<TokenLogprob>& logprobs);

// Token bytes as valid UTF-8 text (invalid sequences become U+FFFD).
std::string display_text(std::string_view bytes);

// Peak resident memory of this process so far.
uint64_t peak_rss_bytes();

}  // namespace vlmforge::cli
