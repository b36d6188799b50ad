// vlmforge demo: the main job end to end on a built-in example. Generates a random-weight
// checkpoint of a published shape and a random LoRA adapter, merges them, and checks merged rows
// against a direct double-precision computation.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "io/convert.h"
#include "lora/merge.h"
#include "model/random_checkpoint.h"
#include "util/bytes.h"
#include "util/error.h"
#include "util/progress.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;

namespace {

struct DemoArgs {
  std::string preset = "qwen2.5-0.5b";
  std::string dir;
  int r = 16;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Largest difference, in units of the output dtype's spacing, between merged rows of one
// module and W + scale·B·A computed in double.
double max_ulp_error(const Checkpoint& base, const Checkpoint& merged, const LoraModule& m, size_t rows_to_check) {
  const TensorRef* w = base.find(m.module + ".weight");
  const TensorRef* out = merged.find(m.module + ".weight");
  if (!w || !out) throw Error("demo: '" + m.module + ".weight' missing from the base or merged checkpoint");
  const size_t rows = w->info->shape[0], cols = w->info->shape[1], rank = static_cast<size_t>(m.rank);
  double worst = 0;
  for (size_t row = 0; row < std::min(rows, rows_to_check); ++row) {
    for (size_t col = 0; col < cols; ++col) {
      double delta = 0;
      for (size_t k = 0; k < rank; ++k)
        delta += static_cast<double>(load_float(m.b->info->dtype, m.b->data().data(), row * rank + k)) *
                 load_float(m.a->info->dtype, m.a->data().data(), k * cols + col);
      const double expected = load_float(w->info->dtype, w->data().data(), row * cols + col) + m.scaling * delta;
      const double got = load_float(out->info->dtype, out->data().data(), row * cols + col);
      const int exponent = std::ilogb(std::max(std::abs(expected), 1e-30));
      const double ulp = std::ldexp(1.0, exponent - (out->info->dtype == DType::BF16 ? 7 : out->info->dtype == DType::F16 ? 10 : 23));
      worst = std::max(worst, std::abs(got - expected) / ulp);
    }
  }
  return worst;
}

int run(const DemoArgs& args) {
  const fs::path dir = args.dir.empty() ? fs::temp_directory_path() / "vlmforge-demo" : fs::path(args.dir);
  fs::remove_all(dir / "base");
  fs::remove_all(dir / "adapter");
  const bool bars = ProgressBar::stderr_is_terminal();

  std::printf("[1/4] Generating a random-weight %s checkpoint (published tensor names, shapes, dtypes)\n",
              args.preset.c_str());
  auto t0 = std::chrono::steady_clock::now();
  CheckpointOptions ck;
  ck.progress = bars;
  generate_checkpoint(preset_config(args.preset), dir / "base", ck);
  std::printf("      %s in %.1f s\n", (dir / "base").string().c_str(), seconds_since(t0));

  std::printf("[2/4] Generating a random r=%d LoRA adapter on all seven projection kinds\n", args.r);
  AdapterOptions ad;
  ad.r = args.r;
  ad.lora_alpha = 2.0 * args.r;
  generate_adapter(Checkpoint(dir / "base"), dir / "adapter", ad);

  std::printf("[3/4] vlmforge merge-lora --model %s --adapters %s --max_shard_size 500MB --overwrite\n",
              (dir / "base").string().c_str(), (dir / "adapter").string().c_str());
  MergeOptions options;
  options.model_dir = dir / "base";
  options.adapter_dirs = {dir / "adapter"};
  options.max_shard_size = 500'000'000;
  options.overwrite = true;
  options.progress = bars;
  const Checkpoint base(options.model_dir);
  std::vector<Adapter> adapters;
  adapters.emplace_back(options.adapter_dirs[0]);
  const MergePlan plan = plan_merge(base, adapters, options);
  const MergeStats stats = execute_merge(base, plan, options);
  std::printf("      %zu of %zu tensors changed, %s in %zu shards written to %s in %.2f s (%.0f MB/s)\n",
              plan.changed_tensors(), plan.tensors.size(), format_bytes(stats.bytes_written).c_str(),
              plan.shards.size(), plan.output_dir.string().c_str(), stats.seconds,
              static_cast<double>(stats.bytes_written) / 1e6 / std::max(stats.seconds, 1e-9));

  std::printf("[4/4] Checking merged rows against W + scale·B·A computed in double precision\n");
  const Checkpoint merged(plan.output_dir);
  double worst = 0;
  const auto& modules = adapters[0].modules();
  for (size_t i = 0; i < modules.size(); i += std::max<size_t>(1, modules.size() / 7))
    worst = std::max(worst, max_ulp_error(base, merged, modules[i], 4));
  std::printf("      largest difference: %.3f ulp of bfloat16 (limit 1)\n", worst);
  if (worst > 1.0) {
    std::printf("FAILED: merged weights differ from the reference\n");
    return kExitFailure;
  }
  std::printf("OK. Try: vlmforge inspect %s --summary\n", plan.output_dir.string().c_str());
  return kExitOk;
}

}  // namespace

void add_demo_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<DemoArgs>();
  CLI::App* cmd = app.add_subcommand(
      "demo", "Run the main job on a built-in example: generate a random-weight checkpoint of a published\n"
              "Qwen2.5 shape and a random LoRA adapter, merge them, and verify the result in double precision.");
  cmd->add_option("--preset", args->preset, "Model shape to generate")->capture_default_str();
  cmd->add_option("--dir", args->dir, "Working directory (default: $TMPDIR/vlmforge-demo)");
  cmd->add_option("--r", args->r, "Adapter rank")->capture_default_str();
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace vlmforge::cli
