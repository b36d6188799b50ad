// Applying an adapter at inference time must give the merged model's outputs.
#include <gtest/gtest.h>

#include "lora/merge.h"
#include "model/qwen2.h"
#include "model/random_checkpoint.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;

std::vector<float> logits_for(Qwen2Model& model, const std::vector<int32_t>& ids) {
  KvCache cache = model.make_cache(ids.size());
  const SequenceChunk chunk{&cache, ids, true};
  return model.forward(std::span(&chunk, 1));
}

void expect_runtime_equals_merged(bool dora) {
  TempDir dir;
  CheckpointOptions ck;
  ck.dtype = DType::F32;
  generate_checkpoint(preset_config("tiny"), dir / "base", ck);
  AdapterOptions ad;
  ad.r = 4;
  ad.use_dora = dora;
  ad.dtype = DType::F32;
  generate_adapter(Checkpoint(dir / "base"), dir / "adapter", ad);
  MergeOptions options;
  options.model_dir = dir / "base";
  options.adapter_dirs = {dir / "adapter"};
  options.output_dir = dir / "merged";
  {
    const Checkpoint base(options.model_dir);
    std::vector<Adapter> adapters;
    adapters.emplace_back(options.adapter_dirs[0]);
    execute_merge(base, plan_merge(base, adapters, options), options);
  }
  // The merged config.json came from the base; both models see the same architecture.
  Qwen2Model merged(dir / "merged", 2);
  Qwen2Model runtime(dir / "base", 2, {dir / "adapter"});
  Qwen2Model plain(dir / "base", 2);
  const std::vector<int32_t> ids{1, 17, 300, 42, 7, 511, 2, 99};
  const auto want = logits_for(merged, ids), got = logits_for(runtime, ids), base = logits_for(plain, ids);
  ASSERT_EQ(want.size(), got.size());
  double worst = 0, adapter_effect = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(want[i] - got[i])));
    adapter_effect = std::max(adapter_effect, static_cast<double>(std::abs(want[i] - base[i])));
  }
  EXPECT_LT(worst, 1e-4) << (dora ? "DoRA" : "LoRA");
  EXPECT_GT(adapter_effect, 100 * worst) << "the adapter must change the outputs for the test to mean anything";
}

TEST(RuntimeLora, LoraMatchesTheMergedModel) { expect_runtime_equals_merged(false); }
TEST(RuntimeLora, DoraMatchesTheMergedModel) { expect_runtime_equals_merged(true); }

}  // namespace
}  // namespace vlmforge::test
