#include "model/generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "tokenizer/detokenizer.h"

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

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// One sequence being generated.
struct Active {
  KvCache cache;
  std::vector<int32_t> history;  // prompt + generated, for the repetition penalty
  Sampler sampler;
  tokenizer::IncrementalDetokenizer detokenizer;
  std::string held_back;  // text not yet streamed: it might be the start of a stop word
  int32_t next = -1;      // sampled, not yet fed to the model
  bool done = false;
  int64_t position_delta = 0;
};

}  // namespace

std::vector<GenerationResult> Generator::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                  const GenerationParams& params, const TextCallback& on_text) {
  std::vector<PromptInput> inputs(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) inputs[i].tokens = prompts[i];
  return generate(inputs, params, on_text);
}

std::vector<GenerationResult> Generator::generate(const std::vector<PromptInput>& inputs, const GenerationParams& params,
                                                  const TextCallback& on_text) {
  timings_ = {};
  std::vector<GenerationResult> results(inputs.size());
  std::vector<std::unique_ptr<Active>> seqs;
  size_t longest_stop = 0;
  for (const auto& w : params.stop_words) longest_stop = std::max(longest_stop, w.size());

  // Emits text, holding back what could still grow into a stop word; returns true on a stop word.
  auto push_text = [&](size_t s, std::string_view text, bool final) {
    Active& a = *seqs[s];
    a.held_back += text;
    for (const auto& w : params.stop_words) {
      if (w.empty()) continue;
      if (const size_t pos = a.held_back.find(w); pos != std::string::npos) {
        a.held_back.resize(pos);
        results[s].text += a.held_back;
        if (on_text) on_text(s, a.held_back);
        a.held_back.clear();
        return true;
      }
    }
    const size_t keep = final ? 0 : std::min(a.held_back.size(), longest_stop ? longest_stop - 1 : 0);
    const std::string emit = a.held_back.substr(0, a.held_back.size() - keep);
    a.held_back.erase(0, emit.size());
    results[s].text += emit;
    if (on_text && !emit.empty()) on_text(s, emit);
    return false;
  };

  // Samples from one row of logits and records the token; returns whether the sequence ended.
  auto accept = [&](size_t s, std::span<float> logits) {
    Active& a = *seqs[s];
    GenerationResult& r = results[s];
    std::vector<double> lp;
    if (params.logprobs) lp = log_softmax(logits);
    const int32_t token = a.sampler.sample(logits, a.history);
    if (params.logprobs)
      r.logprobs.push_back({token, lp[static_cast<size_t>(token)], top_k_entries(lp, params.top_logprobs)});
    const bool stop_id = std::find(params.stop_ids.begin(), params.stop_ids.end(), token) != params.stop_ids.end();
    r.tokens.push_back(token);
    a.history.push_back(token);
    a.next = token;
    if (stop_id) {
      r.finish_reason = "stop";
      push_text(s, a.detokenizer.finish(), true);
      return true;
    }
    if (push_text(s, a.detokenizer.push(token), false)) {
      r.finish_reason = "stop";
      return true;
    }
    if (r.tokens.size() >= params.max_new_tokens || a.cache.length() + 1 >= a.cache.max_tokens()) {
      r.finish_reason = "length";
      push_text(s, a.detokenizer.finish(), true);
      return true;
    }
    return false;
  };

  const auto start = Clock::now();
  const int32_t image_token = model_.config().image_token_id;
  const size_t hidden = static_cast<size_t>(model_.config().hidden_size);
  for (size_t s = 0; s < inputs.size(); ++s) {
    const PromptInput& input = inputs[s];
    const auto& prompt = input.tokens;
    if (prompt.empty()) throw Error("empty prompt (no tokens) for sequence " + std::to_string(s));
    if (prompt.size() >= max_model_len_)
      throw Error("prompt of " + std::to_string(prompt.size()) + " tokens does not fit max_model_len " +
                  std::to_string(max_model_len_) + " with room to generate (raise --max_model_len)");
    seqs.push_back(std::make_unique<Active>(Active{model_.make_cache(max_model_len_), prompt, Sampler(params.sampling),
                                                   tokenizer::IncrementalDetokenizer(tokenizer_, true), "", -1, false}));
    results[s].prompt_tokens = prompt.size();
    seqs[s]->position_delta = input.position_delta;
    std::vector<float> logits;
    size_t image_rows = 0;  // image embedding rows used by earlier chunks
    for (size_t pos = 0; pos < prompt.size(); pos += params.prefill_chunk) {
      const size_t n = std::min(params.prefill_chunk, prompt.size() - pos);
      SequenceChunk chunk{&seqs[s]->cache, std::span(prompt).subspan(pos, n), false};
      if (!input.image_embeds.empty()) {
        const size_t rows = static_cast<size_t>(std::count(chunk.tokens.begin(), chunk.tokens.end(), image_token));
        if ((image_rows + rows) * hidden > input.image_embeds.size())
          throw Error("prompt " + std::to_string(s) + " has more <|image_pad|> tokens than image embeddings");
        chunk.image_embeds = std::span(input.image_embeds).subspan(image_rows * hidden, rows * hidden);
        image_rows += rows;
      }
      if (!input.positions.empty()) chunk.positions = std::span(input.positions).subspan(pos, n);
      chunk.position_delta = input.position_delta;
      logits = model_.forward(std::span(&chunk, 1));
    }
    timings_.prefill_tokens += prompt.size();
    if (params.max_new_tokens == 0) {
      seqs[s]->done = true;
      results[s].finish_reason = "length";
      continue;
    }
    seqs[s]->done = accept(s, logits);
    if (s == 0) timings_.first_token_seconds = seconds(start, Clock::now());
  }
  const auto prefill_end = Clock::now();
  timings_.prefill_seconds = seconds(start, prefill_end);

  for (;;) {
    std::vector<size_t> active;
    std::vector<SequenceChunk> chunks;
    for (size_t s = 0; s < seqs.size(); ++s)
      if (!seqs[s]->done) active.push_back(s);
    if (active.empty()) break;
    if (params.should_stop && params.should_stop()) {
      for (size_t s : active) {
        results[s].finish_reason = "abort";
        push_text(s, seqs[s]->detokenizer.finish(), true);
      }
      break;
    }
    for (size_t s : active) {
      SequenceChunk chunk{&seqs[s]->cache, std::span(&seqs[s]->next, 1), false};
      chunk.position_delta = seqs[s]->position_delta;
      chunks.push_back(chunk);
    }
    std::vector<float> logits = model_.forward(chunks);
    const size_t vocab = model_.vocab_size();
    for (size_t i = 0; i < active.size(); ++i)
      seqs[active[i]]->done = accept(active[i], std::span(logits).subspan(i * vocab, vocab));
    timings_.decode_tokens += active.size();
  }
  timings_.decode_seconds = seconds(prefill_end, Clock::now());
  total_.prefill_seconds += timings_.prefill_seconds;
  total_.decode_seconds += timings_.decode_seconds;
  total_.prefill_tokens += timings_.prefill_tokens;
  total_.decode_tokens += timings_.decode_tokens;
  if (calls_++ == 0) total_.first_token_seconds = timings_.first_token_seconds;
  return results;
}

}  // namespace vlmforge
