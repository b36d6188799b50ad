#include "backends/stream.h"

#include <algorithm>
#include <string>

#include "util/error.h"

namespace vlmforge {

void check_weight_view(const WeightView& w, const std::string& device) {
  if (w.quant.quantized() && w.dtype != DType::U8)
    throw Error("internal error: a quantized weight view of dtype " + std::string(dtype_name(w.dtype)) +
                " (quantized weights are U8 bytes)");
  // Its sections hold fp16 scales and uint32 permutations, read in place (buffers themselves are
  // at least 64-byte aligned on every device).
  if (w.quant.quantized() && w.offset % alignof(uint32_t) != 0)
    throw Error("internal error: a quantized weight at byte offset " + std::to_string(w.offset) +
                " of its buffer is not 4-byte aligned");
  if (!w.buffer || w.offset > w.buffer->size() || w.bytes() > w.buffer->size() - w.offset)
    throw Error("internal error: a " + std::to_string(w.rows) + "x" + std::to_string(w.cols) + " " +
                (w.quant.quantized() ? std::to_string(w.quant.bits) + "-bit quantized" : std::string(dtype_name(w.dtype))) +
                " weight of " + std::to_string(w.bytes()) + " bytes at offset " + std::to_string(w.offset) +
                " runs past the end of its " + std::to_string(w.buffer ? w.buffer->size() : 0) + "-byte " + device +
                " buffer");
}

void check_kv_slots(std::span<const KvSlot> slots, const Device& device) {
  for (const KvSlot& s : slots) {
    const KvView& c = s.cache;
    for (const DeviceBuffer* b : {c.keys, c.values})
      if (!b || b->device() != &device)
        throw Error("internal error: an op on " + device.name() + " was given a buffer of another device");
    const size_t row_bytes = c.kv_dim * (dtype_info(c.dtype).bits / 8);
    const size_t rows = std::min(c.keys->size(), c.values->size()) / std::max<size_t>(row_bytes, 1);
    if (c.paged()) {
      if (c.block_size == 0) throw Error("internal error: a paged KV cache with blocks of 0 positions");
      const size_t blocks = s.position / c.block_size + 1;
      if (blocks > c.block_table.size())
        throw Error("internal error: KV cache position " + std::to_string(s.position) + " is past the " +
                    std::to_string(c.block_table.size()) + " blocks of its block table");
      for (size_t b = 0; b < blocks; ++b)
        if ((size_t{c.block_table[b]} + 1) * c.block_size > rows)
          throw Error("internal error: KV cache block " + std::to_string(c.block_table[b]) + " is past the end of its " +
                      device.name() + " pool");
    } else if (s.position >= rows) {
      throw Error("internal error: KV cache position " + std::to_string(s.position) + " is past the end of its " +
                  device.name() + " buffer");
    }
  }
}

}  // namespace vlmforge
