// vlmforge export end to end: fresh AWQ and GPTQ checkpoints of f32 tiny models, scored by
// `vlmforge score` against a float64 forward over their dequantized weights; adapters merged in
// the same pass equal exporting merge-lora's output; bad input fails before anything is written.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "io/safetensors.h"
#include "kernels/convert.h"
#include "util/half.h"
#include "support/reference_forward.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;

const std::vector<int32_t> kIds{3, 141, 59, 265, 35, 89, 79, 323, 7, 11, 500, 2};
constexpr const char* kLinears[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

fs::path tokenizer_file() { return shared_dir() / "golden" / "qwen2-tiny-f32" / "tokenizer.json"; }

uint32_t word(const TensorRef& t, uint64_t i) {
  uint32_t w;
  std::memcpy(&w, t.data().data() + i * 4, 4);
  return w;
}

// The weight [out, in] a quantized linear stores, decoded from the published layouts as written
// down here (AutoAWQ GEMM: qweight [in, out/8], output 8k + order[n] in nibble n; AutoGPTQ v1:
// qweight [in/pack, out], qzeros stored minus one), not by the loader.
std::vector<double> dequantize(const Checkpoint& ckpt, const std::string& module, const nlohmann::json& q) {
  const TensorRef& qweight = *ckpt.find(module + ".qweight");
  const TensorRef& qzeros = *ckpt.find(module + ".qzeros");
  const std::vector<float> scales = kernels::tensor_to_f32(*ckpt.find(module + ".scales"));
  const int bits = q["bits"];
  const uint32_t mask = (1u << bits) - 1;
  const bool awq = q["quant_method"] == "awq";
  const uint64_t rows = scales.size() / ckpt.find(module + ".scales")->info->shape[0];
  const uint64_t cols = awq ? qweight.info->shape[0] : qweight.info->shape[0] * (32 / bits);
  const int group_size = q["group_size"];
  const uint64_t group = group_size == -1 ? cols : static_cast<uint64_t>(group_size);
  std::vector<double> w(rows * cols);
  constexpr uint32_t order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t i = 0; i < cols; ++i) {
      const uint64_t g = awq ? i / group : word(*ckpt.find(module + ".g_idx"), i);
      uint32_t code = 0, zero = 0;
      if (awq) {
        for (uint32_t n = 0; n < 8; ++n)
          if (order[n] == r % 8) {
            code = (word(qweight, i * (rows / 8) + r / 8) >> (4 * n)) & mask;
            zero = (word(qzeros, g * (rows / 8) + r / 8) >> (4 * n)) & mask;
          }
      } else {
        const uint64_t pack = 32 / bits;
        code = (word(qweight, (i / pack) * rows + r) >> (bits * (i % pack))) & mask;
        zero = ((word(qzeros, g * (rows / pack) + r / pack) >> (bits * (r % pack))) & mask) + 1;
      }
      w[r * cols + i] = (static_cast<double>(code) - zero) * scales[g * rows + r];
    }
  return w;
}

struct Exported {
  ReferenceModelConfig config;
  ReferenceWeights weights;
  size_t quantized = 0;
};

// Every tensor of an exported checkpoint as float64, the quantized linears dequantized.
Exported load_exported(const fs::path& dir) {
  const nlohmann::json config = read_json_file(dir / "config.json");
  const Checkpoint ckpt(dir);
  Exported e;
  ReferenceModelConfig& c = e.config;
  c.hidden = config["hidden_size"];
  c.intermediate = config["intermediate_size"];
  c.layers = config["num_hidden_layers"];
  c.heads = config["num_attention_heads"];
  c.kv_heads = config["num_key_value_heads"];
  c.vocab = config["vocab_size"];
  c.rope_theta = config["rope_theta"];
  c.rms_norm_eps = config["rms_norm_eps"];
  c.tied = config.value("tie_word_embeddings", false);
  c.prefix = ckpt.find("model.language_model.embed_tokens.weight") ? "model.language_model." : "model.";
  for (const TensorRef& t : ckpt.tensors()) {
    const std::string& name = t.name();
    if (name.ends_with(".qweight")) {
      const std::string module = name.substr(0, name.size() - 8);
      e.weights[module + ".weight"] = dequantize(ckpt, module, config["quantization_config"]);
      ++e.quantized;
    } else if (is_compute_float(t.info->dtype)) {
      const std::vector<float> f = kernels::tensor_to_f32(t);
      e.weights[name] = std::vector<double>(f.begin(), f.end());
    }
  }
  return e;
}

std::vector<double> scored_logprobs(const fs::path& model) {
  std::string ids;
  for (int32_t id : kIds) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const auto r = run_vlmforge({"score", "--model", model.string(), "--ids", ids, "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return {};
  const nlohmann::json result = nlohmann::json::parse(r.out);
  std::vector<double> out;
  for (const auto& v : result["prompt_logprobs"])
    if (!v.is_null()) out.push_back(v.get<double>());
  return out;
}

void generate(const std::string& preset, const fs::path& out) {
  const auto r = run_vlmforge({"generate", "checkpoint", "--preset", preset, "--dtype", "float32", "--output_dir",
                               out.string(), "--tokenizer", tokenizer_file().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

CommandResult run_export(const fs::path& model, const fs::path& out, const std::string& method, int bits,
                         std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"export",       "--model",        model.string(),       "--quant_method", method,
                                "--quant_bits", std::to_string(bits), "--group_size", "32",  "--output_dir",
                                out.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return run_vlmforge(args);
}

// Names and bytes of every tensor.
std::map<std::string, std::vector<std::byte>> tensor_bytes(const fs::path& dir) {
  const Checkpoint ckpt(dir);
  std::map<std::string, std::vector<std::byte>> out;
  for (const TensorRef& t : ckpt.tensors()) out[t.name()] = {t.data().begin(), t.data().end()};
  return out;
}

// Nothing but `keep` in `dir`: no output, no temporary directory left by a failed export.
void expect_only(const fs::path& dir, const std::set<std::string>& keep) {
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_TRUE(keep.count(entry.path().filename().string())) << "left behind: " << entry.path();
}

struct Format {
  const char* method;
  int bits;
};
constexpr Format kFormats[] = {{"gptq", 4}, {"gptq", 8}, {"awq", 4}};

TEST(ExportCli, QuantizedCheckpointsScoreAsTheFloat64ForwardOfTheirDequantizedWeights) {
  VLMFORGE_REQUIRE_SHARED(tokenizer_file());
  TempDir dir;
  for (const char* preset : {"tiny", "tiny-vl"}) {
    generate(preset, dir / preset);
    const Checkpoint source(dir / preset);
    for (const Format& f : kFormats) {
      SCOPED_TRACE(std::string(preset) + " " + f.method + std::to_string(f.bits));
      const fs::path out = dir / (std::string(preset) + "-" + f.method + std::to_string(f.bits));
      const auto r = run_export(dir / preset, out, f.method, f.bits);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      const nlohmann::json config = read_json_file(out / "config.json");
      const nlohmann::json& q = config["quantization_config"];
      EXPECT_EQ(config["torch_dtype"], "float16");
      EXPECT_EQ(q["quant_method"], f.method);
      EXPECT_EQ(q["bits"], f.bits);
      EXPECT_EQ(q["group_size"], 32);
      if (std::string(f.method) == "gptq") {
        EXPECT_EQ(q["checkpoint_format"], "gptq");
        EXPECT_EQ(q["desc_act"], false);
        EXPECT_EQ(q["sym"], true);
      } else {
        EXPECT_EQ(q["version"], "gemm");
        EXPECT_EQ(q["zero_point"], true);
      }
      EXPECT_TRUE(fs::exists(out / "tokenizer.json"));
      EXPECT_TRUE(fs::exists(out / "generation_config.json"));
      const Exported e = load_exported(out);
      EXPECT_EQ(e.quantized, 2u * 7u);  // every decoder linear of both layers
      const Checkpoint exported(out);
      for (int l = 0; l < 2; ++l)
        for (const char* m : kLinears)
          EXPECT_FALSE(exported.find("model.layers." + std::to_string(l) + "." + m + ".weight")) << m;
      // Everything else as stored, in float16: the vision tower, embeddings, lm_head, norms, biases.
      size_t kept = 0, vision = 0;
      for (const TensorRef& t : source.tensors()) {
        const TensorRef* out_t = exported.find(t.name());
        if (!out_t) continue;
        ++kept;
        vision += t.name().starts_with("visual.");
        ASSERT_EQ(out_t->info->dtype, DType::F16) << t.name();
        const std::vector<float> a = kernels::tensor_to_f32(t), b = kernels::tensor_to_f32(*out_t);
        for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(f16_to_f32(f32_to_f16(a[i])), b[i]) << t.name() << " " << i;
      }
      EXPECT_EQ(kept + e.quantized, source.tensors().size());
      if (std::string(preset) == "tiny-vl") {
        EXPECT_GT(vision, 0u);
        EXPECT_EQ(q["modules_to_not_convert"], nlohmann::json::array({"visual"}));
      } else {
        EXPECT_TRUE(q["modules_to_not_convert"].is_null());
      }
      const std::vector<double> want = reference_prompt_logprobs(e.config, e.weights, kIds);
      const std::vector<double> got = scored_logprobs(out);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4) << "token " << i + 1;
    }
  }
}

TEST(ExportCli, AdaptersMergedInTheSamePassEqualExportingTheMergeLoraOutput) {
  VLMFORGE_REQUIRE_SHARED(tokenizer_file());
  TempDir dir;
  generate("tiny", dir / "base");
  for (const char* kind : {"lora", "dora"}) {
    SCOPED_TRACE(kind);
    const fs::path adapter = dir / kind;
    std::vector<std::string> gen{"generate", "adapter", "--model", (dir / "base").string(), "--output_dir",
                                 adapter.string(), "--r", "4"};
    if (std::string(kind) == "dora") gen.push_back("--use_dora");
    const auto a = run_vlmforge(gen);
    ASSERT_EQ(a.exit_code, 0) << a.err;
    const fs::path merged = dir / (std::string(kind) + "-merged");
    const auto m = run_vlmforge({"merge-lora", "--model", (dir / "base").string(), "--adapters", adapter.string(),
                                 "--dtype", "float32", "--output_dir", merged.string()});
    ASSERT_EQ(m.exit_code, 0) << m.err;
    for (const Format& f : kFormats) {
      SCOPED_TRACE(std::string(f.method) + std::to_string(f.bits));
      const std::string tag = std::string(kind) + "-" + f.method + std::to_string(f.bits);
      const auto one = run_export(dir / "base", dir / (tag + "-one-pass"), f.method, f.bits,
                                  {"--adapters", adapter.string()});
      ASSERT_EQ(one.exit_code, 0) << one.err;
      const auto two = run_export(merged, dir / (tag + "-two-pass"), f.method, f.bits);
      ASSERT_EQ(two.exit_code, 0) << two.err;
      const auto a_bytes = tensor_bytes(dir / (tag + "-one-pass")), b_bytes = tensor_bytes(dir / (tag + "-two-pass"));
      EXPECT_TRUE(a_bytes == b_bytes);
      // The adapter changed the quantized weights: the export without it differs.
      const auto plain = run_export(dir / "base", dir / (tag + "-plain"), f.method, f.bits);
      ASSERT_EQ(plain.exit_code, 0) << plain.err;
      EXPECT_NE(tensor_bytes(dir / (tag + "-plain")).at("model.layers.0.self_attn.q_proj.qweight"),
                a_bytes.at("model.layers.0.self_attn.q_proj.qweight"));
    }
  }
}

TEST(ExportCli, ShardedOutputHasAnIndexAndScoresAsTheSingleFile) {
  VLMFORGE_REQUIRE_SHARED(tokenizer_file());
  TempDir dir;
  generate("tiny", dir / "base");
  ASSERT_EQ(run_export(dir / "base", dir / "single", "gptq", 4).exit_code, 0);
  const auto r = run_export(dir / "base", dir / "sharded", "gptq", 4, {"--max_shard_size", "40KB", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json result = nlohmann::json::parse(r.out);
  EXPECT_EQ(result["quantized_linears"], 14);
  EXPECT_GT(result["shards"].size(), 1u);
  const nlohmann::json index = read_json_file(dir / "sharded" / "model.safetensors.index.json");
  const Checkpoint sharded(dir / "sharded");
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), sharded.total_bytes());
  EXPECT_EQ(index["weight_map"].size(), sharded.tensors().size());
  EXPECT_TRUE(tensor_bytes(dir / "single") == tensor_bytes(dir / "sharded"));
  const std::vector<double> single = scored_logprobs(dir / "single");
  EXPECT_EQ(single.size(), kIds.size() - 1);
  EXPECT_EQ(single, scored_logprobs(dir / "sharded"));
}

TEST(ExportCli, BadInputFailsWithAClearErrorAndWritesNothing) {
  VLMFORGE_REQUIRE_SHARED(tokenizer_file());
  TempDir dir;
  generate("tiny", dir / "base");
  ASSERT_EQ(run_export(dir / "base", dir / "quantized", "awq", 4).exit_code, 0);
  std::ofstream(dir / "file") << "x";
  struct Bad {
    std::vector<std::string> args;
    int exit_code;
    std::string message;
  };
  const std::string base = (dir / "base").string(), out = (dir / "out").string();
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{"export", "--model", base};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const Bad cases[] = {
      {with({"--quant_method", "awq", "--quant_bits", "8", "--output_dir", out}), 2,
       "--quant_bits 8: AWQ (AutoAWQ GEMM) is 4-bit only; use --quant_method gptq for 8 bits"},
      {with({"--quant_method", "gptq", "--quant_bits", "3", "--output_dir", out}), 2, "--quant_bits: expected 4 or 8"},
      {with({"--quant_method", "fp8", "--quant_bits", "8", "--output_dir", out}), 2,
       "--quant_method: expected awq or gptq, got 'fp8'"},
      {with({"--quant_bits", "4", "--output_dir", out}), 2, "--quant_method is required"},
      {with({"--quant_method", "gptq", "--quant_bits", "4", "--group_size", "48", "--output_dir", out}), 2,
       "--group_size: expected -1 (one group per row) or a positive multiple of 32"},
      {with({"--quant_method", "gptq", "--quant_bits", "4", "--output_dir", out}), 2,
       "cannot quantize 'model.layers.0.self_attn.q_proj.weight' [64, 64]: 64 inputs are not a multiple of "
       "--group_size 128"},
      {with({"--quant_method", "gptq", "--quant_bits", "4", "--group_size", "32", "--output_dir", base}), 2,
       "is inside input directory"},
      {with({"--quant_method", "gptq", "--quant_bits", "4", "--group_size", "32", "--output_dir", base + "/sub"}), 2,
       "is inside input directory"},
      {with({"--quant_method", "gptq", "--quant_bits", "4", "--group_size", "32", "--output_dir",
             (dir / "file").string()}),
       2, "exists and is not a directory"},
      {with({"--quant_method", "gptq", "--quant_bits", "4", "--group_size", "32", "--output_dir",
             (dir / "quantized").string()}),
       2, "exists and is not empty; pass --overwrite"},
      {{"export", "--model", (dir / "quantized").string(), "--quant_method", "gptq", "--quant_bits", "4",
        "--output_dir", out},
       1, "has a quantization_config: the model is quantized already"},
  };
  for (const Bad& b : cases) {
    const auto r = run_vlmforge(b.args);
    EXPECT_EQ(r.exit_code, b.exit_code) << b.message << "\n" << r.err;
    EXPECT_NE(r.err.find(b.message), std::string::npos) << r.err;
    expect_only(dir.path(), {"base", "quantized", "file"});
    expect_only(dir / "base", {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"});
  }
  // --overwrite replaces a previous export; --dry_run writes nothing.
  const auto dry = run_export(dir / "base", dir / "out", "gptq", 8, {"--dry_run", "--json"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_EQ(nlohmann::json::parse(dry.out)["quantization_config"]["bits"], 8);
  expect_only(dir.path(), {"base", "quantized", "file"});
  const auto again = run_export(dir / "base", dir / "quantized", "gptq", 8, {"--overwrite"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(read_json_file(dir / "quantized" / "config.json")["quantization_config"]["bits"], 8);
  expect_only(dir.path(), {"base", "quantized", "file"});
}

}  // namespace
}  // namespace vlmforge::test
