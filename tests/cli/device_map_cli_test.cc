// infer / score --device_map on capped CPU devices: the same outputs as one device, the plan's
// memory estimate against the peak accounted on each device, and bad placement input.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "model/layout.h"
#include "model/random_checkpoint.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// Qwen2.5-0.5B's structure at a smaller width: the real vocabulary (so the real tokenizer works),
// 6 layers, untied lm_head, random bf16 weights.
class DeviceMapCli : public ::testing::Test {
 protected:
  static fs::path shared_tokenizer() { return shared_dir() / "tokenizer" / "tokenizer.json"; }
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>();
    if (!fs::exists(shared_tokenizer())) return;
    ModelConfig c = preset_config("qwen2.5-0.5b");
    c.hidden_size = 128;
    c.intermediate_size = 384;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.num_hidden_layers = 6;
    c.max_window_layers = 6;
    c.tie_word_embeddings = false;
    generate_checkpoint(c, model(), CheckpointOptions{});
    fs::copy_file(shared_tokenizer(), model() / "tokenizer.json");
    c.tie_word_embeddings = true;
    generate_checkpoint(c, tied(), CheckpointOptions{});
    fs::copy_file(shared_tokenizer(), tied() / "tokenizer.json");
  }
  static void TearDownTestSuite() { dir_.reset(); }
  void SetUp() override {
    VLMFORGE_REQUIRE_SHARED(shared_tokenizer());
  }
  static fs::path model() { return dir_->path() / "m"; }
  static fs::path tied() { return dir_->path() / "tied"; }
  static std::string write_map(const std::string& name, const json& map) {
    const fs::path p = dir_->path() / name;
    std::ofstream(p) << map.dump();
    return p.string();
  }
  static std::unique_ptr<TempDir> dir_;
};
std::unique_ptr<TempDir> DeviceMapCli::dir_;

const std::vector<std::string> kGreedy = {"--temperature", "0", "--max_new_tokens", "12", "--threads", "2",
                                          "--json", "--logprobs", "--max_model_len", "600"};

// A prompt longer than one prefill chunk (512 tokens), so the run reaches the activation sizes the
// plan provisions for, and with the answer it nearly fills max_model_len.
std::string long_prompt(const std::string& topic) {
  std::string p = "Summarise the following notes about " + topic + ".";
  for (int i = 0; i < 40; ++i) p += " Note " + std::to_string(i) + ": the quick brown fox jumps over the dog.";
  return p;
}

std::vector<std::string> infer_args(const fs::path& model, std::vector<std::string> extra) {
  std::vector<std::string> a{"infer", "--model", model.string()};
  a.insert(a.end(), kGreedy.begin(), kGreedy.end());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

TEST_F(DeviceMapCli, ThreeCappedDevicesGiveTheSingleDeviceOutputs) {
  const std::string prompts = long_prompt("foxes") + "\n" + long_prompt("dogs") + "\n";
  const auto one = run_vlmforge(infer_args(model(), {"--max_batch_size", "2"}), {.stdin_text = prompts});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const std::string map = write_map("three.json", {{"model.embed_tokens", "cpu:0"},
                                                   {"model.layers.0", "cpu:0"},
                                                   {"model.layers.1", "cpu:0"},
                                                   {"model.layers.2", "cpu:1"},
                                                   {"model.layers.3", "cpu:1"},
                                                   {"model.layers.4", "cpu:2"},
                                                   {"model.layers.5", "cpu:2"},
                                                   {"model.norm", "cpu:2"},
                                                   {"lm_head", "cpu:2"}});
  const auto three = run_vlmforge(
      infer_args(model(), {"--max_batch_size", "2", "--device_map", map, "--devices", "cpu:0,cpu:1,cpu:2",
                           "--max_memory", "64MiB", "--memory_report"}),
      {.stdin_text = prompts});
  ASSERT_EQ(three.exit_code, 0) << three.err;
  EXPECT_EQ(three.out, one.out);  // responses and logprobs, bit for bit
  EXPECT_NE(three.err.find("cpu:1: layers 2-3"), std::string::npos) << three.err;
  const auto report = memory_report(three.err);
  ASSERT_EQ(report.size(), 3u) << three.err;
  for (const auto& [device, values] : report) {
    const auto [peak, plan] = values;
    EXPECT_GT(peak, 0) << device;
    EXPECT_NEAR(peak / plan, 1.0, 0.10) << device << ": peak " << peak << ", plan " << plan;
  }
}

TEST_F(DeviceMapCli, AutoPlacementOnUnevenCapsMatchesAndStaysWithinTheCaps) {
  const auto one = run_vlmforge(infer_args(model(), {"--query", long_prompt("colours")}));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  // Embeddings and lm_head are 37 MiB each, a layer with its prefill workspace about 4 MiB: the caps
  // force a three-way split.
  const auto auto_map = run_vlmforge(infer_args(
      model(), {"--query", long_prompt("colours"), "--device_map", "auto", "--devices", "cpu:0,cpu:1,cpu:2",
                "--max_memory", "cpu:0=44MiB,cpu:1=6MiB,cpu:2=46MiB", "--memory_report"}));
  ASSERT_EQ(auto_map.exit_code, 0) << auto_map.err;
  EXPECT_EQ(auto_map.out, one.out);
  const auto report = memory_report(auto_map.err);
  ASSERT_EQ(report.size(), 3u) << auto_map.err;
  EXPECT_LE(report.at("cpu:1").first, 6.0 * 1024 * 1024);
  EXPECT_NE(auto_map.err.find("cpu:1: layer"), std::string::npos) << auto_map.err;
  for (const auto& [device, values] : report) EXPECT_NEAR(values.first / values.second, 1.0, 0.10) << device;
}

TEST_F(DeviceMapCli, ScoreAcrossDevicesMatchesOneDeviceWithTiedEmbeddings) {
  const std::vector<std::string> base{"score", "--model", tied().string(), "--text",
                                      "The capital of France is Paris, and the capital of Italy is Rome.",
                                      "--threads", "2", "--json"};
  const auto one = run_vlmforge(base);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto args = base;
  // Tied lm_head goes back to cpu:0 after the last layer on cpu:2.
  for (const char* a : {"--device_map", "sequential", "--devices", "cpu:0,cpu:1,cpu:2", "--max_memory",
                        "cpu:0=46.5MiB,cpu:1=1MiB,cpu:2=8MiB", "--memory_report"})
    args.push_back(a);
  const auto three = run_vlmforge(args);
  ASSERT_EQ(three.exit_code, 0) << three.err;
  EXPECT_EQ(three.out, one.out);
  EXPECT_NE(three.err.find("cpu:2: "), std::string::npos) << three.err;
  for (const auto& [device, values] : memory_report(three.err))
    if (values.second > 0) {
      EXPECT_NEAR(values.first / values.second, 1.0, 0.10) << device;
    }
}

TEST_F(DeviceMapCli, BadPlacementInputIsAClearError) {
  auto expect = [&](std::vector<std::string> extra, int code, const std::string& text) {
    const auto r = run_vlmforge(infer_args(model(), [&] {
      extra.insert(extra.begin(), {"--query", "hi"});
      return extra;
    }()));
    EXPECT_EQ(r.exit_code, code) << text << ": " << r.err;
    EXPECT_NE(r.err.find(text), std::string::npos) << r.err;
  };
  expect({"--device_map", "nearest"}, 2, "neither auto");
  expect({"--device_map", "auto", "--devices", "cpu:0,cpu:x"}, 2, "cpu:x");
  expect({"--device_map", "auto", "--devices", "cpu:0,cpu:1", "--max_memory", "cpu:0=1GB,cpu:1"}, 2, "DEVICE=SIZE");
  expect({"--device_map", "auto", "--devices", "cpu:0,cpu:1", "--max_memory", "2MiB"}, 1, "never split");
  expect({"--device_map", "auto", "--devices", "cpu:0,cpu:1", "--max_memory", "cpu:0=40MiB,cpu:1=20MiB"}, 1,
         "short by");
  expect({"--device_map", write_map("unknown.json", {{"", "cpu:0"}, {"model.vision", "cpu:0"}})}, 1, "not a module");
  expect({"--device_map", write_map("partial.json", {{"model.embed_tokens", "cpu:0"}})}, 1, "leaves out");
  expect({"--device_map", write_map("bad.json", {{"", "tpu:0"}})}, 2, "tpu:0");
  expect({"--device_map", "auto", "--devices", "cuda:0", "--max_memory", "8GB"}, 1, "planned for");
}

}  // namespace
}  // namespace vlmforge::test
