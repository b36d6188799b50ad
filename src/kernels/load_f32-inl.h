// Per-target Highway code shared by the kernels: loading stored BF16 / F16 / F32 values as fp32
// vectors. Included after <hwy/highway.h> in each kernel's foreach_target compilation, so it uses
// Highway's toggle guard instead of #pragma once.
#if defined(VLMFORGE_KERNELS_LOAD_F32_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef VLMFORGE_KERNELS_LOAD_F32_INL_H_
#undef VLMFORGE_KERNELS_LOAD_F32_INL_H_
#else
#define VLMFORGE_KERNELS_LOAD_F32_INL_H_
#endif

#include <hwy/highway.h>

#include "io/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace vlmforge::kernels::HWY_NAMESPACE {

// Lanes(df) values of dtype kDType starting at element `i` of `row`, as fp32.
template <DType kDType, class DF>
HWY_INLINE hwy::HWY_NAMESPACE::Vec<DF> LoadAsF32(DF df, const std::byte* row, size_t i) {
  namespace hn = hwy::HWY_NAMESPACE;
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

}  // namespace vlmforge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // VLMFORGE_KERNELS_LOAD_F32_INL_H_
