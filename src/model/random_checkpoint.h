#pragma once
// Random-weight checkpoints and PEFT adapters with the exact tensor names, shapes, dtypes and
// sharding of the published models. Real weights cannot be downloaded here; tests, benchmarks
// and the demo use these instead. Values are deterministic for a given seed and tensor name.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io/dtype.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/layout.h"

namespace vlmforge {

struct CheckpointOptions {
  DType dtype = DType::BF16;
  uint64_t seed = 0;
  uint64_t max_shard_size = 4'000'000'000;  // the published Qwen2.5 checkpoints use ~4 GB shards
  VlWeightLayout layout = VlWeightLayout::kLegacy;
  bool progress = false;
};

// Writes config.json, generation_config.json and the safetensors shards (+ index) to out_dir.
void generate_checkpoint(const ModelConfig& config, const std::filesystem::path& out_dir,
                         const CheckpointOptions& options);

struct AdapterOptions {
  int r = 8;
  double lora_alpha = 16;
  std::vector<std::string> target_modules{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  bool use_dora = false;
  bool use_rslora = false;
  bool include_vision = false;  // swift's default excludes the vision tower
  DType dtype = DType::BF16;
  uint64_t seed = 1;
};

// Writes adapter_config.json and adapter_model.safetensors for `base`, with random non-zero A
// and B (so merging changes the weights) and, for DoRA, magnitudes near the base row norms.
void generate_adapter(const Checkpoint& base, const std::filesystem::path& out_dir, const AdapterOptions& options);

// Deterministic pseudo-random fill used by the generators: uniform in [center-spread, center+spread].
void fill_random(std::span<std::byte> out, DType dtype, uint64_t& state, float center, float spread);

}  // namespace vlmforge
