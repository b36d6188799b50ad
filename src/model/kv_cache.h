#pragma once
// Keys and values of one sequence for every layer, grown as tokens are appended up to a fixed
// limit (max_model_len), so memory follows the actual sequence length. Stored fp32 or bf16
// (--kv_cache_dtype): bf16 halves the cache's memory and the bytes attention reads per step.
// On placed devices (--device_map) each layer's cache is allocated on its layer's device for the
// full max_model_len up front, as accelerator engines do, so a run fails at the start, not midway.
#include <cstddef>
#include <new>
#include <string>
#include <vector>

#include "backends/device.h"
#include "io/dtype.h"
#include "kernels/convert.h"
#include "util/bytes.h"
#include "util/error.h"

namespace vlmforge {

class KvCache {
 public:
  KvCache(size_t layers, size_t kv_dim, size_t max_tokens, DType dtype = DType::F32)
      : kv_dim_(kv_dim), max_tokens_(max_tokens), dtype_(dtype), keys_(layers), values_(layers) {
    if (dtype != DType::F32 && dtype != DType::BF16) throw Error("KV cache dtype must be float32 or bfloat16");
  }
  // Preallocated on `layer_devices[l]` for each layer l.
  KvCache(const std::vector<Device*>& layer_devices, size_t kv_dim, size_t max_tokens, DType dtype)
      : KvCache(layer_devices.size(), kv_dim, max_tokens, dtype) {
    const size_t per_layer = max_tokens * kv_dim * element_bytes();
    for (size_t l = 0; l < layer_devices.size(); ++l) {
      const std::string what = "KV cache of layer " + std::to_string(l) + " (" + std::to_string(max_tokens) + " tokens)";
      device_keys_.push_back(layer_devices[l]->allocate(per_layer, what));
      device_values_.push_back(layer_devices[l]->allocate(per_layer, what));
    }
  }

  size_t length() const { return length_; }
  size_t max_tokens() const { return max_tokens_; }
  size_t kv_dim() const { return kv_dim_; }
  DType dtype() const { return dtype_; }
  size_t element_bytes() const { return dtype_ == DType::F32 ? 4 : 2; }

  // Makes room for `count` more positions (throws when past max_model_len).
  void reserve_more(size_t count) {
    if (length_ + count > max_tokens_)
      throw Error("sequence of " + std::to_string(length_ + count) + " tokens exceeds max_model_len " +
                  std::to_string(max_tokens_) + " (raise --max_model_len or shorten the prompt)");
    if (!device_keys_.empty()) return;  // preallocated
    const size_t per_layer = (length_ + count) * kv_dim_ * element_bytes();
    try {
      for (size_t l = 0; l < keys_.size(); ++l) {
        keys_[l].resize(per_layer);
        values_[l].resize(per_layer);
      }
    } catch (const std::bad_alloc&) {
      throw Error("out of memory growing the KV cache to " + std::to_string(length_ + count) + " tokens: it needs " +
                  format_bytes(2 * keys_.size() * per_layer) + " for this sequence, " +
                  format_bytes(available_memory_bytes()) +
                  " are available; use --kv_cache_dtype bfloat16, a smaller --max_model_len or --max_batch_size");
    }
  }
  void commit(size_t count) { length_ += count; }
  void clear() {
    length_ = 0;
    for (auto& k : keys_) k.clear();
    for (auto& v : values_) v.clear();
  }

  // Writes one position's keys and values (kv_dim floats each), converting to the cache dtype.
  void store(size_t layer, size_t position, const float* key, const float* value) {
    kernels::from_f32(dtype_, key, keys_data(layer) + position * kv_dim_ * element_bytes(), kv_dim_);
    kernels::from_f32(dtype_, value, values_data(layer) + position * kv_dim_ * element_bytes(), kv_dim_);
  }
  // [positions, kv_dim] rows of the cache dtype.
  const std::byte* keys(size_t layer) const {
    return device_keys_.empty() ? keys_[layer].data() : device_keys_[layer].data();
  }
  const std::byte* values(size_t layer) const {
    return device_values_.empty() ? values_[layer].data() : device_values_[layer].data();
  }
  size_t bytes() const { return 2 * keys_.size() * length_ * kv_dim_ * element_bytes(); }

 private:
  std::byte* keys_data(size_t layer) { return device_keys_.empty() ? keys_[layer].data() : device_keys_[layer].data(); }
  std::byte* values_data(size_t layer) {
    return device_values_.empty() ? values_[layer].data() : device_values_[layer].data();
  }

  size_t kv_dim_;
  size_t max_tokens_;
  DType dtype_;
  size_t length_ = 0;
  std::vector<std::vector<std::byte>> keys_;
  std::vector<std::vector<std::byte>> values_;
  std::vector<DeviceBuffer> device_keys_, device_values_;  // placed caches
};

}  // namespace vlmforge
