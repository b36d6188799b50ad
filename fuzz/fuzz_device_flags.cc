// libFuzzer target for the placement inputs a user or environment controls: --devices,
// --max_memory, CUDA_VISIBLE_DEVICES / ASCEND_RT_VISIBLE_DEVICES, and --device_map JSON files.
// Every input must parse into a value with the documented invariants or be rejected with
// vlmforge::Error; anything else (a crash, another exception, a broken invariant) aborts.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "backends/registry.h"
#include "model/layout.h"
#include "plan/planner.h"
#include "util/error.h"

namespace {

using namespace vlmforge;

std::vector<DeviceTarget> three_cpus() {
  std::vector<DeviceTarget> out;
  for (int i = 0; i < 3; ++i) {
    DeviceTarget t;
    t.spec = {"cpu", i};
    t.capacity = t.total = 64ull << 20;
    t.capped = true;
    out.push_back(t);
  }
  return out;
}

void check(uint8_t selector, uint8_t count, const std::string& text) {
  switch (selector % 5) {
    case 0: {
      const auto specs = parse_device_list(text);
      if (specs.empty()) std::abort();
      for (size_t i = 0; i < specs.size(); ++i) {
        if (!(parse_device_name(specs[i].name()) == specs[i])) std::abort();
        for (size_t j = 0; j < i; ++j)
          if (specs[i] == specs[j]) std::abort();
      }
      break;
    }
    case 1: {
      const MaxMemory m = parse_max_memory(text);
      if (m.empty()) std::abort();
      break;
    }
    case 2:
    case 3: {
      const bool ascend = selector % 5 == 3;
      const size_t physical = count % 9;
      const auto ids = parse_visible_devices(ascend ? "ASCEND_RT_VISIBLE_DEVICES" : "CUDA_VISIBLE_DEVICES", text, physical);
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || static_cast<size_t>(ids[i]) >= physical) std::abort();
        for (size_t j = 0; j < i; ++j)
          if (ids[i] == ids[j] || (ascend && ids[j] > ids[i])) std::abort();
      }
      break;
    }
    default: {
      const nlohmann::json map = nlohmann::json::parse(text, nullptr, false);
      if (map.is_discarded()) return;
      static const ModelShape shape = ModelShape::from_config(preset_config("tiny"), DType::BF16, "tiny");
      static const std::vector<DeviceTarget> devices = three_cpus();
      PlanOptions o;
      o.max_model_len = 64;
      const Plan plan = plan_from_map(shape, devices, map, o, "fuzz.json");
      for (size_t d : plan.module_device)
        if (d >= devices.size()) std::abort();
      for (const auto& d : plan.devices)
        if (d.free_after() < 0) std::abort();
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 2, size - 2);
  try {
    check(data[0], data[1], text);
  } catch (const vlmforge::Error&) {
  }
  return 0;
}
