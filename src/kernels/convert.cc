#include "kernels/convert.h"

#include <cstring>

#include "io/convert.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/convert.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace vlmforge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void Bf16ToF32(const std::byte* src, float* dst, size_t count) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du32;
  const hn::Rebind<uint16_t, decltype(df)> du16;
  const size_t lanes = hn::Lanes(df);
  const auto* in = reinterpret_cast<const uint16_t*>(src);
  size_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    const auto wide = hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, in + i)));
    hn::StoreU(hn::BitCast(df, wide), df, dst + i);
  }
  for (; i < count; ++i) dst[i] = load_float(DType::BF16, src, i);
}

void F32ToBf16(const float* src, std::byte* dst, size_t count) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du32;
  const hn::RebindToSigned<decltype(df)> di32;
  const hn::Rebind<uint16_t, decltype(df)> du16;
  const size_t lanes = hn::Lanes(df);
  auto* out = reinterpret_cast<uint16_t*>(dst);
  const auto round_bias = hn::Set(du32, 0x7fffu);
  const auto one = hn::Set(du32, 1u);
  const auto quiet = hn::Set(du32, 0x40u);
  size_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    const auto v = hn::LoadU(df, src + i);
    const auto bits = hn::BitCast(du32, v);
    const auto rounded = hn::ShiftRight<16>(hn::Add(bits, hn::Add(round_bias, hn::And(hn::ShiftRight<16>(bits), one))));
    const auto nan = hn::Or(hn::ShiftRight<16>(bits), quiet);
    const auto result = hn::IfThenElse(hn::RebindMask(du32, hn::IsNaN(v)), nan, rounded);
    hn::StoreU(hn::DemoteTo(du16, hn::BitCast(di32, result)), du16, out + i);
  }
  for (; i < count; ++i) store_float(DType::BF16, dst, i, src[i]);
}

// Values whose exponent bits are all ones (Inf, NaN) among `count` words of type T.
template <typename T>
size_t CountAllOnesExponent(const std::byte* src, size_t count, T exponent_mask) {
  const hn::ScalableTag<T> d;
  const size_t lanes = hn::Lanes(d);
  const auto* in = reinterpret_cast<const T*>(src);
  const auto mask = hn::Set(d, exponent_mask);
  size_t bad = 0, i = 0;
  for (; i + lanes <= count; i += lanes) {
    const auto v = hn::LoadU(d, in + i);
    bad += hn::CountTrue(d, hn::Eq(hn::And(v, mask), mask));
  }
  T word;
  for (; i < count; ++i) {
    std::memcpy(&word, in + i, sizeof word);
    bad += (word & exponent_mask) == exponent_mask;
  }
  return bad;
}

size_t CountNonFinite16(const std::byte* src, size_t count, uint16_t exponent_mask) {
  return CountAllOnesExponent<uint16_t>(src, count, exponent_mask);
}
size_t CountNonFinite32(const std::byte* src, size_t count) {
  return CountAllOnesExponent<uint32_t>(src, count, 0x7f800000u);
}

}  // namespace vlmforge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace vlmforge::kernels {

HWY_EXPORT(Bf16ToF32);
HWY_EXPORT(F32ToBf16);
HWY_EXPORT(CountNonFinite16);
HWY_EXPORT(CountNonFinite32);

size_t count_non_finite(DType dtype, const std::byte* src, size_t count) {
  switch (dtype) {
    case DType::BF16: return HWY_DYNAMIC_DISPATCH(CountNonFinite16)(src, count, 0x7f80);
    case DType::F16: return HWY_DYNAMIC_DISPATCH(CountNonFinite16)(src, count, 0x7c00);
    case DType::F32: return HWY_DYNAMIC_DISPATCH(CountNonFinite32)(src, count);
    default: throw Error("count_non_finite: " + std::string(dtype_name(dtype)) + " is not a float type");
  }
}

void to_f32(DType dtype, const std::byte* src, float* dst, size_t count) {
  switch (dtype) {
    case DType::BF16: HWY_DYNAMIC_DISPATCH(Bf16ToF32)(src, dst, count); return;
    case DType::F32: std::memcpy(dst, src, count * sizeof(float)); return;
    default:
      for (size_t i = 0; i < count; ++i) dst[i] = load_float(dtype, src, i);
  }
}

void from_f32(DType dtype, const float* src, std::byte* dst, size_t count) {
  switch (dtype) {
    case DType::BF16: HWY_DYNAMIC_DISPATCH(F32ToBf16)(src, dst, count); return;
    case DType::F32: std::memcpy(dst, src, count * sizeof(float)); return;
    default:
      for (size_t i = 0; i < count; ++i) store_float(dtype, dst, i, src[i]);
  }
}

std::vector<float> tensor_to_f32(const TensorRef& tensor) {
  std::vector<float> out(tensor.info->num_elements());
  to_f32(tensor.info->dtype, tensor.data().data(), out.data(), out.size());
  return out;
}

}  // namespace vlmforge::kernels
#endif  // HWY_ONCE
