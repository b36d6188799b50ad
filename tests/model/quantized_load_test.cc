// Published-format AWQ and GPTQ checkpoints (the shared micro models) load as they are: every
// quantized linear repacked into the device layout and accounted on its device, everything else
// as stored; inconsistent checkpoints fail naming the tensor or field.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu_device.h"
#include "io/json_file.h"
#include "kernels/convert.h"
#include "io/safetensors_writer.h"
#include "model/device_weights.h"
#include "model/qwen2.h"
#include "model/random_checkpoint.h"
#include "support/quant_packing.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;

struct QuantizedGolden {
  const char* dir;
  uint32_t bits;
  bool permuted;  // desc_act with a shuffled g_idx
};

constexpr QuantizedGolden kGoldens[] = {
    {"qwen2-micro-awq", 4, false}, {"qwen2-micro-gptq-int4", 4, true}, {"qwen2-micro-gptq-int8-v2", 8, false}};

TEST(QuantizedLoad, LinearsAreRepackedAndAccountedTheRestAsStored) {
  for (const QuantizedGolden& g : kGoldens) {
    SCOPED_TRACE(g.dir);
    const fs::path dir = shared_dir() / "golden" / g.dir;
    VLMFORGE_REQUIRE_SHARED(dir / "model.safetensors");
    const ModelConfig config = ModelConfig::load(dir);
    ASSERT_TRUE(config.quantization);
    const Checkpoint ckpt(dir);
    CpuDevice device(0, std::nullopt, 1);
    DeviceWeights w(ckpt, nullptr, config.quantization, "config.json");
    const uint64_t before = device.allocated();
    const LinearView down = w.linear(device, "model.layers.0.mlp.down_proj", 64, 160, false, "down");
    EXPECT_EQ(down.weight.dtype, DType::U8);
    EXPECT_EQ(down.weight.quant.bits, g.bits);
    EXPECT_EQ(down.weight.quant.group_size, 32u);
    EXPECT_EQ(down.weight.quant.has_perm, g.permuted);
    EXPECT_EQ(down.out_features(), 64u);
    EXPECT_EQ(down.in_features(), 160u);
    EXPECT_EQ(device.allocated() - before, down.weight.quant.bytes(64, 160));
    EXPECT_EQ(down.weight.bytes(), down.weight.quant.bytes(64, 160));
    const LinearView q = w.linear(device, "model.layers.0.self_attn.q_proj", 64, 64, true, "q");
    EXPECT_EQ(q.weight.quant.bits, g.bits);
    EXPECT_EQ(q.bias.size, 64u);
    const LinearView head = w.linear(device, "lm_head", 512, 64, false, "lm_head");
    EXPECT_FALSE(head.weight.quant.quantized());
    EXPECT_EQ(head.weight.dtype, DType::F16);
    EXPECT_NO_THROW(Qwen2Model(dir, 1));
  }
}

TEST(QuantizedLoad, InspectShowsTheQuantizationAndTheRepackedBytes) {
  const fs::path dir = shared_dir() / "golden" / "qwen2-micro-gptq-int4";
  VLMFORGE_REQUIRE_SHARED(dir / "model.safetensors");
  const auto r = run_vlmforge({"inspect", dir.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  const nlohmann::json& q = j["config"]["quantization"];
  EXPECT_EQ(q["quant_method"], "gptq");
  EXPECT_EQ(q["bits"], 4);
  EXPECT_EQ(q["group_size"], 32);
  EXPECT_EQ(q["desc_act"], true);
  EXPECT_EQ(q["sym"], false);
  EXPECT_EQ(q["zeros_minus_one"], true);
  // Stored bytes of everything but the quantized tensors, plus each linear's device layout.
  const QuantizationConfig config = *ModelConfig::load(dir).quantization;
  uint64_t expected = 0;
  for (const auto& t : j["tensors"]) {
    const std::string name = t["name"];
    const auto& shape = t["shape"];
    if (name.ends_with(".qweight"))
      expected += config.device_layout(shape[0].get<uint64_t>() * 8, true).bytes(shape[1], shape[0].get<uint64_t>() * 8);
    else if (!name.ends_with(".qzeros") && !name.ends_with(".scales") && !name.ends_with(".g_idx"))
      expected += t["bytes"].get<uint64_t>();
  }
  EXPECT_EQ(j["device_bytes"].get<uint64_t>(), expected);
  const auto text = run_vlmforge({"inspect", dir.string(), "--summary"});
  EXPECT_NE(text.out.find("quantized: gptq 4-bit v1, group 32, desc_act, asym;"), std::string::npos) << text.out;
}

// Round-to-nearest 4-bit codes of W [rows, cols], asymmetric groups of 32 (AutoAWQ's
// quantizer without its activation-aware scaling), scales exact in fp16.
Reference quantize_round_to_nearest(const float* w, uint64_t rows, uint64_t cols) {
  Reference ref{rows, cols, 32, 4, std::vector<uint32_t>(rows * cols), {}, {}, {}};
  ref.zero.resize(ref.groups() * rows);
  ref.scale.resize(ref.groups() * rows);
  for (uint64_t c = 0; c < cols; ++c) ref.g_idx.push_back(static_cast<uint32_t>(c / 32));
  for (uint64_t g = 0; g < ref.groups(); ++g)
    for (uint64_t r = 0; r < rows; ++r) {
      const float* x = w + r * cols + g * 32;
      const float lo = std::min(0.0f, *std::min_element(x, x + 32)), hi = std::max(0.0f, *std::max_element(x, x + 32));
      const float scale = f16_to_f32(f32_to_f16(std::max(hi - lo, 1e-6f) / 15));
      const float zero = std::clamp(std::round(-lo / scale), 0.0f, 15.0f);
      ref.scale[g * rows + r] = scale;
      ref.zero[g * rows + r] = static_cast<uint32_t>(zero);
      for (uint64_t i = 0; i < 32; ++i)
        ref.q[r * cols + g * 32 + i] = static_cast<uint32_t>(std::clamp(std::round(x[i] / scale) + zero, 0.0f, 15.0f));
    }
  return ref;
}

// Qwen2.5-VL AWQ as Qwen publishes it: the decoder's linears quantized, the vision tower
// ("modules_to_not_convert": ["visual"]), embeddings and lm_head as stored.
TEST(QuantizedLoad, QwenVlAwqQuantizesTheDecoderOnlyAndComputesItsDequantizedTwin) {
  TempDir dir;
  CheckpointOptions options;
  options.dtype = DType::F32;
  generate_checkpoint(preset_config("tiny-vl"), dir / "source", options);
  const Checkpoint source(dir / "source");
  std::vector<TensorSpec> awq_specs, dense_specs;
  std::vector<std::vector<std::byte>> awq_data, dense_data;
  auto add = [](std::vector<TensorSpec>& specs, std::vector<std::vector<std::byte>>& data, TensorSpec spec,
                std::span<const std::byte> bytes) {
    specs.push_back(std::move(spec));
    data.emplace_back(bytes.begin(), bytes.end());
  };
  size_t quantized = 0;
  for (const TensorRef& t : source.tensors()) {
    const std::string& name = t.name();
    if (name.find(".layers.") == std::string::npos || !name.ends_with("_proj.weight")) {
      add(awq_specs, awq_data, {name, t.info->dtype, t.info->shape}, t.data());
      add(dense_specs, dense_data, {name, t.info->dtype, t.info->shape}, t.data());
      continue;
    }
    const uint64_t rows = t.info->shape[0], cols = t.info->shape[1];
    const std::vector<float> w = kernels::tensor_to_f32(t);
    const Reference ref = quantize_round_to_nearest(w.data(), rows, cols);
    const Packed p = pack_awq(ref);
    const std::string module = name.substr(0, name.size() - 7);
    add(awq_specs, awq_data, {module + ".qweight", DType::I32, p.qweight_shape}, std::as_bytes(std::span(p.qweight)));
    add(awq_specs, awq_data, {module + ".qzeros", DType::I32, p.qzeros_shape}, std::as_bytes(std::span(p.qzeros)));
    add(awq_specs, awq_data, {module + ".scales", DType::F16, p.scales_shape}, std::as_bytes(std::span(p.scales)));
    std::vector<float> dequantized(rows * cols);
    for (uint64_t r = 0; r < rows; ++r)
      for (uint64_t c = 0; c < cols; ++c) dequantized[r * cols + c] = ref.weight(r, c);
    add(dense_specs, dense_data, {name, DType::F32, {rows, cols}}, std::as_bytes(std::span(dequantized)));
    ++quantized;
  }
  EXPECT_EQ(quantized, 2u * 7u);  // every decoder linear of both layers, none of the tower's
  nlohmann::json config = read_json_file(dir / "source" / "config.json");
  for (const auto& [name, specs, data] : {std::tuple{"dense", &dense_specs, &dense_data}, {"awq", &awq_specs, &awq_data}}) {
    fs::create_directories(dir / name);
    const std::vector<std::span<const std::byte>> spans(data->begin(), data->end());
    save_safetensors(dir / name / "model.safetensors", *specs, spans);
    if (std::string(name) == "awq")
      config["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4},          {"group_size", 32},
                                       {"version", "gemm"},     {"zero_point", true}, {"modules_to_not_convert", {"visual"}}};
    write_text_file(dir / name / "config.json", config.dump(2));
  }
  Qwen2Model awq(dir / "awq", 2), dense(dir / "dense", 2);
  const std::vector<int32_t> ids{3, 141, 59, 265, 35, 89, 79, 323};
  KvCache awq_cache = awq.make_cache(ids.size()), dense_cache = dense.make_cache(ids.size());
  const SequenceChunk awq_chunk{&awq_cache, ids, true}, dense_chunk{&dense_cache, ids, true};
  const std::vector<float> got = awq.forward(std::span(&awq_chunk, 1)), want = dense.forward(std::span(&dense_chunk, 1));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4) << "logit " << i;
}

std::string load_error(const fs::path& dir) {
  return error_of([&] { Qwen2Model model(dir, 1); });
}

void edit_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json config = read_json_file(dir / "config.json");
  edit(config);
  write_text_file(dir / "config.json", config.dump(2));
}

TEST(QuantizedLoad, InconsistentCheckpointsNameTheTensorOrField) {
  const fs::path golden = shared_dir() / "golden" / "qwen2-micro-awq";
  VLMFORGE_REQUIRE_SHARED(golden / "model.safetensors");
  TempDir tmp;
  const fs::path dir = tmp / "m";
  fs::create_directory(dir);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(golden / f, dir / f);
  const nlohmann::json original = read_json_file(dir / "config.json");

  edit_config(dir, [](auto& c) { c.erase("quantization_config"); });
  EXPECT_NE(load_error(dir).find("tensor 'model.layers.0.self_attn.q_proj.qweight' is quantized, but config.json has "
                                 "no quantization_config"),
            std::string::npos)
      << load_error(dir);

  edit_config(dir, [&](auto& c) {
    c = original;
    c["intermediate_size"] = 192;
  });
  EXPECT_NE(load_error(dir).find("tensor 'model.layers.0.mlp.gate_proj.qweight' holds a weight of [160, 64] (out, in), "
                                 "expected [192, 64] from config.json"),
            std::string::npos)
      << load_error(dir);

  edit_config(dir, [&](auto& c) {
    c = original;
    c["quantization_config"]["modules_to_not_convert"] = {"mlp"};
  });
  EXPECT_NE(load_error(dir).find("'model.layers.0.mlp.gate_proj.qweight' is quantized, but config.json's "
                                 "quantization_config.modules_to_not_convert lists its module"),
            std::string::npos)
      << load_error(dir);

  edit_config(dir, [&](auto& c) {
    c = original;
    c["quantization_config"]["group_size"] = 64;
  });
  EXPECT_NE(load_error(dir).find("tensor 'model.layers.0.self_attn.q_proj.scales' has shape [2, 64], expected [1, 64]"),
            std::string::npos)
      << load_error(dir);

  edit_config(dir, [&](auto& c) {
    c = original;
    c["quantization_config"]["bits"] = 3;
  });
  EXPECT_NE(load_error(dir).find("config.json: quantization_config.bits is 3"), std::string::npos) << load_error(dir);
}

}  // namespace
}  // namespace vlmforge::test
