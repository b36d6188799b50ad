#include "kernels/quant_matmul.h"

#include <algorithm>

#include "util/half.h"

// Target-independent helpers, compiled once (foreach_target re-includes this file per target).
#ifndef VLMFORGE_KERNELS_QUANT_MATMUL_SHARED_
#define VLMFORGE_KERNELS_QUANT_MATMUL_SHARED_
namespace vlmforge::kernels {
namespace {

// Decode's activations are padded to whole blocks of this many columns; 4-bit blocks split into
// their even and odd columns (the low and high nibbles of 16 code bytes). Groups are multiples of it.
constexpr size_t kBlock = 32;
// From this many tokens on, dequantizing a panel once and reusing it beats widening codes in
// registers per 4 tokens: bench/quant_bench --crossover (AVX-512, one thread, Qwen2.5-1.5B MLP
// shapes) measured the decode kernel at 0.3x the GEMM's time at 8 tokens, 0.8-1.05x at 24,
// 0.97-1.22x at 32 (the GEMM's token tile) and 1.4-1.55x at 64.
constexpr size_t kQuantGemmTokens = 32;

size_t padded_cols(size_t cols) { return (cols + kBlock - 1) / kBlock * kBlock; }
bool gemm_path(size_t tokens, QuantPath path) {
  return path == QuantPath::Gemm || (path == QuantPath::Auto && tokens >= kQuantGemmTokens);
}

// The weight's sections.
struct Sections {
  const uint8_t* codes;
  size_t row_bytes;
  const uint16_t* scales;  // fp16 bits [rows, groups]
  const uint8_t* zeros;    // [rows, groups]
  const uint32_t* perm;    // [cols] or null
  size_t groups;
};

Sections sections_of(const QuantMatrix& w) {
  const QuantLayout& l = w.layout;
  const auto* base = reinterpret_cast<const uint8_t*>(w.data);
  return {base, l.row_code_bytes(w.cols), reinterpret_cast<const uint16_t*>(base + l.scales_offset(w.rows, w.cols)),
          base + l.zeros_offset(w.rows, w.cols),
          l.has_perm ? reinterpret_cast<const uint32_t*>(base + l.perm_offset(w.rows, w.cols)) : nullptr,
          l.groups(w.cols)};
}

}  // namespace
}  // namespace vlmforge::kernels
#endif  // VLMFORGE_KERNELS_QUANT_MATMUL_SHARED_

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/quant_matmul.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include "kernels/gemm-inl.h"

HWY_BEFORE_NAMESPACE();
namespace vlmforge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
// At most 16 lanes, so that a vector of codes never spans two 32-column blocks.
using DF = hn::CappedTag<float, 16>;
using VF = hn::Vec<DF>;
using DU32 = hn::RebindToUnsigned<DF>;
using DI32 = hn::RebindToSigned<DF>;
using DU8 = hn::Rebind<uint8_t, DF>;
using DH = hn::Rebind<hwy::float16_t, DF>;

// Codes as fp32: 8-bit, Lanes consecutive columns from `bytes`; 4-bit, the low (even columns)
// or high (odd columns) nibbles of Lanes bytes.
HWY_INLINE VF Codes8(const uint8_t* bytes) {
  const DF df;
  return hn::ConvertTo(df, hn::BitCast(DI32(), hn::PromoteTo(DU32(), hn::LoadU(DU8(), bytes))));
}
HWY_INLINE void Codes4(const uint8_t* bytes, VF& low, VF& high) {
  const DF df;
  const auto wide = hn::PromoteTo(DU32(), hn::LoadU(DU8(), bytes));
  low = hn::ConvertTo(df, hn::BitCast(DI32(), hn::And(wide, hn::Set(DU32(), 15u))));
  high = hn::ConvertTo(df, hn::BitCast(DI32(), hn::ShiftRight<4>(wide)));
}

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// With 16 lanes the 16 weights a group's 4-bit codes can stand for fit one register: a code
// becomes its weight with one permute (vpermps) instead of a conversion and a multiply-add.
constexpr bool kWeightTable = true;
// table[b & 15] for each lane's byte b: vpermps reads only the low four bits of each index, so the
// low nibble needs no mask (Highway's TableLookupLanes requires indices below 16, hence the intrinsic).
HWY_INLINE VF LookupLowNibble(VF table, hn::Vec<DU32> bytes) {
  return VF{_mm512_permutexvar_ps(bytes.raw, table.raw)};
}
#else
constexpr bool kWeightTable = false;
#endif

// Up to 16 groups' scales s and offsets −s·z of kRows rows, from group g0 on, as fp32.
template <size_t kRows>
HWY_INLINE void GroupChunk(const Sections& s, size_t row, size_t g0, size_t count, float (&scale)[kRows][16],
                           float (&offset)[kRows][16]) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  for (size_t r = 0; r < kRows; ++r) {
    const uint16_t* sr = s.scales + (row + r) * s.groups + g0;
    const uint8_t* zr = s.zeros + (row + r) * s.groups + g0;
    // A short chunk (the row's last groups) goes through zero-padded copies, so that every group
    // takes the vector conversion (the scalar fp16 conversion cost more than the products on
    // 896-wide rows, whose 28 groups leave 12 over).
    uint16_t sr_padded[16] = {};
    uint8_t zr_padded[16] = {};
    if (count % lanes != 0) {
      std::copy_n(sr, count, sr_padded);
      std::copy_n(zr, count, zr_padded);
      sr = sr_padded;
      zr = zr_padded;
    }
    for (size_t j = 0; j < count; j += lanes) {
      const VF sv = hn::PromoteTo(df, hn::LoadU(DH(), reinterpret_cast<const hwy::float16_t*>(sr + j)));
      hn::StoreU(sv, df, scale[r] + j);
      hn::StoreU(hn::Neg(hn::Mul(sv, Codes8(zr + j))), df, offset[r] + j);
    }
  }
}

// kRows weight rows × kTokens tokens over the whole input. Codes widen to fp32 and become
// weights with one fused multiply-add per vector, q·s + (−s·z) (on AVX-512, one table lookup),
// which then feed every token's vector accumulator. (Folding the zeros out instead, as
// s·(Σ q·x − z·Σ x) with per-group sums of x, measured slower: its per-group reductions cost more
// than the offset, which rides on the multiply-add the scale needs anyway.)
template <uint32_t kBits, size_t kRows, size_t kTokens>
HWY_INLINE void DecodeTile(const QuantInputs& in, const Sections& s, size_t group_size, const float* bias,
                           float* out, size_t out_stride, size_t row) {
  const DF df;
  const size_t lanes = hn::Lanes(df), width = in.stride;
  VF acc[kRows][kTokens];
  for (size_t r = 0; r < kRows; ++r)
    for (size_t t = 0; t < kTokens; ++t) acc[r][t] = hn::Zero(df);
  const uint8_t* codes[kRows];
  for (size_t r = 0; r < kRows; ++r) codes[r] = s.codes + (row + r) * s.row_bytes;
  // Decode reads each code once; fetch the next tile's rows a cache line ahead (see matmul.cc).
  constexpr size_t kLineCols = kBits == 4 ? 128 : 64;
  for (size_t g0 = 0; g0 < s.groups; g0 += 16) {
    const size_t count = std::min<size_t>(16, s.groups - g0);
    float scale[kRows][16], offset[kRows][16];
    GroupChunk<kRows>(s, row, g0, count, scale, offset);
    for (size_t j = 0; j < count; ++j) {
      const size_t c0 = (g0 + j) * group_size, c1 = std::min(c0 + group_size, width);
      VF table[kRows];  // kWeightTable: (q − z)·s for q = 0..15
      if constexpr (kBits == 4 && kWeightTable)
        for (size_t r = 0; r < kRows; ++r)
          table[r] = hn::MulAdd(hn::Iota(df, 0), hn::Set(df, scale[r][j]), hn::Set(df, offset[r][j]));
      for (size_t c = c0; c < c1; c += kBlock) {
        if (c % kLineCols == 0)
          for (size_t r = 0; r < kRows; ++r) hwy::Prefetch(codes[r] + kRows * s.row_bytes + c * kBits / 8);
        for (size_t h = 0; h < kBlock; h += (kBits == 4 ? 2 : 1) * lanes) {
          if constexpr (kBits == 4) {
            const size_t half = h / 2;  // lanes of even columns per step, 16 in all per block
            VF even[kTokens], odd[kTokens];
            for (size_t t = 0; t < kTokens; ++t) {
              even[t] = hn::LoadU(df, in.x + t * width + c + half);
              odd[t] = hn::LoadU(df, in.x + t * width + c + kBlock / 2 + half);
            }
            for (size_t r = 0; r < kRows; ++r) {
              VF low, high;
              if constexpr (kWeightTable) {
                const auto wide = hn::PromoteTo(DU32(), hn::LoadU(DU8(), codes[r] + c / 2 + half));
                low = LookupLowNibble(table[r], wide);
                high = hn::TableLookupLanes(table[r], hn::IndicesFromVec(df, hn::BitCast(DI32(), hn::ShiftRight<4>(wide))));
              } else {
                Codes4(codes[r] + c / 2 + half, low, high);
                const VF sv = hn::Set(df, scale[r][j]), ov = hn::Set(df, offset[r][j]);
                low = hn::MulAdd(low, sv, ov);
                high = hn::MulAdd(high, sv, ov);
              }
              for (size_t t = 0; t < kTokens; ++t)
                acc[r][t] = hn::MulAdd(high, odd[t], hn::MulAdd(low, even[t], acc[r][t]));
            }
          } else {
            VF xv[kTokens];
            for (size_t t = 0; t < kTokens; ++t) xv[t] = hn::LoadU(df, in.x + t * width + c + h);
            for (size_t r = 0; r < kRows; ++r) {
              const VF q = hn::MulAdd(Codes8(codes[r] + c + h), hn::Set(df, scale[r][j]), hn::Set(df, offset[r][j]));
              for (size_t t = 0; t < kTokens; ++t) acc[r][t] = hn::MulAdd(q, xv[t], acc[r][t]);
            }
          }
        }
      }
    }
  }
  float sums[kRows][kTokens];
  gemm::SumTile(df, acc, sums);
  for (size_t r = 0; r < kRows; ++r)
    for (size_t t = 0; t < kTokens; ++t)
      out[t * out_stride + row + r] = sums[r][t] + (bias ? bias[row + r] : 0.0f);
}

// 4 rows × 4 tokens with 32 registers (16 accumulators, 8 input vectors), 4 × 2 with 16.
constexpr size_t kDecodeTokens = gemm::kTileTokens;

template <uint32_t kBits, size_t kTokens>
HWY_INLINE void DecodeRows(const QuantInputs& in, const Sections& s, size_t gs, const float* bias, float* out,
                           size_t out_stride, size_t row_begin, size_t row_end) {
  size_t row = row_begin;
  for (; row + 4 <= row_end; row += 4) DecodeTile<kBits, 4, kTokens>(in, s, gs, bias, out, out_stride, row);
  for (; row < row_end; ++row) DecodeTile<kBits, 1, kTokens>(in, s, gs, bias, out, out_stride, row);
}

// Every token against rows [row_begin, row_end), kDecodeTokens at a time.
template <uint32_t kBits>
void DecodeAllTokens(const QuantInputs& in, const Sections& s, size_t gs, const float* bias, float* out,
                     size_t out_stride, size_t row_begin, size_t row_end) {
  QuantInputs part = in;
  for (size_t t = 0; t < in.tokens;) {
    part.x = in.x + t * in.stride;
    float* o = out + t * out_stride;
    const size_t left = in.tokens - t;
    if (left >= kDecodeTokens) {
      DecodeRows<kBits, kDecodeTokens>(part, s, gs, bias, o, out_stride, row_begin, row_end);
      t += kDecodeTokens;
    } else if (kDecodeTokens > 2 && left >= 2) {
      DecodeRows<kBits, 2>(part, s, gs, bias, o, out_stride, row_begin, row_end);
      t += 2;
    } else {
      DecodeRows<kBits, 1>(part, s, gs, bias, o, out_stride, row_begin, row_end);
      t += 1;
    }
  }
}

// W[row, k0 .. k0 + depth) as fp32 (k0 a multiple of 32).
template <uint32_t kBits>
void DequantizeRow(const Sections& s, size_t gs, size_t row, size_t k0, size_t depth, float* dst) {
  const DF df;
  const size_t lanes = hn::Lanes(df), step = (kBits == 4 ? 2 : 1) * lanes;
  const uint8_t* codes = s.codes + row * s.row_bytes;
  const size_t end = k0 + depth;
  for (size_t c0 = k0; c0 < end;) {
    const size_t g = c0 / gs, c1 = std::min(end, (g + 1) * gs);
    const float scale = f16_to_f32(s.scales[row * s.groups + g]), zero = s.zeros[row * s.groups + g];
    const VF sv = hn::Set(df, scale), zv = hn::Set(df, zero);
    size_t c = c0;
    for (; c + step <= c1; c += step) {
      if constexpr (kBits == 4) {
        VF low, high;
        Codes4(codes + c / 2, low, high);
        hn::StoreInterleaved2(hn::Mul(hn::Sub(low, zv), sv), hn::Mul(hn::Sub(high, zv), sv), df, dst + c - k0);
      } else {
        hn::StoreU(hn::Mul(hn::Sub(Codes8(codes + c), zv), sv), df, dst + c - k0);
      }
    }
    for (; c < c1; ++c) {
      const unsigned q = kBits == 8 ? codes[c] : (codes[c / 2] >> (c % 2 ? 4 : 0)) & 15u;
      dst[c - k0] = (static_cast<float>(q) - zero) * scale;
    }
    c0 = c1;
  }
}

void QuantMatmulRows(const QuantInputs& in, const QuantMatrix& w, const float* bias, float* out, size_t out_stride,
                     size_t row_begin, size_t row_end) {
  const Sections s = sections_of(w);
  const size_t gs = w.layout.group_size;
  const bool four = w.layout.bits == 4;
  if (in.gemm) {
    const auto load = [&](size_t row, size_t k0, size_t depth, float* dst) {
      four ? DequantizeRow<4>(s, gs, row, k0, depth, dst) : DequantizeRow<8>(s, gs, row, k0, depth, dst);
    };
    return gemm::PanelGemm(in.x, in.tokens, in.stride, w.cols, bias, out, out_stride, row_begin, row_end, load);
  }
  // Batched decode: all token groups per 4-row tile, so each code is read from memory once.
  const size_t tile = in.tokens > 1 ? 4 : row_end - row_begin;
  for (size_t row = row_begin; row < row_end; row += tile) {
    const size_t end = std::min(row + tile, row_end);
    four ? DecodeAllTokens<4>(in, s, gs, bias, out, out_stride, row, end)
         : DecodeAllTokens<8>(in, s, gs, bias, out, out_stride, row, end);
  }
}

}  // namespace vlmforge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace vlmforge::kernels {

HWY_EXPORT(QuantMatmulRows);

size_t quant_inputs_floats(const QuantMatrix& w, size_t tokens, QuantPath path) {
  if (gemm_path(tokens, path)) return w.layout.has_perm ? tokens * w.cols : 0;
  return tokens * padded_cols(w.cols);
}

QuantInputs prepare_quant_inputs(const float* x, size_t tokens, size_t x_stride, const QuantMatrix& w, float* scratch,
                                 QuantPath path) {
  const Sections s = sections_of(w);
  const size_t cols = w.cols;
  QuantInputs in{x, x_stride, tokens, gemm_path(tokens, path)};
  if (in.gemm) {
    if (s.perm) {
      for (size_t t = 0; t < tokens; ++t)
        for (size_t c = 0; c < cols; ++c) scratch[t * cols + c] = x[t * x_stride + s.perm[c]];
      in.x = scratch;
      in.stride = cols;
    }
    return in;
  }
  const size_t width = padded_cols(cols);
  for (size_t t = 0; t < tokens; ++t) {
    float* row = scratch + t * width;
    const float* src = x + t * x_stride;
    if (s.perm)
      for (size_t c = 0; c < cols; ++c) row[c] = src[s.perm[c]];
    else
      std::copy_n(src, cols, row);
    std::fill(row + cols, row + width, 0.0f);  // the padding's codes, whatever they are, meet zeros
    if (w.layout.bits == 4) {
      float block[kBlock];
      for (size_t c = 0; c < width; c += kBlock) {
        for (size_t j = 0; j < kBlock / 2; ++j) {
          block[j] = row[c + 2 * j];
          block[kBlock / 2 + j] = row[c + 2 * j + 1];
        }
        std::copy_n(block, kBlock, row + c);
      }
    }
  }
  in.x = scratch;
  in.stride = width;
  return in;
}

void quant_matmul_rows(const QuantInputs& in, const QuantMatrix& w, const float* bias, float* out, size_t out_stride,
                       size_t row_begin, size_t row_end) {
  HWY_DYNAMIC_DISPATCH(QuantMatmulRows)(in, w, bias, out, out_stride, row_begin, row_end);
}

}  // namespace vlmforge::kernels
#endif  // HWY_ONCE
