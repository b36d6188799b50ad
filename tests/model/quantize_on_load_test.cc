// Quantize-on-load (--quant_method q8_0 / q4_0): a float checkpoint's decoder and lm_head linears
// become llama.cpp-style blocks as they load, and the model computes exactly what a float model
// holding the decoded weights computes; weights whose input size is not a multiple of 32, and the
// embeddings, stay as stored.
#include <gtest/gtest.h>

#include "backends/cpu_device.h"
#include "io/json_file.h"
#include "io/safetensors_writer.h"
#include "kernels/convert.h"
#include "model/qwen2.h"
#include "model/random_checkpoint.h"
#include "support/quant_weight.h"
#include "support/quantize_on_load_model.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;

// The float twin of `source` quantized by `scheme`: every weight the model quantizes replaced by
// its decoded codes (a tied lm_head as a separate lm_head.weight), the rest as stored.
void write_twin(const fs::path& source_dir, const kernels::QuantScheme& scheme, const fs::path& out) {
  const Checkpoint source(source_dir);
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  auto add_decoded = [&](const std::string& name, const TensorRef& t) {
    const uint64_t rows = t.info->shape[0], cols = t.info->shape[1];
    const std::vector<float> w = kernels::tensor_to_f32(t);
    const kernels::QuantLayout layout = scheme.layout();
    std::vector<std::byte> codes(layout.bytes(rows, cols));
    kernels::quantize_rows(w.data(), rows, cols, scheme, codes.data());
    const std::vector<double> decoded = dequantize(layout, rows, cols, codes);
    std::vector<float> f(decoded.begin(), decoded.end());
    specs.push_back({name, DType::F32, {rows, cols}});
    data.emplace_back(std::as_bytes(std::span(f)).begin(), std::as_bytes(std::span(f)).end());
  };
  for (const TensorRef& t : source.tensors()) {
    const std::string& name = t.name();
    const bool linear = name.find(".layers.") != std::string::npos && name.ends_with("_proj.weight");
    if (linear && t.info->shape[1] % 32 == 0) {
      add_decoded(name, t);
    } else {
      specs.push_back({name, t.info->dtype, t.info->shape});
      data.emplace_back(t.data().begin(), t.data().end());
    }
    if (name == "model.embed_tokens.weight") add_decoded("lm_head.weight", t);
  }
  fs::create_directories(out);
  const std::vector<std::span<const std::byte>> spans(data.begin(), data.end());
  save_safetensors(out / "model.safetensors", specs, spans);
  nlohmann::json config = read_json_file(source_dir / "config.json");
  config["tie_word_embeddings"] = false;
  write_text_file(out / "config.json", config.dump(2));
}

TEST(QuantizeOnLoad, LogitsAreTheDecodedFloatModelsForQ8AndQ4) {
  TempDir dir;
  CheckpointOptions options;
  options.dtype = DType::BF16;
  generate_checkpoint(quantize_on_load_config(), dir / "source", options);
  const std::vector<int32_t> ids{3, 141, 59, 265, 35, 89, 79, 323, 7, 11};
  for (const auto& [name, scheme] : {std::pair{"q8_0", kernels::QuantScheme::q8_0()}, {"q4_0", kernels::QuantScheme::q4_0()}}) {
    SCOPED_TRACE(name);
    write_twin(dir / "source", scheme, dir / name);
    Qwen2Model quantized(dir / "source", 2, {}, nullptr, scheme), twin(dir / name, 2);
    KvCache qc = quantized.make_cache(ids.size()), tc = twin.make_cache(ids.size());
    const SequenceChunk q_chunk{&qc, ids, true}, t_chunk{&tc, ids, true};
    const std::vector<float> got = quantized.forward(std::span(&q_chunk, 1)), want = twin.forward(std::span(&t_chunk, 1));
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4) << "logit " << i;
  }
}

TEST(QuantizeOnLoad, AnAlreadyQuantizedCheckpointIsRefused) {
  const fs::path awq = shared_dir() / "golden" / "qwen2-micro-awq";
  VLMFORGE_REQUIRE_SHARED(awq / "model.safetensors");
  const std::string message = error_of([&] { Qwen2Model(awq, 1, {}, nullptr, kernels::QuantScheme::q8_0()); });
  EXPECT_NE(message.find("is already quantized (awq 4-bit"), std::string::npos) << message;
  EXPECT_NE(message.find("drop --quant_method"), std::string::npos) << message;
}

}  // namespace
}  // namespace vlmforge::test
