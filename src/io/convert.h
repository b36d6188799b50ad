#pragma once
// Element access for the compute float dtypes (BF16, F16, F32) stored as raw little-endian bytes.
#include <cstddef>
#include <cstring>

#include "io/dtype.h"
#include "util/half.h"

namespace vlmforge {

inline float load_float(DType dtype, const std::byte* base, size_t index) {
  if (dtype == DType::F32) {
    float v;
    std::memcpy(&v, base + index * 4, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, base + index * 2, 2);
  return dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

inline void store_float(DType dtype, std::byte* base, size_t index, float value) {
  if (dtype == DType::F32) {
    std::memcpy(base + index * 4, &value, 4);
    return;
  }
  const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(value) : f32_to_f16(value);
  std::memcpy(base + index * 2, &h, 2);
}

}  // namespace vlmforge
