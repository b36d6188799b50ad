#pragma once
// PEFT LoRA adapters applied at inference time, unmerged: y = x·Wᵀ + Σ s·(x·Aᵀ)·Bᵀ (+ bias).
// DoRA scales output rows by m / ‖W + s·B·A‖ (computed once at load), as the merged weight would.
// Full tensors saved by modules_to_save replace the base tensors; lora_B biases are folded into
// the layer bias. Embedding LoRA and fan_in_fan_out adapters are merge-only (clear error). A base
// linear stored quantized (AWQ / GPTQ "<module>.qweight") takes adapters as well, as PEFT applies
// them over quantized layers: DoRA's norms then come from the dequantized weight.
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/quantization.h"

namespace vlmforge {

struct LinearLora {
  std::vector<float> a;  // [rank, in]
  std::vector<float> b;  // [out, rank]
  size_t rank = 0;
  float scale = 1;
};

struct LinearAdapters {
  std::vector<LinearLora> loras;   // summed, in adapter order
  std::vector<float> dora_factor;  // [out] m / ‖W + ΔW‖ per row; empty without DoRA
  std::vector<float> bias_delta;   // [out] Σ s·lora_B.bias; empty without lora_bias
};

class RuntimeLora {
 public:
  // `quantization`: the base's quantization_config (null when it has none).
  RuntimeLora(const Checkpoint& base, const std::vector<std::filesystem::path>& adapter_dirs,
              const QuantizationConfig* quantization);

  // Adapters on the linear layer whose weight tensor is `weight_name` (a base tensor name;
  // "<module>.weight" for a quantized module too).
  const LinearAdapters* find(const std::string& weight_name) const;
  // A full replacement for base tensor `name` (modules_to_save), or nullptr.
  const TensorRef* replacement(const std::string& name) const;
  bool empty() const { return layers_.empty() && replacements_.empty(); }

 private:
  std::vector<Adapter> adapters_;  // owns the mapped adapter files
  std::unordered_map<std::string, LinearAdapters> layers_;
  std::unordered_map<std::string, const TensorRef*> replacements_;
};

}  // namespace vlmforge
