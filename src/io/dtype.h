#pragma once
// Element types of safetensors files. Every dtype of the format is known (so files with FP8 or
// integer tensors can be read and passed through); only BF16/F16/F32 take part in arithmetic.
#include <cstdint>
#include <optional>
#include <string_view>

namespace vlmforge {

enum class DType : uint8_t {
  BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64,
  F8_E4M3, F8_E5M2, F8_E8M0, F4, F6_E2M3, F6_E3M2, C64,
};

struct DTypeInfo {
  DType dtype;
  std::string_view name;  // as spelled in safetensors headers
  uint32_t bits;          // storage bits per element
};

const DTypeInfo& dtype_info(DType dtype);
std::optional<DType> parse_dtype(std::string_view name);
inline std::string_view dtype_name(DType dtype) { return dtype_info(dtype).name; }

// The dtypes merge and inference compute on (converted through fp32).
inline bool is_compute_float(DType d) { return d == DType::BF16 || d == DType::F16 || d == DType::F32; }

// Bytes for `elements` elements; nullopt on overflow or a sub-byte dtype whose count ends mid-byte.
std::optional<uint64_t> storage_bytes(DType dtype, uint64_t elements);

}  // namespace vlmforge
