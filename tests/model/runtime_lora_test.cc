// Applying an adapter at inference time must give the merged model's outputs.
#include <gtest/gtest.h>

#include "io/json_file.h"
#include "io/safetensors_writer.h"
#include "lora/merge.h"
#include "model/quantized_checkpoint.h"
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

double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(a[i] - b[i])));
  return worst;
}

// A quantized checkpoint with every quantized linear replaced by its dequantized weight (F32):
// the dense model the quantized one computes.
void write_dequantized(const fs::path& quantized, const fs::path& out) {
  const Checkpoint ckpt(quantized);
  nlohmann::json config = read_json_file(quantized / "config.json");
  const QuantizationConfig q = *ModelConfig::load(quantized).quantization;
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  for (const TensorRef& t : ckpt.tensors()) {
    const std::string& name = t.name();
    if (name.ends_with(".qzeros") || name.ends_with(".scales") || name.ends_with(".g_idx")) continue;
    if (!name.ends_with(".qweight")) {
      specs.push_back({name, t.info->dtype, t.info->shape});
      data.emplace_back(t.data().begin(), t.data().end());
      continue;
    }
    const std::string module = name.substr(0, name.size() - 8);
    const auto linear = find_quantized_linear(ckpt, &q, module);
    const QuantizedShape shape = quantized_shape(q, linear->tensors);
    const std::vector<std::byte> layout = repack_quantized(q, linear->tensors, shape);
    std::vector<float> w(shape.rows * shape.cols);
    for (uint64_t r = 0; r < shape.rows; ++r) dequantize_row(shape, layout, r, w.data() + r * shape.cols);
    specs.push_back({module + ".weight", DType::F32, {shape.rows, shape.cols}});
    data.emplace_back(std::as_bytes(std::span(w)).begin(), std::as_bytes(std::span(w)).end());
  }
  fs::create_directories(out);
  std::vector<std::span<const std::byte>> spans(data.begin(), data.end());
  save_safetensors(out / "model.safetensors", specs, spans);
  config.erase("quantization_config");
  write_text_file(out / "config.json", config.dump(2));
}

// Adapters over an AWQ / GPTQ base compute what they compute over its dequantized weights.
void expect_quantized_base_equals_dequantized(const char* golden, bool dora) {
  const fs::path quantized = shared_dir() / "golden" / golden;
  VLMFORGE_REQUIRE_SHARED(quantized / "model.safetensors");
  TempDir dir;
  write_dequantized(quantized, dir / "dense");
  AdapterOptions ad;
  ad.r = 4;
  ad.use_dora = dora;
  ad.dtype = DType::F32;
  generate_adapter(Checkpoint(dir / "dense"), dir / "adapter", ad);
  const std::vector<int32_t> ids{1, 17, 300, 42, 7, 511, 2, 99};
  Qwen2Model plain(quantized, 2), dense_plain(dir / "dense", 2);
  EXPECT_LT(max_difference(logits_for(plain, ids), logits_for(dense_plain, ids)), 1e-4) << "the dense twin itself";
  Qwen2Model runtime(quantized, 2, {dir / "adapter"}), dense(dir / "dense", 2, {dir / "adapter"});
  const auto got = logits_for(runtime, ids), want = logits_for(dense, ids);
  const double worst = max_difference(got, want);
  EXPECT_LT(worst, 1e-4) << golden << (dora ? " DoRA" : " LoRA");
  EXPECT_GT(max_difference(got, logits_for(plain, ids)), 100 * worst) << "the adapter must change the outputs";
}

TEST(RuntimeLora, LoraOverQuantizedBases) {
  for (const char* golden : {"qwen2-micro-awq", "qwen2-micro-gptq-int4", "qwen2-micro-gptq-int8-v2"})
    expect_quantized_base_equals_dequantized(golden, false);
}

TEST(RuntimeLora, DoraOverQuantizedBasesNormsTheDequantizedWeight) {
  for (const char* golden : {"qwen2-micro-awq", "qwen2-micro-gptq-int4", "qwen2-micro-gptq-int8-v2"})
    expect_quantized_base_equals_dequantized(golden, true);
}

}  // namespace
}  // namespace vlmforge::test
