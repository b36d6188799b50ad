#include "kernels/matmul.h"

#include <algorithm>
#include <bit>

#include "io/convert.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/aligned_allocator.h>
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include "kernels/load_f32-inl.h"

HWY_BEFORE_NAMESPACE();
namespace vlmforge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

#if HWY_TARGET != HWY_SCALAR
// result[j] = the sum of the lanes of a_j. Two interleave rounds reduce all four accumulators
// within each 128-bit block at once (a full horizontal reduction each costs four times the
// shuffles, which shows when the input is short, as in the 896-wide products of a 0.5B model).
HWY_INLINE void SumOf4(DF df, VF a0, VF a1, VF a2, VF a3, float* result) {
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

// The activations of a product: x [tokens, stride] in fp32, and for BF16 weights optionally the
// same values with each block of 2·Lanes inputs split into its even and odd elements ("pairs"),
// which lets the kernel widen a 32-bit word of two BF16 weights with one shift or one mask
// instead of a widening load per Lanes weights.
struct Inputs {
  const float* x;
  size_t stride;
  const float* pairs = nullptr;  // [tokens, pairs_stride], aligned; null: use x only
  size_t pairs_stride = 0;       // inputs covered by pairs (whole blocks of 2·Lanes)
  Inputs from_token(size_t t) const { return {x + t * stride, stride, pairs ? pairs + t * pairs_stride : nullptr, pairs_stride}; }
};

// kRows weight rows × kTokens tokens of dot products over the full input length.
template <DType kDType, size_t kRows, size_t kTokens>
HWY_INLINE void Tile(const Inputs& in, const std::byte* w, size_t row_bytes, size_t cols, const float* bias,
                     float* out, size_t out_stride, size_t row) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  const float* x = in.x;
  const size_t x_stride = in.stride;
  VF acc[kRows][kTokens];
  for (size_t r = 0; r < kRows; ++r)
    for (size_t t = 0; t < kTokens; ++t) acc[r][t] = hn::Zero(df);
  // Decode reads each weight once, so the hardware prefetcher's ramp-up on the tile's short row
  // streams shows; fetch the next tile's rows one cache line per row ahead of use.
  constexpr size_t kLine = 64 / (kDType == DType::F32 ? 4 : 2);
  auto prefetch_next_tile = [&](size_t i) {
    if (i % kLine == 0)
      for (size_t r = 0; r < kRows; ++r) hwy::Prefetch(w + (row + kRows + r) * row_bytes + i * (row_bytes / cols));
  };
  size_t i = 0;
  if constexpr (kDType == DType::BF16) {
    static_assert(std::endian::native == std::endian::little, "BF16 pairs assume little-endian words");
    const hn::RebindToUnsigned<DF> du;
    const auto high_half = hn::Set(du, 0xFFFF0000u);
    for (; in.pairs && i + 2 * lanes <= in.pairs_stride; i += 2 * lanes) {
      prefetch_next_tile(i);
      VF even[kTokens], odd[kTokens];
      for (size_t t = 0; t < kTokens; ++t) {
        even[t] = hn::Load(df, in.pairs + t * in.pairs_stride + i);
        odd[t] = hn::Load(df, in.pairs + t * in.pairs_stride + i + lanes);
      }
      for (size_t r = 0; r < kRows; ++r) {
        const auto words = hn::LoadU(du, reinterpret_cast<const uint32_t*>(w + (row + r) * row_bytes) + i / 2);
        const VF w_even = hn::BitCast(df, hn::ShiftLeft<16>(words)), w_odd = hn::BitCast(df, hn::And(words, high_half));
        for (size_t t = 0; t < kTokens; ++t) acc[r][t] = hn::MulAdd(w_odd, odd[t], hn::MulAdd(w_even, even[t], acc[r][t]));
      }
    }
  }
  for (; i + lanes <= cols; i += lanes) {
    prefetch_next_tile(i);
    VF xv[kTokens];
    for (size_t t = 0; t < kTokens; ++t) xv[t] = hn::LoadU(df, x + t * x_stride + i);
    for (size_t r = 0; r < kRows; ++r) {
      const VF wv = LoadAsF32<kDType>(df, w + (row + r) * row_bytes, i);
      for (size_t t = 0; t < kTokens; ++t) acc[r][t] = hn::MulAdd(wv, xv[t], acc[r][t]);
    }
  }
  float sums[kRows][kTokens];
#if HWY_TARGET != HWY_SCALAR
  if constexpr (kRows == 4) {
    for (size_t t = 0; t < kTokens; ++t) {
      float four[4];
      SumOf4(df, acc[0][t], acc[1][t], acc[2][t], acc[3][t], four);
      for (size_t r = 0; r < 4; ++r) sums[r][t] = four[r];
    }
  } else
#endif
  {
    for (size_t r = 0; r < kRows; ++r)
      for (size_t t = 0; t < kTokens; ++t) sums[r][t] = hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
  }
  for (size_t r = 0; r < kRows; ++r) {
    const std::byte* wrow = w + (row + r) * row_bytes;
    for (size_t t = 0; t < kTokens; ++t) {
      float sum = sums[r][t];
      for (size_t j = i; j < cols; ++j) sum += load_float(kDType, wrow, j) * x[t * x_stride + j];
      out[t * out_stride + row + r] = sum + (bias ? bias[row + r] : 0.0f);
    }
  }
}

#if HWY_ARCH_X86 && HWY_TARGET > HWY_AVX3
constexpr size_t kTileTokens = 2;  // 16 vector registers
#else
constexpr size_t kTileTokens = 4;  // 32 vector registers
#endif

template <DType kDType, size_t kTokens>
HWY_INLINE void TokenGroup(const Inputs& in, const std::byte* w, size_t cols, const float* bias, float* out,
                           size_t out_stride, size_t row_begin, size_t row_end) {
  const size_t row_bytes = cols * (kDType == DType::F32 ? 4 : 2);
  size_t row = row_begin;
  for (; row + 4 <= row_end; row += 4) Tile<kDType, 4, kTokens>(in, w, row_bytes, cols, bias, out, out_stride, row);
  for (; row < row_end; ++row) Tile<kDType, 1, kTokens>(in, w, row_bytes, cols, bias, out, out_stride, row);
}

// Prefill (many tokens): a blocked GEMM. Per block of kPanelDepth inputs, the activations are
// packed transposed in tiles of two vectors of tokens (in L2, shared by all row panels), and each
// panel of kPanelRows weight rows is converted to fp32 once (in L1) and reused by every token
// tile. The micro-kernel broadcasts one weight and multiplies two token vectors: 2·kPanelRows
// independent accumulators, no horizontal sums, weight conversion amortized over all tokens.
constexpr size_t kPanelRows = 3 * kTileTokens;  // 12 with 32 registers: 24 accumulators
constexpr size_t kPanelDepth = 512;
constexpr size_t kGemmTokens = 32;  // from this many tokens on, packing the activations pays off

template <size_t kRows>
HWY_INLINE void PanelKernel(const float* panel, const float* x_tile, size_t depth, float* result) {
  const DF df;
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

template <DType kDType>
void PanelGemm(const float* x, size_t tokens, size_t x_stride, const std::byte* w, size_t cols, const float* bias,
               float* out, size_t out_stride, size_t row_begin, size_t row_end) {
  const DF df;
  const size_t lanes = hn::Lanes(df), tile = 2 * lanes;
  const size_t row_bytes = cols * (kDType == DType::F32 ? 4 : 2);
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
        float* dst = panel.get() + r * depth;
        if (r >= rows) {
          std::fill_n(dst, depth, 0.0f);
          continue;
        }
        const std::byte* src = w + (r0 + r) * row_bytes;
        size_t k = 0;
        for (; k + lanes <= depth; k += lanes) hn::StoreU(LoadAsF32<kDType>(df, src, k0 + k), df, dst + k);
        for (; k < depth; ++k) dst[k] = load_float(kDType, src, k0 + k);
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

// Every token against weight rows [row_begin, row_end), in groups of kTileTokens tokens.
template <DType kDType>
HWY_INLINE void AllTokens(const Inputs& in, size_t tokens, const std::byte* w, size_t cols, const float* bias,
                          float* out, size_t out_stride, size_t row_begin, size_t row_end) {
  size_t t = 0;
  for (; t + kTileTokens <= tokens; t += kTileTokens)
    TokenGroup<kDType, kTileTokens>(in.from_token(t), w, cols, bias, out + t * out_stride, out_stride, row_begin,
                                    row_end);
  if constexpr (kTileTokens > 2)
    for (; t + 2 <= tokens; t += 2)
      TokenGroup<kDType, 2>(in.from_token(t), w, cols, bias, out + t * out_stride, out_stride, row_begin, row_end);
  for (; t < tokens; ++t)
    TokenGroup<kDType, 1>(in.from_token(t), w, cols, bias, out + t * out_stride, out_stride, row_begin, row_end);
}

template <DType kDType>
void MatmulTyped(const float* x, size_t tokens, size_t x_stride, const std::byte* w, size_t cols, const float* bias,
                 float* out, size_t out_stride, size_t row_begin, size_t row_end) {
  if (tokens >= kGemmTokens)
    return PanelGemm<kDType>(x, tokens, x_stride, w, cols, bias, out, out_stride, row_begin, row_end);
  Inputs in{x, x_stride};
  hwy::AlignedFreeUniquePtr<float[]> pairs;
  if constexpr (kDType == DType::BF16) {
    const DF df;
    const size_t block = 2 * hn::Lanes(df);
    in.pairs_stride = cols / block * block;
    if (in.pairs_stride > 0) {
      pairs = hwy::AllocateAligned<float>(tokens * in.pairs_stride);
      for (size_t t = 0; t < tokens; ++t)
        for (size_t i = 0; i < in.pairs_stride; i += block) {
          VF even, odd;
          hn::LoadInterleaved2(df, x + t * x_stride + i, even, odd);
          hn::Store(even, df, pairs.get() + t * in.pairs_stride + i);
          hn::Store(odd, df, pairs.get() + t * in.pairs_stride + i + block / 2);
        }
      in.pairs = pairs.get();
    }
  }
  // Batched decode: all token groups per 4-row tile, so each weight row is read from memory once
  // and reused from L1 (the few tokens' activations stay in cache).
  if (tokens > 1) {
    for (size_t row = row_begin; row < row_end; row += 4)
      AllTokens<kDType>(in, tokens, w, cols, bias, out, out_stride, row, std::min(row + 4, row_end));
    return;
  }
  AllTokens<kDType>(in, tokens, w, cols, bias, out, out_stride, row_begin, row_end);
}

void MatmulRows(const float* x, size_t tokens, size_t x_stride, DType dtype, const std::byte* w, size_t cols,
                const float* bias, float* out, size_t out_stride, size_t row_begin, size_t row_end) {
  switch (dtype) {
    case DType::BF16: return MatmulTyped<DType::BF16>(x, tokens, x_stride, w, cols, bias, out, out_stride, row_begin, row_end);
    case DType::F16: return MatmulTyped<DType::F16>(x, tokens, x_stride, w, cols, bias, out, out_stride, row_begin, row_end);
    default: return MatmulTyped<DType::F32>(x, tokens, x_stride, w, cols, bias, out, out_stride, row_begin, row_end);
  }
}

}  // namespace vlmforge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace vlmforge::kernels {

HWY_EXPORT(MatmulRows);

void matmul_rows(const float* x, size_t tokens, size_t x_stride, const WeightMatrix& w, const float* bias,
                 float* out, size_t out_stride, size_t row_begin, size_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatmulRows)(x, tokens, x_stride, w.dtype, w.data, w.cols, bias, out, out_stride, row_begin,
                                   row_end);
}

}  // namespace vlmforge::kernels
#endif  // HWY_ONCE
