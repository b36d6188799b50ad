#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "io/convert.h"

namespace vlmforge::kernels {
namespace {

TEST(Matmul, MatchesNaiveDoubleForEveryWeightDtypeAndTileShape) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist;
  for (DType dtype : {DType::BF16, DType::F16, DType::F32}) {
    for (auto [tokens, rows, cols] : {std::tuple{1, 1, 1}, {1, 9, 37}, {2, 6, 40}, {3, 5, 64}, {5, 8, 100}, {8, 13, 257},
                                              {11, 9, 129}, {31, 10, 70},
                                              {32, 12, 16}, {33, 25, 300}, {70, 7, 513}}) {
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

}  // namespace
}  // namespace vlmforge::kernels
