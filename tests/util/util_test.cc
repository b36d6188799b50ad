#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <numeric>
#include <thread>

#include "util/bytes.h"
#include "util/error.h"
#include "util/regex.h"
#include "util/thread_pool.h"

namespace vlmforge {
namespace {

TEST(Bytes, ParsesSizesLikeHuggingfaceHub) {
  EXPECT_EQ(parse_byte_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(parse_byte_size("2GiB"), 2ull << 30);
  EXPECT_EQ(parse_byte_size("500MB"), 500'000'000u);
  EXPECT_EQ(parse_byte_size("1.5 kb"), 1500u);
  EXPECT_EQ(parse_byte_size("123"), 123u);
  EXPECT_THROW(parse_byte_size("5 parsecs"), UsageError);
  EXPECT_THROW(parse_byte_size("-1GB"), UsageError);
  EXPECT_THROW(parse_byte_size(""), UsageError);
}

TEST(Bytes, Formats) {
  EXPECT_EQ(format_bytes(96), "96 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(3ull << 30), "3.00 GiB");
}

TEST(ThreadPool, CoversEveryIndexOnce) {
  ThreadPool pool(4);
  for (size_t count : {0u, 1u, 3u, 4u, 5u, 1000u}) {
    std::vector<std::atomic<int>> hits(count);
    pool.parallel_for(count, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) hits[i]++;
    });
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(hits[i].load(), 1) << "count " << count << " index " << i;
  }
}

TEST(ThreadPool, PropagatesExceptions) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(9, [](size_t b, size_t) {
    if (b > 0) throw Error("boom");
  }), Error);
  // The pool is still usable afterwards.
  std::atomic<size_t> sum = 0;
  pool.parallel_for(100, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 4950u);
}

// Hand-offs both while the workers spin (back-to-back calls) and after they have gone to sleep
// (pauses longer than the spin window): every call must see every index exactly once.
TEST(ThreadPool, BackToBackAndAfterSleepHandOffs) {
  ThreadPool pool(3);
  std::vector<size_t> seen(64);
  for (size_t call = 0; call < 3000; ++call) {
    if (call % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    pool.parallel_for(seen.size(), [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) ++seen[i];
    });
  }
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], 3000u) << "index " << i;
}

TEST(Regex, PythonSemantics) {
  const Regex full(R"(.*\.(q_proj|v_proj))", "test");
  EXPECT_TRUE(full.full_match("model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(full.full_match("model.layers.0.self_attn.q_proj.x"));
  const Regex prefix("(.*\\.)?(layers\\.1\\..*)$", "test");
  EXPECT_TRUE(prefix.match_prefix("model.layers.1.mlp.up_proj"));
  EXPECT_FALSE(prefix.match_prefix("model.layers.11x"));
  EXPECT_THROW(Regex("(unclosed", "test"), Error);
}

}  // namespace
}  // namespace vlmforge
