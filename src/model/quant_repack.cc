#include "model/quant_repack.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "util/error.h"
#include "util/half.h"

namespace vlmforge {

namespace {

// AutoAWQ's GEMM packing keeps output column 8k + order[n] in nibble n of a word (order 0, 2,
// 4, 6, 1, 3, 5, 7); this is the inverse: the nibble of column 8k + m.
constexpr uint32_t kAwqNibbleOfColumn[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// Output rows repacked together: their code rows stay in cache while the stored words are read
// once each, in order (a row at a time would stride through the words; a word at a time through
// the rows).
constexpr uint64_t kRowBlock = 64;

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void expect(const StoredTensor& t, DType dtype, size_t rank) {
  if (t.dtype != dtype)
    throw Error("tensor '" + t.name + "' is " + std::string(dtype_name(t.dtype)) + ", expected " +
                std::string(dtype_name(dtype)));
  if (t.shape.size() != rank)
    throw Error("tensor '" + t.name + "' has shape " + shape_text(t.shape) + ", expected " + std::to_string(rank) +
                " dimension" + (rank == 1 ? "" : "s"));
  uint64_t elements = 1;
  for (uint64_t d : t.shape) elements *= d;
  if (t.bytes.size() != elements * (dtype_info(dtype).bits / 8))
    throw Error("tensor '" + t.name + "' holds " + std::to_string(t.bytes.size()) + " bytes, not its shape " +
                shape_text(t.shape) + "'s");
}

void expect_shape(const StoredTensor& t, const std::vector<uint64_t>& shape, const std::string& why) {
  if (t.shape != shape)
    throw Error("tensor '" + t.name + "' has shape " + shape_text(t.shape) + ", expected " + shape_text(shape) + " (" +
                why + ")");
}

// Element `i` of an int32 tensor (safetensors data need not be 4-byte aligned).
uint32_t word(const StoredTensor& t, uint64_t i) {
  uint32_t w;
  std::memcpy(&w, t.bytes.data() + i * sizeof(w), sizeof(w));
  return w;
}

uint32_t codes_per_word(const QuantizationConfig& config) { return 32 / static_cast<uint32_t>(config.bits); }

// The stored column order that makes each group contiguous: inputs sorted (stably) by g_idx;
// nullopt when g_idx is the column order already.
std::optional<std::vector<uint32_t>> column_order(const QuantizedTensors& t, const QuantizedShape& s) {
  if (!t.g_idx) return std::nullopt;
  const StoredTensor& g = *t.g_idx;
  const uint64_t cols = s.cols, groups = s.layout.groups(cols);
  std::vector<uint32_t> group(cols);
  bool in_order = true;
  for (uint64_t i = 0; i < cols; ++i) {
    group[i] = word(g, i);
    if (group[i] >= groups)
      throw Error("tensor '" + g.name + "' puts input " + std::to_string(i) + " in group " +
                  std::to_string(static_cast<int32_t>(group[i])) + ", outside the " + std::to_string(groups) +
                  " groups of the scales");
    in_order = in_order && group[i] == i / s.layout.group_size;
  }
  if (in_order) return std::nullopt;
  std::vector<uint32_t> order(cols);
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return group[a] < group[b]; });
  for (uint64_t j = 0; j < cols; ++j)
    if (group[order[j]] != j / s.layout.group_size)
      throw Error("tensor '" + g.name + "' does not give every group " + std::to_string(s.layout.group_size) +
                  " inputs (group " + std::to_string(j / s.layout.group_size) + " differs)");
  return order;
}

}  // namespace

QuantizedShape quantized_shape(const QuantizationConfig& config, const QuantizedTensors& t) {
  expect(t.qweight, DType::I32, 2);
  expect(t.qzeros, DType::I32, 2);
  expect(t.scales, DType::F16, 2);
  const bool awq = config.method == QuantMethod::kAwq;
  const uint64_t pack = awq ? 8 : codes_per_word(config);
  QuantizedShape s;
  s.cols = awq ? t.qweight.shape[0] : t.qweight.shape[0] * pack;
  s.rows = awq ? t.qweight.shape[1] * pack : t.qweight.shape[1];
  if (s.rows == 0 || s.cols == 0) throw Error("tensor '" + t.qweight.name + "' is empty");
  s.layout = config.device_layout(s.cols, false);  // has_perm once g_idx is read, below
  const uint64_t groups = s.layout.groups(s.cols);
  const std::string group_text = std::to_string(groups) + " groups of " + std::to_string(s.layout.group_size) +
                                 " of the " + std::to_string(s.cols) + " inputs";
  expect_shape(t.scales, {groups, s.rows}, group_text + ", " + std::to_string(s.rows) + " outputs");
  if (s.rows % pack != 0)
    throw Error("tensor '" + t.qweight.name + "' has " + std::to_string(s.rows) +
                " outputs, not a multiple of the " + std::to_string(pack) + " zero points per int32 of '" +
                t.qzeros.name + "'");
  expect_shape(t.qzeros, {groups, s.rows / pack},
               group_text + ", " + std::to_string(pack) + " zero points per int32");
  if (t.g_idx) {
    if (awq) throw Error("tensor '" + t.g_idx->name + "': AWQ checkpoints have no g_idx");
    expect(*t.g_idx, DType::I32, 1);
    expect_shape(*t.g_idx, {s.cols}, "one group index per input of '" + t.qweight.name + "'");
  }
  s.layout.has_perm = column_order(t, s).has_value();
  return s;
}

std::vector<std::byte> repack_quantized(const QuantizationConfig& config, const QuantizedTensors& t,
                                        const QuantizedShape& s) {
  const kernels::QuantLayout& L = s.layout;
  const uint64_t rows = s.rows, cols = s.cols, groups = L.groups(cols), row_bytes = L.row_code_bytes(cols);
  const uint32_t bits = L.bits, mask = (1u << bits) - 1;
  std::vector<std::byte> out(s.bytes());
  const std::optional<std::vector<uint32_t>> order = column_order(t, s);
  // Where each input's codes go: its position in the stored column order.
  std::vector<uint32_t> position(cols);
  if (order)
    for (uint32_t j = 0; j < cols; ++j) position[(*order)[j]] = j;
  else
    std::iota(position.begin(), position.end(), 0u);

  uint8_t* codes = reinterpret_cast<uint8_t*>(out.data() + L.codes_offset());
  auto put_code = [&](uint64_t r, uint64_t input, uint32_t q) {
    const uint64_t j = position[input];
    if (bits == 8) codes[r * row_bytes + j] = static_cast<uint8_t>(q);
    else codes[r * row_bytes + j / 2] |= static_cast<uint8_t>(q << (4 * (j & 1)));
  };
  uint8_t* zeros = reinterpret_cast<uint8_t*>(out.data() + L.zeros_offset(rows, cols));
  if (config.method == QuantMethod::kAwq) {
    const uint64_t words = rows / 8;
    for (uint64_t r0 = 0; r0 < rows; r0 += kRowBlock)
      for (uint64_t i = 0; i < cols; ++i)
        for (uint64_t k = r0 / 8; k < std::min(rows, r0 + kRowBlock) / 8; ++k) {
          const uint32_t w = word(t.qweight, i * words + k);
          for (uint32_t m = 0; m < 8; ++m) put_code(8 * k + m, i, (w >> (4 * kAwqNibbleOfColumn[m])) & mask);
        }
    for (uint64_t g = 0; g < groups; ++g)
      for (uint64_t r = 0; r < rows; ++r) {
        const uint32_t w = word(t.qzeros, g * words + r / 8);
        zeros[r * groups + g] = static_cast<uint8_t>((w >> (4 * kAwqNibbleOfColumn[r % 8])) & mask);
      }
  } else {
    const uint32_t pack = codes_per_word(config);
    for (uint64_t r0 = 0; r0 < rows; r0 += kRowBlock)
      for (uint64_t k = 0; k < cols / pack; ++k)
        for (uint64_t r = r0; r < std::min(rows, r0 + kRowBlock); ++r) {
          const uint32_t w = word(t.qweight, k * rows + r);
          for (uint32_t n = 0; n < pack; ++n) put_code(r, k * pack + n, (w >> (bits * n)) & mask);
        }
    const uint32_t offset = config.zeros_minus_one ? 1 : 0;
    for (uint64_t g = 0; g < groups; ++g)
      for (uint64_t r = 0; r < rows; ++r) {
        const uint32_t z = ((word(t.qzeros, g * (rows / pack) + r / pack) >> (bits * (r % pack))) & mask) + offset;
        if (z > mask)
          throw Error("tensor '" + t.qzeros.name + "' stores zero point " + std::to_string(z) + " (group " +
                      std::to_string(g) + ", output " + std::to_string(r) + "), outside " + std::to_string(bits) +
                      " bits: a GPTQ v1 checkpoint cannot store zero 0; re-save it as gptq_v2");
        zeros[r * groups + g] = static_cast<uint8_t>(z);
      }
  }
  std::byte* scales = out.data() + L.scales_offset(rows, cols);
  for (uint64_t g = 0; g < groups; ++g)
    for (uint64_t r = 0; r < rows; ++r)
      std::memcpy(scales + (r * groups + g) * sizeof(uint16_t),
                  t.scales.bytes.data() + (g * rows + r) * sizeof(uint16_t), sizeof(uint16_t));
  if (order) std::memcpy(out.data() + L.perm_offset(rows, cols), order->data(), cols * sizeof(uint32_t));
  return out;
}

void dequantize_row(const QuantizedShape& s, std::span<const std::byte> layout_bytes, uint64_t row, float* out) {
  const kernels::QuantLayout& L = s.layout;
  const uint64_t cols = s.cols, groups = L.groups(cols);
  const auto* data = reinterpret_cast<const uint8_t*>(layout_bytes.data());
  const uint8_t* codes = data + L.codes_offset() + row * L.row_code_bytes(cols);
  const uint8_t* zeros = data + L.zeros_offset(s.rows, cols) + row * groups;
  const std::byte* scales = layout_bytes.data() + L.scales_offset(s.rows, cols) + row * groups * sizeof(uint16_t);
  const std::byte* perm = layout_bytes.data() + L.perm_offset(s.rows, cols);
  for (uint64_t j = 0; j < cols; ++j) {
    const uint32_t q = L.bits == 8 ? codes[j] : (codes[j / 2] >> (4 * (j & 1))) & 15u;
    const uint64_t g = j / L.group_size;
    uint16_t scale;
    std::memcpy(&scale, scales + g * sizeof(scale), sizeof(scale));
    uint32_t input = static_cast<uint32_t>(j);
    if (L.has_perm) std::memcpy(&input, perm + j * sizeof(input), sizeof(input));
    out[input] = (static_cast<float>(q) - static_cast<float>(zeros[g])) * f16_to_f32(scale);
  }
}

}  // namespace vlmforge
