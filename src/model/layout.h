#pragma once
// The tensors of a Qwen2 / Qwen2.5-VL checkpoint: names, shapes and order exactly as transformers
// saves them (state_dict order), for both weight layouts of Qwen2_5_VLForConditionalGeneration.
#include <string>
#include <vector>

#include "io/dtype.h"
#include "io/safetensors_writer.h"
#include "model/config.h"

namespace vlmforge {

enum class VlWeightLayout {
  kLegacy,        // "visual.*", "model.layers.*", "lm_head" (published checkpoints, transformers < 4.52)
  kTransformers,  // "model.visual.*", "model.language_model.*", "lm_head" (transformers >= 4.52)
};

std::vector<TensorSpec> checkpoint_tensors(const ModelConfig& config, DType dtype,
                                           VlWeightLayout layout = VlWeightLayout::kLegacy);

// Published configurations by name: "qwen2.5-0.5b" … "qwen2.5-72b", "qwen2.5-vl-3b" … "qwen2.5-vl-72b",
// plus "tiny" and "tiny-vl" for tests. Throws UsageError listing the names on an unknown one.
ModelConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace vlmforge
