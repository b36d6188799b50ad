// verify-merge, and --adapters without --model, end to end on a random tiny Qwen2.5-VL checkpoint
// carrying the real tokenizer, with a random adapter merged by merge-lora.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "vision/encoded_images.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

class VerifyMerge : public ::testing::Test {
 protected:
  static fs::path shared_tokenizer() { return shared_dir() / "tokenizer" / "tokenizer.json"; }
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    if (!fs::exists(shared_tokenizer())) return;
    auto ok = [](const std::vector<std::string>& args) {
      const auto r = run_vlmforge(args);
      ASSERT_EQ(r.exit_code, 0) << r.err;
    };
    ok({"generate", "checkpoint", "--preset", "tiny-vl", "--output_dir", base(), "--dtype", "float32", "--vocab_size",
        "151936", "--tokenizer", shared_tokenizer().string()});
    ok({"generate", "adapter", "--model", base(), "--output_dir", adapter(), "--r", "4", "--dtype", "float32"});
    ok({"merge-lora", "--model", base(), "--adapters", adapter(), "--output_dir", merged()});
    std::ofstream(*dir_ / "cat.png", std::ios::binary) << encoded_png(64, 48);
    std::ofstream(*dir_ / "rows.jsonl")
        << R"({"messages": [{"role": "user", "content": "<image>What is this?"}, {"role": "assistant", "content": "A gradient."}], "images": ["cat.png"]})"
        << "\n"
        << R"({"query": "Say hi.", "response": "Hi!"})" << "\n";
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override {
    VLMFORGE_REQUIRE_SHARED(shared_tokenizer());
  }
  static std::string base() { return (*dir_ / "base").string(); }
  static std::string adapter() { return (*dir_ / "adapter").string(); }
  static std::string merged() { return (*dir_ / "merged").string(); }
  static std::string rows() { return (*dir_ / "rows.jsonl").string(); }

  static TempDir* dir_;
};
TempDir* VerifyMerge::dir_ = nullptr;

TEST_F(VerifyMerge, AFaithfulMergePassesOnSamplePromptsAndDatasetRows) {
  const auto r = run_vlmforge({"verify-merge", "--model", base(), "--adapters", adapter(), "--merged", merged(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const json out = json::parse(r.out);
  EXPECT_TRUE(out["faithful"].get<bool>());
  EXPECT_LE(out["max_abs_diff"].get<double>(), out["atol"].get<double>());
  EXPECT_EQ(out["atol"].get<double>(), 1e-3);  // an fp32 merged checkpoint
  EXPECT_GT(out["adapter_max_abs_effect"].get<double>(), 1e-2);  // the adapter does change the logits
  ASSERT_EQ(out["prompts"].size(), 4u);
  for (const auto& p : out["prompts"])
    EXPECT_EQ(p["max_abs_diff_per_position"].size(), p["tokens"].get<size_t>()) << p["prompt"];

  // Dataset rows, an image and the answers included (the image goes through the vision tower).
  const auto d = run_vlmforge({"verify-merge", "--model", base(), "--adapters", adapter(), "--merged", merged(),
                               "--val_dataset", rows()});
  ASSERT_EQ(d.exit_code, 0) << d.out << d.err;
  EXPECT_NE(d.out.find("rows.jsonl:1"), std::string::npos) << d.out;
  EXPECT_NE(d.out.find("rows.jsonl:2"), std::string::npos) << d.out;
  EXPECT_NE(d.out.find("faithful"), std::string::npos) << d.out;
}

TEST_F(VerifyMerge, AMergeWithoutTheAdaptersFails) {
  // The base model given as the "merged" checkpoint: what a merge that dropped the adapters writes.
  const auto r = run_vlmforge({"verify-merge", "--model", base(), "--adapters", adapter(), "--merged", base()});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("NOT faithful"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("left them out"), std::string::npos) << r.out;
  // However wide --atol, a difference as large as the adapters' effect is a merge without them.
  const auto loose = run_vlmforge({"verify-merge", "--model", base(), "--adapters", adapter(), "--merged", base(), "--atol", "1e9"});
  EXPECT_EQ(loose.exit_code, 1) << loose.out << loose.err;
  EXPECT_NE(loose.out.find("left them out"), std::string::npos) << loose.out;
  // A tolerance below the runtime's arithmetic differences fails a faithful merge: the verdict follows --atol.
  const auto strict = run_vlmforge({"verify-merge", "--model", base(), "--adapters", adapter(), "--merged", merged(), "--atol", "0"});
  EXPECT_EQ(strict.exit_code, 1) << strict.out << strict.err;
  EXPECT_NE(strict.out.find("more than --atol"), std::string::npos) << strict.out;
  const auto usage = run_vlmforge({"verify-merge", "--model", base(), "--adapters", adapter()});
  EXPECT_EQ(usage.exit_code, 2) << usage.err;
}

TEST_F(VerifyMerge, InferAndVerifyMergeFindTheBaseInTheCheckpoint) {
  // A swift checkpoint directory: the adapter plus args.json naming the base model.
  TempDir dir;
  const fs::path ckpt = dir / "checkpoint-100";
  fs::copy(adapter(), ckpt);
  std::ofstream(ckpt / "args.json") << json{{"model", base()}}.dump();
  const auto with_model = run_vlmforge({"infer", "--model", base(), "--adapters", ckpt.string(), "--query", "hi",
                                        "--max_new_tokens", "3", "--temperature", "0", "--json"});
  ASSERT_EQ(with_model.exit_code, 0) << with_model.err;
  const auto without = run_vlmforge({"infer", "--adapters", ckpt.string(), "--query", "hi", "--max_new_tokens", "3",
                                     "--temperature", "0", "--json"});
  ASSERT_EQ(without.exit_code, 0) << without.err;
  EXPECT_NE(without.err.find("base model " + base()), std::string::npos) << without.err;
  EXPECT_EQ(json::parse(without.out)["response"], json::parse(with_model.out)["response"]);
  const auto verify = run_vlmforge({"verify-merge", "--adapters", ckpt.string(), "--merged", merged()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  const auto no_model = run_vlmforge({"infer", "--query", "hi"});
  EXPECT_EQ(no_model.exit_code, 2) << no_model.err;
  EXPECT_NE(no_model.err.find("--model is required"), std::string::npos) << no_model.err;
}

}  // namespace
}  // namespace vlmforge::test
