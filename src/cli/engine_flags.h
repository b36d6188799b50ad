#pragma once
// The flags that choose and size the engine, added by one function to `infer`, `score` and
// `deploy` so they read, default and document them alike, and turned into EngineOptions.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/pipeline.h"
#include "engine/placement.h"

namespace vlmforge::cli {

struct EngineFlags {
  std::string model;
  std::vector<std::string> adapters;
  size_t threads = 0;
  size_t max_model_len = 0;
  std::string kv_cache_dtype = "float32";
  std::optional<uint64_t> min_pixels, max_pixels;
  std::string quant_method;  // "", q8_0, q4_0
  size_t image_cache_mb = 512;
  bool exif_transpose = false;
  DeviceMapOptions device_map;
  double pipeline_timeout = 60;  // seconds a pipeline rank may take for its part of a step
};

// --model, --threads, --quant_method and the --device_map group (--devices, --max_memory,
// --reserve, --memory_report): what every engine command takes. Returns the --model option.
CLI::Option* add_model_flags(CLI::App* cmd, EngineFlags& flags);
// add_model_flags plus what generating commands take: --adapters, --max_model_len,
// --kv_cache_dtype, the image flags and --image_cache_mb.
void add_generation_flags(CLI::App* cmd, EngineFlags& flags);
// The image pixel budget and orientation: --max_pixels, --min_pixels, --exif_transpose.
void add_image_flags(CLI::App* cmd, EngineFlags& flags);
// --adapters (alias --lora).
void add_adapter_flag(CLI::App* cmd, EngineFlags& flags);

// The flags' engine options (the pixel budget's warning, if any, on stderr); no placement yet
// (load_engine in engine/placement.h places and loads it).
EngineOptions engine_options(const EngineFlags& flags);

// Loads the engine (load_engine) and returns run(engine)'s exit code; under `mpirun -np N` this
// rank's pipeline stage instead (engine/pipeline.h): rank 0 runs `run` on its engine, the other
// ranks serve their stage. `transport`: join_pipeline()'s, null when running alone.
int run_with_engine(PipelineTransport* transport, const EngineFlags& flags, const EngineOptions& options,
                    const PlanOptions& plan_options, const std::function<int(const PlacedEngine&)>& run);

}  // namespace vlmforge::cli
