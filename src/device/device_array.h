#pragma once
// A grow-only float array on a device, for activations reused from step to step: it grows to the
// largest size asked for and never shrinks, so decode steps allocate nothing. Contents are not
// kept when it grows (callers overwrite them).
#include <string>

#include "device/device.h"

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
    buffer_.reset();  // release first: the peak is the new size, not old + new
    buffer_ = device_->allocate(count * sizeof(float), what_);
  }

 private:
  Device* device_;
  std::string what_;
  DeviceBuffer buffer_;
};

}  // namespace vlmforge
