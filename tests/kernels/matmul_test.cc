#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "io/convert.h"
#include "kernels/ops.h"

namespace vlmforge::kernels {
namespace {

TEST(Matmul, MatchesNaiveDoubleForEveryWeightDtypeAndTileShape) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist;
  for (DType dtype : {DType::BF16, DType::F16, DType::F32}) {
    for (auto [tokens, rows, cols] : {std::tuple{1, 1, 1}, {1, 9, 37}, {3, 5, 64}, {5, 8, 100}, {8, 13, 257}}) {
      const size_t esize = dtype_info(dtype).bits / 8;
      std::vector<std::byte> w(rows * cols * esize);
      std::vector<float> x(tokens * cols), bias(rows), out(tokens * rows, NAN);
      for (size_t i = 0; i < static_cast<size_t>(rows * cols); ++i) store_float(dtype, w.data(), i, dist(rng) * 0.1f);
      for (auto& v : x) v = dist(rng);
      for (auto& v : bias) v = dist(rng);
      const WeightMatrix m{dtype, w.data(), static_cast<size_t>(rows), static_cast<size_t>(cols)};
      // Two calls over a split of the rows, as the thread pool does.
      matmul_rows(x.data(), tokens, cols, m, bias.data(), out.data(), rows, 0, rows / 2);
      matmul_rows(x.data(), tokens, cols, m, bias.data(), out.data(), rows, rows / 2, rows);
      for (int t = 0; t < tokens; ++t)
        for (int r = 0; r < rows; ++r) {
          double want = bias[r], magnitude = std::abs(bias[r]);
          for (int c = 0; c < cols; ++c) {
            const double term = static_cast<double>(load_float(dtype, w.data(), r * cols + c)) * x[t * cols + c];
            want += term;
            magnitude += std::abs(term);
          }
          EXPECT_NEAR(out[t * rows + r], want, 1e-6 * magnitude + 1e-6)
              << dtype_name(dtype) << " tokens " << tokens << " rows " << rows << " cols " << cols << " at " << t << "," << r;
        }
    }
  }
}

TEST(Ops, NormRopeSoftmaxSiluMatchDouble) {
  std::vector<float> x{1.5f, -2.0f, 0.25f, 4.0f}, w{1.0f, 0.5f, 2.0f, -1.0f}, out(4);
  rms_norm(x.data(), w.data(), 1e-6f, out.data(), 4);
  double ms = 0;
  for (float v : x) ms += static_cast<double>(v) * v;
  const double inv = 1.0 / std::sqrt(ms / 4 + 1e-6);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[i], w[i] * x[i] * inv, 1e-6);

  std::vector<float> head{1, 2, 3, 4}, cos{0.6f, 0.8f}, sin{0.8f, 0.6f};
  apply_rope(head.data(), 4, cos.data(), sin.data());
  // rotate_half: (x0, x2) and (x1, x3) are the rotated pairs.
  EXPECT_NEAR(head[0], 1 * 0.6 - 3 * 0.8, 1e-6);
  EXPECT_NEAR(head[2], 3 * 0.6 + 1 * 0.8, 1e-6);
  EXPECT_NEAR(head[1], 2 * 0.8 - 4 * 0.6, 1e-6);
  EXPECT_NEAR(head[3], 4 * 0.8 + 2 * 0.6, 1e-6);

  std::vector<float> s{1, 2, 3, 1000};
  softmax(s.data(), 3);
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(s[2], std::exp(3.0) / z, 1e-6);

  std::vector<float> gate{-1.0f, 0.0f, 2.0f}, up{2.0f, 3.0f, 0.5f};
  silu_mul(gate.data(), up.data(), 3);
  EXPECT_NEAR(gate[0], -1.0 / (1 + std::exp(1.0)) * 2.0, 1e-6);
  EXPECT_NEAR(gate[2], 2.0 / (1 + std::exp(-2.0)) * 0.5, 1e-6);
}

}  // namespace
}  // namespace vlmforge::kernels
