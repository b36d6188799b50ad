#include "plan/plan_flags.h"

#include <filesystem>

#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/layout.h"
#include "util/bytes.h"
#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

DType weight_dtype(const std::string& name, const std::string& what) {
  if (name == "bfloat16" || name == "bf16") return DType::BF16;
  if (name == "float16" || name == "fp16") return DType::F16;
  if (name == "float32" || name == "fp32") return DType::F32;
  throw UsageError(what + ": expected bfloat16, float16 or float32, got '" + name + "'");
}

bool has_safetensors(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") return true;
  return false;
}

}  // namespace

ModelShape load_model_shape(const std::string& model, const std::string& preset, const std::string& dtype) {
  if (model.empty() == preset.empty()) throw UsageError("give exactly one of --model and --preset");
  if (!preset.empty()) {
    const ModelConfig c = preset_config(preset);
    return ModelShape::from_config(c, weight_dtype(dtype.empty() ? c.torch_dtype : dtype, "--dtype"),
                                   "preset " + preset);
  }
  const fs::path path(model);
  if (!fs::exists(path)) throw Error(model + ": no such file or directory");
  if (fs::is_directory(path) && has_safetensors(path)) {
    if (!dtype.empty()) throw UsageError("--dtype applies to a config or preset; a checkpoint's headers give the dtypes");
    return ModelShape::from_checkpoint(path);
  }
  const fs::path config_path = fs::is_directory(path) ? path / "config.json" : path;
  const ModelConfig c = ModelConfig::from_json(read_json_file(config_path), config_path.string());
  return ModelShape::from_config(c, weight_dtype(dtype.empty() ? c.torch_dtype : dtype, "--dtype"),
                                 config_path.string());
}

Plan plan_from_flags(const ModelShape& shape, const PlacementFlags& flags, PlanOptions options,
                     const DeviceRegistry& registry, const EnvLookup& env) {
  MaxMemory max_memory = flags.max_memory.empty() ? MaxMemory{} : parse_max_memory(flags.max_memory);
  if (!flags.reserve.empty()) options.reserve = parse_byte_size(flags.reserve, "--reserve");
  options.cpu_offload = flags.cpu_offload;
  const bool strategy = flags.device_map == "auto" || flags.device_map == "balanced" || flags.device_map == "sequential";
  nlohmann::json map;
  std::vector<DeviceSpec> specs;
  if (!strategy) {
    if (!fs::exists(flags.device_map))
      throw UsageError("--device_map: '" + flags.device_map + "' is neither auto, balanced, sequential nor an existing JSON file");
    map = read_json_file(flags.device_map);
    specs = flags.devices.empty() ? devices_in_map(map, flags.device_map) : parse_device_list(flags.devices);
  } else {
    specs = flags.devices.empty() ? std::vector<DeviceSpec>{{"cpu", 0}} : parse_device_list(flags.devices);
    options.strategy = parse_plan_strategy(flags.device_map);
  }
  // With offload the host's share may be given as cpu / cpu:0 in --max_memory.
  if (flags.cpu_offload) {
    for (const char* key : {"cpu:0"})
      if (auto it = max_memory.per_device.find(key); it != max_memory.per_device.end()) {
        options.offload_memory = it->second;
        max_memory.per_device.erase(it);
      }
  }
  const std::vector<DeviceTarget> targets = registry.resolve(specs, max_memory, env);
  if (!strategy) {
    if (flags.cpu_offload) throw UsageError("--cpu_offload applies to auto/balanced/sequential maps; an explicit map says where everything goes");
    return plan_from_map(shape, targets, map, options, flags.device_map);
  }
  return make_plan(shape, targets, options);
}

}  // namespace vlmforge
