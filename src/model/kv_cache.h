#pragma once
// Keys and values of one sequence for every layer, in buffers of the layer's device, stored fp32
// or bf16 (--kv_cache_dtype: bf16 halves the cache's memory and the bytes attention reads per
// step). Written and read only by the stream ops kv_store and attention.
// A grown cache follows the sequence's length up to max_model_len (each growth adds at least
// half, and copies the old contents on the device); a preallocated one (--device_map runs) holds
// the full max_model_len from the start, as accelerator engines do, so a run fails at the start,
// not midway.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "backends/stream.h"
#include "io/dtype.h"
#include "util/error.h"

namespace vlmforge {

class KvCache {
 public:
  // Layer l lives on layer_streams[l]'s device (the streams must outlive the cache).
  KvCache(std::vector<Stream*> layer_streams, size_t kv_dim, size_t max_tokens, DType dtype, bool preallocate)
      : streams_(std::move(layer_streams)), kv_dim_(kv_dim), max_tokens_(max_tokens), dtype_(dtype),
        keys_(streams_.size()), values_(streams_.size()) {
    if (dtype != DType::F32 && dtype != DType::BF16) throw Error("KV cache dtype must be float32 or bfloat16");
    if (preallocate) grow_to(max_tokens);
  }

  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = delete;  // would drop the target's release
  ~KvCache() {
    if (on_release_) on_release_(id_);
  }

  // A pipeline (model/stage_link.h) mirrors this cache on its later stages under `id`;
  // `on_release` runs once when the cache is destroyed, so they free their part too.
  void set_stage_id(uint64_t id, std::function<void(uint64_t)> on_release) {
    id_ = id;
    on_release_ = std::move(on_release);
  }
  uint64_t stage_id() const { return id_; }

  size_t length() const { return length_; }
  size_t max_tokens() const { return max_tokens_; }
  size_t kv_dim() const { return kv_dim_; }
  DType dtype() const { return dtype_; }
  size_t element_bytes() const { return dtype_ == DType::F32 ? 4 : 2; }

  // Makes room for `count` more positions (throws when past max_model_len).
  void reserve_more(size_t count) {
    const size_t needed = length_ + count;
    if (needed > max_tokens_)
      throw Error("sequence of " + std::to_string(needed) + " tokens exceeds max_model_len " +
                  std::to_string(max_tokens_) + " (raise --max_model_len or shorten the prompt)");
    if (needed > capacity_) grow_to(std::min(max_tokens_, std::max(needed, capacity_ + capacity_ / 2)));
  }
  void commit(size_t count) { length_ += count; }
  void clear() { length_ = 0; }

  // Layer `layer`'s cache, for the stream ops.
  KvView layer(size_t layer) const { return {dtype_, &keys_[layer], &values_[layer], kv_dim_}; }
  // Bytes the sequence's positions take (its share of the buffers).
  size_t bytes() const { return 2 * keys_.size() * length_ * kv_dim_ * element_bytes(); }

 private:
  void grow_to(size_t tokens) {
    const size_t bytes = tokens * kv_dim_ * element_bytes(), kept = length_ * kv_dim_ * element_bytes();
    for (size_t l = 0; l < streams_.size(); ++l) {
      Stream& s = *streams_[l];
      const std::string what = "KV cache of layer " + std::to_string(l) + " (" + std::to_string(tokens) + " tokens)";
      for (DeviceBuffer* b : {&keys_[l], &values_[l]}) {
        DeviceBuffer grown = s.device().allocate(bytes, what);
        if (kept) s.copy(grown, 0, *b, 0, kept);
        *b = std::move(grown);
      }
    }
    capacity_ = tokens;
  }

  std::vector<Stream*> streams_;
  size_t kv_dim_;
  size_t max_tokens_;
  DType dtype_;
  size_t length_ = 0, capacity_ = 0;
  std::vector<DeviceBuffer> keys_, values_;
  uint64_t id_ = 0;
  // A moved-from cache must not release (a moved-from std::function is only "valid but unspecified").
  struct ReleaseHook {
    std::function<void(uint64_t)> f;
    ReleaseHook() = default;
    ReleaseHook(ReleaseHook&& o) noexcept : f(std::exchange(o.f, nullptr)) {}
    ReleaseHook& operator=(std::function<void(uint64_t)> g) {
      f = std::move(g);
      return *this;
    }
    explicit operator bool() const { return static_cast<bool>(f); }
    void operator()(uint64_t id) const { f(id); }
  } on_release_;
};

}  // namespace vlmforge
