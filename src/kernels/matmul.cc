#include "kernels/matmul.h"

#include <algorithm>

#include "io/convert.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/cache_control.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace vlmforge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Loads lanes(DF) weights starting at element `i` as fp32.
template <DType kDType>
HWY_INLINE VF LoadWeights(DF df, const std::byte* row, size_t i) {
  if constexpr (kDType == DType::F32) {
    return hn::LoadU(df, reinterpret_cast<const float*>(row) + i);
  } else if constexpr (kDType == DType::BF16) {
    const hn::RebindToUnsigned<DF> du32;
    const hn::Rebind<uint16_t, DF> du16;
    const auto bits = hn::PromoteTo(du32, hn::LoadU(du16, reinterpret_cast<const uint16_t*>(row) + i));
    return hn::BitCast(df, hn::ShiftLeft<16>(bits));
  } else {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(row) + i));
  }
}

// kRows weight rows × kTokens tokens of dot products over the full input length.
template <DType kDType, size_t kRows, size_t kTokens>
HWY_INLINE void Tile(const float* x, size_t x_stride, const std::byte* w, size_t row_bytes, size_t cols,
                     const float* bias, float* out, size_t out_stride, size_t row) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  VF acc[kRows][kTokens];
  for (size_t r = 0; r < kRows; ++r)
    for (size_t t = 0; t < kTokens; ++t) acc[r][t] = hn::Zero(df);
  // Decode reads each weight once, so the hardware prefetcher's ramp-up on the tile's short row
  // streams shows; fetch the next tile's rows one cache line per row ahead of use.
  constexpr size_t kLine = 64 / (kDType == DType::F32 ? 4 : 2);
  size_t i = 0;
  for (; i + lanes <= cols; i += lanes) {
    if constexpr (kTokens <= 2)
      if (i % kLine == 0)
        for (size_t r = 0; r < kRows; ++r) hwy::Prefetch(w + (row + kRows + r) * row_bytes + i * (row_bytes / cols));
    VF xv[kTokens];
    for (size_t t = 0; t < kTokens; ++t) xv[t] = hn::LoadU(df, x + t * x_stride + i);
    for (size_t r = 0; r < kRows; ++r) {
      const VF wv = LoadWeights<kDType>(df, w + (row + r) * row_bytes, i);
      for (size_t t = 0; t < kTokens; ++t) acc[r][t] = hn::MulAdd(wv, xv[t], acc[r][t]);
    }
  }
  for (size_t r = 0; r < kRows; ++r) {
    const std::byte* wrow = w + (row + r) * row_bytes;
    for (size_t t = 0; t < kTokens; ++t) {
      float sum = hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
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
HWY_INLINE void TokenGroup(const float* x, size_t x_stride, const std::byte* w, size_t cols, const float* bias,
                           float* out, size_t out_stride, size_t row_begin, size_t row_end) {
  const size_t row_bytes = cols * (kDType == DType::F32 ? 4 : 2);
  size_t row = row_begin;
  for (; row + 4 <= row_end; row += 4)
    Tile<kDType, 4, kTokens>(x, x_stride, w, row_bytes, cols, bias, out, out_stride, row);
  for (; row < row_end; ++row) Tile<kDType, 1, kTokens>(x, x_stride, w, row_bytes, cols, bias, out, out_stride, row);
}

template <DType kDType>
void MatmulTyped(const float* x, size_t tokens, size_t x_stride, const std::byte* w, size_t cols, const float* bias,
                 float* out, size_t out_stride, size_t row_begin, size_t row_end) {
  // Batched decode: all token groups per 4-row tile, so each weight row is read from memory once
  // and reused from L1 (the few tokens' activations stay in cache). Prefill keeps tokens outer:
  // there the activations are the large operand.
  if (tokens > kTileTokens && tokens <= 2 * kTileTokens) {
    for (size_t row = row_begin; row < row_end; row += 4) {
      const size_t tile_end = std::min(row + 4, row_end);
      size_t t = 0;
      for (; t + kTileTokens <= tokens; t += kTileTokens)
        TokenGroup<kDType, kTileTokens>(x + t * x_stride, x_stride, w, cols, bias, out + t * out_stride, out_stride,
                                        row, tile_end);
      for (; t < tokens; ++t)
        TokenGroup<kDType, 1>(x + t * x_stride, x_stride, w, cols, bias, out + t * out_stride, out_stride, row,
                              tile_end);
    }
    return;
  }
  size_t t = 0;
  for (; t + kTileTokens <= tokens; t += kTileTokens)
    TokenGroup<kDType, kTileTokens>(x + t * x_stride, x_stride, w, cols, bias, out + t * out_stride, out_stride,
                                    row_begin, row_end);
  for (; t < tokens; ++t)
    TokenGroup<kDType, 1>(x + t * x_stride, x_stride, w, cols, bias, out + t * out_stride, out_stride, row_begin,
                          row_end);
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
