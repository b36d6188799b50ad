// vlmforge generate: random-weight checkpoints of the published Qwen2.5 / Qwen2.5-VL shapes and
// random PEFT adapters for them (tests, benchmarks, demos: real weights cannot be downloaded).
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "model/random_checkpoint.h"
#include "util/bytes.h"
#include "util/error.h"
#include "util/progress.h"

namespace vlmforge::cli {

namespace {

DType parse_float_dtype(const std::string& name) {
  if (name == "bfloat16" || name == "bf16") return DType::BF16;
  if (name == "float16" || name == "fp16") return DType::F16;
  if (name == "float32" || name == "fp32") return DType::F32;
  throw UsageError("--dtype: expected bfloat16, float16 or float32, got '" + name + "'");
}

struct CheckpointArgs {
  std::string preset;
  std::string output_dir;
  std::string dtype = "bfloat16";
  int num_layers = 0;
  int vision_depth = 0;
  int vocab_size = 0;
  uint64_t seed = 0;
  std::string max_shard_size = "4GB";
  std::string layout = "legacy";
  std::string tokenizer;
};

struct AdapterArgs {
  std::string model;
  std::string output_dir;
  int r = 8;
  double lora_alpha = 16;
  std::vector<std::string> target_modules;
  bool use_dora = false;
  bool use_rslora = false;
  bool include_vision = false;
  std::string dtype = "bfloat16";
  uint64_t seed = 1;
};

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  CLI::App* cmd = app.add_subcommand(
      "generate", "Write random-weight checkpoints with the exact tensor names, shapes, dtypes and sharding of\n"
                  "published Qwen2.5 / Qwen2.5-VL models, and random PEFT LoRA adapters for them.");
  cmd->require_subcommand(1);

  auto ck = std::make_shared<CheckpointArgs>();
  CLI::App* checkpoint = cmd->add_subcommand("checkpoint", "Random-weight model checkpoint");
  std::string presets;
  for (const auto& n : preset_names()) presets += (presets.empty() ? "" : ", ") + n;
  checkpoint->add_option("--preset", ck->preset, "Model shape: " + presets)->required();
  checkpoint->add_option("--output_dir", ck->output_dir, "Directory to create")->required();
  checkpoint->add_option("--dtype", ck->dtype, "bfloat16, float16 or float32")->capture_default_str();
  checkpoint->add_option("--num_layers", ck->num_layers, "Keep only this many decoder layers (smaller files, same shapes)");
  checkpoint->add_option("--vision_depth", ck->vision_depth, "Keep only this many vision blocks");
  checkpoint->add_option("--vocab_size", ck->vocab_size,
                         "Vocabulary rows (e.g. 151936 so that a tiny preset runs with the real tokenizer)");
  checkpoint->add_option("--seed", ck->seed, "Random seed")->capture_default_str();
  checkpoint->add_option("--max_shard_size", ck->max_shard_size, "Shard size (published checkpoints: ~4GB)")
      ->capture_default_str();
  checkpoint->add_option("--layout", ck->layout,
                         "Qwen2.5-VL weight names: legacy (visual.*, model.layers.*; published) or transformers "
                         "(model.visual.*, model.language_model.*)")
      ->capture_default_str();
  checkpoint->add_option("--tokenizer", ck->tokenizer,
                         "A tokenizer.json to copy into the checkpoint (e.g. ../shared/tokenizer/tokenizer.json), "
                         "so that infer and score can run on it");
  checkpoint->callback([ck, &exit_code] {
    ModelConfig config = preset_config(ck->preset);
    if (ck->num_layers > 0) config.num_hidden_layers = config.max_window_layers = ck->num_layers;
    if (ck->vocab_size > 0) config.vocab_size = ck->vocab_size;
    if (ck->vision_depth > 0 && config.vision) {
      config.vision->depth = ck->vision_depth;
      std::erase_if(config.vision->fullatt_block_indexes, [&](int i) { return i >= ck->vision_depth; });
    }
    CheckpointOptions options;
    options.dtype = parse_float_dtype(ck->dtype);
    options.seed = ck->seed;
    options.max_shard_size = parse_byte_size(ck->max_shard_size, "--max_shard_size");
    if (ck->layout != "legacy" && ck->layout != "transformers")
      throw UsageError("--layout: expected legacy or transformers, got '" + ck->layout + "'");
    options.layout = ck->layout == "legacy" ? VlWeightLayout::kLegacy : VlWeightLayout::kTransformers;
    options.progress = ProgressBar::stderr_is_terminal();
    if (!ck->tokenizer.empty() && !std::filesystem::is_regular_file(ck->tokenizer))
      throw UsageError("--tokenizer: " + ck->tokenizer + " is not a file");
    generate_checkpoint(config, ck->output_dir, options);
    if (!ck->tokenizer.empty())
      std::filesystem::copy_file(ck->tokenizer, std::filesystem::path(ck->output_dir) / "tokenizer.json",
                                 std::filesystem::copy_options::overwrite_existing);
    std::printf("Wrote a random-weight %s checkpoint to %s\n", ck->preset.c_str(), ck->output_dir.c_str());
    exit_code = kExitOk;
  });

  auto ad = std::make_shared<AdapterArgs>();
  CLI::App* adapter = cmd->add_subcommand("adapter", "Random PEFT LoRA adapter for an existing checkpoint");
  adapter->add_option("--model", ad->model, "Base model directory")->required();
  adapter->add_option("--output_dir", ad->output_dir, "Adapter directory to create")->required();
  adapter->add_option("--r", ad->r, "LoRA rank")->capture_default_str();
  adapter->add_option("--lora_alpha", ad->lora_alpha, "LoRA alpha")->capture_default_str();
  adapter->add_option("--target_modules", ad->target_modules,
                      "Module names (default: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj)")
      ->delimiter(',');
  adapter->add_flag("--use_dora", ad->use_dora, "DoRA adapter (with magnitude vectors)");
  adapter->add_flag("--use_rslora", ad->use_rslora, "rsLoRA scaling alpha/sqrt(r)");
  adapter->add_flag("--include_vision", ad->include_vision, "Also adapt the vision tower's matching modules");
  adapter->add_option("--dtype", ad->dtype, "bfloat16, float16 or float32")->capture_default_str();
  adapter->add_option("--seed", ad->seed, "Random seed")->capture_default_str();
  adapter->callback([ad, &exit_code] {
    AdapterOptions options;
    options.r = ad->r;
    options.lora_alpha = ad->lora_alpha;
    if (!ad->target_modules.empty()) options.target_modules = ad->target_modules;
    options.use_dora = ad->use_dora;
    options.use_rslora = ad->use_rslora;
    options.include_vision = ad->include_vision;
    options.dtype = parse_float_dtype(ad->dtype);
    options.seed = ad->seed;
    const Checkpoint base(ad->model);
    generate_adapter(base, ad->output_dir, options);
    std::printf("Wrote a random r=%d adapter for %s to %s\n", ad->r, ad->model.c_str(), ad->output_dir.c_str());
    exit_code = kExitOk;
  });
}

}  // namespace vlmforge::cli
