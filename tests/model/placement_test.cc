// Qwen2Model with a ModelPlacement: the same logits as the host run (with runtime LoRA / DoRA),
// per-layer KV caches and weights accounted on their devices, and caps enforced.
#include <gtest/gtest.h>

#include "backends/cpu_device.h"
#include "model/qwen2.h"
#include "support/test_support.h"

namespace vlmforge {
namespace {
namespace fs = std::filesystem;

fs::path golden(const char* name) { return test::shared_dir() / "golden" / "lora" / name; }

std::vector<float> run(Qwen2Model& model, const std::vector<int32_t>& ids) {
  KvCache cache = model.make_cache(ids.size() + 4);
  const SequenceChunk prompt{&cache, ids, true};
  std::vector<float> logits = model.forward(std::span(&prompt, 1));
  // Two decode steps as well: the caches on the devices must carry the sequence on.
  for (int32_t next : {5, 9}) {
    const std::vector<int32_t> one{next};
    const SequenceChunk step{&cache, one};
    const auto more = model.forward(std::span(&step, 1));
    logits.insert(logits.end(), more.begin(), more.end());
  }
  return logits;
}

TEST(Placement, ThreeDevicesGiveTheHostLogitsWithRuntimeDora) {
  VLMFORGE_REQUIRE_SHARED(golden("base") / "config.json");
  const std::vector<int32_t> ids{1, 2, 3, 4, 5, 6, 7, 100, 200, 300};
  const std::vector<fs::path> adapters{golden("dora")};
  Qwen2Model host(golden("base"), 2, adapters);
  const auto expected = run(host, ids);

  CpuDevice d0(0, 8 << 20, 2), d1(1, 8 << 20, 2), d2(2, 8 << 20, 2);
  ModelPlacement p;
  p.embed = &d0;
  p.layers = {&d1, &d2};
  p.norm = &d2;
  p.head = &d0;  // tied: the hidden states return to the embeddings' device
  Qwen2Model placed(golden("base"), 2, adapters, &p);
  const uint64_t weights0 = d0.allocated(), weights1 = d1.allocated();
  EXPECT_EQ(weights0, 512u * 64 * 2);  // the tied embedding matrix (bf16)
  EXPECT_GT(weights1, 0u);
  EXPECT_EQ(run(placed, ids), expected);  // bit for bit
  // The KV cache of each layer lives on its device, for the full length up front.
  const size_t kv_dim = static_cast<size_t>(placed.config().num_key_value_heads * placed.config().head_dim());
  {
    const uint64_t before = d1.allocated();
    KvCache cache = placed.make_cache(32);
    EXPECT_EQ(d1.allocated() - before, 2u * 32 * kv_dim * 4);
  }
}

TEST(Placement, ACapBelowTheWeightsIsAnOutOfMemoryErrorNamingTheDevice) {
  VLMFORGE_REQUIRE_SHARED(golden("base") / "config.json");
  CpuDevice d0(0, 8 << 20, 1), small(1, 1000, 1);
  ModelPlacement p;
  p.embed = p.norm = p.head = &d0;
  p.layers = {&d0, &small};
  try {
    Qwen2Model model(golden("base"), 1, {}, &p);
    FAIL() << "expected an out-of-memory error";
  } catch (const DeviceOutOfMemory& e) {
    EXPECT_NE(std::string(e.what()).find("cpu:1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layer 1 weights"), std::string::npos) << e.what();
  }
  EXPECT_EQ(small.allocated(), 0u);
  EXPECT_EQ(d0.allocated(), 0u);  // everything placed so far was released with the model
}

}  // namespace
}  // namespace vlmforge
