// vlmforge devices: the devices this build can run on (and, with --devices, the set a plan or run
// would use), with free and total memory.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/commands.h"
#include "backends/registry.h"
#include "util/bytes.h"

namespace vlmforge::cli {
using nlohmann::json;

namespace {

struct DevicesArgs {
  std::string devices;
  std::string max_memory;
  bool json = false;
};

int run(const DevicesArgs& a) {
  const DeviceRegistry registry = DeviceRegistry::builtin();
  const EnvLookup env = process_environment();
  std::vector<DeviceTarget> targets;
  if (!a.devices.empty()) {
    targets = registry.resolve(parse_device_list(a.devices),
                               a.max_memory.empty() ? MaxMemory{} : parse_max_memory(a.max_memory), env);
  } else {
    if (!a.max_memory.empty()) throw UsageError("--max_memory needs --devices");
    // The host and every device a built-in backend finds.
    std::vector<DeviceSpec> present = {{"cpu", 0}};
    for (const auto& b : registry.backends())
      if (const auto count = b->physical_count(); count && b->type() != "cpu")
        for (size_t i = 0; i < *count; ++i) present.push_back({b->type(), static_cast<int>(i)});
    targets = registry.resolve(present, {}, env);
  }
  json backends = json::array();
  for (const auto& type : device_types()) {
    const DeviceBackend* b = registry.find(type);
    json entry = {{"type", type}, {"built_in", b != nullptr}};
    if (b && !b->unavailable().empty()) entry["unavailable"] = b->unavailable();
    const std::string variable = type == "cuda" ? "CUDA_VISIBLE_DEVICES" : type == "npu" ? "ASCEND_RT_VISIBLE_DEVICES" : "";
    if (!variable.empty()) {
      const auto value = env(variable);
      entry["visible_devices_variable"] = variable;
      entry["visible_devices"] = value ? json(*value) : json(nullptr);
    }
    backends.push_back(entry);
  }
  json devices = json::array();
  for (const auto& t : targets)
    devices.push_back({{"name", t.spec.name()},
                       {"type", t.spec.type},
                       {"free", t.capacity},
                       {"total", t.total},
                       {"capped", t.capped},
                       {"present", t.present},
                       {"physical", t.present ? json(t.physical) : json(nullptr)},
                       {"model", t.present ? registry.find(t.spec.type)->describe(t.physical) : ""}});
  if (a.json) {
    std::printf("%s\n", json{{"devices", devices}, {"backends", backends}}.dump().c_str());
    return kExitOk;
  }
  std::printf("%-10s %14s %14s  %s\n", "device", "free", "total", "notes");
  for (const auto& t : targets) {
    std::string notes = t.present ? (t.spec.type == "cpu" ? std::to_string(std::thread::hardware_concurrency()) + " threads"
                                                           : "physical " + std::to_string(t.physical) + ": " +
                                                                 registry.find(t.spec.type)->describe(t.physical))
                                  : "no backend in this build: planning only";
    if (t.capped) notes += ", capped by --max_memory";
    std::printf("%-10s %14s %14s  %s\n", t.spec.name().c_str(), format_bytes(t.capacity).c_str(),
                format_bytes(t.total).c_str(), notes.c_str());
  }
  for (const auto& b : backends) {
    if (b.contains("unavailable"))
      std::printf("%s: no devices (%s)\n", b["type"].get<std::string>().c_str(), b["unavailable"].get<std::string>().c_str());
    if (!b["built_in"].get<bool>()) {
      std::string line = b["type"].get<std::string>() + ": no backend in this build (docs/backends.md)";
      if (b.contains("visible_devices") && !b["visible_devices"].is_null())
        line += "; " + b["visible_devices_variable"].get<std::string>() + "=" + b["visible_devices"].get<std::string>();
      std::printf("%s\n", line.c_str());
    }
  }
  return kExitOk;
}

}  // namespace

void add_devices_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<DevicesArgs>();
  CLI::App* cmd = app.add_subcommand(
      "devices", "List devices with free and total memory. Without --devices: the host CPU. With --devices (and\n"
                 "--max_memory) the device set that `plan` and `infer --device_map` would use; devices of types this\n"
                 "build has no backend for (cuda, npu) are listed for planning when --max_memory gives their size.\n"
                 "CUDA_VISIBLE_DEVICES / ASCEND_RT_VISIBLE_DEVICES renumber devices as the vendor runtimes do.");
  cmd->add_option("--devices", a->devices, "Devices: cpu:0,cpu:1 or npu:0-7 (ranges allowed)");
  cmd->add_option("--max_memory", a->max_memory, "Most memory per device: 60GiB for every device, or cpu:0=2GiB,cpu:1=2GiB");
  cmd->add_flag("--json", a->json, "JSON output: {\"devices\": [...], \"backends\": [...]}");
  cmd->callback([a, &exit_code] { exit_code = run(*a); });
}

}  // namespace vlmforge::cli
