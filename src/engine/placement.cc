#include "engine/placement.h"

#include <algorithm>
#include <cstdio>
#include <thread>

#include "util/bytes.h"
#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;

PlanOptions generation_plan_options(const EngineOptions& options, size_t max_batch_size) {
  PlanOptions o;
  o.max_pixels = options.vision.budget.max_pixels;
  o.threads = options.threads;
  o.max_batch_size = max_batch_size;
  o.max_model_len = options.max_model_len;
  o.kv_cache_dtype = options.kv_cache_dtype;
  o.prefill_chunk = GenerationParams{}.prefill_chunk;
  return o;
}

namespace {

// Opens the plan's devices and puts each module of its shape on its device.
void open_planned_devices(PlacedRun& run, const DeviceRegistry& registry, size_t threads) {
  std::vector<DeviceTarget> targets;
  for (const auto& d : run.plan.devices) targets.push_back(d.target);
  run.devices = registry.open(targets, threads);
  const auto& modules = run.plan.shape.modules;
  for (size_t i = 0; i < modules.size(); ++i) {
    Device* device = run.devices[run.plan.module_device[i]].get();
    switch (modules[i].kind) {
      case ModuleKind::kEmbed: run.placement.embed = device; break;
      case ModuleKind::kLayer: run.placement.layers.push_back(device); break;
      case ModuleKind::kNorm: run.placement.norm = device; break;
      case ModuleKind::kHead: run.placement.head = device; break;
      case ModuleKind::kVision: run.placement.vision = device; break;
    }
  }
}

}  // namespace

std::unique_ptr<PlacedRun> place_model(const fs::path& model_dir, const DeviceMapOptions& args, PlanOptions options) {
  if (options.threads == 0) options.threads = std::max(1u, std::thread::hardware_concurrency());
  auto run = std::make_unique<PlacedRun>();
  const kernels::QuantScheme* quantize = options.quantize_on_load ? &*options.quantize_on_load : nullptr;
  const DeviceRegistry registry = DeviceRegistry::builtin();
  if (!args.enabled()) {
    // One host device: the weights stay in the memory map (lent to the device, no copy), KV
    // caches grow with their sequences, and everything is accounted on it as on any placement.
    const std::vector<DeviceTarget> host =
        registry.resolve({DeviceSpec{"cpu", 0}}, MaxMemory{}, process_environment());
    run->devices = registry.open(host, options.threads);
    Device* device = run->devices.front().get();
    const ModelConfig config = ModelConfig::load(model_dir);  // config.json only: the headers are read once, by the model
    run->placement = {device, std::vector<Device*>(static_cast<size_t>(config.num_hidden_layers), device), device,
                      device, config.vision ? device : nullptr, false};
    // The plan is what --memory_report compares with; it is an upper bound here, as the caches
    // it counts at max_model_len grow only as far as the sequences do.
    if (args.memory_report) {
      PlacementFlags flags;
      flags.devices = "cpu:0";
      run->plan = plan_from_flags(ModelShape::from_checkpoint(model_dir, quantize), flags, options, registry,
                                  process_environment());
    }
    return run;
  }
  run->plan = plan_from_flags(ModelShape::from_checkpoint(model_dir, quantize), args.placement, options, registry,
                              process_environment());
  for (const auto& w : run->plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  open_planned_devices(*run, registry, options.threads);
  run->print_plan();
  return run;
}

std::unique_ptr<PlacedRun> place_stage(const ModelShape& stage, size_t first_layer, const DeviceMapOptions& args,
                                       PlanOptions options) {
  if (options.threads == 0) options.threads = std::max(1u, std::thread::hardware_concurrency());
  auto run = std::make_unique<PlacedRun>();
  const DeviceRegistry registry = DeviceRegistry::builtin();
  PlacementFlags flags = args.placement;
  if (!args.enabled()) {
    // As place_model: one host device, weights lent from the memory map, caches grown.
    flags.devices = "cpu:0";
    flags.device_map = "auto";
  }
  run->plan = plan_from_flags(stage, flags, options, registry, process_environment());
  for (const auto& w : run->plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  open_planned_devices(*run, registry, options.threads);
  run->placement.first_layer = first_layer;
  run->placement.preallocate_kv = args.enabled();
  return run;
}

void PlacedRun::print_plan() const { std::fprintf(stderr, "[device_map] %s\n", plan_line().c_str()); }

std::string PlacedRun::plan_line() const {
  std::string line;
  for (size_t d = 0; d < plan.devices.size(); ++d) {
    const DeviceUse& u = plan.devices[d];
    if (u.modules.empty()) continue;
    line += (line.empty() ? "" : " | ") + u.target.spec.name() + ": " + plan.to_json()["devices"][d]["summary"].get<std::string>() +
            " (" + format_bytes(u.estimate()) + ")";
  }
  return line;
}

void PlacedRun::print_memory_report() const {
  for (size_t d = 0; d < plan.devices.size(); ++d) {
    const uint64_t peak = devices[d]->peak_allocated(), estimate = plan.devices[d].estimate();
    std::fprintf(stderr, "[memory] %s: peak %s (%llu bytes), plan %s (%llu bytes), ratio %.3f\n",
                 devices[d]->name().c_str(), format_bytes(peak).c_str(), static_cast<unsigned long long>(peak),
                 format_bytes(estimate).c_str(), static_cast<unsigned long long>(estimate),
                 estimate ? static_cast<double>(peak) / static_cast<double>(estimate) : 0.0);
  }
}

void PlacedEngine::print_memory_report() const {
  if (memory_report) placed->print_memory_report();
}

PlacedEngine load_engine(EngineOptions options, const DeviceMapOptions& device_map, const PlanOptions& plan_options) {
  PlacedEngine out;
  out.memory_report = device_map.memory_report;
  PlanOptions plan = plan_options;
  plan.quantize_on_load = options.quantize_on_load;
  out.placed = place_model(options.model_dir, device_map, plan);
  options.placement = &out.placed->placement;
  out.engine = std::make_unique<Engine>(options);
  return out;
}

}  // namespace vlmforge
