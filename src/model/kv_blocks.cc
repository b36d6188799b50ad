#include "model/kv_blocks.h"

#include <algorithm>

namespace vlmforge {

KvBlockTable::KvBlockTable(size_t blocks, bool prefix_caching) : prefix_caching_(prefix_caching), blocks_(blocks) {
  if (blocks == 0) throw UsageError("the KV cache pool holds no block (raise --kv_cache_memory)");
  // Popped from the back: block 0 first, so a fresh pool fills in order.
  for (size_t b = blocks; b-- > 0;) free_.push_back(static_cast<uint32_t>(b));
  stats_.total = blocks;
}

uint32_t KvBlockTable::allocate() {
  uint32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!evictable_.empty()) {
    b = evictable_.front();
    evictable_.pop_front();
    cached_.erase(*blocks_[b].key);
    blocks_[b].key.reset();
    --stats_.cached;
  } else {
    throw KvBlocksExhausted("the KV cache pool's " + std::to_string(blocks_.size()) +
                            " blocks are all in use (raise --kv_cache_memory or lower --max_batch_size)");
  }
  blocks_[b].references = 1;
  ++stats_.used;
  return b;
}

void KvBlockTable::release(uint32_t block) {
  Block& b = blocks_.at(block);
  if (b.references == 0) throw Error("internal error: KV block " + std::to_string(block) + " released twice");
  if (--b.references > 0) return;
  --stats_.used;
  if (b.key) {
    b.evictable = evictable_.insert(evictable_.end(), block);
    ++stats_.cached;
  } else {
    free_.push_back(block);
  }
}

std::optional<uint32_t> KvBlockTable::lookup(const KvBlockKey& key) {
  if (!prefix_caching_) return std::nullopt;
  ++stats_.prefix_queries;
  const auto it = cached_.find(key);
  if (it == cached_.end()) return std::nullopt;
  Block& b = blocks_[it->second];
  if (b.references++ == 0) {
    evictable_.erase(b.evictable);
    --stats_.cached;
    ++stats_.used;
  }
  ++stats_.prefix_hits;
  return it->second;
}

void KvBlockTable::publish(uint32_t block, const KvBlockKey& key) {
  if (!prefix_caching_) return;
  Block& b = blocks_.at(block);
  if (b.references == 0) throw Error("internal error: publishing unreferenced KV block " + std::to_string(block));
  if (b.key) return;
  if (cached_.emplace(key, block).second) b.key = key;
}

namespace {

template <typename T>
std::span<const uint8_t> bytes_of(std::span<const T> values) {
  return {reinterpret_cast<const uint8_t*>(values.data()), values.size_bytes()};
}

}  // namespace

std::vector<KvBlockKey> block_keys(std::span<const int32_t> tokens, std::span<const std::array<int64_t, 3>> positions,
                                   int64_t position_delta, int32_t image_token, std::span<const float> image_embeds,
                                   size_t hidden, size_t block_size) {
  std::vector<KvBlockKey> keys;
  KvBlockKey parent{};
  size_t image_rows = 0;
  for (size_t first = 0; first + block_size <= tokens.size(); first += block_size) {
    const auto block = tokens.subspan(first, block_size);
    std::vector<std::array<int64_t, 3>> rope(block_size);
    for (size_t i = 0; i < block_size; ++i) {
      const int64_t p = static_cast<int64_t>(first + i) + position_delta;
      rope[i] = positions.empty() ? std::array<int64_t, 3>{p, p, p} : positions[first + i];
    }
    const size_t images = static_cast<size_t>(std::count(block.begin(), block.end(), image_token));
    if (!image_embeds.empty() && (image_rows + images) * hidden > image_embeds.size())
      throw Error("the prompt has more <|image_pad|> tokens than image embeddings");
    const auto embeds = image_embeds.empty() ? std::span<const float>()
                                             : image_embeds.subspan(image_rows * hidden, images * hidden);
    image_rows += images;
    parent = sha256({std::span<const uint8_t>(parent), bytes_of(block), bytes_of(std::span<const std::array<int64_t, 3>>(rope)),
                     bytes_of(embeds)});
    keys.push_back(parent);
  }
  return keys;
}

KvBlockPool::KvBlockPool(std::vector<Stream*> layer_streams, size_t kv_dim, DType dtype, size_t blocks,
                         size_t block_size, bool prefix_caching)
    : kv_dim_(kv_dim), block_size_(block_size), dtype_(dtype), table_(blocks, prefix_caching) {
  if (dtype != DType::F32 && dtype != DType::BF16) throw Error("KV cache dtype must be float32 or bfloat16");
  if (block_size == 0) throw Error("internal error: KV blocks of 0 positions");
  const size_t bytes = blocks * block_size * kv_dim * (dtype_info(dtype).bits / 8);
  for (size_t l = 0; l < layer_streams.size(); ++l) {
    Device& d = layer_streams[l]->device();
    const std::string what = "KV cache pool of layer " + std::to_string(l) + " (" + std::to_string(blocks) + " blocks)";
    keys_.push_back(d.allocate(bytes, what));
    values_.push_back(d.allocate(bytes, what));
  }
}

}  // namespace vlmforge
