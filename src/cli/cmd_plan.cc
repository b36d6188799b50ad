// vlmforge plan: where each module of a model goes on a set of devices and how much memory each
// device needs (weights, KV cache, activation workspace, reserve), from checkpoint headers, a
// config.json or a preset: no weights are read, and the devices need not be present.
#include <cstdio>
#include <optional>
#include <thread>

#include "cli/commands.h"
#include "cli/vision_flags.h"
#include "plan/plan_flags.h"
#include "util/bytes.h"
#include "util/error.h"

namespace vlmforge::cli {

namespace {

struct PlanArgs {
  std::string model;
  std::string preset;
  std::string dtype;
  PlacementFlags placement;
  std::string strategy = "auto";
  size_t max_batch_size = 1;
  size_t max_model_len = 0;
  std::string kv_cache_dtype = "float32";
  size_t threads = 0;
  std::optional<uint64_t> max_pixels;
  bool json = false;
};

int run(PlanArgs a) {
  const ModelShape shape = load_model_shape(a.model, a.preset, a.dtype);
  PlanOptions o;
  o.max_batch_size = a.max_batch_size;
  o.max_model_len = a.max_model_len;
  o.kv_cache_dtype = a.kv_cache_dtype == "bfloat16" ? DType::BF16 : DType::F32;
  o.threads = a.threads ? a.threads : std::max(1u, std::thread::hardware_concurrency());
  o.max_pixels = pixel_budget_flags(std::nullopt, a.max_pixels).max_pixels;
  if (a.placement.device_map.empty() || a.placement.device_map == "auto") a.placement.device_map = a.strategy;
  else if (a.strategy != "auto") throw UsageError("give --strategy or --device_map FILE, not both");
  const Plan plan = plan_from_flags(shape, a.placement, o, DeviceRegistry::builtin(), process_environment());
  for (const auto& w : plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  if (a.json) {
    std::printf("%s\n", plan.to_json().dump().c_str());
    return kExitOk;
  }
  uint64_t kv = 0, ws = 0;
  for (const auto& d : plan.devices) {
    kv += d.kv_cache;
    ws += d.workspace;
  }
  std::printf("%s: weights %s, KV cache %s (max_batch_size %zu x max_model_len %zu, %s), workspace %s\n",
              shape.source.c_str(), format_bytes(shape.weight_bytes()).c_str(), format_bytes(kv).c_str(),
              plan.options.max_batch_size, plan.options.max_model_len,
              std::string(dtype_name(plan.options.kv_cache_dtype)).c_str(), format_bytes(ws).c_str());
  std::printf("%s", plan.table().c_str());
  std::printf("device_map:\n%s\n", plan.hf_device_map().dump(1).c_str());
  return kExitOk;
}

}  // namespace

void add_plan_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Plan where a model's modules go on a set of devices, with everything counted: weights per module\n"
              "(from safetensors headers, or a config.json / preset without weights), the KV cache for\n"
              "max_batch_size x max_model_len on each device's layers, the prefill activation workspace, logits,\n"
              "the vision tower's per-image activations, and a reserve. Devices need not be present:\n"
              "  vlmforge plan --preset qwen2.5-vl-32b --devices npu:0-7 --max_memory 60GiB --max_model_len 32768\n"
              "Prints a per-device table and the Hugging Face-format device_map. Fails with the shortfall per\n"
              "device and what would make it fit when nothing does.");
  cmd->add_option("--model", a->model, "Checkpoint directory, or a directory / file with a config.json only");
  cmd->add_option("--preset", a->preset, "A published shape instead of --model (e.g. qwen2.5-vl-32b, qwen2.5-7b)");
  cmd->add_option("--dtype", a->dtype, "Weight dtype for a config or preset (default: its torch_dtype)");
  cmd->add_option("--devices", a->placement.devices, "Devices: cpu:0,cpu:1 or npu:0-7 / cuda:0,cuda:1 (default cpu:0)");
  cmd->add_option("--max_memory", a->placement.max_memory,
                  "Most memory per device (accelerate's max_memory): 60GiB for every device, or cuda:0=20GiB,cuda:1=24GiB");
  cmd->add_option("--strategy", a->strategy, "auto / balanced: even spread; sequential: fill the first device first")
      ->capture_default_str();
  cmd->add_option("--device_map", a->placement.device_map, "An explicit Hugging Face-format map (JSON file) to check");
  cmd->add_flag("--cpu_offload", a->placement.cpu_offload, "Put what does not fit on the host CPU (slow; warns)");
  cmd->add_option("--reserve", a->placement.reserve, "Memory kept free per device (default 0 on cpu, 1GiB on cuda/npu)");
  cmd->add_option("--max_batch_size", a->max_batch_size, "Sequences decoded together")->capture_default_str();
  cmd->add_option("--max_model_len", a->max_model_len, "Longest sequence (default: max_position_embeddings)");
  cmd->add_option("--kv_cache_dtype", a->kv_cache_dtype, "KV cache storage, as infer's")
      ->check(CLI::IsMember({"float32", "bfloat16"}))
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "Host threads per cpu device (default: all cores)");
  cmd->add_option("--max_pixels", a->max_pixels,
                  "Largest image for the vision tower's workspace (default: MAX_PIXELS env or 12845056, as infer)");
  cmd->add_flag("--json", a->json, "JSON output: devices, totals, device_map, warnings");
  cmd->callback([a, &exit_code] { exit_code = run(*a); });
}

}  // namespace vlmforge::cli
