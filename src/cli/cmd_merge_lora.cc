// vlmforge merge-lora: swift-compatible flags over the streaming merge in lora/merge.h.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/base_model.h"
#include "cli/commands.h"
#include "lora/merge.h"
#include "util/bytes.h"
#include "util/error.h"
#include "util/interrupt.h"
#include "util/progress.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;

namespace {

struct MergeArgs {
  std::string model;
  std::vector<std::string> adapters;
  std::string output_dir;
  std::string max_shard_size = "5GB";
  std::string dtype = "auto";
  size_t threads = 0;
  bool dry_run = false;
  bool overwrite = false;
  bool allow_nonfinite = false;
  bool strict = false;
  bool json = false;
  std::string device_map;
  std::string safe_serialization = "true";
};

std::optional<DType> parse_output_dtype(const std::string& name) {
  if (name == "auto") return std::nullopt;
  if (name == "bfloat16" || name == "bf16") return DType::BF16;
  if (name == "float16" || name == "fp16" || name == "half") return DType::F16;
  if (name == "float32" || name == "fp32" || name == "float") return DType::F32;
  throw UsageError("--dtype: expected auto, bfloat16, float16 or float32, got '" + name + "'");
}

std::string update_description(const TensorUpdate& u) {
  char buf[160];
  switch (u.kind) {
    case TensorUpdate::Kind::kReplace: return "replaced (modules_to_save / trained bias)";
    case TensorUpdate::Kind::kLoraBias: std::snprintf(buf, sizeof buf, "lora_B bias, scale %.6g", u.module->scaling); return buf;
    case TensorUpdate::Kind::kLora:
    case TensorUpdate::Kind::kDora:
      std::snprintf(buf, sizeof buf, "%s r=%d scale=%.6g%s", u.kind == TensorUpdate::Kind::kDora ? "dora" : "lora",
                    u.module->rank, u.module->scaling, u.transposed ? " (transposed)" : "");
      return buf;
  }
  return "";
}

nlohmann::json plan_json(const MergePlan& plan, const std::vector<Adapter>& adapters) {
  nlohmann::json changed = nlohmann::json::array();
  for (const auto& t : plan.tensors) {
    if (t.updates.empty()) continue;
    nlohmann::json updates = nlohmann::json::array();
    for (const auto& u : t.updates)
      updates.push_back({{"adapter", adapters[u.adapter_index].dir().string()}, {"change", update_description(u)}});
    changed.push_back({{"name", t.output.name}, {"dtype", dtype_name(t.output.dtype)}, {"updates", updates}});
  }
  nlohmann::json shards = nlohmann::json::array();
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    uint64_t bytes = 0;
    for (size_t i : plan.shards[s]) bytes += plan.tensors[i].output.nbytes();
    shards.push_back({{"file", plan.shard_name(s)}, {"tensors", plan.shards[s].size()}, {"bytes", bytes}});
  }
  return {{"output_dir", plan.output_dir.string()}, {"tensors", plan.tensors.size()},
          {"changed_tensors", changed},          {"shards", shards},
          {"total_bytes", plan.total_bytes},     {"warnings", plan.warnings}};
}

void print_plan(const MergePlan& plan) {
  std::printf("Changed tensors (%zu of %zu):\n", plan.changed_tensors(), plan.tensors.size());
  for (const auto& t : plan.tensors) {
    if (t.updates.empty()) continue;
    std::string changes;
    for (const auto& u : t.updates) changes += (changes.empty() ? "" : "; ") + update_description(u);
    std::printf("  %-60s %s\n", t.output.name.c_str(), changes.c_str());
  }
  std::printf("Output %s (%zu shard%s, %s):\n", plan.output_dir.string().c_str(), plan.shards.size(),
              plan.shards.size() == 1 ? "" : "s", format_bytes(plan.total_bytes).c_str());
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    uint64_t bytes = 0;
    for (size_t i : plan.shards[s]) bytes += plan.tensors[i].output.nbytes();
    std::printf("  %-40s %6zu tensors  %s\n", plan.shard_name(s).c_str(), plan.shards[s].size(), format_bytes(bytes).c_str());
  }
}

int run(const MergeArgs& args) {
  if (args.adapters.empty()) throw UsageError("--adapters (or --lora) is required");
  if (args.safe_serialization != "true" && args.safe_serialization != "True" && args.safe_serialization != "1")
    throw UsageError("--safe_serialization: vlmforge always writes safetensors; only 'true' is accepted");
  MergeOptions options;
  options.model_dir = resolve_base_model(args.model, args.adapters);
  for (const auto& a : args.adapters) options.adapter_dirs.emplace_back(a);
  options.output_dir = args.output_dir;
  options.max_shard_size = parse_byte_size(args.max_shard_size, "--max_shard_size");
  if (options.max_shard_size == 0) throw UsageError("--max_shard_size must be positive");
  options.dtype = parse_output_dtype(args.dtype);
  options.threads = args.threads;
  options.overwrite = args.overwrite;
  options.allow_nonfinite = args.allow_nonfinite;
  options.progress = !args.json && ProgressBar::stderr_is_terminal();

  const Checkpoint base(options.model_dir);
  std::vector<Adapter> adapters;
  for (const auto& dir : options.adapter_dirs) adapters.emplace_back(dir);
  const MergePlan plan = plan_merge(base, adapters, options);
  for (const auto& w : plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());

  if (args.dry_run) {
    if (args.json) std::printf("%s\n", plan_json(plan, adapters).dump(2).c_str());
    else print_plan(plan);
    return kExitOk;
  }
  catch_interrupts();  // Ctrl-C stops between blocks and removes the temporary output
  const MergeStats stats = execute_merge(base, plan, options);
  const double mb_per_s = static_cast<double>(stats.bytes_written) / 1e6 / std::max(stats.seconds, 1e-9);
  if (args.json) {
    auto j = plan_json(plan, adapters);
    j["seconds"] = stats.seconds;
    j["megabytes_per_second"] = mb_per_s;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("Merged %zu adapter%s into %zu of %zu tensors: %s written to %s in %.2f s (%.0f MB/s)\n",
                adapters.size(), adapters.size() == 1 ? "" : "s", plan.changed_tensors(), plan.tensors.size(),
                format_bytes(stats.bytes_written).c_str(), plan.output_dir.string().c_str(), stats.seconds, mb_per_s);
  }
  return kExitOk;
}

}  // namespace

void add_merge_lora_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<MergeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "merge-lora",
      "Merge PEFT LoRA adapters into a Hugging Face checkpoint (like `swift merge-lora`).\n"
      "Streams one tensor at a time from memory-mapped files, so memory stays bounded whatever the\n"
      "model size. Runs on the CPU: merging needs no accelerator. Math in fp32, one rounding to the\n"
      "output dtype. Supports LoRA, rsLoRA, DoRA, rank/alpha patterns, fan_in_fan_out, embedding LoRA,\n"
      "lora_B biases and modules_to_save. The output is always safetensors, written to a temporary\n"
      "directory and renamed into place when complete.");
  cmd->add_option("--model", args->model,
                  "Base model directory (config.json + *.safetensors); default: the one the first adapter's args.json "
                  "(swift) or adapter_config.json names");
  cmd->add_option("--adapters,--lora", args->adapters,
                  "Adapter directories (adapter_config.json + adapter_model.safetensors), applied in order")
      ->delimiter(',');
  cmd->add_option("--output_dir", args->output_dir, "Output directory (default: <first adapter dir>-merged)");
  cmd->add_option("--max_shard_size", args->max_shard_size, "Largest output shard, e.g. 5GB, 2GiB")
      ->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "Output dtype of float tensors: auto (keep), bfloat16, float16, float32")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "Worker threads (default: all cores)");
  cmd->add_flag("--dry_run", args->dry_run, "Print the changed tensors and output shards; write nothing");
  cmd->add_flag("--overwrite", args->overwrite, "Replace a non-empty output directory");
  cmd->add_flag("--allow_nonfinite", args->allow_nonfinite,
                "Merge an adapter holding NaN/Inf values (a warning instead of an error)");
  cmd->add_flag("--strict", args->strict, "Accepted for older scripts: NaN/Inf values are errors by default");
  cmd->add_flag("--json", args->json, "Print the plan / result as JSON on stdout");
  cmd->add_option("--device_map", args->device_map, "Accepted for swift compatibility; merging runs on the CPU");
  cmd->add_option("--safe_serialization", args->safe_serialization,
                  "Accepted for swift compatibility; output is always safetensors");
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace vlmforge::cli
