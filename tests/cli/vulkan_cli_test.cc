// The whole model on a Vulkan device (Mesa's lavapipe where there is no GPU): a backend whose
// memory the host cannot address gives the CPU backend's results, alone and mixed with the CPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "support/test_support.h"
#include "vision/encoded_images.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

fs::path golden(const char* name) { return shared_dir() / "golden" / name; }

// Whether `vlmforge devices` finds vulkan:0 (built with Vulkan, a driver installed).
bool vulkan_present() {
  const auto r = run_vlmforge({"devices", "--json"});
  if (r.exit_code != 0) {
    ADD_FAILURE() << "devices --json: " << r.err;
    return false;
  }
  const json listed = json::parse(r.out);
  for (const auto& d : listed["devices"])
    if (d["name"] == "vulkan:0" && d["present"].get<bool>()) return true;
  return false;
}

class VulkanCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    present_ = vulkan_present();
    dir_ = std::make_unique<TempDir>();
    const fs::path tokenizer = shared_dir() / "tokenizer" / "tokenizer.json";
    if (present_ && fs::exists(tokenizer)) {
      const auto r = run_vlmforge({"generate", "checkpoint", "--preset", "tiny-vl", "--output_dir", vl().string(),
                                   "--dtype", "bfloat16", "--vocab_size", "151936", "--tokenizer", tokenizer.string()});
      ASSERT_EQ(r.exit_code, 0) << r.err;
      std::ofstream(dir_->path() / "wide.png", std::ios::binary) << encoded_png(200, 120);
    }
  }
  static void TearDownTestSuite() { dir_.reset(); }
  void SetUp() override {
#ifndef VLMFORGE_WITH_VULKAN
    GTEST_SKIP() << "built without the Vulkan backend (VLMFORGE_VULKAN=OFF)";
#endif
    if (!present_) {
      // CI installs lavapipe (scripts/setup.sh): there a missing device is a failure, not a skip.
      if (std::getenv("CI")) FAIL() << "no vulkan:0 device (is mesa-vulkan-drivers installed?)";
      GTEST_SKIP() << "no Vulkan device here";
    }
    VLMFORGE_REQUIRE_SHARED(golden("qwen2-tiny-f32") / "golden.json");
  }
  static fs::path vl() { return dir_->path() / "vl"; }
  static std::string image() { return (dir_->path() / "wide.png").string(); }

  // Greedy tokens and their logprobs of one infer run.
  static std::pair<std::vector<int>, std::vector<double>> greedy(std::vector<std::string> args) {
    for (const char* a : {"--temperature", "0", "--max_new_tokens", "6", "--logprobs", "--json"}) args.push_back(a);
    const auto r = run_vlmforge(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::pair<std::vector<int>, std::vector<double>> out;
    if (r.exit_code != 0) return out;
    const json parsed = json::parse(r.out);
    for (const auto& t : parsed["logprobs"]["content"]) {
      out.first.push_back(t["id"].get<int>());
      out.second.push_back(t["logprob"].get<double>());
    }
    return out;
  }
  static void expect_same_run(const std::pair<std::vector<int>, std::vector<double>>& got,
                              const std::pair<std::vector<int>, std::vector<double>>& cpu) {
    ASSERT_FALSE(cpu.first.empty());
    EXPECT_EQ(got.first, cpu.first);
    ASSERT_EQ(got.second.size(), cpu.second.size());
    for (size_t i = 0; i < cpu.second.size(); ++i) EXPECT_NEAR(got.second[i], cpu.second[i], 1e-3) << "token " << i;
  }

  static bool present_;
  static std::unique_ptr<TempDir> dir_;
};
bool VulkanCli::present_ = false;
std::unique_ptr<TempDir> VulkanCli::dir_;

TEST_F(VulkanCli, ScoreOnVulkanMatchesTheGoldenLogprobsAndThePlan) {
  const json g = read_json_file(golden("qwen2-tiny-f32") / "golden.json");
  const json& c = g["cases"][2];
  std::string ids;
  for (const auto& id : c["ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(id.get<int>());
  const auto r = run_vlmforge({"score", "--model", golden("qwen2-tiny-f32").string(), "--ids", ids, "--json",
                               "--device_map", "auto", "--devices", "vulkan:0", "--memory_report"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("vulkan:0: embed, layers 0-1, norm, lm_head"), std::string::npos) << r.err;
  const json out = json::parse(r.out);
  ASSERT_EQ(out["prompt_logprobs"].size(), c["prompt_logprobs"].size());
  for (size_t i = 0; i < c["prompt_logprobs"].size(); ++i)
    EXPECT_NEAR(out["prompt_logprobs"][i].get<double>(), c["prompt_logprobs"][i].get<double>(), 1e-4) << i;
  const auto report = memory_report(r.err);
  ASSERT_EQ(report.count("vulkan:0"), 1u) << r.err;
  const auto [peak, plan] = report.at("vulkan:0");
  EXPECT_NEAR(peak / plan, 1.0, 0.10) << r.err;
}

TEST_F(VulkanCli, GreedyBf16WithABf16CacheGivesTheCpuTokens) {
  const std::vector<std::string> base{"infer", "--model", golden("qwen2-tiny-bf16").string(), "--query",
                                      "Write a haiku about the sea.", "--kv_cache_dtype", "bfloat16"};
  std::vector<std::string> on_vulkan = base;
  for (const char* a : {"--device_map", "auto", "--devices", "vulkan:0"}) on_vulkan.push_back(a);
  expect_same_run(greedy(on_vulkan), greedy(base));
}

TEST_F(VulkanCli, VisionLanguageOnVulkanAndSplitWithTheCpuGiveTheCpuRun) {
  VLMFORGE_REQUIRE_SHARED(shared_dir() / "tokenizer" / "tokenizer.json");
  const std::vector<std::string> base{"infer", "--model", vl().string(), "--query", "<image>Describe this.",
                                      "--images", image(), "--max_model_len", "256"};
  const auto cpu = greedy(base);
  std::vector<std::string> on_vulkan = base;
  for (const char* a : {"--device_map", "auto", "--devices", "vulkan:0"}) on_vulkan.push_back(a);
  expect_same_run(greedy(on_vulkan), cpu);
  // The tower and the first layer on the GPU, the rest on the host: image embeddings and hidden
  // states cross from device memory to the host and back.
  const fs::path map = dir_->path() / "split.json";
  std::ofstream(map) << json{{"visual", "vulkan:0"}, {"model.embed_tokens", "vulkan:0"}, {"model.layers.0", "vulkan:0"},
                             {"model.layers.1", "cpu:0"}, {"model.norm", "cpu:0"}, {"lm_head", "cpu:0"}}
                            .dump();
  std::vector<std::string> split = base;
  for (const std::string& a : {std::string("--device_map"), map.string(), std::string("--devices"),
                               std::string("vulkan:0,cpu:0")})
    split.push_back(a);
  expect_same_run(greedy(split), cpu);
}

TEST_F(VulkanCli, DevicesSaysWhyThereIsNoVulkanDevice) {
  const char* kept = std::getenv("VK_ICD_FILENAMES");
  const std::string previous = kept ? kept : "";
  setenv("VK_ICD_FILENAMES", "/nonexistent/icd.json", 1);
  const auto r = run_vlmforge({"devices"});
  if (kept) setenv("VK_ICD_FILENAMES", previous.c_str(), 1); else unsetenv("VK_ICD_FILENAMES");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("vulkan:0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("vulkan: no devices ("), std::string::npos) << r.out;
}

}  // namespace
}  // namespace vlmforge::test
