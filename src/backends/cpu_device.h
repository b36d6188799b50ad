#pragma once
// The host CPU as a device. With a cap it stands in for one accelerator: several capped CPU
// devices (cpu:0, cpu:1, …) let placement and execution across devices run, and be tested, on one
// host. Without a cap its free memory is the system's MemAvailable.
#include <optional>

#include "backends/device.h"
#include "util/thread_pool.h"

namespace vlmforge {

class CpuDevice : public Device {
 public:
  // `cap`: most bytes accounted on this device (accelerate's max_memory); `threads`: its pool.
  CpuDevice(int index, std::optional<uint64_t> cap, size_t threads);

  MemoryInfo memory() const override;
  DeviceCaps caps() const override { return {.host_addressable = true, .async = false, .alignment = 64}; }
  std::unique_ptr<Stream> open_stream() override;
  void copy_from_host(const DeviceBuffer& dst, size_t offset, std::span<const std::byte> src) override;
  void copy_to_host(std::span<std::byte> dst, const DeviceBuffer& src, size_t offset) override;
  // The device's one pool: every stream's ops run on it (one parallel_for at a time).
  ThreadPool& pool() { return pool_; }
  std::optional<uint64_t> cap() const { return cap_; }

 protected:
  // The cap from the accounting alone (reading /proc/meminfo per allocation would be a system
  // call on the decode path); without a cap the allocator decides.
  bool may_allocate(size_t bytes) const override { return !cap_ || allocated() + bytes <= *cap_; }
  std::byte* raw_allocate(size_t bytes) override;
  void raw_free(std::byte* data, size_t bytes) override;

 private:
  std::optional<uint64_t> cap_;
  ThreadPool pool_;
};

// The host's memory from /proc/meminfo: MemAvailable and MemTotal.
MemoryInfo host_memory();

}  // namespace vlmforge
