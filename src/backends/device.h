#pragma once
// A compute device as the engine sees it: a name ("cpu", "cpu:1", "cuda:0", "npu:3"), its
// capabilities, a memory query, accounted buffers released by RAII handles, copies to and from
// host memory, and streams that run the op interface (backends/stream.h). Every buffer goes
// through allocate() or wrap_host(), so a device always knows how much the process holds on it
// (and its peak), whatever the backend.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "util/error.h"

namespace vlmforge {

class Stream;

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

// What a backend can do, for the code that places work on it.
struct DeviceCaps {
  bool host_addressable = false;  // the host can address its buffers: wrap_host() makes no copy
  bool async = false;             // stream work may still run after the call that queued it returns
  size_t alignment = 64;          // of every allocation, in bytes
};

// Owns `size` bytes on `device`; frees them (and the accounting) when destroyed.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }

  // The memory behind the buffer: for backends only (model code passes buffers to ops).
  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  Device* device() const { return device_; }
  // Whether the buffer is host memory lent to the device (wrap_host), freed by its owner.
  bool wraps_host() const { return !owned_; }
  bool empty() const { return size_ == 0; }
  template <typename T>
  T* as() const { return reinterpret_cast<T*>(data_); }
  void reset();

 private:
  friend class Device;
  DeviceBuffer(Device* device, std::byte* data, size_t size, bool owned)
      : device_(device), data_(data), size_(size), owned_(owned) {}
  Device* device_ = nullptr;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  bool owned_ = true;
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
  virtual DeviceCaps caps() const = 0;

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
  // Host memory that outlives the buffer (the weights' memory map) as a buffer of this device:
  // lent without a copy where the device is host-addressable, uploaded elsewhere. Accounted
  // either way, so the device's figures include what its work reads. Ops never write to
  // buffers made from const memory.
  DeviceBuffer wrap_host(std::span<const std::byte> host, std::string_view what);

  // A queue that runs copies and the op interface on this device. Streams are independent (each
  // keeps its own workspace), so two threads may each use their own.
  virtual std::unique_ptr<Stream> open_stream() = 0;

 protected:
  // Whether `bytes` more may be allocated; by default what memory() reports free. A backend
  // whose free-memory query is costly can answer from its own accounting.
  virtual bool may_allocate(size_t bytes) const { return bytes <= memory().free; }
  // The backend's allocator and free; raw_allocate returns nullptr when the memory is not there.
  virtual std::byte* raw_allocate(size_t bytes) = 0;
  virtual void raw_free(std::byte* data, size_t bytes) = 0;

 private:
  friend class DeviceBuffer;
  void account(size_t bytes);
  void release(std::byte* data, size_t bytes, bool owned);

  std::string type_;
  int index_;
  std::string name_;
  std::atomic<uint64_t> allocated_{0};
  std::atomic<uint64_t> peak_{0};
};

}  // namespace vlmforge
