#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "engine/generation_step.h"

#include "util/error.h"

namespace vlmforge {
namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

std::vector<GenerationResult> Generator::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                  const GenerationParams& params, const TextCallback& on_text) {
  std::vector<PromptInput> inputs;
  for (const auto& p : prompts) inputs.push_back(text_prompt(p));
  return generate(inputs, params, on_text);
}

std::vector<GenerationResult> Generator::generate(const std::vector<PromptInput>& prompts,
                                                  const GenerationParams& params, const TextCallback& on_text) {
  timings_ = {};
  const auto start = Clock::now();
  std::vector<std::unique_ptr<SequenceState>> seqs;
  std::vector<BatchMember> members;
  for (size_t s = 0; s < prompts.size(); ++s) {
    try {
      seqs.push_back(std::make_unique<SequenceState>(model_, tokenizer_, prompts[s], max_model_len_, params));
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (sequence " + std::to_string(s) + ")");
    }
    BatchMember& m = members.emplace_back();
    m.sequence = seqs.back().get();
    if (on_text) m.on_text = [&on_text, s](std::string_view t) { on_text(s, t); };
  }

  bool first_token_seen = false;
  for (;;) {
    const bool running = std::any_of(seqs.begin(), seqs.end(), [](const auto& s) { return !s->done(); });
    if (!running) break;
    if (params.should_stop && params.should_stop()) {
      for (BatchMember& m : members) m.sequence->abort(m.on_text);
      break;
    }
    const double before = seconds(start, Clock::now());
    const StepReport step = generation_step(model_, members, FailurePolicy::kThrow);
    timings_.prefill_tokens += step.prefill_tokens;
    timings_.decode_tokens += step.decode_tokens;
    timings_.prefill_seconds += step.prefill_seconds;
    timings_.decode_seconds += step.decode_seconds;
    // The first sequence's first token is sampled at the end of the step's prefill chunks.
    if (!first_token_seen && !seqs.empty() && !seqs[0]->result().tokens.empty()) {
      first_token_seen = true;
      timings_.first_token_seconds = before + step.prefill_seconds;
    }
  }
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
