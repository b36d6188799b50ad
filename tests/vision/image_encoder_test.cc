// The image cache: content-keyed hits, LRU eviction within the byte bound, and cached embeddings
// equal to a fresh encode.
#include "vision/image_encoder.h"

#include <gtest/gtest.h>

#include <fstream>

#include "backends/cpu_device.h"
#include "model/layout.h"
#include "model/random_checkpoint.h"
#include "support/test_support.h"
#include "vision/encoded_images.h"

namespace vlmforge::test {
namespace {

TEST(VisionImageCache, KeySeesEveryByteAndTheBudget) {
  // Every length around the old 16-byte stride: its hash never mixed in tail bytes past the 8th
  // (and copied them past an 8-byte buffer), so images differing there shared a cache entry.
  for (size_t size = 0; size <= 48; ++size) {
    std::vector<uint8_t> bytes(size);
    for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(i * 31 + 7);
    const auto base = vision::image_cache_key(bytes, {});
    for (size_t i = 0; i < size; ++i) {
      auto changed = bytes;
      changed[i] ^= 0x80;
      EXPECT_NE(vision::image_cache_key(changed, {}), base) << size << " " << i;
    }
    EXPECT_EQ(vision::image_cache_key(bytes, {}), base);
    EXPECT_NE(vision::image_cache_key(bytes, {.min_pixels = 3136, .max_pixels = 1 << 20}), base);
    if (size) {
      EXPECT_NE(vision::image_cache_key(std::span(bytes).first(size - 1), {}), base);
    }
  }
}

TEST(VisionImageCache, KeyIsSha256) {
  // FIPS 180-2's "abc" example, through the same digest the key uses.
  const std::string abc = "abc";
  const Sha256Digest d = sha256({std::span(reinterpret_cast<const uint8_t*>(abc.data()), abc.size())});
  std::string hex;
  for (uint8_t b : d) hex += "0123456789abcdef"[b >> 4], hex += "0123456789abcdef"[b & 15];
  EXPECT_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(VisionImageCache, HitsByContentAndLruEviction) {
  TempDir dir;
  const ModelConfig config = preset_config("tiny-vl");
  generate_checkpoint(config, dir / "model", {.dtype = DType::F32});
  const Checkpoint ckpt(dir / "model");
  CpuDevice device(0, std::nullopt, 1);
  vision::VisionTower tower(ckpt, config, device);
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
    return dir / name;
  };
  // 56x56 images: 4 tokens of 64 floats = 1 KiB of embeddings each.
  const auto a = write("a.png", encoded_png(56, 56)), copy = write("copy.png", encoded_png(56, 56));
  const auto b = write("b.jpg", encoded_jpeg(56, 56)), c = write("c.webp", encoded_webp(56, 56));
  vision::ImageEncoder encoder(tower, {}, 2 * 4 * 64 * sizeof(float));
  const auto first = encoder.encode(a);
  EXPECT_FALSE(first.cache_hit);
  EXPECT_EQ(first.tokens, 4u);
  EXPECT_TRUE(encoder.encode(copy).cache_hit);  // same bytes under another name
  EXPECT_FALSE(encoder.encode(b).cache_hit);
  EXPECT_TRUE(encoder.encode(a).cache_hit);      // a is now the most recent
  EXPECT_FALSE(encoder.encode(c).cache_hit);     // evicts b
  EXPECT_TRUE(encoder.encode(a).cache_hit);
  EXPECT_FALSE(encoder.encode(b).cache_hit);
  EXPECT_LE(encoder.cached_bytes(), 2u * 4 * 64 * sizeof(float));
  const auto t = encoder.timings();
  EXPECT_EQ(t.hits, 3u);
  EXPECT_EQ(t.misses, 4u);
  // A cached result is the fresh result.
  vision::ImageEncoder uncached(tower, {}, 0);
  EXPECT_EQ(*uncached.encode(a).embeds, *first.embeds);
  EXPECT_FALSE(uncached.encode(a).cache_hit);
  EXPECT_EQ(uncached.cached_bytes(), 0u);
}

TEST(VisionImageCache, BytesInMemoryEncodeAsTheirFileAndShareTheCache) {
  TempDir dir;
  const ModelConfig config = preset_config("tiny-vl");
  generate_checkpoint(config, dir / "model", {.dtype = DType::F32});
  const Checkpoint ckpt(dir / "model");
  CpuDevice device(0, std::nullopt, 1);
  vision::VisionTower tower(ckpt, config, device);
  const std::string png = encoded_png(90, 62);
  std::ofstream(dir / "a.png", std::ios::binary) << png;
  const std::vector<uint8_t> bytes(png.begin(), png.end());
  vision::ImageEncoder uncached(tower, {}, 0);
  const auto from_memory = uncached.encode(bytes, "request image 1");
  const auto from_file = uncached.encode(dir / "a.png");
  EXPECT_EQ(*from_memory.embeds, *from_file.embeds);
  EXPECT_EQ(from_memory.tokens, from_file.tokens);
  EXPECT_EQ(from_memory.grid_h, from_file.grid_h);
  EXPECT_EQ(from_memory.grid_w, from_file.grid_w);
  vision::ImageEncoder cached(tower, {}, uint64_t{1} << 20);
  EXPECT_FALSE(cached.encode(dir / "a.png").cache_hit);
  EXPECT_TRUE(cached.encode(bytes, "request image 1").cache_hit);  // same content, other source
  // Errors name the image as the caller did.
  const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + 100);
  const std::string error = error_of([&] { uncached.encode(cut, "request image 2"); });
  EXPECT_NE(error.find("request image 2"), std::string::npos) << error;
}

TEST(VisionImageCache, AStoppedEncodeIsCountedNotCachedAndFreesTheTower) {
  TempDir dir;
  const ModelConfig config = preset_config("tiny-vl");
  generate_checkpoint(config, dir / "model", {.dtype = DType::F32});
  const Checkpoint ckpt(dir / "model");
  CpuDevice device(0, std::nullopt, 1);
  vision::VisionTower tower(ckpt, config, device);
  const std::string png = encoded_png(56, 56);
  const std::vector<uint8_t> bytes(png.begin(), png.end());
  vision::ImageEncoder encoder(tower, {}, uint64_t{1} << 20);
  // Stops at each point it is asked: before the turn, ..., between the tower's blocks.
  for (size_t stop_at = 1;; ++stop_at) {
    size_t asked = 0;
    try {
      const auto image = encoder.encode(bytes, "request image 1", [&] { return ++asked == stop_at; });
      EXPECT_FALSE(image.cache_hit);  // no stopped attempt left an entry behind
      EXPECT_EQ(encoder.timings().cancelled, stop_at - 1);
      break;
    } catch (const Cancelled& e) {
      EXPECT_FALSE(encoder.busy()) << "stop " << stop_at << ": " << e.what();
      EXPECT_EQ(encoder.cached_bytes(), 0u);
    }
    ASSERT_LT(stop_at, 100u) << "the stop is asked without end";
  }
  EXPECT_GE(encoder.timings().cancelled, 3u + size_t(config.vision->depth));
  EXPECT_TRUE(encoder.encode(bytes, "request image 1").cache_hit);
}

}  // namespace
}  // namespace vlmforge::test
