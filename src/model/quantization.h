#pragma once
// The quantization_config of a published quantized checkpoint (config.json): AWQ (AutoAWQ's
// GEMM packing) and GPTQ (AutoGPTQ / GPTQModel, checkpoint format v1 or v2), 4 or 8 bits. Any
// other method, bit width or packing is refused by name, so a checkpoint is never run with its
// codes misread.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/quant_format.h"

namespace vlmforge {

enum class QuantMethod { kAwq, kGptq };

struct QuantizationConfig {
  QuantMethod method = QuantMethod::kGptq;
  int bits = 4;
  int group_size = 128;  // input features per scale; -1: one group per row
  bool desc_act = false;  // GPTQ act-order: groups follow g_idx, not the column order
  bool sym = true;        // GPTQ: symmetric (zero = 2^(bits-1)); the zeros are stored either way
  // GPTQ v1 checkpoints store each zero point minus one; v2 (GPTQModel's checkpoint_format
  // "gptq_v2") stores it as it is.
  bool zeros_minus_one = true;
  // Modules (name substrings, as AutoAWQ matches them) kept unquantized.
  std::vector<std::string> modules_to_not_convert;

  // "awq 4-bit, group 128" / "gptq 8-bit v2, group 32, desc_act, asym".
  std::string describe() const;
  // The device layout of a weight with `cols` inputs (one group per row: a group as wide as the
  // row, rounded up to the layout's multiple of 32).
  kernels::QuantLayout device_layout(uint64_t cols, bool has_perm) const;
  // Whether `module` ("model.layers.0.mlp.up_proj") is one of modules_to_not_convert.
  bool keeps_unquantized(const std::string& module) const;

  // Parses config.json's "quantization_config" object; `source` names the file for errors.
  static QuantizationConfig from_json(const nlohmann::json& j, const std::string& source);
};

}  // namespace vlmforge
