#pragma once
// Where the model runs: with --device_map, the plan (from the checkpoint's headers), the opened
// devices and which device runs each part of the model; without it, one host device. Both run the
// same way: every part on a device, all memory accounted there.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "backends/device.h"
#include "engine/engine.h"
#include "model/qwen2.h"
#include "plan/plan_flags.h"
#include "plan/planner.h"

namespace vlmforge {

// --device_map and its companions (infer, score, deploy).
struct DeviceMapOptions {
  DeviceMapOptions() { placement.device_map.clear(); }  // "": one host device, no placement
  PlacementFlags placement;
  bool memory_report = false;
  bool enabled() const { return !placement.device_map.empty(); }
};

struct PlacedRun {
  Plan plan;
  std::vector<std::unique_ptr<Device>> devices;
  ModelPlacement placement;

  // One line per device on stderr: the plan, and with --memory_report the peak accounted memory
  // next to the plan's estimate.
  void print_plan() const;
  // The plan's devices and what each holds, on one line ("cpu:0: layers 0-11 (1.2 GiB)").
  std::string plan_line() const;
  void print_memory_report() const;
};

// With a device map: plans with `options` (threads 0 = all hardware threads), opens the devices
// and prints the plan. Without one: one uncapped host device (planned only for memory_report).
std::unique_ptr<PlacedRun> place_model(const std::filesystem::path& model_dir, const DeviceMapOptions& device_map,
                                       PlanOptions options);

// One pipeline stage (engine/pipeline.h): the modules of `stage` (plan/pipeline_stages.h), the
// first of its decoder layers being `first_layer`, placed on this process's devices as
// place_model places a whole model; nothing printed (rank 0 prints every rank's line).
std::unique_ptr<PlacedRun> place_stage(const ModelShape& stage, size_t first_layer, const DeviceMapOptions& device_map,
                                       PlanOptions options);

// Plan options for generating up to max_batch_size sequences of the engine's max_model_len
// tokens in its KV cache dtype, with the vision workspace for the largest image its budget allows.
PlanOptions generation_plan_options(const EngineOptions& options, size_t max_batch_size);

// An engine with its placement: declared first, so it outlives the engine (the model's memory
// lives on its devices).
struct PlacedEngine {
  std::unique_ptr<PlacedRun> placed;
  std::unique_ptr<Engine> engine;
  bool memory_report = false;
  // With memory_report: each device's peak accounted memory next to the plan's estimate.
  void print_memory_report() const;
};

// Places the model with `device_map` planned for `plan_options` (see place_model), then loads the
// engine on that placement.
PlacedEngine load_engine(EngineOptions options, const DeviceMapOptions& device_map, const PlanOptions& plan_options);

}  // namespace vlmforge
