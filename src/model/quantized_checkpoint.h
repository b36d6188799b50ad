#pragma once
// The quantized linear layers of a checkpoint: a module whose weight is stored as
// "<module>.qweight" (AWQ / GPTQ) with its qzeros, scales (and GPTQ g_idx), and what each tensor
// takes on a device once repacked (model/quant_repack.h).
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "model/quant_repack.h"
#include "model/quantization.h"

namespace vlmforge {

struct CheckpointQuantizedLinear {
  QuantizedTensors tensors;
  std::vector<const TensorRef*> refs;  // the stored tensors, to release their pages once repacked
};

// The tensors of `module` when its weight is quantized ("<module>.qweight" present), nullopt
// otherwise; an error naming the tensor when a companion is missing or `config` (config.json's
// quantization_config) is null.
std::optional<CheckpointQuantizedLinear> find_quantized_linear(const Checkpoint& checkpoint,
                                                               const QuantizationConfig* config,
                                                               const std::string& module);

// quantized_shape() with errors prefixed by the checkpoint's path.
QuantizedShape checked_quantized_shape(const Checkpoint& checkpoint, const QuantizationConfig& config,
                                       const QuantizedTensors& tensors);

// Every tensor with the bytes it takes on a device: stored bytes, except that a quantized
// linear's qweight counts its repacked layout and its qzeros, scales and g_idx nothing (they
// are part of that layout). In the checkpoint's order.
std::vector<std::pair<std::string, uint64_t>> device_tensor_bytes(const Checkpoint& checkpoint,
                                                                  const QuantizationConfig* config);

}  // namespace vlmforge
