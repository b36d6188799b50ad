#include "backends/cpu_device.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <new>

#include "backends/cpu_stream.h"

namespace vlmforge {

namespace {
// Cache-line and vector aligned, like the matmul kernels' loads prefer.
constexpr std::align_val_t kAlignment{64};
}  // namespace

MemoryInfo host_memory() {
  std::ifstream meminfo("/proc/meminfo");
  MemoryInfo m;
  std::string key, unit;
  uint64_t kib = 0;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") m.free = kib * 1024;
    if (key == "MemTotal:") m.total = kib * 1024;
  }
  return m;
}

CpuDevice::CpuDevice(int index, std::optional<uint64_t> cap, size_t threads)
    : Device("cpu", index), cap_(cap), pool_(threads) {}

std::unique_ptr<Stream> CpuDevice::open_stream() { return std::make_unique<CpuStream>(*this); }

MemoryInfo CpuDevice::memory() const {
  const MemoryInfo host = host_memory();
  if (!cap_) return host;
  // A capped device can give what is left of its cap, and never more than the host has.
  const uint64_t left = *cap_ > allocated() ? *cap_ - allocated() : 0;
  return {std::min(left, host.free), *cap_};
}

void CpuDevice::copy_from_host(const DeviceBuffer& dst, size_t offset, std::span<const std::byte> src) {
  if (offset + src.size() > dst.size()) throw Error("internal error: copy past the end of a " + name() + " buffer");
  std::memcpy(dst.data() + offset, src.data(), src.size());
}

void CpuDevice::copy_to_host(std::span<std::byte> dst, const DeviceBuffer& src, size_t offset) {
  if (offset + dst.size() > src.size()) throw Error("internal error: copy past the end of a " + name() + " buffer");
  std::memcpy(dst.data(), src.data() + offset, dst.size());
}

std::byte* CpuDevice::raw_allocate(size_t bytes) {
  return static_cast<std::byte*>(::operator new(bytes, kAlignment, std::nothrow));
}

void CpuDevice::raw_free(std::byte* data, size_t) { ::operator delete(data, kAlignment); }

}  // namespace vlmforge
