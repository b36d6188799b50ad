#include "model/generator.h"

#include <chrono>
#include <memory>

#include "util/error.h"

namespace vlmforge {
namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

std::vector<GenerationResult> Generator::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                  const GenerationParams& params, const TextCallback& on_text) {
  timings_ = {};
  std::vector<std::unique_ptr<SequenceState>> seqs;
  auto text_of = [&](size_t s) {
    return on_text ? std::function<void(std::string_view)>([&on_text, s](std::string_view t) { on_text(s, t); })
                   : std::function<void(std::string_view)>();
  };

  const auto start = Clock::now();
  for (size_t s = 0; s < prompts.size(); ++s) {
    try {
      seqs.push_back(std::make_unique<SequenceState>(model_, tokenizer_, prompts[s], max_model_len_, params));
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (sequence " + std::to_string(s) + ")");
    }
    seqs[s]->prefill(model_, text_of(s));
    timings_.prefill_tokens += prompts[s].size();
    if (s == 0 && params.max_new_tokens > 0) timings_.first_token_seconds = seconds(start, Clock::now());
  }
  const auto prefill_end = Clock::now();
  timings_.prefill_seconds = seconds(start, prefill_end);

  for (;;) {
    std::vector<size_t> active;
    std::vector<SequenceChunk> chunks;
    for (size_t s = 0; s < seqs.size(); ++s)
      if (!seqs[s]->done()) active.push_back(s);
    if (active.empty()) break;
    if (params.should_stop && params.should_stop()) {
      for (size_t s : active) seqs[s]->abort(text_of(s));
      break;
    }
    for (size_t s : active) chunks.push_back({&seqs[s]->cache(), seqs[s]->next_token(), false});
    std::vector<float> logits = model_.forward(chunks);
    const size_t vocab = model_.vocab_size();
    for (size_t i = 0; i < active.size(); ++i)
      seqs[active[i]]->accept(std::span(logits).subspan(i * vocab, vocab), text_of(active[i]));
    timings_.decode_tokens += active.size();
  }
  timings_.decode_seconds = seconds(prefill_end, Clock::now());
  total_.prefill_seconds += timings_.prefill_seconds;
  total_.decode_seconds += timings_.decode_seconds;
  total_.prefill_tokens += timings_.prefill_tokens;
  total_.decode_tokens += timings_.decode_tokens;
  if (calls_++ == 0) total_.first_token_seconds = timings_.first_token_seconds;
  std::vector<GenerationResult> results;
  for (auto& s : seqs) results.push_back(s->take_result());
  return results;
}

}  // namespace vlmforge
