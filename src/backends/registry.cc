#include "backends/registry.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <set>

#include "backends/cpu_device.h"
#ifdef VLMFORGE_WITH_VULKAN
#include "backends/vulkan/vulkan_device.h"
#endif
#include "util/bytes.h"

namespace vlmforge {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    const size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

// A whole non-negative decimal number, or nullopt.
std::optional<int> parse_index(std::string_view s) {
  if (s.empty() || s.size() > 6) return std::nullopt;
  int v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

class CpuBackend : public DeviceBackend {
 public:
  std::string type() const override { return "cpu"; }
  std::string visible_devices_variable() const override { return ""; }
  std::optional<size_t> physical_count() const override { return std::nullopt; }
  MemoryInfo query(int) const override { return host_memory(); }
  std::unique_ptr<Device> open(const DeviceSpec& spec, int, std::optional<uint64_t> cap, size_t threads) const override {
    return std::make_unique<CpuDevice>(spec.index, cap, threads);
  }
};

}  // namespace

const std::vector<std::string>& device_types() {
  static const std::vector<std::string> kTypes{"cpu", "cuda", "npu", "vulkan"};
  return kTypes;
}

DeviceSpec parse_device_name(std::string_view text, std::string_view what) {
  const std::string_view t = trim(text);
  const size_t colon = t.find(':');
  const std::string type(t.substr(0, colon));
  const auto& types = device_types();
  if (std::find(types.begin(), types.end(), type) == types.end())
    throw UsageError(std::string(what) + ": '" + std::string(text) + "' is not a device name (expected TYPE:INDEX with TYPE one of " +
                     join_names(types) + ", e.g. cpu:0, cuda:1, npu:3)");
  if (colon == std::string_view::npos) {
    if (type != "cpu")
      throw UsageError(std::string(what) + ": '" + std::string(text) + "' needs an index (e.g. " + type + ":0)");
    return {type, 0};
  }
  const auto index = parse_index(t.substr(colon + 1));
  if (!index)
    throw UsageError(std::string(what) + ": '" + std::string(text) + "' has no valid index after ':' (e.g. " + type + ":0)");
  return {type, *index};
}

std::vector<DeviceSpec> parse_device_list(std::string_view text) {
  if (trim(text).empty()) throw UsageError("--devices: empty list (e.g. --devices cpu:0,cpu:1 or --devices npu:0-7)");
  std::vector<DeviceSpec> out;
  for (std::string_view item : split(text, ',')) {
    item = trim(item);
    if (item.empty()) throw UsageError("--devices: empty entry in '" + std::string(text) + "'");
    // "npu:0-7": a range of indices.
    const size_t colon = item.find(':'), dash = item.find('-');
    if (colon != std::string_view::npos && dash != std::string_view::npos && dash > colon) {
      const DeviceSpec first = parse_device_name(item.substr(0, dash), "--devices");
      const auto last = parse_index(item.substr(dash + 1));
      if (!last || *last < first.index)
        throw UsageError("--devices: '" + std::string(item) + "' is not a valid range (e.g. npu:0-7)");
      for (int i = first.index; i <= *last; ++i) out.push_back({first.type, i});
    } else {
      out.push_back(parse_device_name(item, "--devices"));
    }
  }
  for (size_t i = 0; i < out.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (out[i] == out[j]) throw UsageError("--devices: " + out[i].name() + " is listed twice");
  return out;
}

MaxMemory parse_max_memory(std::string_view text) {
  MaxMemory m;
  if (trim(text).empty()) throw UsageError("--max_memory: empty value (e.g. --max_memory 60GiB or cpu:0=2GiB,cpu:1=2GiB)");
  if (text.find('=') == std::string_view::npos) {
    m.all = parse_byte_size(trim(text), "--max_memory");
    return m;
  }
  for (std::string_view item : split(text, ',')) {
    item = trim(item);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      throw UsageError("--max_memory: '" + std::string(item) + "' is not DEVICE=SIZE (e.g. cpu:0=2GiB); one size for "
                       "every device is written alone (--max_memory 60GiB)");
    const std::string_view key = trim(item.substr(0, eq));
    std::string name;
    if (parse_index(key)) name = std::string(key);  // accelerate's integer key, resolved against --devices
    else name = parse_device_name(key, "--max_memory").name();
    if (m.per_device.count(name)) throw UsageError("--max_memory: " + name + " is given twice");
    m.per_device[name] = parse_byte_size(trim(item.substr(eq + 1)), "--max_memory " + name);
  }
  return m;
}

std::vector<int> parse_visible_devices(std::string_view variable, std::string_view value,
                                       std::optional<size_t> physical_count) {
  const std::string where = std::string(variable) + "=" + std::string(value);
  const bool ascend = variable == "ASCEND_RT_VISIBLE_DEVICES";
  std::vector<int> ids;
  if (value.empty()) return ids;  // set but empty: no device is visible
  for (std::string_view item : split(value, ',')) {
    std::optional<int> id;
    if (ascend) {
      // CANN reads ids up to the first entry holding anything but digits and ignores the rest.
      id = parse_index(item);
      if (!id)
        throw Error(where + ": '" + std::string(item) + "' is not a device id; the Ascend runtime would stop reading "
                    "there and see only " + std::to_string(ids.size()) + " device(s). Write ids separated by commas only");
    } else {
      // The CUDA runtime reads each entry like strtoul (leading blanks, then digits); an entry
      // without digits or a negative one ends the list.
      const std::string_view t = trim(item);
      if (t.starts_with("GPU-") || t.starts_with("MIG-"))
        throw Error(where + ": GPU UUIDs need the CUDA driver to resolve; name devices by index");
      size_t digits = 0;
      while (digits < t.size() && std::isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
      id = parse_index(t.substr(0, digits));
      if (!id)
        throw Error(where + ": '" + std::string(item) + "' is not a device index; the CUDA runtime would stop "
                    "there and see only " + std::to_string(ids.size()) + " device(s)");
    }
    if (physical_count && static_cast<size_t>(*id) >= *physical_count)
      throw Error(where + ": device " + std::to_string(*id) + " does not exist (this host has " +
                  std::to_string(*physical_count) + ", ids 0-" + std::to_string(*physical_count - 1) +
                  "); the runtime would see only the " + std::to_string(ids.size()) + " before it");
    if (std::find(ids.begin(), ids.end(), *id) != ids.end())
      throw Error(where + ": device " + std::to_string(*id) + " is listed twice" +
                  (ascend ? "" : "; the CUDA runtime then makes no device visible"));
    if (ascend && !ids.empty() && *id < ids.back())
      throw Error(where + ": ids must be in ascending order (CANN supports only that)");
    ids.push_back(*id);
  }
  return ids;
}

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
}

DeviceRegistry DeviceRegistry::builtin() {
  DeviceRegistry r;
  r.add(std::make_unique<CpuBackend>());
#ifdef VLMFORGE_WITH_VULKAN
  r.add(std::make_unique<VulkanBackend>());
#endif
  return r;
}

void DeviceRegistry::add(std::unique_ptr<DeviceBackend> backend) {
  if (find(backend->type())) throw Error("internal error: two backends for device type " + backend->type());
  backends_.push_back(std::move(backend));
}

const DeviceBackend* DeviceRegistry::find(std::string_view type) const {
  for (const auto& b : backends_)
    if (b->type() == type) return b.get();
  return nullptr;
}

std::vector<DeviceTarget> DeviceRegistry::resolve(const std::vector<DeviceSpec>& specs, const MaxMemory& max_memory,
                                                  const EnvLookup& env) const {
  // accelerate's integer keys name indices of the accelerator type in use (cpu when there is none).
  std::string accel = "cpu";
  for (const auto& s : specs)
    if (s.type != "cpu") {
      accel = s.type;
      break;
    }
  std::map<std::string, uint64_t> caps;
  for (const auto& [key, bytes] : max_memory.per_device) {
    const std::string name = parse_index(key) ? accel + ":" + key : key;
    if (std::none_of(specs.begin(), specs.end(), [&](const DeviceSpec& s) { return s.name() == name; }))
      throw UsageError("--max_memory names " + name + ", which is not among the devices (" + [&] {
        std::vector<std::string> n;
        for (const auto& s : specs) n.push_back(s.name());
        return join_names(n);
      }() + ")");
    if (caps.count(name)) throw UsageError("--max_memory: " + name + " is given twice");
    caps[name] = bytes;
  }
  static const std::map<std::string, std::string> kVariables{{"cuda", "CUDA_VISIBLE_DEVICES"},
                                                             {"npu", "ASCEND_RT_VISIBLE_DEVICES"}};
  std::vector<DeviceTarget> out;
  for (const auto& spec : specs) {
    DeviceTarget t;
    t.spec = spec;
    std::optional<uint64_t> cap = max_memory.all;
    if (const auto it = caps.find(spec.name()); it != caps.end()) cap = it->second;
    const DeviceBackend* backend = find(spec.type);
    const std::string variable = backend ? backend->visible_devices_variable()
                                         : (kVariables.count(spec.type) ? kVariables.at(spec.type) : "");
    int physical = spec.index;
    if (!variable.empty()) {
      if (const auto value = env(variable)) {
        const auto visible = parse_visible_devices(variable, *value, backend ? backend->physical_count() : std::nullopt);
        if (static_cast<size_t>(spec.index) >= visible.size())
          throw Error(spec.name() + " does not exist: " + variable + "=" + *value + " makes " +
                      std::to_string(visible.size()) + " device(s) visible" +
                      (visible.empty() ? "" : " (" + spec.type + ":0-" + std::to_string(visible.size() - 1) + ")") +
                      "; devices are renumbered from 0 in that order");
        physical = visible[static_cast<size_t>(spec.index)];
      }
    }
    if (backend) {
      if (const auto count = backend->physical_count(); count && static_cast<size_t>(physical) >= *count)
        throw Error(spec.name() + " does not exist: this host has " + std::to_string(*count) + " " + spec.type +
                    " device(s)");
      const MemoryInfo m = backend->query(physical);
      t.present = true;
      t.physical = physical;
      t.total = cap ? *cap : m.total;
      t.capacity = cap ? *cap : m.free;
    } else {
      if (!cap)
        throw UsageError(spec.name() + ": this build has no " + spec.type +
                         " backend to ask for its memory; give its size with --max_memory (e.g. --max_memory 60GiB) "
                         "to plan for it");
      t.total = *cap;
      t.capacity = *cap;
    }
    t.capped = cap.has_value();
    out.push_back(t);
  }
  return out;
}

std::vector<std::unique_ptr<Device>> DeviceRegistry::open(const std::vector<DeviceTarget>& targets,
                                                          size_t threads) const {
  std::vector<std::unique_ptr<Device>> out;
  for (const auto& t : targets) {
    const DeviceBackend* backend = find(t.spec.type);
    if (!backend || !t.present)
      throw Error(t.spec.name() + ": this build has no " + t.spec.type +
                  " backend, so it can be planned for (vlmforge plan) but not run on; see docs/backends.md");
    out.push_back(backend->open(t.spec, t.physical, t.capped ? std::optional<uint64_t>(t.capacity) : std::nullopt,
                                threads));
  }
  return out;
}

}  // namespace vlmforge
