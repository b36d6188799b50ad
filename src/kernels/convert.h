#pragma once
// Bulk conversion between stored float dtypes (BF16, F16, F32) and fp32 working buffers.
// SIMD (Highway, runtime dispatch) for BF16 and F32; F16 uses the exact scalar conversion.
#include <cstddef>

#include "io/dtype.h"

namespace vlmforge::kernels {

void to_f32(DType dtype, const std::byte* src, float* dst, size_t count);
// Round-to-nearest-even, NaN preserved.
void from_f32(DType dtype, const float* src, std::byte* dst, size_t count);

}  // namespace vlmforge::kernels
