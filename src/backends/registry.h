#pragma once
// Device names, the backends that provide devices, and the flags that pick them:
// --devices cpu:0,cpu:1 / npu:0-7, --max_memory 60GiB / cpu:0=2GiB,cpu:1=2GiB, and the vendors'
// visible-device variables (CUDA_VISIBLE_DEVICES, ASCEND_RT_VISIBLE_DEVICES).
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/device.h"

namespace vlmforge {

struct DeviceSpec {
  std::string type;  // "cpu", "cuda", "npu"
  int index = 0;     // logical index (after the visible-devices renumbering)
  std::string name() const { return type + ":" + std::to_string(index); }
  bool operator==(const DeviceSpec&) const = default;
};

// Known device types, for messages: cpu, cuda, npu.
const std::vector<std::string>& device_types();

// "cpu" (= cpu:0), "cuda:1", "npu:3". Throws UsageError naming `what` on anything else.
DeviceSpec parse_device_name(std::string_view text, std::string_view what = "device");
// A comma list of names and ranges ("cpu:0,cpu:1", "npu:0-7"); no duplicates, at least one.
std::vector<DeviceSpec> parse_device_list(std::string_view text);

// accelerate's max_memory: the most memory the model may use on each device. Either one size for
// every device ("60GiB") or device=size pairs ("cpu:0=2GiB,cpu:1=2GiB"; a bare index "0=20GiB"
// means that index of the accelerator type in use, as accelerate's integer keys do).
struct MaxMemory {
  std::optional<uint64_t> all;
  std::map<std::string, uint64_t> per_device;  // keys as written ("cpu:0", "0")
  bool empty() const { return !all && per_device.empty(); }
};
MaxMemory parse_max_memory(std::string_view text);

// Parses a visible-devices variable as the vendor runtime does and returns the physical ids of
// logical devices 0, 1, …. Where the runtime would silently drop devices (an unparsable entry, an
// id past `physical_count`, a repeat, Ascend's non-ascending order) this throws an Error that
// says so, because a plan for devices that are not there is worse than none.
//   CUDA_VISIBLE_DEVICES: comma list of indices (GPU-/MIG- UUIDs need the driver and are refused);
//   ASCEND_RT_VISIBLE_DEVICES: comma list of ascending logical ids, nothing else in it.
std::vector<int> parse_visible_devices(std::string_view variable, std::string_view value,
                                       std::optional<size_t> physical_count);

// One kind of device. A CUDA or Ascend backend implements this and registers itself; see
// docs/backends.md for which runtime calls each member maps to.
class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual std::string type() const = 0;                 // "cpu", "cuda", "npu"
  virtual std::string visible_devices_variable() const = 0;  // "" when there is none
  // Physical devices present; nullopt when unbounded (capped CPU devices are virtual).
  virtual std::optional<size_t> physical_count() const = 0;
  virtual MemoryInfo query(int physical_index) const = 0;
  // Opens logical device `spec` on physical device `physical_index`, with an optional cap on its
  // accounted memory, and `threads` host threads for its kernels (where it runs host kernels).
  virtual std::unique_ptr<Device> open(const DeviceSpec& spec, int physical_index, std::optional<uint64_t> cap,
                                       size_t threads) const = 0;
  // The device's model, for `devices` ("" when there is nothing to say).
  virtual std::string describe(int /*physical_index*/) const { return {}; }
  // Why a built-in backend has no devices here ("" when it has some, or cannot say).
  virtual std::string unavailable() const { return {}; }
};

// Reads an environment variable; std::getenv in the CLI, a map in tests.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_environment();

// A device of a plan or a run: its capacity (the cap when given, else the backend's free memory).
struct DeviceTarget {
  DeviceSpec spec;
  uint64_t capacity = 0;  // bytes the model may use there
  uint64_t total = 0;     // the device's total memory (the cap for devices that are not present)
  bool capped = false;
  bool present = false;   // a registered backend provides it (it can run, not only be planned for)
  int physical = -1;      // physical id, -1 when not present
};

class DeviceRegistry {
 public:
  // The backends built into this binary (CPU).
  static DeviceRegistry builtin();
  void add(std::unique_ptr<DeviceBackend> backend);
  const DeviceBackend* find(std::string_view type) const;
  const std::vector<std::unique_ptr<DeviceBackend>>& backends() const { return backends_; }

  // Resolves --devices and --max_memory into targets. Devices without a backend here (cuda, npu
  // in a CPU build) can be planned for when --max_memory gives their size. Visible-device
  // variables bound the logical indices. Errors name the device and what to change.
  std::vector<DeviceTarget> resolve(const std::vector<DeviceSpec>& specs, const MaxMemory& max_memory,
                                    const EnvLookup& env) const;
  // Opens present targets for running (each with its cap, if any).
  std::vector<std::unique_ptr<Device>> open(const std::vector<DeviceTarget>& targets, size_t threads) const;

 private:
  std::vector<std::unique_ptr<DeviceBackend>> backends_;
};

}  // namespace vlmforge
