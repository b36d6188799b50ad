#include "model/sampler.h"

#include <gtest/gtest.h>

#include <map>
#include <vector>

namespace vlmforge {
namespace {

TEST(Sampler, GreedyAndRepetitionPenaltyLikeTransformers) {
  std::vector<float> logits{1.0f, 3.0f, 2.9f, -1.0f};
  Sampler greedy({});
  EXPECT_EQ(greedy.sample(logits, {}), 1);
  // Penalty 1.5 divides positive seen logits and multiplies negative ones.
  std::vector<float> penalised{1.0f, 3.0f, 2.9f, -1.0f};
  const std::vector<int32_t> history{1, 3, 1};
  Sampler s({.temperature = 0, .repetition_penalty = 1.5f});
  EXPECT_EQ(s.sample(penalised, history), 2);
  EXPECT_FLOAT_EQ(penalised[1], 2.0f);
  EXPECT_FLOAT_EQ(penalised[3], -1.5f);
}

TEST(Sampler, TopKTopPAndSeedReproducibility) {
  const std::vector<float> base{0.0f, 1.0f, 2.0f, 3.0f, 4.0f};
  std::map<int32_t, int> counts;
  Sampler top2({.temperature = 1.0f, .top_k = 2, .seed = 7});
  for (int i = 0; i < 2000; ++i) {
    std::vector<float> l = base;
    counts[top2.sample(l, {})]++;
  }
  EXPECT_EQ(counts.size(), 2u);
  // P(4) / P(3) = e under temperature 1.
  EXPECT_NEAR(static_cast<double>(counts[4]) / counts[3], std::exp(1.0), 0.35);

  // top_p 0.5: the top token alone has p = e^4 / Σ e^i ≈ 0.64 ≥ 0.5, so only it survives.
  Sampler nucleus({.temperature = 1.0f, .top_p = 0.5f, .seed = 1});
  for (int i = 0; i < 100; ++i) {
    std::vector<float> l = base;
    EXPECT_EQ(nucleus.sample(l, {}), 4);
  }
  Sampler a({.temperature = 0.8f, .seed = 42}), b({.temperature = 0.8f, .seed = 42});
  for (int i = 0; i < 50; ++i) {
    std::vector<float> la = base, lb = base;
    EXPECT_EQ(a.sample(la, {}), b.sample(lb, {}));
  }
}

}  // namespace
}  // namespace vlmforge
