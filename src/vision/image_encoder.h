#pragma once
// Image file → vision embeddings (decode, preprocess, vision tower), with an LRU cache keyed by the
// SHA-256 of the file's content and the preprocessing parameters (and bounded by the embeddings'
// bytes), so an image repeated across rows, turns or datasets is encoded once, and a server's
// client cannot forge another image's key.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "util/sha256.h"
#include "util/turn_queue.h"
#include "vision/image_decode.h"
#include "vision/smart_resize.h"
#include "vision/vision_tower.h"

namespace vlmforge::vision {

// The cache key of an image: SHA-256 over the pixel budget and the file's bytes.
Sha256Digest image_cache_key(std::span<const uint8_t> bytes, const PixelBudget& budget);

struct EncodedImage {
  std::shared_ptr<const std::vector<float>> embeds;  // [tokens, out_hidden_size]
  uint32_t grid_t = 0, grid_h = 0, grid_w = 0;       // image_grid_thw
  size_t tokens = 0;
  bool cache_hit = false;
};

struct ImageTimings {
  double read_seconds = 0, decode_seconds = 0, preprocess_seconds = 0, encode_seconds = 0, lookup_seconds = 0;
  size_t hits = 0, misses = 0;
  size_t cancelled = 0;  // encodes given up for their caller's stop (waiting or in progress)
};

class ImageEncoder {
 public:
  // `tower` must outlive the encoder. cache_bytes 0 disables the cache. At most `max_waiting`
  // callers wait for the tower at once; one more gets TurnQueueFull.
  ImageEncoder(VisionTower& tower, const PixelBudget& budget, uint64_t cache_bytes, const DecodeOptions& decode = {},
               size_t max_waiting = SIZE_MAX);

  // Safe to call from several threads. Cache hits are answered at once; misses take turns on the
  // tower in arrival order (TurnQueue: one image per turn, so callers encoding several images
  // alternate), decode included, so one decoded image at a time is in memory. The tower is not
  // run concurrently: it runs on one Stream, which takes one caller at a time.
  // `stop` (may be empty) is asked while waiting for the turn, before decoding, between decoding,
  // preprocessing and the tower, and between the tower's blocks: true throws Cancelled, with the
  // tower's buffers released. Throws TurnQueueFull when the line is full, Error naming the file
  // for a bad image.
  EncodedImage encode(const std::filesystem::path& path, const std::function<bool()>& stop = {});
  // The same for an image already in memory (a server's request body); `name` is used in errors.
  EncodedImage encode(std::span<const uint8_t> bytes, const std::string& name, const std::function<bool()>& stop = {});

  const PixelBudget& budget() const { return budget_; }
  ImageTimings timings() const;
  // Callers waiting for the tower now, and whether one is encoding.
  size_t waiting() const { return turns_.waiting(); }
  bool busy() const { return turns_.busy(); }
  uint64_t cached_bytes() const;

 private:
  using Key = Sha256Digest;
  struct KeyHash {
    size_t operator()(const Key& k) const {
      size_t h;
      std::memcpy(&h, k.data(), sizeof h);  // already uniformly distributed
      return h;
    }
  };
  struct Entry {
    Key key;
    EncodedImage image;
    uint64_t bytes;
  };

  EncodedImage encode_or_stop(std::span<const uint8_t> bytes, const std::string& name, const std::function<bool()>& stop);
  // The cached image of `key` (counted as a hit), if any.
  std::optional<EncodedImage> lookup(const Key& key);

  VisionTower& tower_;
  PixelBudget budget_;
  DecodeOptions decode_;
  uint64_t capacity_;
  uint64_t used_ = 0;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<Key, std::list<Entry>::iterator, KeyHash> index_;
  ImageTimings timings_;
  mutable std::mutex mutex_;  // guards the cache and the timings, never held while encoding
  TurnQueue turns_;           // the decode-preprocess-tower work of cache misses
};

}  // namespace vlmforge::vision
