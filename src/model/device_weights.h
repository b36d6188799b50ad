#pragma once
// The weights of one model (the language model or the vision tower) as buffers on the devices
// that run them, and the views their ops take. Matrices are lent from the checkpoint's memory map
// where the device can address host memory (no copy) and uploaded elsewhere; AWQ / GPTQ linear
// weights are repacked into the device quant layout (kernels/quant_format.h), one at a time, and
// uploaded into buffers of their own; norms, biases and LoRA factors go to the device as fp32. One loader for every model, so a linear layer is built,
// checked and given its PEFT adapters (runtime LoRA / DoRA, lora_B biases, modules_to_save) the
// same way everywhere.
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "backends/stream.h"
#include "io/safetensors.h"
#include "kernels/quantize.h"
#include "model/quantized_checkpoint.h"
#include "model/runtime_lora.h"

namespace vlmforge {

class DeviceWeights {
 public:
  // Tensors of `checkpoint`, replaced or adapted by `lora` (may be null), quantized as
  // `quantization` says (config.json's quantization_config); checkpoint and lora must outlive
  // this. `shape_source` names where expected shapes come from, for errors ("vision_config").
  DeviceWeights(const Checkpoint& checkpoint, const RuntimeLora* lora, std::optional<QuantizationConfig> quantization,
                std::string shape_source);
  // Quantize-on-load (--quant_method q8_0 / q4_0): every float linear weight whose input size
  // is a multiple of 32 is quantized as `scheme` says while it is loaded (one weight's codes at a
  // time beyond the model); the others stay as stored. For unquantized checkpoints only.
  void quantize_on_load(const kernels::QuantScheme& scheme) { quantize_on_load_ = scheme; }
  // Whether quantize-on-load applies to a weight of `cols` inputs.
  bool quantizes(uint64_t cols) const { return quantize_on_load_ && cols % 32 == 0; }
  // The float matrix `name` [rows, cols] quantized by the quantize-on-load scheme, on `device`.
  WeightView quantized_copy(Device& device, const std::string& name, uint64_t rows, uint64_t cols,
                            const std::string& what);

  bool has(const std::string& name) const;
  // A BF16/F16/F32 tensor of exactly `shape`, or an error naming it.
  const TensorRef& tensor(const std::string& name, const std::vector<uint64_t>& shape) const;
  // A stored matrix [rows, cols] (or a tensor of `shape` whose elements are those) on `device`.
  WeightView matrix(Device& device, const std::string& name, uint64_t rows, uint64_t cols, const std::string& what);
  WeightView matrix(Device& device, const std::string& name, const std::vector<uint64_t>& shape, uint64_t rows,
                    uint64_t cols, const std::string& what);
  // A vector of `n` values as fp32 on `device`.
  VectorView vector(Device& device, const std::string& name, uint64_t n, const std::string& what);
  // The linear layer `module` (its "<module>.weight" [out, in], or its quantized
  // "<module>.qweight" and companions, and with `bias` "<module>.bias"), with its adapters on
  // `device`.
  LinearView linear(Device& device, const std::string& module, uint64_t out, uint64_t in, bool bias,
                    const std::string& what);
  // Whether adapters target `module`'s weight.
  bool adapted(const std::string& module) const;

 private:
  // The repacked weight of a quantized linear of [rows, cols].
  WeightView quantized_matrix(Device& device, const CheckpointQuantizedLinear& linear, uint64_t rows, uint64_t cols,
                              const std::string& what);
  VectorView put_vector(Device& device, std::vector<float> values, const std::string& what);
  const DeviceBuffer& keep(DeviceBuffer buffer);

  const Checkpoint& checkpoint_;
  const RuntimeLora* lora_;
  std::optional<QuantizationConfig> quantization_;
  std::optional<kernels::QuantScheme> quantize_on_load_;
  std::string shape_source_;
  std::deque<DeviceBuffer> buffers_;  // a deque: views point at its elements
  std::deque<std::vector<float>> host_vectors_;  // fp32 values lent to host-addressable devices
};

}  // namespace vlmforge
