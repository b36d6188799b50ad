// The KV block table's policy (free list, references, prefix cache, LRU eviction) and the block
// keys' chain, without a model.
#include "model/kv_blocks.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace vlmforge {
namespace {

KvBlockKey key(uint8_t n) {
  KvBlockKey k{};
  k[0] = n;
  return k;
}

TEST(KvBlockTable, AllocatesEveryBlockOnceThenRefusesWithAnActionableError) {
  KvBlockTable t(3, true);
  std::vector<uint32_t> got = {t.allocate(), t.allocate(), t.allocate()};
  EXPECT_EQ(got, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(t.stats().used, 3u);
  EXPECT_EQ(t.available(), 0u);
  try {
    t.allocate();
    FAIL() << "expected KvBlocksExhausted";
  } catch (const KvBlocksExhausted& e) {
    EXPECT_NE(std::string(e.what()).find("--kv_cache_memory"), std::string::npos) << e.what();
  }
  t.release(1);
  EXPECT_EQ(t.allocate(), 1u);
  EXPECT_THROW(KvBlockTable(0, true), UsageError);
}

TEST(KvBlockTable, APublishedBlockIsFoundAgainAfterItsOwnerLeaves) {
  KvBlockTable t(2, true);
  const uint32_t b = t.allocate();
  t.publish(b, key(1));
  EXPECT_FALSE(t.lookup(key(2)));
  const auto shared = t.lookup(key(1));
  ASSERT_TRUE(shared);
  EXPECT_EQ(*shared, b);
  EXPECT_EQ(t.references(b), 2u);
  t.release(b);
  t.release(b);
  EXPECT_EQ(t.stats().used, 0u);
  EXPECT_EQ(t.stats().cached, 1u);
  EXPECT_EQ(t.available(), 2u);
  const auto again = t.lookup(key(1));
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, b);
  EXPECT_EQ(t.stats().cached, 0u);
  EXPECT_EQ(t.stats().used, 1u);
  EXPECT_EQ(t.stats().prefix_queries, 3u);
  EXPECT_EQ(t.stats().prefix_hits, 2u);
}

TEST(KvBlockTable, EvictsTheLeastRecentlyReleasedCachedBlockOnlyWhenNoneIsFree) {
  KvBlockTable t(3, true);
  const uint32_t a = t.allocate(), b = t.allocate();
  t.publish(a, key(1));
  t.publish(b, key(2));
  t.release(b);  // released first: evicted first
  t.release(a);
  const uint32_t fresh = t.allocate();  // the free block, no eviction
  EXPECT_NE(fresh, a);
  EXPECT_NE(fresh, b);
  EXPECT_EQ(t.stats().cached, 2u);
  EXPECT_EQ(t.allocate(), b);
  EXPECT_FALSE(t.lookup(key(2))) << "an evicted block's key must be forgotten";
  EXPECT_TRUE(t.lookup(key(1)));
}

TEST(KvBlockTable, ADuplicateKeyKeepsTheFirstBlockAndWithoutPrefixCachingNothingIsFound) {
  KvBlockTable t(2, true);
  const uint32_t a = t.allocate(), b = t.allocate();
  t.publish(a, key(7));
  t.publish(b, key(7));
  t.release(b);
  EXPECT_EQ(t.stats().cached, 0u) << "the duplicate is not cached: it is free again";
  EXPECT_EQ(*t.lookup(key(7)), a);

  KvBlockTable off(1, false);
  const uint32_t c = off.allocate();
  off.publish(c, key(1));
  off.release(c);
  EXPECT_FALSE(off.lookup(key(1)));
  EXPECT_EQ(off.stats().cached, 0u);
}

TEST(BlockKeys, ChainOverFullBlocksOnlyAndDependOnEverythingBefore) {
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9}, b = {9, 2, 3, 4, 5, 6, 7, 8, 9};
  const auto ka = block_keys(a, {}, 0, -1, {}, 0, 4), kb = block_keys(b, {}, 0, -1, {}, 0, 4);
  ASSERT_EQ(ka.size(), 2u);  // the partial last block has no key
  EXPECT_NE(ka[0], kb[0]);
  EXPECT_NE(ka[1], kb[1]) << "block 1 has the same tokens but another prefix";
  EXPECT_EQ(block_keys(a, {}, 0, -1, {}, 0, 4), ka);
  EXPECT_NE(block_keys(a, {}, 5, -1, {}, 0, 4)[0], ka[0]) << "other rotary positions";
}

TEST(BlockKeys, ImageTokensAreKeyedByTheirEmbeddings) {
  const int32_t image = 100;
  const std::vector<int32_t> t = {1, image, image, 2};
  const std::vector<float> cat = {1, 2, 3, 4}, dog = {1, 2, 3, 5};  // two rows of two floats
  const auto kc = block_keys(t, {}, 0, image, cat, 2, 4), kd = block_keys(t, {}, 0, image, dog, 2, 4);
  EXPECT_NE(kc[0], kd[0]);
  EXPECT_EQ(block_keys(t, {}, 0, image, cat, 2, 4), kc);
  std::vector<std::array<int64_t, 3>> rope = {{0, 0, 0}, {1, 1, 1}, {1, 1, 2}, {3, 3, 3}};
  EXPECT_NE(block_keys(t, rope, 0, image, cat, 2, 4)[0], kc[0]) << "M-RoPE positions are part of the key";
}

}  // namespace
}  // namespace vlmforge
