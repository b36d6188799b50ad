#include "kernels/low_rank.h"

#include <algorithm>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/low_rank.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace vlmforge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// kRows rows × kVecs vectors of columns starting at `col`: accumulate Σ_k left[row,k]·right[k,col..]
// in registers, then rows[row, col..] += scale · acc.
template <size_t kRows, size_t kVecs>
HWY_INLINE void Tile(float* rows, size_t cols, const float* left, const float* right, size_t rank, float scale,
                     size_t col) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  using V = hn::Vec<decltype(d)>;
  V acc[kRows][kVecs];
  for (size_t r = 0; r < kRows; ++r)
    for (size_t v = 0; v < kVecs; ++v) acc[r][v] = hn::Zero(d);
  for (size_t k = 0; k < rank; ++k) {
    V b[kVecs];
    for (size_t v = 0; v < kVecs; ++v) b[v] = hn::LoadU(d, right + k * cols + col + v * lanes);
    for (size_t r = 0; r < kRows; ++r) {
      const V a = hn::Set(d, left[r * rank + k]);
      for (size_t v = 0; v < kVecs; ++v) acc[r][v] = hn::MulAdd(a, b[v], acc[r][v]);
    }
  }
  const V s = hn::Set(d, scale);
  for (size_t r = 0; r < kRows; ++r)
    for (size_t v = 0; v < kVecs; ++v) {
      float* out = rows + r * cols + col + v * lanes;
      hn::StoreU(hn::MulAdd(s, acc[r][v], hn::LoadU(d, out)), d, out);
    }
}

// A tile of kTileRows × kTileVecs accumulators plus kTileVecs loads of `right` and one broadcast
// must fit the register file. 32 registers (AVX-512, NEON): 4 × 4 (16 accumulators, 8 loads per
// 16 FMAs). 16 registers (AVX2, SSE4): 6 × 2 (12 accumulators, enough to hide the FMA latency of
// two ports; 4 × 2 left Zen's FMA pipes waiting on dependent adds).
#if HWY_ARCH_X86 && HWY_TARGET > HWY_AVX3
constexpr size_t kTileRows = 6;
constexpr size_t kTileVecs = 2;
#else
constexpr size_t kTileRows = 4;
constexpr size_t kTileVecs = 4;
#endif

// Columns [0, width) of kRows rows; `stride` is the row length of both `rows` and `right`.
template <size_t kRows>
HWY_INLINE void RowGroup(float* rows, size_t stride, size_t width, const float* left, const float* right, size_t rank,
                         float scale) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  size_t col = 0;
  for (; col + kTileVecs * lanes <= width; col += kTileVecs * lanes)
    Tile<kRows, kTileVecs>(rows, stride, left, right, rank, scale, col);
  for (; col + lanes <= width; col += lanes) Tile<kRows, 1>(rows, stride, left, right, rank, scale, col);
  for (; col < width; ++col) {
    for (size_t r = 0; r < kRows; ++r) {
      float acc = 0;
      for (size_t k = 0; k < rank; ++k) acc += left[r * rank + k] * right[k * stride + col];
      rows[r * stride + col] += scale * acc;
    }
  }
}

// The rows left over after whole tiles (fewer than kTileRows), as one group of that height.
template <size_t kRows = kTileRows - 1>
HWY_INLINE void RemainderRows(size_t n, float* rows, size_t stride, size_t width, const float* left,
                              const float* right, size_t rank, float scale) {
  if constexpr (kRows > 0) {
    if (n == kRows) return RowGroup<kRows>(rows, stride, width, left, right, rank, scale);
    RemainderRows<kRows - 1>(n, rows, stride, width, left, right, rank, scale);
  }
}

// Columns are processed in panels so the panel of `right` ([rank, kPanel] fp32, 128 KiB at
// rank 64) stays in L2 while every row passes over it; a whole wide `right` (rank × 18944 for a
// 7B down_proj: 4.6 MiB) would be streamed from memory once per row group.
constexpr size_t kPanel = 512;

void AddLowRank(float* rows, size_t n_rows, size_t cols, const float* left, const float* right, size_t rank,
                float scale) {
  for (size_t col0 = 0; col0 < cols; col0 += kPanel) {
    const size_t width = std::min(kPanel, cols - col0);
    size_t row = 0;
    for (; row + kTileRows <= n_rows; row += kTileRows)
      RowGroup<kTileRows>(rows + row * cols + col0, cols, width, left + row * rank, right + col0, rank, scale);
    RemainderRows(n_rows - row, rows + row * cols + col0, cols, width, left + row * rank, right + col0, rank, scale);
  }
}

}  // namespace vlmforge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace vlmforge::kernels {

HWY_EXPORT(AddLowRank);

void add_low_rank(float* rows, size_t n_rows, size_t cols, const float* left, const float* right, size_t rank,
                  float scale) {
  HWY_DYNAMIC_DISPATCH(AddLowRank)(rows, n_rows, cols, left, right, rank, scale);
}

}  // namespace vlmforge::kernels
#endif  // HWY_ONCE
