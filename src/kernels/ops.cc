#include "kernels/ops.h"

#include <cmath>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/ops.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace vlmforge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

void RmsNorm(const float* x, const float* weight, float eps, float* out, size_t n) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  // Sum of squares in double lanes: hidden sizes reach 8192 and the golden tests compare to 1e-4.
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> dfd;  // as many floats as dd has doubles
  const size_t dlanes = hn::Lanes(dd);
  auto sum = hn::Zero(dd);
  size_t i = 0;
  for (; i + dlanes <= n; i += dlanes) {
    const auto v = hn::PromoteTo(dd, hn::LoadU(dfd, x + i));
    sum = hn::MulAdd(v, v, sum);
  }
  double total = hn::GetLane(hn::SumOfLanes(dd, sum));
  for (; i < n; ++i) total += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(total / static_cast<double>(n) + eps));
  const VF vinv = hn::Set(df, inv);
  for (i = 0; i + lanes <= n; i += lanes)
    hn::StoreU(hn::Mul(hn::LoadU(df, weight + i), hn::Mul(hn::LoadU(df, x + i), vinv)), df, out + i);
  for (; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

void ApplyRope(float* head, size_t head_dim, const float* cos, const float* sin) {
  const DF df;
  const size_t lanes = hn::Lanes(df), half = head_dim / 2;
  size_t i = 0;
  for (; i + lanes <= half; i += lanes) {
    const VF a = hn::LoadU(df, head + i), b = hn::LoadU(df, head + half + i);
    const VF c = hn::LoadU(df, cos + i), s = hn::LoadU(df, sin + i);
    hn::StoreU(hn::NegMulAdd(b, s, hn::Mul(a, c)), df, head + i);
    hn::StoreU(hn::MulAdd(a, s, hn::Mul(b, c)), df, head + half + i);
  }
  for (; i < half; ++i) {
    const float a = head[i], b = head[i + half];
    head[i] = a * cos[i] - b * sin[i];
    head[i + half] = b * cos[i] + a * sin[i];
  }
}

void SiluMul(float* gate, const float* up, size_t n) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  const VF one = hn::Set(df, 1.0f);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const VF g = hn::LoadU(df, gate + i);
    const VF silu = hn::Div(g, hn::Add(one, hn::Exp(df, hn::Neg(g))));
    hn::StoreU(hn::Mul(silu, hn::LoadU(df, up + i)), df, gate + i);
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void AddInPlace(float* y, const float* x, size_t n) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(hn::Add(hn::LoadU(df, y + i), hn::LoadU(df, x + i)), df, y + i);
  for (; i < n; ++i) y[i] += x[i];
}

}  // namespace vlmforge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace vlmforge::kernels {

HWY_EXPORT(RmsNorm);
HWY_EXPORT(ApplyRope);
HWY_EXPORT(SiluMul);
HWY_EXPORT(AddInPlace);

void rms_norm(const float* x, const float* weight, float eps, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(RmsNorm)(x, weight, eps, out, n);
}
void apply_rope(float* head, size_t head_dim, const float* cos, const float* sin) {
  HWY_DYNAMIC_DISPATCH(ApplyRope)(head, head_dim, cos, sin);
}
void silu_mul(float* gate, const float* up, size_t n) { HWY_DYNAMIC_DISPATCH(SiluMul)(gate, up, n); }
void add_in_place(float* y, const float* x, size_t n) { HWY_DYNAMIC_DISPATCH(AddInPlace)(y, x, n); }

}  // namespace vlmforge::kernels
#endif  // HWY_ONCE
