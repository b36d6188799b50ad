// The Vulkan device's sub-allocator: buffers carved from shared blocks keep their contents while
// their neighbours are freed and the space is reused, and a buffer larger than a block works.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <vector>

#include "backends/registry.h"
#include "backends/stream.h"

namespace vlmforge {
namespace {

#ifdef VLMFORGE_WITH_VULKAN
std::unique_ptr<Device> open_vulkan() {
  static const DeviceRegistry registry = DeviceRegistry::builtin();
  const DeviceBackend* vulkan = registry.find("vulkan");
  if (vulkan->physical_count().value_or(0) == 0) return nullptr;
  return vulkan->open({"vulkan", 0}, 0, std::nullopt, 1);
}

std::vector<std::byte> pattern(size_t bytes, uint32_t seed) {
  std::vector<std::byte> v(bytes);
  std::mt19937 rng(seed);
  for (auto& b : v) b = std::byte(rng() & 0xff);
  return v;
}

TEST(VulkanDevice, SubAllocatedBuffersKeepTheirContentsAcrossFreesAndReuse) {
  std::unique_ptr<Device> device = open_vulkan();
  if (!device) {
    if (std::getenv("CI")) FAIL() << "no Vulkan device (is mesa-vulkan-drivers installed?)";
    GTEST_SKIP() << "no Vulkan device here";
  }
  std::mt19937 rng(7);
  struct Live {
    DeviceBuffer buffer;
    std::vector<std::byte> contents;
  };
  std::vector<Live> live;
  auto add = [&](size_t bytes) {
    Live l{device->allocate(bytes, "test"), pattern(bytes, static_cast<uint32_t>(rng()))};
    device->copy_from_host(l.buffer, 0, l.contents);
    live.push_back(std::move(l));
  };
  for (int i = 0; i < 300; ++i) add(1 + rng() % 70000);  // odd sizes, several per block
  add(size_t{80} << 20);                                   // larger than a block
  for (size_t i = 0; i < live.size(); i += 2) live[i].buffer.reset();  // holes between live buffers
  std::erase_if(live, [](const Live& l) { return l.buffer.empty(); });
  for (int i = 0; i < 200; ++i) add(1 + rng() % 30000);  // reuses the holes
  for (const Live& l : live) {
    std::vector<std::byte> back(l.contents.size());
    device->copy_to_host(back, l.buffer, 0);
    ASSERT_EQ(back, l.contents) << l.contents.size() << "-byte buffer";
  }
  uint64_t held = 0;
  for (const Live& l : live) held += l.buffer.size();
  EXPECT_EQ(device->allocated(), held);
  live.clear();
  EXPECT_EQ(device->allocated(), 0u);
}
#endif

}  // namespace
}  // namespace vlmforge
