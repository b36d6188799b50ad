#include "kernels/quant_matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "support/quant_weight.h"
#include "support/test_support.h"

namespace vlmforge::kernels {
namespace {

using test::QuantWeight;

QuantMatrix matrix_of(const QuantWeight& w) { return {w.bytes.data(), w.rows, w.cols, w.layout}; }

TEST(QuantMatmul, MatchesFloat64OverTheDequantizedWeightsOnEveryTargetAndPath) {
  test::for_each_simd_target([](const std::string& target) {
    SCOPED_TRACE(target);
    std::mt19937 rng(7);
    std::normal_distribution<float> dist;
    for (const QuantScheme& scheme : {QuantScheme::q8_0(), QuantScheme::q4_0(),
                                      QuantScheme::round_to_nearest(4, 64, false),
                                      QuantScheme::round_to_nearest(8, 128, false)})
      for (bool with_perm : {false, true})
        for (auto [rows, cols] : {std::pair<size_t, size_t>{1, 32}, {5, 160}, {9, 100}, {13, 600}})
          for (size_t tokens : {1, 2, 3, 8, 33})
            for (QuantPath path : {QuantPath::Auto, QuantPath::Decode, QuantPath::Gemm}) {
              SCOPED_TRACE("bits " + std::to_string(scheme.bits) + " group " + std::to_string(scheme.group_size) +
                           (with_perm ? " perm" : "") + " rows " + std::to_string(rows) + " cols " +
                           std::to_string(cols) + " tokens " + std::to_string(tokens) + " path " +
                           std::to_string(int(path)));
              const QuantWeight w(scheme, with_perm, rows, cols, rng);
              const size_t x_stride = cols + 3;
              std::vector<float> x(tokens * x_stride), bias(rows), out(tokens * (rows + 1), NAN);
              for (float& v : x) v = dist(rng);
              for (float& v : bias) v = dist(rng);
              std::vector<float> scratch(quant_inputs_floats(matrix_of(w), tokens, path) + 1, NAN);
              const QuantInputs in = prepare_quant_inputs(x.data(), tokens, x_stride, matrix_of(w), scratch.data(), path);
              // Two calls over a split of the rows, as the thread pool does.
              quant_matmul_rows(in, matrix_of(w), bias.data(), out.data(), rows + 1, 0, rows / 2);
              quant_matmul_rows(in, matrix_of(w), bias.data(), out.data(), rows + 1, rows / 2, rows);
              for (size_t t = 0; t < tokens; ++t)
                for (size_t r = 0; r < rows; ++r) {
                  double want = bias[r], magnitude = std::abs(bias[r]);
                  for (size_t c = 0; c < cols; ++c) {
                    const double xc = x[t * x_stride + w.input_of(c)];
                    want += w.values[r * cols + c] * xc;
                    magnitude += w.folded[r * cols + c] * std::abs(xc);
                  }
                  const double tol = double(cols + 8) * 0x1p-24 * magnitude + 1e-30;
                  ASSERT_NEAR(out[t * (rows + 1) + r], want, tol) << "token " << t << " row " << r;
                }
            }
  });
}

}  // namespace
}  // namespace vlmforge::kernels
