#include "backends/device.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "util/bytes.h"

namespace vlmforge {

DeviceOutOfMemory::DeviceOutOfMemory(const std::string& device, uint64_t asked, uint64_t free, std::string_view what)
    : Error("out of memory on " + device + ": " + std::string(what) + " asked for " + format_bytes(asked) + " (" +
            std::to_string(asked) + " bytes), " + format_bytes(free) + " (" + std::to_string(free) +
            " bytes) free; raise its --max_memory, use more devices, a smaller --max_model_len or --max_batch_size, "
            "or check the plan with `vlmforge plan`"),
      asked_(asked),
      free_(free) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    device_ = std::exchange(other.device_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    owned_ = std::exchange(other.owned_, true);
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (device_ && data_) device_->release(data_, size_, owned_);
  device_ = nullptr;
  data_ = nullptr;
  size_ = 0;
  owned_ = true;
}

Device::Device(std::string type, int index)
    : type_(std::move(type)), index_(index), name_(type_ + ":" + std::to_string(index)) {}

DeviceBuffer Device::allocate(size_t bytes, std::string_view what) {
  if (bytes == 0) return {};
  if (!may_allocate(bytes)) throw DeviceOutOfMemory(name_, bytes, memory().free, what);
  std::byte* data = raw_allocate(bytes);
  if (!data) throw DeviceOutOfMemory(name_, bytes, memory().free, what);
  account(bytes);
  return DeviceBuffer(this, data, bytes, true);
}

DeviceBuffer Device::wrap_host(std::span<const std::byte> host, std::string_view what) {
  if (!caps().host_addressable) return upload(host, what);
  if (host.empty()) return {};
  if (!may_allocate(host.size())) throw DeviceOutOfMemory(name_, host.size(), memory().free, what);
  account(host.size());
  // const_cast: ops never write to buffers lent from const memory (see the declaration).
  return DeviceBuffer(this, const_cast<std::byte*>(host.data()), host.size(), false);
}

void Device::account(size_t bytes) {
  const uint64_t now = allocated_.fetch_add(bytes) + bytes;
  uint64_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
}

void Device::release(std::byte* data, size_t bytes, bool owned) {
  if (owned) raw_free(data, bytes);
  allocated_.fetch_sub(bytes);
}

DeviceBuffer Device::upload(std::span<const std::byte> src, std::string_view what) {
  DeviceBuffer buffer = allocate(src.size(), what);
  if (!src.empty()) copy_from_host(buffer, 0, src);
  return buffer;
}

}  // namespace vlmforge
