#pragma once
// One sequence being generated: its KV cache, sampler, streaming detokenizer and stop handling.
// generation_step (engine/generation_step.h) drives these for Generator (a fixed batch) and the
// server's scheduler (a batch that sequences join and leave between steps), so stop ids, stop
// words, length limits and logprobs behave the same in `infer` and `deploy`.
#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/kv_cache.h"
#include "model/sampler.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace vlmforge {

class Qwen2Model;
struct SequenceChunk;

// A prompt's tokens with, for Qwen2.5-VL, the image embeddings replacing its <|image_pad|> tokens
// and its M-RoPE positions (see mrope_positions).
struct PromptInput {
  std::vector<int32_t> tokens;
  std::vector<float> image_embeds;
  std::vector<std::array<int64_t, 3>> positions;  // empty: text positions
  int64_t position_delta = 0;                     // generated tokens: cache slot + delta
};

inline PromptInput text_prompt(std::vector<int32_t> tokens) {
  PromptInput input;
  input.tokens = std::move(tokens);
  return input;
}

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

class SequenceState {
 public:
  // Checks the prompt against max_model_len (Error when it leaves no room to generate).
  // `params` and `tokenizer` must outlive this object.
  // With a `pool` (which must outlive this object) the cache is paged: its blocks come from the
  // pool, the prompt's prefix found in the pool's prefix cache is taken instead of computed (all but
  // the last token's block at most, so the first token's logits are computed), and the prompt's
  // full blocks go to the prefix cache once written.
  SequenceState(const Qwen2Model& model, const tokenizer::Tokenizer& tokenizer, PromptInput prompt,
                size_t max_model_len, const GenerationParams& params, KvBlockPool* pool = nullptr);

  // Runs the prompt through the model in chunks of params.prefill_chunk and accepts the first
  // token (unless max_new_tokens is 0). Returns whether the sequence is finished.
  bool prefill(Qwen2Model& model, const std::function<void(std::string_view)>& on_text = {});
  // One chunk of that prefill, so a server can interleave a long prompt with others' decode steps
  // (same chunks, same numbers). After the last chunk the first token is accepted as in prefill().
  void prefill_next_chunk(Qwen2Model& model, const std::function<void(std::string_view)>& on_text = {});
  // Whether prompt tokens remain to be run.
  bool prefilling() const { return prefilled_ < result_.prompt_tokens; }
  // Samples from this sequence's row of logits and records the token; text that became final
  // (complete UTF-8, past any possible stop word) goes to on_text. Returns whether it finished.
  bool accept(std::span<float> logits, const std::function<void(std::string_view)>& on_text = {});
  // Ends the sequence early ("abort"), flushing held-back text.
  void abort(const std::function<void(std::string_view)>& on_text = {});

  bool done() const { return done_; }
  // The decode input for the next step: the last sampled token, appended at cache().length().
  SequenceChunk decode_chunk();
  KvCache& cache() { return cache_; }
  const GenerationResult& result() const { return result_; }
  // Prompt tokens taken from the prefix cache instead of computed.
  size_t cached_prompt_tokens() const { return cached_prompt_tokens_; }
  GenerationResult take_result() { return std::move(result_); }

 private:
  bool push_text(std::string_view text, bool final, const std::function<void(std::string_view)>& on_text);
  void emit(std::string_view text, const std::function<void(std::string_view)>& on_text);

  const GenerationParams& params_;
  const tokenizer::Tokenizer& tokenizer_;
  KvCache cache_;
  std::vector<int32_t> history_;  // prompt + generated, for the repetition penalty
  std::vector<float> image_embeds_;                    // consumed in prompt order by the prefill chunks
  std::vector<std::array<int64_t, 3>> positions_;      // M-RoPE positions of the prompt (empty: text)
  int64_t position_delta_ = 0;
  size_t image_rows_used_ = 0;  // image embedding rows taken by earlier prefill chunks
  Sampler sampler_;
  tokenizer::IncrementalDetokenizer detokenizer_;
  size_t longest_stop_ = 0;
  std::string held_back_;  // text not yet emitted: it might be the start of a stop word
  size_t prefilled_ = 0;   // prompt tokens already in the cache
  KvBlockPool* pool_ = nullptr;  // paged caches
  bool prefix_looked_up_ = false;
  std::vector<KvBlockKey> prompt_keys_;  // paged: block_keys of the prompt's full blocks
  size_t cached_prompt_tokens_ = 0;
  int32_t next_ = -1;      // sampled, not yet fed to the model
  bool done_ = false;
  GenerationResult result_;
};

// Natural-log softmax of one row of logits, in double.
std::vector<double> log_softmax(std::span<const float> logits);
// The k largest entries as (index, value), descending.
std::vector<std::pair<int32_t, double>> top_k_entries(std::span<const double> values, size_t k);

}  // namespace vlmforge
