#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace vlmforge::kernels {
namespace {

std::vector<float> random_vector(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng) * scale;
  return v;
}

// Lengths below, at and above every SIMD width, and with scalar tails.
constexpr size_t kLengths[] = {1, 3, 4, 7, 8, 15, 16, 17, 33, 64, 100, 896};

TEST(Ops, RmsNormMatchesDouble) {
  std::mt19937 rng(1);
  for (size_t n : kLengths) {
    const auto x = random_vector(n, rng, 3.0f), w = random_vector(n, rng);
    std::vector<float> out(n);
    rms_norm(x.data(), w.data(), 1e-6f, out.data(), n);
    double ms = 0;
    for (float v : x) ms += static_cast<double>(v) * v;
    const double inv = 1.0 / std::sqrt(ms / static_cast<double>(n) + 1e-6);
    for (size_t i = 0; i < n; ++i) EXPECT_NEAR(out[i], w[i] * x[i] * inv, 1e-6 * (1 + std::abs(w[i] * x[i] * inv))) << n;
  }
}

TEST(Ops, RopeRotatesHalvesLikeTransformers) {
  std::mt19937 rng(2);
  for (size_t head_dim : {2, 8, 14, 32, 64, 128}) {
    auto head = random_vector(head_dim, rng);
    const auto original = head;
    std::vector<float> cos(head_dim / 2), sin(head_dim / 2);
    for (size_t i = 0; i < head_dim / 2; ++i) {
      cos[i] = static_cast<float>(std::cos(0.3 * (i + 1)));
      sin[i] = static_cast<float>(std::sin(0.3 * (i + 1)));
    }
    apply_rope(head.data(), head_dim, cos.data(), sin.data());
    const size_t half = head_dim / 2;
    for (size_t i = 0; i < half; ++i) {
      const double a = original[i], b = original[i + half];
      EXPECT_NEAR(head[i], a * cos[i] - b * sin[i], 1e-6) << head_dim;
      EXPECT_NEAR(head[i + half], b * cos[i] + a * sin[i], 1e-6) << head_dim;
    }
  }
}

TEST(Ops, SiluMulAndAddMatchDouble) {
  std::mt19937 rng(3);
  for (size_t n : kLengths) {
    auto gate = random_vector(n, rng, 4.0f);
    const auto up = random_vector(n, rng), original = gate;
    silu_mul(gate.data(), up.data(), n);
    for (size_t i = 0; i < n; ++i) {
      const double g = original[i], want = g / (1 + std::exp(-g)) * up[i];
      EXPECT_NEAR(gate[i], want, 1e-6 * (1 + std::abs(want))) << n << " at " << i;
    }
    auto y = random_vector(n, rng);
    const auto before = y;
    add_in_place(y.data(), up.data(), n);
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(y[i], before[i] + up[i]);
  }
}

}  // namespace
}  // namespace vlmforge::kernels
