// End-to-end: the vlmforge executable in temporary directories, as a user runs it.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;

class MergeCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>();
    const auto gen = run_vlmforge({"generate", "checkpoint", "--preset", "tiny-vl", "--output_dir",
                                   (*dir_ / "base").string(), "--max_shard_size", "300KB"});
    ASSERT_EQ(gen.exit_code, 0) << gen.err;
    const auto ad = run_vlmforge({"generate", "adapter", "--model", (*dir_ / "base").string(), "--output_dir",
                                  (*dir_ / "adapter").string(), "--r", "4", "--use_dora"});
    ASSERT_EQ(ad.exit_code, 0) << ad.err;
    std::ofstream(*dir_ / "base" / "tokenizer_config.json") << "{}";
    std::ofstream(*dir_ / "base" / "preprocessor_config.json") << "{}";
  }
  static void TearDownTestSuite() { dir_.reset(); }

  static fs::path base() { return *dir_ / "base"; }
  static fs::path adapter() { return *dir_ / "adapter"; }
  static std::unique_ptr<TempDir> dir_;
  TempDir out_dir;
};
std::unique_ptr<TempDir> MergeCli::dir_;

TEST_F(MergeCli, MergesShardsAndCopiesNonWeightFiles) {
  const fs::path out = out_dir / "merged";
  const auto r = run_vlmforge({"merge-lora", "--model", base().string(), "--lora", adapter().string(), "--output_dir",
                               out.string(), "--max_shard_size", "200KB", "--device_map", "auto",
                               "--safe_serialization", "true", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto result = nlohmann::json::parse(r.out);
  EXPECT_GT(result["changed_tensors"].size(), 0u);
  for (const char* f : {"config.json", "generation_config.json", "tokenizer_config.json", "preprocessor_config.json",
                        "model.safetensors.index.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  const Checkpoint merged(out);
  const Checkpoint original(base());
  EXPECT_EQ(merged.tensors().size(), original.tensors().size());
  EXPECT_EQ(merged.total_bytes(), original.total_bytes());
  const auto index = nlohmann::json::parse(std::ifstream(out / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), merged.total_bytes());
  EXPECT_EQ(index["weight_map"].size(), merged.tensors().size());
  for (const auto& f : merged.files())
    EXPECT_LE(fs::file_size(f->path()), 200'000u + 100'000u) << "only oversized tensors may exceed the shard size";
  // No temporary directory is left behind.
  for (const auto& entry : fs::directory_iterator(out_dir.path()))
    EXPECT_EQ(entry.path().filename(), "merged") << entry.path();
}

TEST_F(MergeCli, TrailingSlashOutputIsTheDirectoryAndStaleTemporariesOfDeadMergesAreRemoved) {
  // A killed merge leaves ".merged.tmp-PID"; one of a live process (this test's) must stay.
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  ASSERT_GT(dead, 0);
  waitpid(dead, nullptr, 0);
  const fs::path stale = out_dir / (".merged.tmp-" + std::to_string(dead));
  const fs::path live = out_dir / (".merged.tmp-" + std::to_string(getpid()));
  const fs::path other = out_dir / (".unrelated.tmp-" + std::to_string(dead));
  for (const auto& d : {stale, live, other}) fs::create_directories(d / "sub");
  const auto r = run_vlmforge({"merge-lora", "--model", base().string(), "--adapters", adapter().string() + "/",
                               "--output_dir", (out_dir / "merged").string() + "/"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out_dir / "merged" / "config.json"));
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_FALSE(fs::exists(out_dir / "merged" / ".merged.tmp-0"));
  for (const auto& entry : fs::directory_iterator(out_dir / "merged"))
    EXPECT_FALSE(entry.path().filename().string().starts_with(".")) << entry.path();
}

TEST_F(MergeCli, DryRunWritesNothingAndDefaultOutputIsNamedLikeSwift) {
  const auto r = run_vlmforge({"merge-lora", "--model", base().string(), "--adapters", adapter().string(), "--dry_run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("dora r=4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find((adapter().string() + "-merged")), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(adapter().string() + "-merged"));
}

TEST_F(MergeCli, FailedWriteLeavesNoOutput) {
  // A file-size limit makes writes fail part way through, as a full disk would.
  const fs::path out = out_dir / "merged";
  const auto r = run_vlmforge({"merge-lora", "--model", base().string(), "--adapters", adapter().string(),
                               "--output_dir", out.string()},
                              {.file_size_limit = 100'000, .stdin_text = {}});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.err.find("write failed"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fs::is_empty(out_dir.path())) << "the temporary output must be removed";
}

TEST_F(MergeCli, UsageErrorsExitWithTwo) {
  EXPECT_EQ(run_vlmforge({"merge-lora", "--model", base().string()}).exit_code, 2);
  EXPECT_EQ(run_vlmforge({"merge-lora", "--model", base().string(), "--adapters", adapter().string(), "--dtype", "int4"}).exit_code, 2);
  const auto inside = run_vlmforge({"merge-lora", "--model", base().string(), "--adapters", adapter().string(),
                                    "--output_dir", (base() / "out").string()});
  EXPECT_EQ(inside.exit_code, 2);
  EXPECT_NE(inside.err.find("inside input directory"), std::string::npos) << inside.err;
  EXPECT_EQ(run_vlmforge({"no-such-command"}).exit_code, 2);
}

TEST_F(MergeCli, BadInputNamesTheFile) {
  const fs::path bad = out_dir / "bad";
  fs::create_directories(bad);
  const std::string bytes("\x10\0\0\0\0\0\0\0{not json}      ", 24);
  std::ofstream(bad / "model.safetensors", std::ios::binary) << bytes;
  const auto r = run_vlmforge({"inspect", bad.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find((bad / "model.safetensors").string()), std::string::npos) << r.err;
  const auto missing = run_vlmforge({"merge-lora", "--model", base().string(), "--adapters", (out_dir / "nope").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("adapter directory does not exist"), std::string::npos) << missing.err;
}

TEST_F(MergeCli, InspectReportsConfigTensorsAndLayers) {
  const auto r = run_vlmforge({"inspect", base().string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kind"], "model");
  EXPECT_EQ(j["config"]["architecture"], "Qwen2_5_VLForConditionalGeneration");
  EXPECT_EQ(j["config"]["vision"]["depth"], 4);
  const Checkpoint ckpt(base());
  EXPECT_EQ(j["tensors"].size(), ckpt.tensors().size());
  EXPECT_EQ(j["total_bytes"].get<uint64_t>(), ckpt.total_bytes());
  bool saw_layer = false, saw_block = false;
  for (const auto& b : j["blocks"]) {
    saw_layer |= b["name"] == "model.layers.1";
    saw_block |= b["name"] == "visual.blocks.3";
  }
  EXPECT_TRUE(saw_layer && saw_block) << j["blocks"].dump();
  const auto a = run_vlmforge({"inspect", adapter().string(), "--json"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const auto aj = nlohmann::json::parse(a.out);
  EXPECT_EQ(aj["kind"], "adapter");
  EXPECT_TRUE(aj["adapter"]["use_dora"].get<bool>());
}

TEST(GenerateCli, PublishedShapesAreExact) {
  // Qwen2.5-7B: 28 layers, hidden 3584, 4 KV heads of 128, untied lm_head, vocab 152064.
  TempDir dir;
  const auto r = run_vlmforge({"generate", "checkpoint", "--preset", "qwen2.5-7b", "--num_layers", "1", "--output_dir",
                               (dir / "m").string(), "--max_shard_size", "1GB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Checkpoint ckpt(dir / "m");
  auto shape = [&](const std::string& name) { return ckpt.find(name)->info->shape; };
  EXPECT_EQ(shape("model.embed_tokens.weight"), (std::vector<uint64_t>{152064, 3584}));
  EXPECT_EQ(shape("model.layers.0.self_attn.k_proj.weight"), (std::vector<uint64_t>{512, 3584}));
  EXPECT_EQ(shape("model.layers.0.self_attn.k_proj.bias"), (std::vector<uint64_t>{512}));
  EXPECT_EQ(shape("model.layers.0.mlp.down_proj.weight"), (std::vector<uint64_t>{3584, 18944}));
  EXPECT_EQ(shape("lm_head.weight"), (std::vector<uint64_t>{152064, 3584}));
  EXPECT_EQ(ckpt.find("model.norm.weight")->info->dtype, DType::BF16);
  EXPECT_TRUE(ckpt.sharded());
}

// swift's --load_args: a checkpoint names its base model in args.json ("model"); PEFT records it in
// adapter_config.json ("base_model_name_or_path").
TEST_F(MergeCli, AdaptersWithoutModelUseTheBaseTheCheckpointNames) {
  const fs::path ckpt = out_dir / "checkpoint-10";
  fs::copy(adapter(), ckpt);
  std::ofstream(ckpt / "args.json") << nlohmann::json{{"model", base().string()}, {"model_type", "qwen2_5_vl"}}.dump();
  const auto r = run_vlmforge({"merge-lora", "--adapters", ckpt.string(), "--dry_run", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("base model " + base().string() + " (from " + (ckpt / "args.json").string()), std::string::npos) << r.err;
  EXPECT_GT(nlohmann::json::parse(r.out)["changed_tensors"].size(), 0u);

  // A hub id in args.json is not downloaded: adapter_config.json's local path is used instead.
  std::ofstream(ckpt / "args.json") << R"({"model": "Qwen/Qwen2.5-VL-7B-Instruct"})";
  const auto fallback = run_vlmforge({"merge-lora", "--adapters", ckpt.string(), "--dry_run"});
  ASSERT_EQ(fallback.exit_code, 0) << fallback.err;
  EXPECT_NE(fallback.err.find("adapter_config.json"), std::string::npos) << fallback.err;

  // Neither names a local directory: an error saying what was found and what to do.
  nlohmann::json config = nlohmann::json::parse(std::ifstream(ckpt / "adapter_config.json"));
  config["base_model_name_or_path"] = "Qwen/Qwen2.5-VL-7B-Instruct";
  std::ofstream(ckpt / "adapter_config.json") << config.dump();
  const auto none = run_vlmforge({"merge-lora", "--adapters", ckpt.string(), "--dry_run"});
  EXPECT_EQ(none.exit_code, 1) << none.err;
  EXPECT_NE(none.err.find("give --model"), std::string::npos) << none.err;
  EXPECT_NE(none.err.find("Qwen/Qwen2.5-VL-7B-Instruct"), std::string::npos) << none.err;
  // An explicit --model still wins.
  const auto given = run_vlmforge({"merge-lora", "--model", base().string(), "--adapters", ckpt.string(), "--dry_run"});
  EXPECT_EQ(given.exit_code, 0) << given.err;
  const auto neither = run_vlmforge({"merge-lora", "--dry_run"});
  EXPECT_EQ(neither.exit_code, 2) << neither.err;
}

}  // namespace
}  // namespace vlmforge::test
