// libFuzzer target for the safetensors header parser: any byte string must either parse into a
// header whose tensors tile the data section exactly, or be rejected with vlmforge::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "io/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto bytes = std::as_bytes(std::span(data, size));
  try {
    const vlmforge::SafetensorsHeader header = vlmforge::parse_safetensors_header(bytes, "fuzz-input");
    uint64_t cursor = 0;
    for (const auto& t : header.tensors) {
      if (t.begin != cursor || t.end < t.begin) std::abort();
      cursor = t.end;
    }
    if (header.data_start + cursor != size) std::abort();
  } catch (const vlmforge::Error&) {
  }
  return 0;
}
