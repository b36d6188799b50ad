#pragma once
// What `plan` and `infer --device_map` share: turning --devices, --max_memory, --device_map
// (auto | balanced | sequential | FILE.json), --cpu_offload and --reserve into a Plan.
#include <string>

#include "backends/registry.h"
#include "plan/planner.h"

namespace vlmforge {

struct PlacementFlags {
  std::string devices;     // "" : cpu:0 (or the devices an explicit map names)
  std::string max_memory;  // ""
  std::string device_map = "auto";  // auto | balanced | sequential | path to a JSON map
  bool cpu_offload = false;
  std::string reserve;     // "" : the default per device type
};

// Model shape for `plan`: a checkpoint directory (headers), a directory or file holding only a
// config.json, or a preset name. `dtype` ("" = config torch_dtype) applies without weights.
ModelShape load_model_shape(const std::string& model, const std::string& preset, const std::string& dtype);

Plan plan_from_flags(const ModelShape& shape, const PlacementFlags& flags, PlanOptions options,
                     const DeviceRegistry& registry, const EnvLookup& env);

}  // namespace vlmforge
