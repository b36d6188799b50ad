#pragma once
// Keys and values of one sequence for every layer, in buffers of the layer's device, stored fp32
// or bf16 (--kv_cache_dtype: bf16 halves the cache's memory and the bytes attention reads per
// step). Written and read only by the stream ops kv_store and attention.
// A grown cache follows the sequence's length up to max_model_len (each growth adds at least
// half, and copies the old contents on the device); a preallocated one (--device_map runs) holds
// the full max_model_len from the start, as accelerator engines do, so a run fails at the start,
// not midway. A paged cache (the server's) takes blocks of a shared KvBlockPool as it grows,
// starting with the blocks of its prompt's cached prefix (adopt_cached_prefix), and gives them
// back when destroyed.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backends/stream.h"
#include "io/dtype.h"
#include "model/kv_blocks.h"
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

  // A paged cache over `pool` (which must outlive it).
  KvCache(KvBlockPool& pool, size_t max_tokens)
      : kv_dim_(pool.kv_dim()), max_tokens_(max_tokens), dtype_(pool.dtype()), pool_(&pool) {}
  KvCache(KvCache&& other) noexcept { *this = std::move(other); }
  // Assigning over a cache ends it: its blocks go back and its pipeline mirrors are released.
  KvCache& operator=(KvCache&& other) noexcept {
    if (this != &other) {
      release();
      streams_ = std::move(other.streams_);
      kv_dim_ = other.kv_dim_;
      max_tokens_ = other.max_tokens_;
      dtype_ = other.dtype_;
      length_ = std::exchange(other.length_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
      keys_ = std::move(other.keys_);
      values_ = std::move(other.values_);
      pool_ = std::exchange(other.pool_, nullptr);
      blocks_ = std::move(other.blocks_);
      other.blocks_.clear();
      published_ = std::exchange(other.published_, 0);
      id_ = std::exchange(other.id_, 0);
      on_release_ = std::exchange(other.on_release_, nullptr);
    }
    return *this;
  }
  ~KvCache() { release(); }

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
    if (pool_) {
      while (blocks_.size() * pool_->block_size() < needed) blocks_.push_back(pool_->table().allocate());
      return;
    }
    if (needed > capacity_) grow_to(std::min(max_tokens_, std::max(needed, capacity_ + capacity_ / 2)));
  }
  void commit(size_t count) { length_ += count; }
  // Empties the cache (a pipeline stage's mirror of a cache its rank 0 cleared); a paged cache
  // gives its blocks back.
  void clear() {
    release_blocks();
    published_ = 0;
    length_ = 0;
  }

  // Paged caches: takes the pool's cached blocks for the longest prefix of `keys` (block_keys of
  // the prompt), at most `max_blocks`, as this empty cache's first positions; returns the
  // positions adopted.
  size_t adopt_cached_prefix(std::span<const KvBlockKey> keys, size_t max_blocks) {
    if (!pool_ || length_ != 0) return 0;
    for (size_t b = 0; b < std::min(keys.size(), max_blocks); ++b) {
      const std::optional<uint32_t> hit = pool_->table().lookup(keys[b]);
      if (!hit) break;
      blocks_.push_back(*hit);
    }
    published_ = blocks_.size();
    length_ = blocks_.size() * pool_->block_size();
    return length_;
  }
  // Paged caches: offers the full blocks written so far whose keys are known (keys[b] for block
  // b) to the pool's prefix cache. Full blocks are never written again.
  void publish_full_blocks(std::span<const KvBlockKey> keys) {
    if (!pool_) return;
    const size_t full = std::min(keys.size(), length_ / pool_->block_size());
    for (; published_ < full; ++published_) pool_->table().publish(blocks_[published_], keys[published_]);
  }

  // Layer `layer`'s cache, for the stream ops.
  KvView layer(size_t layer) const {
    return pool_ ? pool_->layer(layer, blocks_) : KvView{dtype_, &keys_[layer], &values_[layer], kv_dim_};
  }
  // Bytes the sequence's positions take (its share of the buffers).
  size_t bytes() const {
    return 2 * (pool_ ? pool_->layers() : keys_.size()) * length_ * kv_dim_ * element_bytes();
  }

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

  void release_blocks() {
    if (pool_)
      for (uint32_t b : blocks_) pool_->table().release(b);
    blocks_.clear();
  }
  void release() {
    release_blocks();
    if (on_release_) std::exchange(on_release_, nullptr)(id_);
  }

  std::vector<Stream*> streams_;
  size_t kv_dim_ = 0;
  size_t max_tokens_ = 0;
  DType dtype_ = DType::F32;
  size_t length_ = 0, capacity_ = 0;
  std::vector<DeviceBuffer> keys_, values_;  // contiguous caches
  KvBlockPool* pool_ = nullptr;              // paged caches: the pool, this cache's blocks in order
  std::vector<uint32_t> blocks_;
  size_t published_ = 0;  // leading blocks offered to the prefix cache
  uint64_t id_ = 0;       // the pipeline's name for this cache (0: no pipeline)
  std::function<void(uint64_t)> on_release_;
};

}  // namespace vlmforge
