#include "backends/transfer.h"

#include <span>

namespace vlmforge {

void copy_between_devices(Stream& from, const DeviceBuffer& src, Stream& to, const DeviceBuffer& dst, size_t bytes,
                          std::vector<float>& staging) {
  if (&from == &to) return to.copy(dst, 0, src, 0, bytes);
  staging.resize((bytes + sizeof(float) - 1) / sizeof(float));
  const auto host = std::as_writable_bytes(std::span(staging)).first(bytes);
  from.copy_to_host(host, src, 0);
  to.copy_from_host(dst, 0, host);
  to.synchronize();  // the staging buffer is reused by the next call
}

}  // namespace vlmforge
