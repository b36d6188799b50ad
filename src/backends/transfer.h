#pragma once
// Copies between two devices' buffers. Through a host staging buffer, which every backend
// supports; a backend pair with a direct path (peer copies, shared host memory) can take it here
// without the callers changing.
#include <cstddef>
#include <vector>

#include "backends/stream.h"

namespace vlmforge {

// `bytes` from the start of `src` (on from's device) to the start of `dst` (on to's device).
// `staging` is reused from call to call.
void copy_between_devices(Stream& from, const DeviceBuffer& src, Stream& to, const DeviceBuffer& dst, size_t bytes,
                          std::vector<float>& staging);

}  // namespace vlmforge
