#pragma once
// Next-token choice from logits, in transformers' order: repetition penalty (a logits
// processor), then temperature, top-k and top-p (warpers), then a draw. Temperature 0 is greedy.
#include <cstdint>
#include <random>
#include <span>

namespace vlmforge {

struct SamplingParams {
  float temperature = 0;  // 0: greedy
  int top_k = 0;          // 0: off
  float top_p = 1;        // 1: off
  float repetition_penalty = 1;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

  // `logits` is modified (penalties, temperature). `history`: prompt and generated ids so far.
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

// The index of the largest value (the first one on ties, as torch.argmax).
int32_t argmax(std::span<const float> values);

}  // namespace vlmforge
