// deploy's placement and image flags are checked before the server starts: bad values are usage
// errors (exit 2) or clear failures (exit 1), never a server that half starts. Serving itself is
// tested end to end in tests/server/e2e (ctest deploy_e2e_openai).
#include <gtest/gtest.h>

#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;

TEST(DeployCli, BadPlacementFlagsFailBeforeServing) {
  const fs::path model = shared_dir() / "golden" / "qwen2-tiny-f32";
  VLMFORGE_REQUIRE_SHARED(model / "config.json");
  auto expect = [&](std::vector<std::string> extra, int code, const std::string& text) {
    std::vector<std::string> args{"deploy", "--model", model.string(), "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_vlmforge(args);
    EXPECT_EQ(r.exit_code, code) << text << ": " << r.err;
    EXPECT_NE(r.err.find(text), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("serving"), std::string::npos) << r.out;
  };
  expect({"--device_map", "nearest"}, 2, "neither auto");
  expect({"--device_map", "auto", "--devices", "cpu:0,cpu:1", "--max_memory", "2MiB"}, 1, "never split");
  // Each of these becomes threads or descriptors: a typo must not exhaust the machine.
  expect({"--max_queue", "1000000"}, 2, "--max_queue must be at most 1024");
  expect({"--max_batch_size", "100000"}, 2, "--max_batch_size must be 1..256");
  expect({"--threads", "100000"}, 2, "--threads must be at most 256");
  expect({"--max_connections", "0"}, 2, "--max_connections must be 1..4096");
  expect({"--max_body_mb", "1e9"}, 2, "--max_body_mb must be in (0, 4096]");
}

}  // namespace
}  // namespace vlmforge::test
