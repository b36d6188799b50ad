#pragma once
// Text generation of a fixed batch over a Qwen2Model (infer, verify-merge): the batch runs
// generation_step until every sequence is done, so it is generated exactly as deploy's scheduler
// generates it. Stops on eos/stop ids, stop words, max_new_tokens or max_model_len; should_stop
// is polled between steps.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/sequence.h"
#include "model/qwen2.h"
#include "tokenizer/tokenizer.h"

namespace vlmforge {

// Seconds spent in the steps' prefill chunks and in their decode forwards (with sampling); the
// first token is the first sequence's, at the end of the prefill chunks of the step sampling it.
struct GenerationTimings {
  double prefill_seconds = 0;
  double decode_seconds = 0;
  double first_token_seconds = 0;
  size_t prefill_tokens = 0;
  size_t decode_tokens = 0;
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

}  // namespace vlmforge
