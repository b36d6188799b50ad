#pragma once
// Text generation over a Qwen2Model: chunked prefill per sequence, then batched decode steps in
// which every active sequence advances by one token and each weight matrix is read once for all
// of them. Stops on eos/stop ids, stop words, max_new_tokens or max_model_len.
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/qwen2.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"

namespace vlmforge {

struct GenerationParams {
  SamplingParams sampling;
  size_t max_new_tokens = 512;
  std::vector<int32_t> stop_ids;         // eos and friends
  std::vector<std::string> stop_words;   // text that ends generation (not included in the output)
  size_t top_logprobs = 0;               // alternatives per generated token (with logprobs)
  bool logprobs = false;
  size_t prefill_chunk = 512;
  std::function<bool()> should_stop;  // polled between decode steps (e.g. Ctrl-C); ends with "abort"
};

struct TokenLogprob {
  int32_t id;
  double logprob;
  std::vector<std::pair<int32_t, double>> top;
};

struct GenerationResult {
  std::vector<int32_t> tokens;
  std::string text;
  std::string finish_reason;  // "stop", "length" or "abort"
  std::vector<TokenLogprob> logprobs;
  size_t prompt_tokens = 0;
};

struct GenerationTimings {
  double prefill_seconds = 0;
  double decode_seconds = 0;
  double first_token_seconds = 0;
  size_t prefill_tokens = 0;
  size_t decode_tokens = 0;
};

// A prompt's tokens with, for Qwen2.5-VL, the image embeddings replacing its <|image_pad|> tokens
// and its M-RoPE positions (see mrope_positions).
struct PromptInput {
  std::vector<int32_t> tokens;
  std::vector<float> image_embeds;
  std::vector<std::array<int64_t, 3>> positions;  // empty: text positions
  int64_t position_delta = 0;                     // generated tokens: cache slot + delta
};

// Called with (sequence index, newly completed text) as tokens arrive; may be empty.
using TextCallback = std::function<void(size_t, std::string_view)>;

class Generator {
 public:
  Generator(Qwen2Model& model, const tokenizer::Tokenizer& tokenizer, size_t max_model_len)
      : model_(model), tokenizer_(tokenizer), max_model_len_(max_model_len) {}

  std::vector<GenerationResult> generate(const std::vector<std::vector<int32_t>>& prompts,
                                         const GenerationParams& params, const TextCallback& on_text = {});
  std::vector<GenerationResult> generate(const std::vector<PromptInput>& prompts, const GenerationParams& params,
                                         const TextCallback& on_text = {});
  // The last generate() call, and all calls so far (first_token_seconds: the first call's).
  const GenerationTimings& timings() const { return timings_; }
  const GenerationTimings& total_timings() const { return total_; }

 private:
  Qwen2Model& model_;
  const tokenizer::Tokenizer& tokenizer_;
  size_t max_model_len_;
  GenerationTimings timings_;
  GenerationTimings total_;
  size_t calls_ = 0;
};

// Natural-log softmax of one row of logits, in double.
std::vector<double> log_softmax(std::span<const float> logits);
// The k largest entries as (index, value), descending.
std::vector<std::pair<int32_t, double>> top_k_entries(std::span<const double> values, size_t k);

}  // namespace vlmforge
