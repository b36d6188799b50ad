#pragma once
// `vlmforge export`: a float checkpoint (with LoRA adapters merged in the same pass) written as a
// published-format AWQ or GPTQ checkpoint, its decoder linears quantized round-to-nearest
// (model/quant_pack.h). Streams like merge-lora: one tensor at a time from the memory maps,
// merged in fp32 (lora/merge.h), quantized, written; only one quantized linear is held whole.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lora/merge.h"
#include "model/quantization.h"

namespace vlmforge {

struct ExportOptions {
  // model_dir, adapter_dirs, output_dir (required), max_shard_size, threads, overwrite,
  // allow_nonfinite, progress; dtype is float16 whatever it says (the published checkpoints'
  // and the AWQ / GPTQ kernels' activation dtype).
  MergeOptions merge;
  QuantizationConfig quant;  // method, bits (4, or 8 for GPTQ), group_size (-1 or a multiple of 32)
};

// One output tensor: a whole planned tensor (merged as merge-lora would write it), or one part
// of a quantized linear (qweight, qzeros, scales, g_idx) made from its merged weight.
struct ExportTensor {
  TensorSpec output;
  size_t planned;    // index into ExportPlan::merge.tensors
  int part = -1;     // -1: written as merge-lora writes it; else the index into PackedLinear::specs()
};

struct ExportPlan {
  MergePlan merge;                 // every base tensor, float16, with its updates
  std::vector<ExportTensor> tensors;
  std::vector<std::vector<size_t>> shards;  // indices into tensors
  nlohmann::ordered_json quantization_config;
  std::vector<std::string> kept_modules;    // modules_to_not_convert written (the vision tower)
  size_t quantized_linears = 0;
  uint64_t total_bytes = 0;
  std::string shard_name(size_t shard) const { return shard_file_name(shard, shards.size()); }
};

// Whether `tensor` is a decoder linear's weight that export quantizes: q/k/v/o_proj and
// gate/up/down_proj of a language-model layer (not the vision tower's, lm_head or embeddings).
bool is_exported_linear(const std::string& tensor);

// Checks everything (the model is not quantized already, every quantized weight's shape fits
// the format, the adapters fit the model) and plans the output; writes nothing.
ExportPlan plan_export(const Checkpoint& base, const std::vector<Adapter>& adapters, const ExportOptions& options);

struct ExportStats {
  double seconds = 0;
  uint64_t bytes_written = 0;
};

// Writes the checkpoint into a temporary directory beside the output, renamed into place when
// complete (lora/merge.h's StagedOutputDir).
ExportStats execute_export(const Checkpoint& base, const ExportPlan& plan, const ExportOptions& options);

}  // namespace vlmforge
