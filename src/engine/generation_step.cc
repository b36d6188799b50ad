#include "engine/generation_step.h"

#include <chrono>
#include <exception>
#include <vector>

namespace vlmforge {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Runs `work` for `member`; under kFailMember a failure is recorded as its error (after `prefix`)
// and reported as false instead of thrown.
template <typename Work>
bool guarded(BatchMember& member, FailurePolicy policy, const char* prefix, Work&& work) {
  if (policy == FailurePolicy::kThrow) {
    work();
    return true;
  }
  try {
    work();
    return true;
  } catch (const std::exception& e) {
    member.error = std::string(prefix) + e.what();
    return false;
  }
}

bool active(const BatchMember& m) { return m.error.empty() && !m.sequence->done(); }

}  // namespace

StepReport generation_step(Qwen2Model& model, std::span<BatchMember> members, FailurePolicy policy) {
  StepReport report;
  const auto prefill_start = Clock::now();
  for (BatchMember& m : members) {
    if (!active(m) || !m.sequence->prefilling()) continue;
    SequenceState& s = *m.sequence;
    const size_t before = s.cache().length();
    if (!guarded(m, policy, "", [&] { s.prefill_next_chunk(model, m.on_text); })) continue;
    report.prefill_tokens += s.cache().length() - before;
    if (!s.prefilling()) report.sampled_tokens += s.result().tokens.size();
  }
  report.prefill_seconds = seconds_since(prefill_start);

  std::vector<BatchMember*> decoding;
  for (BatchMember& m : members)
    if (active(m) && !m.sequence->prefilling()) decoding.push_back(&m);
  if (decoding.empty()) return report;
  const auto decode_start = Clock::now();
  std::vector<SequenceChunk> chunks;
  for (BatchMember* m : decoding) chunks.push_back(m->sequence->decode_chunk());
  std::vector<float> logits;
  try {
    logits = model.forward(chunks);
  } catch (const std::exception& e) {
    if (policy == FailurePolicy::kThrow) throw;
    for (BatchMember* m : decoding) m->error = std::string("generation failed: ") + e.what();
    report.decode_seconds = seconds_since(decode_start);
    return report;
  }
  report.decoded = true;
  report.decode_tokens = decoding.size();
  const size_t vocab = model.vocab_size();
  for (size_t i = 0; i < decoding.size(); ++i) {
    BatchMember& m = *decoding[i];
    if (guarded(m, policy, "generation failed: ",
                [&] { m.sequence->accept(std::span(logits).subspan(i * vocab, vocab), m.on_text); }))
      ++report.sampled_tokens;
  }
  report.decode_seconds = seconds_since(decode_start);
  return report;
}

}  // namespace vlmforge
