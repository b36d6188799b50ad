// vlmforge export: ms-swift export's quantization flags over the streaming RTN export in
// model/quantized_export.h (adapters merged in the same pass).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/base_model.h"
#include "cli/commands.h"
#include "model/quantized_export.h"
#include "util/bytes.h"
#include "util/error.h"
#include "util/interrupt.h"
#include "util/progress.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;

namespace {

struct ExportArgs {
  std::string model;
  std::vector<std::string> adapters;
  std::string output_dir;
  std::string quant_method;
  int quant_bits = 0;
  int group_size = 128;
  std::string max_shard_size = "5GB";
  size_t threads = 0;
  bool dry_run = false;
  bool overwrite = false;
  bool allow_nonfinite = false;
  bool json = false;
};

QuantizationConfig parse_quantization(const ExportArgs& args) {
  QuantizationConfig q;
  if (args.quant_method == "awq") q.method = QuantMethod::kAwq;
  else if (args.quant_method == "gptq") q.method = QuantMethod::kGptq;
  else if (args.quant_method.empty()) throw UsageError("--quant_method is required: awq or gptq");
  else
    throw UsageError("--quant_method: expected awq or gptq, got '" + args.quant_method +
                     "' (calibration-based methods and other formats are not exported)");
  if (args.quant_bits == 0) throw UsageError("--quant_bits is required: 4 (awq, gptq) or 8 (gptq)");
  if (q.method == QuantMethod::kAwq && args.quant_bits != 4)
    throw UsageError("--quant_bits " + std::to_string(args.quant_bits) +
                     ": AWQ (AutoAWQ GEMM) is 4-bit only; use --quant_method gptq for 8 bits");
  if (args.quant_bits != 4 && args.quant_bits != 8)
    throw UsageError("--quant_bits: expected 4 or 8, got " + std::to_string(args.quant_bits));
  q.bits = args.quant_bits;
  if (args.group_size != -1 && (args.group_size <= 0 || args.group_size % 32 != 0))
    throw UsageError("--group_size: expected -1 (one group per row) or a positive multiple of 32 (128 is the "
                     "published models'), got " + std::to_string(args.group_size));
  q.group_size = args.group_size;
  q.sym = q.method == QuantMethod::kGptq;
  q.zeros_minus_one = q.method == QuantMethod::kGptq;
  return q;
}

nlohmann::json plan_json(const ExportPlan& plan) {
  nlohmann::json shards = nlohmann::json::array();
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    uint64_t bytes = 0;
    for (size_t i : plan.shards[s]) bytes += plan.tensors[i].output.nbytes();
    shards.push_back({{"file", plan.shard_name(s)}, {"tensors", plan.shards[s].size()}, {"bytes", bytes}});
  }
  return {{"output_dir", plan.merge.output_dir.string()},
          {"quantization_config", plan.quantization_config},
          {"quantized_linears", plan.quantized_linears},
          {"merged_tensors", plan.merge.changed_tensors()},
          {"tensors", plan.tensors.size()},
          {"shards", shards},
          {"total_bytes", plan.total_bytes},
          {"warnings", plan.merge.warnings}};
}

void print_plan(const ExportPlan& plan) {
  std::printf("Quantization: %s\n", plan.quantization_config.dump().c_str());
  std::printf("Quantized linears: %zu; adapter-changed tensors: %zu; kept as stored (float16): %zu\n",
              plan.quantized_linears, plan.merge.changed_tensors(), plan.merge.tensors.size() - plan.quantized_linears);
  std::printf("Output %s (%zu shard%s, %s):\n", plan.merge.output_dir.string().c_str(), plan.shards.size(),
              plan.shards.size() == 1 ? "" : "s", format_bytes(plan.total_bytes).c_str());
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    uint64_t bytes = 0;
    for (size_t i : plan.shards[s]) bytes += plan.tensors[i].output.nbytes();
    std::printf("  %-40s %6zu tensors  %s\n", plan.shard_name(s).c_str(), plan.shards[s].size(),
                format_bytes(bytes).c_str());
  }
}

int run(const ExportArgs& args) {
  ExportOptions options;
  options.quant = parse_quantization(args);
  if (args.output_dir.empty()) throw UsageError("--output_dir is required");
  if (args.model.empty() && args.adapters.empty()) throw UsageError("--model is required");
  options.merge.model_dir = resolve_base_model(args.model, args.adapters);
  for (const auto& a : args.adapters) options.merge.adapter_dirs.emplace_back(a);
  options.merge.output_dir = args.output_dir;
  options.merge.max_shard_size = parse_byte_size(args.max_shard_size, "--max_shard_size");
  if (options.merge.max_shard_size == 0) throw UsageError("--max_shard_size must be positive");
  options.merge.threads = args.threads;
  options.merge.overwrite = args.overwrite;
  options.merge.allow_nonfinite = args.allow_nonfinite;
  options.merge.progress = !args.json && ProgressBar::stderr_is_terminal();

  const Checkpoint base(options.merge.model_dir);
  std::vector<Adapter> adapters;
  for (const auto& dir : options.merge.adapter_dirs) adapters.emplace_back(dir);
  const ExportPlan plan = plan_export(base, adapters, options);
  for (const auto& w : plan.merge.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());

  if (args.dry_run) {
    if (args.json) std::printf("%s\n", plan_json(plan).dump(2).c_str());
    else print_plan(plan);
    return kExitOk;
  }
  catch_interrupts();  // Ctrl-C stops between blocks and removes the temporary output
  const ExportStats stats = execute_export(base, plan, options);
  const double mb_per_s = static_cast<double>(base.total_bytes()) / 1e6 / std::max(stats.seconds, 1e-9);
  if (args.json) {
    auto j = plan_json(plan);
    j["seconds"] = stats.seconds;
    j["input_megabytes_per_second"] = mb_per_s;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("Exported %s: %zu linears quantized (%s)%s, %s written to %s in %.2f s (%.0f MB/s of input)\n",
                options.merge.model_dir.string().c_str(), plan.quantized_linears,
                plan.quantization_config.dump().c_str(),
                adapters.empty() ? "" : (", " + std::to_string(adapters.size()) + " adapter(s) merged").c_str(),
                format_bytes(stats.bytes_written).c_str(), plan.merge.output_dir.string().c_str(), stats.seconds,
                mb_per_s);
  }
  return kExitOk;
}

}  // namespace

void add_export_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export",
      "Quantize a BF16/F16/F32 checkpoint to a published AWQ or GPTQ checkpoint (like `swift export\n"
      "--quant_method awq|gptq`), merging LoRA adapters first in the same pass. Round-to-nearest, no\n"
      "calibration data: every decoder linear (q/k/v/o, gate/up/down) is quantized per group; embeddings,\n"
      "lm_head, norms, biases and a Qwen2.5-VL vision tower stay float16. Streams one tensor at a time.\n"
      "The output loads in vlmforge and has the layouts transformers and vLLM read (docs/quantization.md);\n"
      "it is written to a temporary directory and renamed into place when complete.");
  cmd->add_option("--model", args->model,
                  "Model directory (config.json + *.safetensors); default: the one the first adapter names");
  cmd->add_option("--adapters,--lora", args->adapters, "LoRA adapter directories merged first, in order")
      ->delimiter(',');
  cmd->add_option("--quant_method", args->quant_method, "awq (AutoAWQ GEMM, 4-bit) or gptq (v1 format, 4 or 8-bit)");
  cmd->add_option("--quant_bits", args->quant_bits, "4, or 8 (gptq only)");
  cmd->add_option("--group_size", args->group_size, "Inputs per scale: a multiple of 32, or -1 (one group per row)")
      ->capture_default_str();
  cmd->add_option("--output_dir", args->output_dir, "Output directory (required; never an input)");
  cmd->add_option("--max_shard_size", args->max_shard_size, "Largest output shard, e.g. 5GB, 2GiB")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "Worker threads (default: all cores)");
  cmd->add_flag("--dry_run", args->dry_run, "Print the quantization and the output shards; write nothing");
  cmd->add_flag("--overwrite", args->overwrite, "Replace a non-empty output directory");
  cmd->add_flag("--allow_nonfinite", args->allow_nonfinite,
                "Merge an adapter holding NaN/Inf values (a warning instead of an error)");
  cmd->add_flag("--json", args->json, "Print the plan / result as JSON on stdout");
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace vlmforge::cli
