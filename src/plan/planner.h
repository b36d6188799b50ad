#pragma once
// Placement of a model's modules on devices, planned from checkpoint headers (or a config.json /
// preset alone) before anything is loaded: weight bytes per module, plus the runtime memory each
// device needs (KV cache of its layers for max_batch_size × max_model_len, the activation
// workspace of the prefill chunk, logits, the vision tower's per-image activations) and a stated
// reserve. Placements and maps use Hugging Face module names ("model.layers.3", "lm_head").
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "backends/registry.h"
#include "io/dtype.h"
#include "kernels/quantize.h"
#include "model/config.h"

namespace vlmforge {

enum class ModuleKind { kVision, kEmbed, kLayer, kNorm, kHead };

struct PlanModule {
  std::string name;  // Hugging Face module name
  ModuleKind kind;
  int layer = -1;    // decoder layer index for kLayer
  uint64_t weight_bytes = 0;
};

// The modules of a model in Hugging Face order (vision tower, embeddings, layers, norm, lm_head).
// A tied lm_head is listed with 0 bytes of its own: it is the embedding matrix.
struct ModelShape {
  ModelConfig config;
  std::vector<PlanModule> modules;
  std::string source;  // the directory, config.json or preset it came from

  uint64_t weight_bytes() const;
  // From the safetensors headers of a checkpoint directory (no tensor data is read but GPTQ's
  // g_idx, which decides whether a quantized weight's layout carries a column permutation).
  // Quantized linears count the bytes of their repacked device layout.
  // With `quantize_on_load` (an unquantized checkpoint run with --quant_method q8_0 / q4_0), the
  // decoder's and lm_head's linears whose input size is a multiple of 32 count their codes.
  static ModelShape from_checkpoint(const std::filesystem::path& model_dir,
                                    const kernels::QuantScheme* quantize_on_load = nullptr);
  // The layout of the linears' codes when quantized on load.
  std::optional<kernels::QuantLayout> quantized_on_load;
  // From a config alone (a config.json or a preset), weights of `dtype`; with a
  // quantization_config, the decoder layers' linear weights in their device quant layout.
  static ModelShape from_config(const ModelConfig& config, DType dtype, std::string source);
  // Groups (tensor name, bytes) into modules; throws naming a tensor that belongs to none.
  static ModelShape from_tensors(const ModelConfig& config, const std::vector<std::pair<std::string, uint64_t>>& tensors,
                                 std::string source);
};

enum class PlanStrategy { kBalanced, kSequential };
PlanStrategy parse_plan_strategy(const std::string& name);  // auto | balanced | sequential

struct PlanOptions {
  size_t max_batch_size = 1;
  size_t max_model_len = 0;  // 0: config max_position_embeddings
  DType kv_cache_dtype = DType::F32;
  size_t prefill_chunk = 512;       // tokens per prefill step (GenerationParams::prefill_chunk)
  size_t logit_rows = 0;            // logits computed at once; 0: max_batch_size (generation)
  size_t threads = 1;               // host threads of a cpu device (attention score buffers per thread)
  PlanStrategy strategy = PlanStrategy::kBalanced;
  bool cpu_offload = false;         // put what does not fit on the host CPU (slow)
  std::optional<uint64_t> offload_memory;  // the host's share for offload; default MemAvailable
  std::optional<uint64_t> reserve;  // per device; default 0 on cpu, 1 GiB on accelerators
  uint64_t max_pixels = 12845056;   // Qwen2.5-VL preprocessor default (16384 × 28 × 28)
  std::optional<kernels::QuantScheme> quantize_on_load;  // --quant_method q8_0 / q4_0
};

// What a device holds and needs.
struct DeviceUse {
  DeviceTarget target;
  std::vector<size_t> modules;  // indices into ModelShape::modules
  uint64_t weights = 0, kv_cache = 0, workspace = 0, reserve = 0;
  bool offload = false;  // host CPU taking what did not fit on the accelerators

  uint64_t estimate() const { return weights + kv_cache + workspace; }  // accounted at run time
  uint64_t total() const { return estimate() + reserve; }
  int64_t free_after() const { return static_cast<int64_t>(target.capacity) - static_cast<int64_t>(total()); }
};

struct Plan {
  ModelShape shape;
  PlanOptions options;
  std::vector<DeviceUse> devices;
  std::vector<size_t> module_device;  // module index -> index into devices
  std::vector<std::string> warnings;

  // {"model.embed_tokens": "cuda:0", ...} in module order (the Hugging Face device_map format).
  nlohmann::ordered_json hf_device_map() const;
  nlohmann::ordered_json to_json() const;
  std::string table() const;  // the per-device table for the terminal
};

// Memory one device needs for a set of modules (runtime parts included).
struct DeviceCost {
  uint64_t weights = 0, kv_cache = 0, workspace = 0;
  uint64_t total() const { return weights + kv_cache + workspace; }
};
DeviceCost device_cost(const ModelShape& shape, const std::vector<size_t>& modules, const PlanOptions& options,
                       const DeviceTarget& target);

// Places every module (strategy, optional offload); throws an Error with the shortfall per device
// and what would make it fit when nothing does.
Plan make_plan(const ModelShape& shape, const std::vector<DeviceTarget>& devices, const PlanOptions& options);
// An explicit Hugging Face-format map (module or module prefix -> device name or index),
// validated: unknown modules, modules left out, split decoder layers, tied weights apart,
// devices not in `devices`, and devices over capacity are errors naming them.
Plan plan_from_map(const ModelShape& shape, const std::vector<DeviceTarget>& devices, const nlohmann::json& map,
                   const PlanOptions& options, const std::string& source);
// The device names an explicit map uses, in first-use order (for --device_map without --devices).
std::vector<DeviceSpec> devices_in_map(const nlohmann::json& map, const std::string& source);

}  // namespace vlmforge
