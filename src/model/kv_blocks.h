#pragma once
// Paged KV memory with automatic prefix caching (after vLLM's block manager).
//
// KvBlockTable is the host bookkeeping of a pool of fixed-size blocks: a free list, a reference
// count per block, and the prefix cache — a full block whose contents are known is keyed by a
// SHA-256 chain over its tokens and everything before them (block_keys), so a later sequence with
// the same prefix takes the block instead of recomputing it. A block nobody references keeps its
// key and is reused (least recently released first) only when no free block is left. It touches
// no device memory, so the policy is tested without a model.
//
// KvBlockPool adds the device memory: per layer, one key and one value buffer of
// blocks × block_size rows on the layer's device, which every paged KvCache addresses through its
// block table (KvView::block_table).
//
// Blocks of 16 positions (vLLM's default): a sequence wastes at most 15 positions (8 on average)
// of its last block, prefixes are shared at a 16-token grain, and a 32k-token sequence's table is
// 2048 entries (8 KiB) staged per step; attention reads one row per position either way, so larger
// blocks would buy no locality on the CPU or in the Vulkan shader.
#include <array>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/stream.h"
#include "io/dtype.h"
#include "util/error.h"
#include "util/sha256.h"

namespace vlmforge {

inline constexpr size_t kKvBlockSize = 16;

// A pool has no block left to give (every block is referenced by a running sequence).
class KvBlocksExhausted : public Error {
 public:
  using Error::Error;
};

using KvBlockKey = Sha256Digest;

struct KvBlockStats {
  size_t total = 0;   // blocks in the pool
  size_t used = 0;    // referenced by at least one sequence
  size_t cached = 0;  // unreferenced, keeping prefix-cache contents (reusable by a hit or evictable)
  uint64_t prefix_queries = 0, prefix_hits = 0;  // blocks looked up / found
};

class KvBlockTable {
 public:
  KvBlockTable(size_t blocks, bool prefix_caching);

  bool prefix_caching() const { return prefix_caching_; }
  // Blocks a new allocation can take: free, or cached and unreferenced (evicted on demand).
  size_t available() const { return free_.size() + evictable_.size(); }
  const KvBlockStats& stats() const { return stats_; }

  // A block for new contents, referenced once: a free one, else the least recently released
  // cached one (its key forgotten). Throws KvBlocksExhausted when every block is referenced.
  uint32_t allocate();
  // Drops one reference; a block left unreferenced becomes free, or evictable if it has a key.
  void release(uint32_t block);
  // The cached block holding `key`'s contents, referenced once more; nullopt on a miss (and
  // always without prefix caching).
  std::optional<uint32_t> lookup(const KvBlockKey& key);
  // Records that `block` (referenced, full) holds `key`'s contents. A key already cached keeps its
  // block (two sequences computed the same prefix at once): this one stays uncached.
  void publish(uint32_t block, const KvBlockKey& key);
  size_t references(uint32_t block) const { return blocks_.at(block).references; }

 private:
  struct Block {
    size_t references = 0;
    std::optional<KvBlockKey> key;
    std::list<uint32_t>::iterator evictable;  // valid while unreferenced with a key
  };
  bool prefix_caching_;
  std::vector<Block> blocks_;
  std::vector<uint32_t> free_;       // popped from the back
  std::list<uint32_t> evictable_;    // least recently released first
  std::map<KvBlockKey, uint32_t> cached_;
  KvBlockStats stats_;
};

// The keys of a prompt's full blocks: block b's key is the SHA-256 of block b-1's key, its tokens,
// their rotary positions (M-RoPE places text after an image by the image's grid) and, for image
// tokens, their embedding rows (so the same prompt about another image shares nothing past the
// image). `image_embeds` holds `hidden` floats per image token, in order.
std::vector<KvBlockKey> block_keys(std::span<const int32_t> tokens, std::span<const std::array<int64_t, 3>> positions,
                                   int64_t position_delta, int32_t image_token, std::span<const float> image_embeds,
                                   size_t hidden, size_t block_size);

class KvBlockPool {
 public:
  // Layer l's blocks live on layer_streams[l]'s device (the streams must outlive the pool).
  KvBlockPool(std::vector<Stream*> layer_streams, size_t kv_dim, DType dtype, size_t blocks, size_t block_size,
              bool prefix_caching);

  size_t block_size() const { return block_size_; }
  size_t kv_dim() const { return kv_dim_; }
  DType dtype() const { return dtype_; }
  size_t layers() const { return keys_.size(); }
  // Bytes one block takes over all layers (keys and values).
  size_t block_bytes() const { return 2 * keys_.size() * block_size_ * kv_dim_ * (dtype_info(dtype_).bits / 8); }
  KvBlockTable& table() { return table_; }
  const KvBlockTable& table() const { return table_; }
  // Layer `layer` of a sequence whose positions are in `blocks`.
  KvView layer(size_t layer, std::span<const uint32_t> blocks) const {
    return {dtype_, &keys_[layer], &values_[layer], kv_dim_, blocks, block_size_};
  }

 private:
  size_t kv_dim_, block_size_;
  DType dtype_;
  KvBlockTable table_;
  std::vector<DeviceBuffer> keys_, values_;
};

}  // namespace vlmforge
