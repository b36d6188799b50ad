#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/convert.h"
#include "util/error.h"
#include "util/half.h"

namespace vlmforge::kernels {
namespace {

// One group's quantization: code(x) and the (scale, zero) stored for it.
struct GroupCodes {
  uint16_t scale_bits;
  uint8_t zero;
};

// llama.cpp q8_0: d = amax / 127, q = roundf(x / d) (half away from zero, via x · (1/d)).
GroupCodes q8_0_group(const float* x, size_t n, uint8_t* codes) {
  float amax = 0;
  for (size_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
  for (size_t j = 0; j < n; ++j) codes[j] = static_cast<uint8_t>(static_cast<int>(std::roundf(x[j] * id)) + 128);
  return {f32_to_f16(d), 128};
}

// llama.cpp q4_0: d = max / −8 with max the value of largest magnitude (its sign kept), so that
// value maps to code 0; q = min(15, (int8)(x / d + 8.5)) truncates, i.e. rounds half up.
GroupCodes q4_0_group(const float* x, size_t n, uint8_t* codes) {
  float amax = 0, max = 0;
  for (size_t j = 0; j < n; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  const float d = max / -8, id = d != 0 ? 1.0f / d : 0.0f;
  for (size_t j = 0; j < n; ++j)
    codes[j] = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f))));
  return {f32_to_f16(d), 8};
}

// AutoGPTQ's Quantizer.find_params + quantize per group: the range [min(x, 0), max(x, 0)]
// (symmetric: ±max|x| for every group; an all-zero group gets [−1, 1]), scale = (xmax − xmin) / maxq,
// zero = round(−xmin / scale) (symmetric: (maxq + 1) / 2), q = clamp(round(x / scale) + zero, 0, maxq)
// with round half to even (torch.round). Codes are computed with the fp16 scale that is stored,
// as AutoGPTQ's packing does.
GroupCodes rtn_group(const float* x, size_t n, uint32_t bits, bool symmetric, uint8_t* codes) {
  const float maxq = static_cast<float>((1u << bits) - 1);
  float xmin = 0, xmax = 0;
  for (size_t j = 0; j < n; ++j) {
    xmin = std::min(xmin, x[j]);
    xmax = std::max(xmax, x[j]);
  }
  if (symmetric) {  // AutoGPTQ keeps xmin = 0 for a group without negatives, which clips its top half
    xmax = std::max(-xmin, xmax);
    xmin = -xmax;
  }
  if (xmin == 0 && xmax == 0) {
    xmin = -1;
    xmax = 1;
  }
  const uint16_t scale_bits = f32_to_f16((xmax - xmin) / maxq);
  const float scale = f16_to_f32(scale_bits);
  const float zero = symmetric ? (maxq + 1) / 2 : std::clamp(std::nearbyint(-xmin / scale), 0.0f, maxq);
  for (size_t j = 0; j < n; ++j)
    codes[j] = static_cast<uint8_t>(std::clamp(std::nearbyint(x[j] / scale) + zero, 0.0f, maxq));
  return {scale_bits, static_cast<uint8_t>(zero)};
}

// Rows [0, rows) quantized one at a time; row_of(r, buffer) gives row r as fp32 (in buffer or not).
template <typename RowOf>
void quantize_each_row(size_t rows, size_t cols, const QuantScheme& scheme, std::byte* dst, RowOf&& row_of) {
  const QuantLayout layout = scheme.layout();
  std::memset(dst, 0, layout.bytes(rows, cols));
  const size_t groups = layout.groups(cols), row_bytes = layout.row_code_bytes(cols);
  auto* scales = reinterpret_cast<uint16_t*>(dst + layout.scales_offset(rows, cols));
  auto* zeros = reinterpret_cast<uint8_t*>(dst + layout.zeros_offset(rows, cols));
  std::vector<float> buffer(cols);
  std::vector<uint8_t> codes(cols);
  for (size_t r = 0; r < rows; ++r) {
    const float* row = row_of(r, buffer.data());
    for (size_t g = 0; g < groups; ++g) {
      const size_t c0 = g * layout.group_size, n = std::min(layout.group_size, cols - c0);
      GroupCodes q{};
      switch (scheme.method) {
        case QuantMethod::Q8_0: q = q8_0_group(row + c0, n, codes.data() + c0); break;
        case QuantMethod::Q4_0: q = q4_0_group(row + c0, n, codes.data() + c0); break;
        case QuantMethod::RoundToNearest:
          q = rtn_group(row + c0, n, scheme.bits, scheme.symmetric, codes.data() + c0);
          break;
      }
      std::memcpy(scales + r * groups + g, &q.scale_bits, sizeof q.scale_bits);
      zeros[r * groups + g] = q.zero;
    }
    auto* out = reinterpret_cast<uint8_t*>(dst) + r * row_bytes;
    if (layout.bits == 8) {
      std::copy(codes.begin(), codes.end(), out);
    } else {
      for (size_t c = 0; c < cols; ++c) out[c / 2] |= static_cast<uint8_t>(codes[c] << (c % 2 ? 4 : 0));
    }
  }
}

}  // namespace

QuantLayout QuantScheme::layout() const {
  if (bits != 4 && bits != 8)
    throw Error("cannot quantize to " + std::to_string(bits) + " bits: the kernels take 4 or 8");
  if (group_size == 0 || group_size % 32 != 0)
    throw Error("cannot quantize in groups of " + std::to_string(group_size) +
                " columns: the group size must be a positive multiple of 32");
  if ((method == QuantMethod::Q8_0 && (bits != 8 || group_size != 32)) ||
      (method == QuantMethod::Q4_0 && (bits != 4 || group_size != 32)))
    throw Error("q8_0 and q4_0 are 8 and 4 bits in groups of 32");
  return {bits, group_size, false};
}

void quantize_rows(const float* w, size_t rows, size_t cols, const QuantScheme& scheme, std::byte* dst) {
  quantize_each_row(rows, cols, scheme, dst, [&](size_t r, float*) { return w + r * cols; });
}

void quantize_rows(DType dtype, const std::byte* w, size_t rows, size_t cols, const QuantScheme& scheme,
                   std::byte* dst) {
  const size_t value_bytes = dtype_info(dtype).bits / 8;
  quantize_each_row(rows, cols, scheme, dst, [&](size_t r, float* buffer) {
    to_f32(dtype, w + r * cols * value_bytes, buffer, cols);
    return static_cast<const float*>(buffer);
  });
}

}  // namespace vlmforge::kernels
