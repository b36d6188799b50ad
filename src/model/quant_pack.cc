#include "model/quant_pack.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/error.h"
#include "util/half.h"

namespace vlmforge {

namespace {

// AutoAWQ's GEMM packing keeps output column 8k + order[n] in nibble n (order 0, 2, 4, 6, 1, 3,
// 5, 7): the nibble of column 8k + m.
constexpr uint32_t kAwqNibbleOfColumn[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// Rows quantized together before their words are packed: 16 output rows make 16 adjacent GPTQ
// qweight words (one cache line) per input word, instead of one word per line.
constexpr uint64_t kRowBatch = 16;

bool is_awq(const QuantizationConfig& c) { return c.method == QuantMethod::kAwq; }
uint32_t codes_per_word(const QuantizationConfig& c) { return 32 / static_cast<uint32_t>(c.bits); }
uint64_t group_of(const QuantizationConfig& c, uint64_t cols) {
  return c.group_size == -1 ? cols : static_cast<uint64_t>(c.group_size);
}

}  // namespace

GroupQuant quantize_group(const QuantizationConfig& config, const float* w, size_t n, uint8_t* codes) {
  const uint32_t maxq = (1u << config.bits) - 1;
  float lo = 0, hi = 0;
  bool finite = true;
  for (size_t i = 0; i < n; ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
    finite = finite && std::fabs(w[i]) <= std::numeric_limits<float>::max();
  }
  if (!finite) return {0, 0, false};
  double range;
  uint32_t zero;
  if (is_awq(config)) {
    range = std::max(static_cast<double>(hi) - lo, 1e-5);  // AutoAWQ's clamp(min=1e-5)
  } else {
    double amax = std::max(-static_cast<double>(lo), static_cast<double>(hi));
    if (amax == 0) amax = 1;  // GPTQ: an all-zero group gets the range [-1, 1]
    range = 2 * amax;
  }
  const float scale = f16_to_f32(f32_to_f16(static_cast<float>(range / maxq)));
  if (is_awq(config))
    zero = static_cast<uint32_t>(std::clamp(std::nearbyint(-static_cast<double>(lo) / scale), 0.0, double(maxq)));
  else
    zero = (maxq + 1) / 2;
  // round(w / scale) + zero, clamped; |w / scale| stays far below 2^22, where adding and taking
  // away 1.5·2^23 rounds half to even, and the loop vectorizes (std::nearbyint does not).
  constexpr float kRound = 12582912.0f;
  const float low = -static_cast<float>(zero), high = static_cast<float>(maxq - zero);
  for (size_t i = 0; i < n; ++i) {
    float x = std::clamp(w[i] / scale, low - 1, high + 1);
    x = (x + kRound) - kRound;
    codes[i] = static_cast<uint8_t>(std::clamp(x, low, high) + static_cast<float>(zero));
  }
  return {scale, zero, true};
}

std::string unpackable_reason(const QuantizationConfig& config, uint64_t rows, uint64_t cols) {
  const uint64_t group = group_of(config, cols);
  if (cols % group != 0)
    return std::to_string(cols) + " inputs are not a multiple of --group_size " + std::to_string(group);
  const uint64_t pack = is_awq(config) ? 1 : codes_per_word(config);
  if (cols % pack != 0)
    return std::to_string(cols) + " inputs are not a multiple of the " + std::to_string(pack) + " codes per int32";
  const uint64_t zero_pack = is_awq(config) ? 8 : codes_per_word(config);
  if (rows % zero_pack != 0)
    return std::to_string(rows) + " outputs are not a multiple of the " + std::to_string(zero_pack) +
           (is_awq(config) ? " codes" : " zero points") + " per int32";
  return "";
}

PackedLinear::PackedLinear(const QuantizationConfig& config, std::string module, uint64_t rows, uint64_t cols)
    : config_(config), module_(std::move(module)), rows_(rows), cols_(cols) {
  if (const std::string why = unpackable_reason(config, rows, cols); !why.empty())
    throw Error("cannot quantize '" + module_ + ".weight' [" + std::to_string(rows) + ", " + std::to_string(cols) +
                "]: " + why);
  group_ = group_of(config, cols);
  groups_ = cols / group_;
  const uint64_t pack = codes_per_word(config);
  qweight_.assign(rows * cols / pack, 0);
  qzeros_.assign(groups_ * rows / pack, 0);
  scales_.assign(groups_ * rows, 0);
  if (!is_awq(config)) {
    g_idx_.resize(cols);
    for (uint64_t i = 0; i < cols; ++i) g_idx_[i] = static_cast<uint32_t>(i / group_);
  }
}

void PackedLinear::quantize_rows(const float* w, uint64_t row, uint64_t n) {
  const uint32_t bits = static_cast<uint32_t>(config_.bits), pack = codes_per_word(config_);
  std::vector<uint8_t> codes(kRowBatch * cols_);
  std::vector<uint32_t> zeros(kRowBatch * groups_);
  for (uint64_t b0 = 0; b0 < n; b0 += kRowBatch) {
    const uint64_t m = std::min(kRowBatch, n - b0), r0 = row + b0;
    for (uint64_t r = 0; r < m; ++r)
      for (uint64_t g = 0; g < groups_; ++g) {
        const GroupQuant q = quantize_group(config_, w + (b0 + r) * cols_ + g * group_, group_,
                                            codes.data() + r * cols_ + g * group_);
        if (!q.finite)
          throw Error("'" + module_ + ".weight' holds NaN or Inf in output row " + std::to_string(r0 + r) +
                      " (inputs " + std::to_string(g * group_) + "-" + std::to_string((g + 1) * group_ - 1) +
                      "); it cannot be quantized");
        scales_[g * rows_ + r0 + r] = f32_to_f16(q.scale);
        zeros[r * groups_ + g] = q.zero;
      }
    if (is_awq(config_)) {
      // qweight [in, out/8]: output column 8k + m in nibble kAwqNibbleOfColumn[m] of word (i, k).
      for (uint64_t i = 0; i < cols_; ++i)
        for (uint64_t r = 0; r < m; ++r)
          qweight_[i * (rows_ / 8) + (r0 + r) / 8] |= uint32_t{codes[r * cols_ + i]}
                                                      << (4 * kAwqNibbleOfColumn[(r0 + r) % 8]);
      for (uint64_t g = 0; g < groups_; ++g)
        for (uint64_t r = 0; r < m; ++r)
          qzeros_[g * (rows_ / 8) + (r0 + r) / 8] |= zeros[r * groups_ + g] << (4 * kAwqNibbleOfColumn[(r0 + r) % 8]);
    } else {
      // qweight [in/pack, out]: input pack·k + j of output column c in slot j of word (k, c).
      for (uint64_t k = 0; k < cols_ / pack; ++k)
        for (uint64_t r = 0; r < m; ++r) {
          uint32_t word = 0;
          for (uint32_t j = 0; j < pack; ++j) word |= uint32_t{codes[r * cols_ + k * pack + j]} << (bits * j);
          qweight_[k * rows_ + r0 + r] = word;
        }
      // qzeros [G, out/pack], v1: zero − 1 (the symmetric zero 2^(bits−1) is never 0).
      for (uint64_t g = 0; g < groups_; ++g)
        for (uint64_t r = 0; r < m; ++r)
          qzeros_[g * (rows_ / pack) + (r0 + r) / pack] |= (zeros[r * groups_ + g] - 1) << (bits * ((r0 + r) % pack));
    }
  }
}

std::vector<TensorSpec> PackedLinear::specs(const QuantizationConfig& config, const std::string& module, uint64_t rows,
                                            uint64_t cols) {
  const uint64_t pack = codes_per_word(config), groups = cols / group_of(config, cols);
  std::vector<TensorSpec> s;
  if (is_awq(config)) s.push_back({module + ".qweight", DType::I32, {cols, rows / pack}});
  else s.push_back({module + ".qweight", DType::I32, {cols / pack, rows}});
  s.push_back({module + ".qzeros", DType::I32, {groups, rows / pack}});
  s.push_back({module + ".scales", DType::F16, {groups, rows}});
  if (!is_awq(config)) s.push_back({module + ".g_idx", DType::I32, {cols}});
  return s;
}

std::vector<TensorSpec> PackedLinear::specs() const { return specs(config_, module_, rows_, cols_); }

std::vector<std::span<const std::byte>> PackedLinear::data() const {
  std::vector<std::span<const std::byte>> d{std::as_bytes(std::span(qweight_)), std::as_bytes(std::span(qzeros_)),
                                            std::as_bytes(std::span(scales_))};
  if (!is_awq(config_)) d.push_back(std::as_bytes(std::span(g_idx_)));
  return d;
}

QuantizedTensors PackedLinear::tensors() const {
  const std::vector<TensorSpec> s = specs();
  const std::vector<std::span<const std::byte>> d = data();
  QuantizedTensors t{{s[0].name, s[0].dtype, s[0].shape, d[0]},
                     {s[1].name, s[1].dtype, s[1].shape, d[1]},
                     {s[2].name, s[2].dtype, s[2].shape, d[2]},
                     std::nullopt};
  if (s.size() > 3) t.g_idx = StoredTensor{s[3].name, s[3].dtype, s[3].shape, d[3]};
  return t;
}

}  // namespace vlmforge
