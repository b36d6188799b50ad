#pragma once
// A grow-only float array on a device, for activations reused from step to step: it never shrinks.
// The first allocation is exact; later ones add at least an eighth (attention scores grow by one
// position per decode step), so decode steps rarely allocate and the peak stays within 12.5% of
// what was asked for. Contents are not kept when it grows (callers overwrite them).
#include <algorithm>
#include <string>

#include "backends/device.h"

namespace vlmforge {

class DeviceArray {
 public:
  DeviceArray(Device* device, std::string what) : device_(device), what_(std::move(what)) {}

  float* data() const { return buffer_.as<float>(); }
  size_t size() const { return buffer_.size() / sizeof(float); }
  const DeviceBuffer& buffer() const { return buffer_; }
  Device& device() const { return *device_; }

  void ensure(size_t count) {
    if (size() >= count) return;
    const size_t grown = size() == 0 ? count : std::max(count, size() + size() / 8);
    buffer_.reset();  // release first: the peak is the new size, not old + new
    buffer_ = device_->allocate(grown * sizeof(float), what_);
  }

 private:
  Device* device_;
  std::string what_;
  DeviceBuffer buffer_;
};

}  // namespace vlmforge
