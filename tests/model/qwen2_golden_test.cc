// The Qwen2 forward pass against the shared float64 references of the transformers model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "io/json_file.h"
#include "model/qwen2.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;

std::vector<double> log_softmax(const float* logits, size_t n) {
  const double max = *std::max_element(logits, logits + n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(logits[i] - max);
  const double log_sum = std::log(sum) + max;
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = logits[i] - log_sum;
  return out;
}

struct GoldenParam {
  const char* dir;
  double tolerance;
};

class Qwen2Golden : public ::testing::TestWithParam<GoldenParam> {};

TEST_P(Qwen2Golden, PromptLogprobsNextTop5AndGreedy) {
  const fs::path dir = shared_dir() / "golden" / GetParam().dir;
  VLMFORGE_REQUIRE_SHARED(dir / "golden.json");
  const double tol = GetParam().tolerance;
  Qwen2Model model(dir, 2);
  const size_t vocab = model.vocab_size();
  const auto golden = read_json_file(dir / "golden.json");
  for (const auto& c : golden["cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    KvCache cache = model.make_cache(ids.size() + 16);
    const SequenceChunk chunk{&cache, ids, true};
    const std::vector<float> logits = model.forward(std::span(&chunk, 1));
    ASSERT_EQ(logits.size(), ids.size() * vocab);
    const auto prompt = c["prompt_logprobs"].get<std::vector<double>>();
    ASSERT_EQ(prompt.size(), ids.size() - 1);
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const auto lp = log_softmax(logits.data() + i * vocab, vocab);
      EXPECT_NEAR(lp[static_cast<size_t>(ids[i + 1])], prompt[i], tol) << "prompt of " << ids.size() << " tokens, position " << i;
    }
    const auto last = log_softmax(logits.data() + (ids.size() - 1) * vocab, vocab);
    for (const auto& pair : c["next_top5"]) {
      const size_t id = pair[0].get<size_t>();
      EXPECT_NEAR(last[id], pair[1].get<double>(), tol) << "next-token logprob of " << id;
    }
    // Greedy: compare while the reference's top-1 margin is clear of our tolerance.
    const auto greedy = c["greedy8"].get<std::vector<int32_t>>();
    int32_t next = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    EXPECT_EQ(next, c["next_top5"][0][0].get<int32_t>());
    for (size_t step = 0; step < greedy.size(); ++step) {
      ASSERT_EQ(next, greedy[step]) << "greedy step " << step << " of a " << ids.size() << "-token prompt";
      if (step + 1 == greedy.size()) break;
      const int32_t token = next;
      const SequenceChunk one{&cache, std::span(&token, 1), false};
      const std::vector<float> step_logits = model.forward(std::span(&one, 1));
      next = static_cast<int32_t>(std::max_element(step_logits.begin(), step_logits.end()) - step_logits.begin());
    }
  }
}

// The quantized micro models' references are float64 forwards over their dequantized weights
// (AWQ GEMM; GPTQ v1 4-bit desc_act asym; GPTQ v2 8-bit sym), all group 32.
INSTANTIATE_TEST_SUITE_P(Shared, Qwen2Golden,
                         ::testing::Values(GoldenParam{"qwen2-tiny-f32", 1e-4}, GoldenParam{"qwen2-tiny-bf16", 2e-2},
                                           GoldenParam{"qwen2-micro-awq", 1e-4},
                                           GoldenParam{"qwen2-micro-gptq-int4", 1e-4},
                                           GoldenParam{"qwen2-micro-gptq-int8-v2", 1e-4}),
                         [](const auto& info) {
                           // "qwen2-tiny-f32" -> "tiny_f32": test names take no dashes.
                           std::string name = std::string(info.param.dir).substr(6);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace vlmforge::test
