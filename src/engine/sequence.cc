#include "engine/sequence.h"

#include <algorithm>
#include <cmath>

#include "model/qwen2.h"
#include "util/error.h"

namespace vlmforge {

std::vector<double> log_softmax(std::span<const float> logits) {
  const double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(l - max);
  const double log_sum = std::log(sum) + max;
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_sum;
  return out;
}

std::vector<std::pair<int32_t, double>> top_k_entries(std::span<const double> values, size_t k) {
  std::vector<int32_t> index(values.size());
  for (size_t i = 0; i < index.size(); ++i) index[i] = static_cast<int32_t>(i);
  k = std::min(k, index.size());
  std::partial_sort(index.begin(), index.begin() + static_cast<std::ptrdiff_t>(k), index.end(),
                    [&](int32_t a, int32_t b) { return values[static_cast<size_t>(a)] > values[static_cast<size_t>(b)]; });
  std::vector<std::pair<int32_t, double>> out;
  for (size_t i = 0; i < k; ++i) out.emplace_back(index[i], values[static_cast<size_t>(index[i])]);
  return out;
}

namespace {

std::vector<int32_t> checked_prompt(std::vector<int32_t> prompt, size_t max_model_len) {
  if (prompt.empty()) throw Error("empty prompt (no tokens)");
  if (prompt.size() >= max_model_len)
    throw Error("prompt of " + std::to_string(prompt.size()) + " tokens does not fit max_model_len " +
                std::to_string(max_model_len) + " with room to generate (raise --max_model_len)");
  return prompt;
}

}  // namespace

SequenceState::SequenceState(const Qwen2Model& model, const tokenizer::Tokenizer& tokenizer, PromptInput prompt,
                             size_t max_model_len, const GenerationParams& params, KvBlockPool* pool)
    : params_(params),
      tokenizer_(tokenizer),
      cache_(pool ? KvCache(*pool, max_model_len) : model.make_cache(max_model_len)),
      history_(checked_prompt(std::move(prompt.tokens), max_model_len)),
      image_embeds_(std::move(prompt.image_embeds)),
      positions_(std::move(prompt.positions)),
      position_delta_(prompt.position_delta),
      sampler_(params.sampling),
      detokenizer_(tokenizer, true) {
  if (params.prefill_chunk == 0) throw Error("prefill_chunk must be at least 1 token");
  if (!positions_.empty() && positions_.size() != history_.size())
    throw Error("internal error: " + std::to_string(positions_.size()) + " M-RoPE positions for a prompt of " +
                std::to_string(history_.size()) + " tokens");
  for (const auto& w : params.stop_words) longest_stop_ = std::max(longest_stop_, w.size());
  result_.prompt_tokens = history_.size();
  pool_ = pool;
}

bool SequenceState::prefill(Qwen2Model& model, const std::function<void(std::string_view)>& on_text) {
  while (prefilling()) prefill_next_chunk(model, on_text);
  return done_;
}

void SequenceState::prefill_next_chunk(Qwen2Model& model, const std::function<void(std::string_view)>& on_text) {
  if (!prefilling()) throw Error("prefill_next_chunk: the prompt is already prefilled");
  if (pool_ && pool_->table().prefix_caching() && !prefix_looked_up_) {
    // Looked up at the first chunk, not at construction: a sequence that joins a batch with
    // another of the same prompt then finds the blocks that one has written since. Without
    // prefix caching no key is hashed (publishing with no keys does nothing).
    prefix_looked_up_ = true;
    const int32_t image_token = model.config().image_token_id;
    const size_t hidden = static_cast<size_t>(model.config().hidden_size);
    const size_t block = pool_->block_size();
    prompt_keys_ = block_keys(history_, positions_, position_delta_, image_token, image_embeds_, hidden, block);
    cached_prompt_tokens_ = cache_.adopt_cached_prefix(prompt_keys_, (result_.prompt_tokens - 1) / block);
    prefilled_ = cached_prompt_tokens_;
    if (!image_embeds_.empty())
      image_rows_used_ = static_cast<size_t>(
          std::count(history_.begin(), history_.begin() + static_cast<std::ptrdiff_t>(prefilled_), image_token));
  }
  const size_t n = std::min(params_.prefill_chunk, result_.prompt_tokens - prefilled_);
  SequenceChunk chunk{&cache_, std::span<const int32_t>(history_).subspan(prefilled_, n), false};
  if (!image_embeds_.empty()) {
    const int32_t image_token = model.config().image_token_id;
    const size_t hidden = static_cast<size_t>(model.config().hidden_size);
    const size_t rows = static_cast<size_t>(std::count(chunk.tokens.begin(), chunk.tokens.end(), image_token));
    if ((image_rows_used_ + rows) * hidden > image_embeds_.size())
      throw Error("the prompt has more <|image_pad|> tokens than image embeddings");
    chunk.image_embeds = std::span<const float>(image_embeds_).subspan(image_rows_used_ * hidden, rows * hidden);
    image_rows_used_ += rows;
  }
  if (!positions_.empty()) chunk.positions = std::span<const std::array<int64_t, 3>>(positions_).subspan(prefilled_, n);
  chunk.position_delta = position_delta_;
  std::vector<float> logits = model.forward(std::span(&chunk, 1));
  prefilled_ += n;
  cache_.publish_full_blocks(prompt_keys_);
  if (prefilling()) return;
  if (params_.max_new_tokens == 0) {
    done_ = true;
    result_.finish_reason = "length";
    return;
  }
  accept(logits, on_text);
}

SequenceChunk SequenceState::decode_chunk() {
  SequenceChunk chunk{&cache_, std::span<const int32_t>(&next_, 1), false};
  chunk.position_delta = position_delta_;
  return chunk;
}

void SequenceState::emit(std::string_view text, const std::function<void(std::string_view)>& on_text) {
  result_.text += text;
  if (on_text && !text.empty()) on_text(text);
}

// Emits text, holding back what could still grow into a stop word; returns true on a stop word.
bool SequenceState::push_text(std::string_view text, bool final, const std::function<void(std::string_view)>& on_text) {
  held_back_ += text;
  for (const auto& w : params_.stop_words) {
    if (w.empty()) continue;
    if (const size_t pos = held_back_.find(w); pos != std::string::npos) {
      held_back_.resize(pos);
      emit(held_back_, on_text);
      held_back_.clear();
      return true;
    }
  }
  const size_t keep = final ? 0 : std::min(held_back_.size(), longest_stop_ ? longest_stop_ - 1 : 0);
  const std::string out = held_back_.substr(0, held_back_.size() - keep);
  held_back_.erase(0, out.size());
  emit(out, on_text);
  return false;
}

bool SequenceState::accept(std::span<float> logits, const std::function<void(std::string_view)>& on_text) {
  std::vector<double> lp;
  if (params_.logprobs) lp = log_softmax(logits);
  const int32_t token = sampler_.sample(logits, history_);
  if (params_.logprobs)
    result_.logprobs.push_back({token, lp[static_cast<size_t>(token)], top_k_entries(lp, params_.top_logprobs)});
  const bool stop_id = std::find(params_.stop_ids.begin(), params_.stop_ids.end(), token) != params_.stop_ids.end();
  result_.tokens.push_back(token);
  history_.push_back(token);
  next_ = token;
  if (stop_id) {
    result_.finish_reason = "stop";
    push_text(detokenizer_.finish(), true, on_text);
    return done_ = true;
  }
  const bool known = static_cast<size_t>(token) < tokenizer_.vocab_size();  // see generated_token_bytes (engine/token_text.h)
  if (push_text(known ? detokenizer_.push(token) : std::string(), false, on_text)) {
    result_.finish_reason = "stop";
    return done_ = true;
  }
  if (result_.tokens.size() >= params_.max_new_tokens || cache_.length() + 1 >= cache_.max_tokens()) {
    result_.finish_reason = "length";
    push_text(detokenizer_.finish(), true, on_text);
    return done_ = true;
  }
  return false;
}

void SequenceState::abort(const std::function<void(std::string_view)>& on_text) {
  if (done_) return;
  result_.finish_reason = "abort";
  push_text(detokenizer_.finish(), true, on_text);
  done_ = true;
}

}  // namespace vlmforge
