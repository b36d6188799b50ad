// Quantize-on-load in the plan: the decoder's and lm_head's codes are counted as the model holds
// them, so a run's accounted weights equal the plan's.
#include <gtest/gtest.h>

#include "backends/cpu_device.h"
#include "model/qwen2.h"
#include "model/random_checkpoint.h"
#include "plan/planner.h"
#include "support/quantize_on_load_model.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;

TEST(PlanQuantizeOnLoad, CountsTheCodesTheModelHolds) {
  TempDir dir;
  generate_checkpoint(quantize_on_load_config(), dir / "m", CheckpointOptions{});
  const kernels::QuantScheme q4 = kernels::QuantScheme::q4_0();
  const ModelShape stored = ModelShape::from_checkpoint(dir / "m"), quantized = ModelShape::from_checkpoint(dir / "m", &q4);
  const ModelConfig c = quantize_on_load_config();
  const uint64_t h = c.hidden_size, kv = static_cast<uint64_t>(c.num_key_value_heads) * c.head_dim(), i = c.intermediate_size;
  const kernels::QuantLayout layout = q4.layout();
  // Per layer q, k, v, o, gate, up as codes (down's 176 inputs stay bf16); lm_head a copy of the
  // embedding matrix as codes.
  const uint64_t layer_codes = layout.bytes(h, h) * 2 + layout.bytes(kv, h) * 2 + layout.bytes(i, h) * 2;
  const uint64_t layer_float = (2 * h * h + 2 * kv * h + 2 * i * h) * 2;
  EXPECT_EQ(quantized.weight_bytes(), stored.weight_bytes() - c.num_hidden_layers * (layer_float - layer_codes) +
                                          layout.bytes(static_cast<uint64_t>(c.vocab_size), h));
  CpuDevice device(0, std::nullopt, 1);
  ModelPlacement placement{&device, std::vector<Device*>(static_cast<size_t>(c.num_hidden_layers), &device), &device,
                           &device, nullptr, false};
  const uint64_t before = device.allocated();
  Qwen2Model model(dir / "m", 1, {}, &placement, q4);
  // Weights lent from the memory map are accounted at their stored size, the codes at theirs.
  EXPECT_EQ(device.allocated() - before, quantized.weight_bytes() + [&] {
    uint64_t vectors = 0;  // norms and biases go to the device as fp32: twice their bf16 bytes
    const Checkpoint ckpt(dir / "m");
    for (const TensorRef& t : ckpt.tensors())
      if (t.info->shape.size() == 1) vectors += t.info->nbytes();
    return vectors;
  }());
}

}  // namespace
}  // namespace vlmforge::test
