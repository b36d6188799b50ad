// Per-target Highway code shared by the float and the quantized matrix products: the horizontal
// sum of four accumulators and the blocked GEMM of prefill, which takes its weight rows as fp32
// from a loader (converted BF16/F16, or dequantized codes). Included after <hwy/highway.h> in
// each kernel's foreach_target compilation, so it uses Highway's toggle guard.
#if defined(VLMFORGE_KERNELS_GEMM_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef VLMFORGE_KERNELS_GEMM_INL_H_
#undef VLMFORGE_KERNELS_GEMM_INL_H_
#else
#define VLMFORGE_KERNELS_GEMM_INL_H_
#endif

#include <algorithm>

#include <hwy/aligned_allocator.h>
#include <hwy/highway.h>

// The helpers are static: with external linkage (one comdat shared by the two kernel files that
// include this header) batch-8 bf16 decode ran 25% slower than with the reduction defined in
// matmul.cc itself (measured, infer_bench on Qwen2.5-0.5B, AVX-512; docs/BENCHMARKS.md).
HWY_BEFORE_NAMESPACE();
namespace vlmforge::kernels::HWY_NAMESPACE {
namespace gemm {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET != HWY_SCALAR
// result[j] = the sum of the lanes of a_j. Two interleave rounds reduce all four accumulators
// within each 128-bit block at once (a full horizontal reduction each costs four times the
// shuffles, which shows when the input is short, as in the 896-wide products of a 0.5B model).
template <class DF, class VF = hn::Vec<DF>>
static HWY_INLINE void SumOf4(DF df, VF a0, VF a1, VF a2, VF a3, float* result) {
  const hn::Repartition<uint64_t, DF> du64;
  const VF t0 = hn::Add(hn::InterleaveLower(df, a0, a1), hn::InterleaveUpper(df, a0, a1));
  const VF t1 = hn::Add(hn::InterleaveLower(df, a2, a3), hn::InterleaveUpper(df, a2, a3));
  const auto lo = hn::InterleaveLower(du64, hn::BitCast(du64, t0), hn::BitCast(du64, t1));
  const auto hi = hn::InterleaveUpper(du64, hn::BitCast(du64, t0), hn::BitCast(du64, t1));
  HWY_ALIGN float block_sums[hn::MaxLanes(df)];  // per block: sums of a0..a3 over its lanes
  hn::Store(hn::Add(hn::BitCast(df, lo), hn::BitCast(df, hi)), df, block_sums);
  for (size_t j = 0; j < 4; ++j) result[j] = block_sums[j];
  for (size_t b = 4; b < hn::Lanes(df); b += 4)
    for (size_t j = 0; j < 4; ++j) result[j] += block_sums[b + j];
}
#endif

// sums[r][t] = the sum of the lanes of acc[r][t], four rows at a time where the tile has four.
template <size_t kRows, size_t kTokens, class DF, class VF = hn::Vec<DF>>
static HWY_INLINE void SumTile(DF df, VF (&acc)[kRows][kTokens], float (&sums)[kRows][kTokens]) {
#if HWY_TARGET != HWY_SCALAR
  if constexpr (kRows == 4) {
    for (size_t t = 0; t < kTokens; ++t) {
      float four[4];
      SumOf4(df, acc[0][t], acc[1][t], acc[2][t], acc[3][t], four);
      for (size_t r = 0; r < 4; ++r) sums[r][t] = four[r];
    }
    return;
  }
#endif
  for (size_t r = 0; r < kRows; ++r)
    for (size_t t = 0; t < kTokens; ++t) sums[r][t] = hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
}

#if HWY_ARCH_X86 && HWY_TARGET > HWY_AVX3
constexpr size_t kTileTokens = 2;  // 16 vector registers
#else
constexpr size_t kTileTokens = 4;  // 32 vector registers
#endif

// Prefill (many tokens): a blocked GEMM. Per block of kPanelDepth inputs, the activations are
// packed transposed in tiles of two vectors of tokens (in L2, shared by all row panels), and each
// panel of kPanelRows weight rows is converted to fp32 once (in L1) and reused by every token
// tile. The micro-kernel broadcasts one weight and multiplies two token vectors: 2·kPanelRows
// independent accumulators, no horizontal sums, weight conversion amortized over all tokens.
constexpr size_t kPanelRows = 3 * kTileTokens;  // 12 with 32 registers: 24 accumulators
constexpr size_t kPanelDepth = 512;

template <size_t kRows>
static HWY_INLINE void PanelKernel(const float* panel, const float* x_tile, size_t depth, float* result) {
  const hn::ScalableTag<float> df;
  using VF = hn::Vec<decltype(df)>;
  const size_t lanes = hn::Lanes(df);
  VF acc0[kRows], acc1[kRows];
  for (size_t r = 0; r < kRows; ++r) acc0[r] = acc1[r] = hn::Zero(df);
  for (size_t k = 0; k < depth; ++k) {
    const VF t0 = hn::Load(df, x_tile + k * 2 * lanes), t1 = hn::Load(df, x_tile + k * 2 * lanes + lanes);
    for (size_t r = 0; r < kRows; ++r) {
      const VF wv = hn::Set(df, panel[r * depth + k]);
      acc0[r] = hn::MulAdd(wv, t0, acc0[r]);
      acc1[r] = hn::MulAdd(wv, t1, acc1[r]);
    }
  }
  for (size_t r = 0; r < kRows; ++r) {
    hn::Store(acc0[r], df, result + r * 2 * lanes);
    hn::Store(acc1[r], df, result + r * 2 * lanes + lanes);
  }
}

// out[t, r] = Σ_k x[t, k] · W[r, k] (+ bias[r]) for rows [row_begin, row_end); load_row(r, k0,
// depth, dst) writes W[r, k0 .. k0 + depth) as fp32 to dst.
template <class LoadRow>
void PanelGemm(const float* x, size_t tokens, size_t x_stride, size_t cols, const float* bias, float* out,
               size_t out_stride, size_t row_begin, size_t row_end, const LoadRow& load_row) {
  const hn::ScalableTag<float> df;
  const size_t lanes = hn::Lanes(df), tile = 2 * lanes;
  const size_t tiles = (tokens + tile - 1) / tile;
  auto x_packed = hwy::AllocateAligned<float>(tiles * tile * kPanelDepth);
  auto panel = hwy::AllocateAligned<float>(kPanelRows * kPanelDepth);
  auto result = hwy::AllocateAligned<float>(kPanelRows * tile);
  for (size_t k0 = 0; k0 < cols; k0 += kPanelDepth) {
    const size_t depth = std::min(kPanelDepth, cols - k0);
    // x_packed[tile][k][token in tile], zero past the last token.
    for (size_t tt = 0; tt < tiles; ++tt)
      for (size_t j = 0; j < tile; ++j) {
        const size_t t = tt * tile + j;
        float* dst = x_packed.get() + tt * tile * depth + j;
        if (t < tokens)
          for (size_t k = 0; k < depth; ++k) dst[k * tile] = x[t * x_stride + k0 + k];
        else
          for (size_t k = 0; k < depth; ++k) dst[k * tile] = 0.0f;
      }
    for (size_t r0 = row_begin; r0 < row_end; r0 += kPanelRows) {
      const size_t rows = std::min(kPanelRows, row_end - r0);
      for (size_t r = 0; r < kPanelRows; ++r) {
        if (r < rows)
          load_row(r0 + r, k0, depth, panel.get() + r * depth);
        else
          std::fill_n(panel.get() + r * depth, depth, 0.0f);
      }
      for (size_t tt = 0; tt < tiles; ++tt) {
        PanelKernel<kPanelRows>(panel.get(), x_packed.get() + tt * tile * depth, depth, result.get());
        const size_t tile_tokens = std::min(tile, tokens - tt * tile);
        for (size_t j = 0; j < tile_tokens; ++j) {
          float* o = out + (tt * tile + j) * out_stride + r0;
          for (size_t r = 0; r < rows; ++r) {
            const float v = result[r * tile + j];
            o[r] = k0 == 0 ? v + (bias ? bias[r0 + r] : 0.0f) : o[r] + v;
          }
        }
      }
    }
  }
}

}  // namespace gemm
}  // namespace vlmforge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // VLMFORGE_KERNELS_GEMM_INL_H_
