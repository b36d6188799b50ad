#pragma once
// A compute device as the engine sees it: a name ("cpu", "cpu:1", "cuda:0", "npu:3"), a memory
// query, accounted allocations released by RAII handles, copies to and from host memory, and the
// kernels it runs. Every allocation goes through allocate(), so a device always knows how much
// the process holds on it (and its peak), whatever the backend.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "util/error.h"

namespace vlmforge {

class ThreadPool;

struct MemoryInfo {
  uint64_t free = 0;
  uint64_t total = 0;
};

// An allocation larger than the device can give: names the device, the bytes asked and free.
class DeviceOutOfMemory : public Error {
 public:
  DeviceOutOfMemory(const std::string& device, uint64_t asked, uint64_t free, std::string_view what);
  uint64_t asked() const { return asked_; }
  uint64_t free() const { return free_; }

 private:
  uint64_t asked_, free_;
};

class Device;

// Owns `size` bytes on `device`; frees them (and the accounting) when destroyed.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  Device* device() const { return device_; }
  bool empty() const { return size_ == 0; }
  template <typename T>
  T* as() const { return reinterpret_cast<T*>(data_); }
  void reset();

 private:
  friend class Device;
  DeviceBuffer(Device* device, std::byte* data, size_t size) : device_(device), data_(data), size_(size) {}
  Device* device_ = nullptr;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

class Device {
 public:
  Device(std::string type, int index);
  virtual ~Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  const std::string& name() const { return name_; }  // "cpu:1"
  const std::string& type() const { return type_; }  // "cpu"
  int index() const { return index_; }

  // Free and total memory as the backend reports them (a capped device: its cap minus what is
  // accounted on it).
  virtual MemoryInfo memory() const = 0;

  // An accounted allocation (`what` names it in the out-of-memory error). Zero bytes give an
  // empty buffer.
  DeviceBuffer allocate(size_t bytes, std::string_view what);
  // Bytes held through allocate() now, and the most held at once since the last reset_peak().
  uint64_t allocated() const { return allocated_.load(); }
  uint64_t peak_allocated() const { return peak_.load(); }
  void reset_peak() { peak_.store(allocated_.load()); }

  virtual void copy_from_host(const DeviceBuffer& dst, size_t offset, std::span<const std::byte> src) = 0;
  virtual void copy_to_host(std::span<std::byte> dst, const DeviceBuffer& src, size_t offset) = 0;
  // Uploads host bytes into a new accounted buffer.
  DeviceBuffer upload(std::span<const std::byte> src, std::string_view what);

  // Kernels: a device whose memory the host can address runs the CPU kernels (src/kernels) on
  // its own pool of threads; other backends return nullptr and bring their own kernels.
  virtual ThreadPool* host_pool() { return nullptr; }

 protected:
  // Whether `bytes` more may be allocated; by default what memory() reports free. A backend
  // whose free-memory query is costly can answer from its own accounting.
  virtual bool may_allocate(size_t bytes) const { return bytes <= memory().free; }
  // The backend's allocator and free; raw_allocate returns nullptr when the memory is not there.
  virtual std::byte* raw_allocate(size_t bytes) = 0;
  virtual void raw_free(std::byte* data, size_t bytes) = 0;

 private:
  friend class DeviceBuffer;
  void release(std::byte* data, size_t bytes);

  std::string type_;
  int index_;
  std::string name_;
  std::atomic<uint64_t> allocated_{0};
  std::atomic<uint64_t> peak_{0};
};

}  // namespace vlmforge
