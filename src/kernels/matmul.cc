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

#include "kernels/gemm-inl.h"
#include "kernels/load_f32-inl.h"

HWY_BEFORE_NAMESPACE();
namespace vlmforge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using gemm::kTileTokens;

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
  gemm::SumTile(df, acc, sums);
  for (size_t r = 0; r < kRows; ++r) {
    const std::byte* wrow = w + (row + r) * row_bytes;
    for (size_t t = 0; t < kTokens; ++t) {
      float sum = sums[r][t];
      for (size_t j = i; j < cols; ++j) sum += load_float(kDType, wrow, j) * x[t * x_stride + j];
      out[t * out_stride + row + r] = sum + (bias ? bias[row + r] : 0.0f);
    }
  }
}


template <DType kDType, size_t kTokens>
HWY_INLINE void TokenGroup(const Inputs& in, const std::byte* w, size_t cols, const float* bias, float* out,
                           size_t out_stride, size_t row_begin, size_t row_end) {
  const size_t row_bytes = cols * (kDType == DType::F32 ? 4 : 2);
  size_t row = row_begin;
  for (; row + 4 <= row_end; row += 4) Tile<kDType, 4, kTokens>(in, w, row_bytes, cols, bias, out, out_stride, row);
  for (; row < row_end; ++row) Tile<kDType, 1, kTokens>(in, w, row_bytes, cols, bias, out, out_stride, row);
}

constexpr size_t kGemmTokens = 32;  // from this many tokens on, packing the activations pays off

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
  if (tokens >= kGemmTokens) {
    const size_t row_bytes = cols * (kDType == DType::F32 ? 4 : 2);
    return gemm::PanelGemm(x, tokens, x_stride, cols, bias, out, out_stride, row_begin, row_end,
                           [&](size_t row, size_t k0, size_t depth, float* dst) {
                             const DF df;
                             const std::byte* src = w + row * row_bytes;
                             size_t k = 0;
                             for (; k + hn::Lanes(df) <= depth; k += hn::Lanes(df))
                               hn::StoreU(LoadAsF32<kDType>(df, src, k0 + k), df, dst + k);
                             for (; k < depth; ++k) dst[k] = load_float(kDType, src, k0 + k);
                           });
  }
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
