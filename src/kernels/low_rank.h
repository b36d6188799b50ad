#pragma once
// The LoRA update of a block of rows: rows += scale · (left · right), with left [n_rows, rank]
// and right [rank, cols], all fp32 row-major. SIMD (Highway, runtime dispatch), register-tiled
// so each load of `right` feeds four rows.
#include <cstddef>

namespace vlmforge::kernels {

void add_low_rank(float* rows, size_t n_rows, size_t cols, const float* left, const float* right, size_t rank,
                  float scale);

}  // namespace vlmforge::kernels
