#pragma once
// Bulk conversion between stored float dtypes (BF16, F16, F32) and fp32 working buffers.
// SIMD (Highway, runtime dispatch) for BF16 and F32; F16 uses the exact scalar conversion.
#include <cstddef>

#include <vector>

#include "io/dtype.h"
#include "io/safetensors.h"

namespace vlmforge::kernels {

void to_f32(DType dtype, const std::byte* src, float* dst, size_t count);
// Round-to-nearest-even, NaN preserved.
void from_f32(DType dtype, const float* src, std::byte* dst, size_t count);

// How many of `count` BF16/F16/F32 values are Inf or NaN.
size_t count_non_finite(DType dtype, const std::byte* src, size_t count);

// A whole BF16/F16/F32 tensor as fp32 values.
std::vector<float> tensor_to_f32(const TensorRef& tensor);

}  // namespace vlmforge::kernels
