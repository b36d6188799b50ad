#include "vision/image_encoder.h"

#include <cstring>

#include "util/error.h"
#include "vision/image_decode.h"
#include "vision/image_processor.h"

namespace vlmforge::vision {

namespace {

uint64_t mix(uint64_t h) {  // MurmurHash3's 64-bit finalizer
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 33);
}

using Clock = std::chrono::steady_clock;
double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

uint64_t content_hash(std::span<const uint8_t> bytes) {
  // Two independent lanes over 16-byte steps keep the multiplies in flight.
  uint64_t a = 0x9E3779B97F4A7C15ull ^ bytes.size(), b = 0xC2B2AE3D27D4EB4Full;
  size_t i = 0;
  for (; i + 16 <= bytes.size(); i += 16) {
    uint64_t x, y;
    std::memcpy(&x, bytes.data() + i, 8);
    std::memcpy(&y, bytes.data() + i + 8, 8);
    a = (a ^ x) * 0x87C37B91114253D5ull;
    a = (a << 31) | (a >> 33);
    b = (b ^ y) * 0x4CF5AD432745937Full;
    b = (b << 29) | (b >> 35);
  }
  uint64_t tail = 0;
  if (i < bytes.size()) std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  return mix(a ^ mix(b ^ tail));
}

ImageEncoder::ImageEncoder(VisionTower& tower, const PixelBudget& budget, uint64_t cache_bytes,
                           const DecodeOptions& decode)
    : tower_(tower), budget_(budget), decode_(decode), capacity_(cache_bytes) {}

EncodedImage ImageEncoder::encode(const std::filesystem::path& path) {
  std::lock_guard lock(mutex_);
  const auto start = Clock::now();
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  timings_.read_seconds += since(start);
  return encode_locked(bytes, path.string());
}

EncodedImage ImageEncoder::encode(std::span<const uint8_t> bytes, const std::string& name) {
  std::lock_guard lock(mutex_);
  return encode_locked(bytes, name);
}

EncodedImage ImageEncoder::encode_locked(std::span<const uint8_t> bytes, const std::string& name) {
  auto start = Clock::now();
  const Key key{content_hash(bytes), bytes.size()};
  if (const auto it = index_.find(key); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    timings_.lookup_seconds += since(start);
    ++timings_.hits;
    EncodedImage hit = it->second->image;
    hit.cache_hit = true;
    return hit;
  }
  timings_.lookup_seconds += since(start);
  ++timings_.misses;
  start = Clock::now();
  const RgbImage rgb = decode_rgb(bytes, name, decode_);
  timings_.decode_seconds += since(start);
  start = Clock::now();
  ImagePatches patches;
  try {
    patches = preprocess_image(rgb, budget_, tower_.config());
  } catch (const Error& e) {
    throw Error(name + ": " + e.what());
  }
  timings_.preprocess_seconds += since(start);
  start = Clock::now();
  EncodedImage image;
  image.embeds = std::make_shared<const std::vector<float>>(tower_.encode(patches));
  timings_.encode_seconds += since(start);
  image.grid_t = patches.grid_t, image.grid_h = patches.grid_h, image.grid_w = patches.grid_w;
  image.tokens = patches.tokens(tower_.config().spatial_merge_size);
  const uint64_t size = image.embeds->size() * sizeof(float);
  if (size <= capacity_) {
    while (used_ + size > capacity_) {
      used_ -= lru_.back().bytes;
      index_.erase(lru_.back().key);
      lru_.pop_back();
    }
    lru_.push_front({key, image, size});
    index_[key] = lru_.begin();
    used_ += size;
  }
  return image;
}

ImageTimings ImageEncoder::timings() const {
  std::lock_guard lock(mutex_);
  return timings_;
}

uint64_t ImageEncoder::cached_bytes() const {
  std::lock_guard lock(mutex_);
  return used_;
}

}  // namespace vlmforge::vision
