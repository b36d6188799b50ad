#include "kernels/attention.h"

#include <algorithm>
#include <cmath>

#include "io/convert.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>

#include "kernels/load_f32-inl.h"

HWY_BEFORE_NAMESPACE();
namespace vlmforge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// In place x ← exp(x − max) / Σ exp(x − max).
void Softmax(float* x, size_t n) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  const float max = *std::max_element(x, x + n);
  const VF vmax = hn::Set(df, max);
  VF vsum = hn::Zero(df);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const VF e = hn::Exp(df, hn::Sub(hn::LoadU(df, x + i), vmax));
    hn::StoreU(e, df, x + i);
    vsum = hn::Add(vsum, e);
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, vsum));
  for (; i < n; ++i) sum += (x[i] = std::exp(x[i] - max));
  const VF inv = hn::Set(df, 1.0f / sum);
  for (i = 0; i + lanes <= n; i += lanes) hn::StoreU(hn::Mul(hn::LoadU(df, x + i), inv), df, x + i);
  for (; i < n; ++i) x[i] *= 1.0f / sum;
}

inline size_t row_of(const KvRows& kv, size_t position) {
  return kv.block_table ? size_t{kv.block_table[position / kv.block_size]} * kv.block_size + position % kv.block_size
                        : position;
}

template <DType kDType>
void AttendTyped(const float* q, size_t group, size_t head_dim, const KvRows& kv, size_t length, float scale,
                 float* scores, float* out) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  const size_t esize = kDType == DType::F32 ? 4 : 2;
  const size_t vec_end = head_dim - head_dim % lanes;
  // Scores: one pass over the keys, every head of the group per key row.
  for (size_t p = 0; p < length; ++p) {
    const std::byte* key = kv.keys + (row_of(kv, p) * kv.stride + kv.offset) * esize;
    for (size_t g = 0; g < group; ++g) {
      const float* qg = q + g * head_dim;
      VF acc = hn::Zero(df);
      for (size_t i = 0; i < vec_end; i += lanes) acc = hn::MulAdd(hn::LoadU(df, qg + i), LoadAsF32<kDType>(df, key, i), acc);
      float dot = hn::GetLane(hn::SumOfLanes(df, acc));
      for (size_t i = vec_end; i < head_dim; ++i) dot += qg[i] * load_float(kDType, key, i);
      scores[g * length + p] = dot * scale;
    }
  }
  for (size_t g = 0; g < group; ++g) Softmax(scores + g * length, length);
  // Weighted sum of the value rows, again one pass with every head per row.
  std::fill_n(out, group * head_dim, 0.0f);
  for (size_t p = 0; p < length; ++p) {
    const std::byte* value = kv.values + (row_of(kv, p) * kv.stride + kv.offset) * esize;
    for (size_t i = 0; i < vec_end; i += lanes) {
      const VF v = LoadAsF32<kDType>(df, value, i);
      for (size_t g = 0; g < group; ++g) {
        float* o = out + g * head_dim + i;
        hn::StoreU(hn::MulAdd(hn::Set(df, scores[g * length + p]), v, hn::LoadU(df, o)), df, o);
      }
    }
    for (size_t i = vec_end; i < head_dim; ++i)
      for (size_t g = 0; g < group; ++g) out[g * head_dim + i] += scores[g * length + p] * load_float(kDType, value, i);
  }
}

void Attend(const float* q, size_t group, size_t head_dim, const KvRows& kv, size_t length, float scale,
            float* scores, float* out) {
  if (kv.dtype == DType::BF16) return AttendTyped<DType::BF16>(q, group, head_dim, kv, length, scale, scores, out);
  return AttendTyped<DType::F32>(q, group, head_dim, kv, length, scale, scores, out);
}

}  // namespace vlmforge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace vlmforge::kernels {

HWY_EXPORT(Attend);

void attend(const float* q, size_t group, size_t head_dim, const KvRows& kv, size_t length, float scale,
            float* scores, float* out) {
  HWY_DYNAMIC_DISPATCH(Attend)(q, group, head_dim, kv, length, scale, scores, out);
}

}  // namespace vlmforge::kernels
#endif  // HWY_ONCE
