#pragma once
// One step of a batch of sequences (as vLLM's engine step, shared by its offline LLM and its
// server): one prefill chunk of every sequence still in its prompt, each run alone so its numbers
// do not depend on the others, then one forward with the decode token of every sequence past its
// prompt, so each weight matrix is read once per step for all of them. Generator (infer, a fixed
// batch) and the server's Scheduler (deploy: sequences join and leave between steps) both run
// their batches through it.
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "engine/sequence.h"
#include "model/qwen2.h"

namespace vlmforge {

struct BatchMember {
  SequenceState* sequence = nullptr;
  std::function<void(std::string_view)> on_text;  // the sequence's final text as it arrives; may be empty
  std::string error;  // with FailurePolicy::kFailMember: why this member failed (it then takes no further part)
};

enum class FailurePolicy {
  kThrow,       // the first failure leaves the step as an exception (a fixed batch fails as a whole)
  kFailMember,  // a failure ends only the members it touches, and the step goes on for the others
};

struct StepReport {
  size_t prefill_tokens = 0;  // prompt tokens run this step
  size_t decode_tokens = 0;   // rows of the decode forward (0: there was none)
  size_t sampled_tokens = 0;  // tokens sampled: first tokens after a prompt, and decode tokens accepted
  bool decoded = false;       // the decode forward ran (and returned)
  double prefill_seconds = 0, decode_seconds = 0;
};

// Runs one step over the members that are neither done nor failed. With kFailMember a failed
// prefill chunk or sample fails its own member; a failed decode forward (out of memory growing a
// KV cache, say) fails every member in it, as their caches are then inconsistent.
StepReport generation_step(Qwen2Model& model, std::span<BatchMember> members, FailurePolicy policy);

}  // namespace vlmforge
