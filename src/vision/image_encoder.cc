#include "vision/image_encoder.h"

#include "util/error.h"
#include "vision/image_decode.h"
#include "vision/image_processor.h"

namespace vlmforge::vision {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

Sha256Digest image_cache_key(std::span<const uint8_t> bytes, const PixelBudget& budget) {
  // The parameters that shape the embeddings, fixed-width, then the bytes.
  uint8_t params[16];
  for (int i = 0; i < 8; ++i) {
    params[i] = static_cast<uint8_t>(budget.min_pixels >> (8 * i));
    params[8 + i] = static_cast<uint8_t>(budget.max_pixels >> (8 * i));
  }
  return sha256({std::span<const uint8_t>(params), bytes});
}

ImageEncoder::ImageEncoder(VisionTower& tower, const PixelBudget& budget, uint64_t cache_bytes,
                           const DecodeOptions& decode, size_t max_waiting)
    : tower_(tower), budget_(budget), decode_(decode), capacity_(cache_bytes), turns_(max_waiting) {}

EncodedImage ImageEncoder::encode(const std::filesystem::path& path, const std::function<bool()>& stop) {
  const auto start = Clock::now();
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  {
    std::lock_guard lock(mutex_);
    timings_.read_seconds += since(start);
  }
  return encode(bytes, path.string(), stop);
}

std::optional<EncodedImage> ImageEncoder::lookup(const Key& key) {
  std::lock_guard lock(mutex_);
  const auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second);
  ++timings_.hits;
  EncodedImage hit = it->second->image;
  hit.cache_hit = true;
  return hit;
}

EncodedImage ImageEncoder::encode(std::span<const uint8_t> bytes, const std::string& name,
                                  const std::function<bool()>& stop) {
  try {
    return encode_or_stop(bytes, name, stop);
  } catch (const Cancelled&) {
    std::lock_guard lock(mutex_);
    ++timings_.cancelled;
    throw;
  }
}

EncodedImage ImageEncoder::encode_or_stop(std::span<const uint8_t> bytes, const std::string& name,
                                          const std::function<bool()>& stop) {
  auto check_stop = [&] {
    if (stop && stop()) throw Cancelled("encoding " + name + " cancelled");
  };
  check_stop();
  auto start = Clock::now();
  const Key key = image_cache_key(bytes, budget_);
  auto found = [&](std::optional<EncodedImage> hit) {
    std::lock_guard lock(mutex_);
    timings_.lookup_seconds += since(start);
    return hit;
  };
  if (auto hit = found(lookup(key))) return *hit;
  const TurnQueue::Turn turn = turns_.wait(stop);
  // Another caller may have encoded the same bytes while this one waited.
  start = Clock::now();
  if (auto hit = found(lookup(key))) return *hit;
  check_stop();
  start = Clock::now();
  const RgbImage rgb = decode_rgb(bytes, name, decode_);
  const double decode_seconds = since(start);
  check_stop();
  start = Clock::now();
  ImagePatches patches;
  try {
    patches = preprocess_image(rgb, budget_, tower_.config());
  } catch (const Error& e) {
    throw Error(name + ": " + e.what());
  }
  const double preprocess_seconds = since(start);
  check_stop();
  start = Clock::now();
  EncodedImage image;
  image.embeds = std::make_shared<const std::vector<float>>(tower_.encode(patches, stop));
  const double encode_seconds = since(start);
  image.grid_t = patches.grid_t, image.grid_h = patches.grid_h, image.grid_w = patches.grid_w;
  image.tokens = patches.tokens(tower_.config().spatial_merge_size);
  const uint64_t size = image.embeds->size() * sizeof(float);
  std::lock_guard lock(mutex_);
  ++timings_.misses;
  timings_.decode_seconds += decode_seconds;
  timings_.preprocess_seconds += preprocess_seconds;
  timings_.encode_seconds += encode_seconds;
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
