// Merge math against a naive double-precision reference, for every variant PEFT supports.
#include <gtest/gtest.h>

#include "lora/adapter.h"
#include "lora/lora_fixture.h"
#include "util/error.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// W + s·ΔW with ΔW = B·A, or (B·A)ᵀ when `transposed` (fan_in_fan_out, embeddings).
Matrix reference_lora(const Matrix& w, const Matrix& a, const Matrix& b, double s, bool transposed) {
  Matrix out = w;
  const size_t rank = a.rows();
  for (size_t i = 0; i < w.rows(); ++i)
    for (size_t j = 0; j < w.cols(); ++j) {
      double delta = 0;
      for (size_t k = 0; k < rank; ++k) delta += transposed ? a.at(k, i) * b.at(j, k) : b.at(i, k) * a.at(k, j);
      out.values[i * w.cols() + j] += s * delta;
    }
  return out;
}

// DoRA: V = W + s·ΔW, then V scaled by magnitude / ‖V‖ per row (or per column when transposed).
Matrix reference_dora(const Matrix& w, const Matrix& a, const Matrix& b, double s, const Matrix& magnitude,
                      bool transposed) {
  Matrix v = reference_lora(w, a, b, s, transposed);
  const size_t rows = v.rows(), cols = v.cols();
  if (!transposed) {
    for (size_t i = 0; i < rows; ++i) {
      double sum = 0;
      for (size_t j = 0; j < cols; ++j) sum += v.at(i, j) * v.at(i, j);
      for (size_t j = 0; j < cols; ++j) v.values[i * cols + j] *= magnitude.values[i] / std::sqrt(sum);
    }
  } else {
    for (size_t j = 0; j < cols; ++j) {
      double sum = 0;
      for (size_t i = 0; i < rows; ++i) sum += v.at(i, j) * v.at(i, j);
      for (size_t i = 0; i < rows; ++i) v.values[i * cols + j] *= magnitude.values[j] / std::sqrt(sum);
    }
  }
  return v;
}

// bf16/f16 outputs: every element within 1 ulp of the reference, and nearly all exactly the
// correctly rounded value. f32 outputs: fp32 arithmetic cannot be correctly rounded, so allow a
// few fp32 rounding errors relative to the tensor's scale.
void expect_matches(const Matrix& got, const Matrix& want, DType dtype, const std::string& what) {
  ASSERT_EQ(got.values.size(), want.values.size()) << what;
  double scale = 0;
  for (double v : want.values) scale = std::max(scale, std::abs(v));
  size_t exact = 0;
  std::vector<std::byte> scratch(4);
  for (size_t i = 0; i < got.values.size(); ++i) {
    store_float(dtype, scratch.data(), 0, static_cast<float>(want.values[i]));
    const double rounded = load_float(dtype, scratch.data(), 0);
    exact += got.values[i] == rounded;
    const double tolerance = dtype == DType::F32 ? 8 * 0x1p-24 * scale : ulp_of(want.values[i], dtype);
    ASSERT_LE(std::abs(got.values[i] - want.values[i]), tolerance)
        << what << " element " << i << ": got " << got.values[i] << ", reference " << want.values[i];
  }
  if (dtype != DType::F32) {
    EXPECT_GE(static_cast<double>(exact), 0.99 * static_cast<double>(got.values.size())) << what;
  }
}

class MergeTest : public ::testing::Test {
 protected:
  std::mt19937 rng{2024};
  TempDir dir;

  fs::path make_dir(const std::string& name) {
    fs::create_directories(dir / name);
    return dir / name;
  }
};

TEST_F(MergeTest, PlainLoraOnBf16) {
  const auto base = make_dir("base"), adapter = make_dir("adapter");
  const Matrix q = random_matrix({24, 40}, DType::BF16, rng), v = random_matrix({16, 40}, DType::BF16, rng);
  const Matrix other = random_matrix({40}, DType::BF16, rng);
  TensorFileBuilder b;
  b.add("model.layers.0.self_attn.q_proj.weight", q, DType::BF16);
  b.add("model.layers.0.self_attn.v_proj.weight", v, DType::BF16);
  b.add("model.norm.weight", other, DType::BF16);
  b.save(base / "model.safetensors");
  write_json(base / "config.json", {{"model_type", "qwen2"}});
  const Matrix qa = random_matrix({4, 40}, DType::BF16, rng), qb = random_matrix({24, 4}, DType::BF16, rng);
  const Matrix va = random_matrix({4, 40}, DType::BF16, rng), vb = random_matrix({16, 4}, DType::BF16, rng);
  TensorFileBuilder ad;
  ad.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", qa, DType::BF16);
  ad.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", qb, DType::BF16);
  ad.add("base_model.model.model.layers.0.self_attn.v_proj.lora_A.default.weight", va, DType::BF16);
  ad.add("base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight", vb, DType::BF16);
  ad.save(adapter / "adapter_model.safetensors");
  write_json(adapter / "adapter_config.json", lora_config(4, 12));

  const Checkpoint out(merge(base, {adapter}, dir / "out"));
  expect_matches(read_tensor(out, "model.layers.0.self_attn.q_proj.weight"), reference_lora(q, qa, qb, 3.0, false),
                 DType::BF16, "q_proj");
  expect_matches(read_tensor(out, "model.layers.0.self_attn.v_proj.weight"), reference_lora(v, va, vb, 3.0, false),
                 DType::BF16, "v_proj (adapter-name segment in keys)");
  EXPECT_EQ(read_tensor(out, "model.norm.weight").values, other.values) << "untouched tensors are copied bit for bit";
  EXPECT_TRUE(fs::exists(dir / "out" / "config.json"));
  EXPECT_FALSE(fs::exists(dir / "out" / "model.safetensors.index.json"));
}

TEST_F(MergeTest, RsloraRankAndAlphaPatternsFanInFanOutAndF32Output) {
  const auto base = make_dir("base"), adapter = make_dir("adapter");
  // fan_in_fan_out: weights stored [in, out] (GPT-2 Conv1D style).
  const Matrix q = random_matrix({40, 24}, DType::F16, rng), v = random_matrix({40, 16}, DType::F16, rng);
  TensorFileBuilder b;
  b.add("model.layers.0.self_attn.q_proj.weight", q, DType::F16);
  b.add("model.layers.1.self_attn.v_proj.weight", v, DType::F16);
  b.save(base / "model.safetensors");
  const Matrix qa = random_matrix({8, 40}, DType::F32, rng), qb = random_matrix({24, 8}, DType::F32, rng);
  const Matrix va = random_matrix({2, 40}, DType::F32, rng), vb = random_matrix({16, 2}, DType::F32, rng);
  TensorFileBuilder ad;
  ad.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", qa, DType::F32);
  ad.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", qb, DType::F32);
  ad.add("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight", va, DType::F32);
  ad.add("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", vb, DType::F32);
  ad.save(adapter / "adapter_model.safetensors");
  // PEFT: rank_pattern/alpha_pattern keys are regexes matched against the module path's tail.
  write_json(adapter / "adapter_config.json",
             lora_config(8, 16, {{"use_rslora", true}, {"fan_in_fan_out", true},
                                 {"rank_pattern", {{"layers\\.1\\..*v_proj", 2}}},
                                 {"alpha_pattern", {{"v_proj", 6.0}}}}));
  MergeOptions options;
  options.dtype = DType::F32;
  const Checkpoint out(merge(base, {adapter}, dir / "out", options));
  expect_matches(read_tensor(out, "model.layers.0.self_attn.q_proj.weight"),
                 reference_lora(q, qa, qb, 16.0 / std::sqrt(8.0), true), DType::F32, "q_proj rslora fifo");
  expect_matches(read_tensor(out, "model.layers.1.self_attn.v_proj.weight"),
                 reference_lora(v, va, vb, 6.0 / std::sqrt(2.0), true), DType::F32, "v_proj patterns");
  EXPECT_EQ(out.find("model.layers.0.self_attn.q_proj.weight")->info->dtype, DType::F32);
}

TEST_F(MergeTest, DoraLinearAndEmbeddingLora) {
  const auto base = make_dir("base"), adapter = make_dir("adapter");
  const Matrix up = random_matrix({30, 20}, DType::BF16, rng), embed = random_matrix({50, 20}, DType::BF16, rng);
  TensorFileBuilder b;
  b.add("model.embed_tokens.weight", embed, DType::BF16);
  b.add("model.layers.0.mlp.up_proj.weight", up, DType::BF16);
  b.save(base / "model.safetensors");
  const Matrix ua = random_matrix({4, 20}, DType::BF16, rng), ub = random_matrix({30, 4}, DType::BF16, rng);
  const Matrix um = random_matrix({30}, DType::BF16, rng, 0.2, 1.0);
  // Embedding LoRA: lora_embedding_A [r, num_embeddings], lora_embedding_B [dim, r].
  const Matrix ea = random_matrix({4, 50}, DType::BF16, rng), eb = random_matrix({20, 4}, DType::BF16, rng);
  const Matrix em = random_matrix({20}, DType::BF16, rng, 0.2, 1.0);
  TensorFileBuilder ad;
  ad.add("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", ua, DType::BF16);
  ad.add("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", ub, DType::BF16);
  ad.add("base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector", um, DType::BF16);
  ad.add("base_model.model.model.embed_tokens.lora_embedding_A", ea, DType::BF16);
  ad.add("base_model.model.model.embed_tokens.lora_embedding_B", eb, DType::BF16);
  ad.add("base_model.model.model.embed_tokens.lora_magnitude_vector.weight", em, DType::BF16);
  ad.save(adapter / "adapter_model.safetensors");
  write_json(adapter / "adapter_config.json",
             lora_config(4, 8, {{"use_dora", true}, {"target_modules", {"up_proj", "embed_tokens"}}}));
  const Checkpoint out(merge(base, {adapter}, dir / "out"));
  expect_matches(read_tensor(out, "model.layers.0.mlp.up_proj.weight"), reference_dora(up, ua, ub, 2.0, um, false),
                 DType::BF16, "dora linear (row norms)");
  expect_matches(read_tensor(out, "model.embed_tokens.weight"), reference_dora(embed, ea, eb, 2.0, em, true),
                 DType::BF16, "dora embedding (column norms)");
}

TEST_F(MergeTest, LoraBiasModulesToSaveAndSeveralAdaptersInOrder) {
  const auto base = make_dir("base"), first = make_dir("first"), second = make_dir("second");
  const Matrix q = random_matrix({12, 10}, DType::F32, rng), qbias = random_matrix({12}, DType::F32, rng);
  const Matrix head = random_matrix({7, 10}, DType::F32, rng);
  TensorFileBuilder b;
  b.add("model.layers.0.self_attn.q_proj.weight", q, DType::F32);
  b.add("model.layers.0.self_attn.q_proj.bias", qbias, DType::F32);
  b.add("lm_head.weight", head, DType::F32);
  b.save(base / "model.safetensors");

  const Matrix a1 = random_matrix({2, 10}, DType::F32, rng), b1 = random_matrix({12, 2}, DType::F32, rng);
  const Matrix bias1 = random_matrix({12}, DType::F32, rng), new_head = random_matrix({7, 10}, DType::F32, rng);
  TensorFileBuilder ad1;
  ad1.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", a1, DType::F32);
  ad1.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", b1, DType::F32);
  ad1.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", bias1, DType::F32);
  ad1.add("base_model.model.lm_head.modules_to_save.default.weight", new_head, DType::F32);
  ad1.save(first / "adapter_model.safetensors");
  write_json(first / "adapter_config.json", lora_config(2, 4, {{"modules_to_save", {"lm_head"}}}));

  const Matrix a2 = random_matrix({3, 10}, DType::F32, rng), b2 = random_matrix({12, 3}, DType::F32, rng);
  TensorFileBuilder ad2;
  ad2.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", a2, DType::F32);
  ad2.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", b2, DType::F32);
  ad2.save(second / "adapter_model.safetensors");
  write_json(second / "adapter_config.json", lora_config(3, 3));

  const Checkpoint out(merge(base, {first, second}, dir / "out"));
  const Matrix want_q = reference_lora(reference_lora(q, a1, b1, 2.0, false), a2, b2, 1.0, false);
  expect_matches(read_tensor(out, "model.layers.0.self_attn.q_proj.weight"), want_q, DType::F32, "two adapters");
  Matrix want_bias = qbias;
  for (size_t i = 0; i < 12; ++i) want_bias.values[i] += 2.0 * bias1.values[i];
  expect_matches(read_tensor(out, "model.layers.0.self_attn.q_proj.bias"), want_bias, DType::F32, "lora_B bias");
  EXPECT_EQ(read_tensor(out, "lm_head.weight").values, new_head.values) << "modules_to_save copy replaces the base";
}

TEST_F(MergeTest, MapsBetweenQwen25VlWeightLayoutsAndShards) {
  const auto base = make_dir("base"), adapter = make_dir("adapter");
  // Base saved by transformers >= 4.52; adapter trained against the legacy names.
  const Matrix q = random_matrix({8, 8}, DType::BF16, rng), vis = random_matrix({24, 8}, DType::BF16, rng);
  TensorFileBuilder b;
  b.add("model.language_model.layers.0.self_attn.q_proj.weight", q, DType::BF16);
  b.add("model.visual.blocks.0.attn.qkv.weight", vis, DType::BF16);
  b.save(base / "model.safetensors");
  const Matrix qa = random_matrix({2, 8}, DType::BF16, rng), qb = random_matrix({8, 2}, DType::BF16, rng);
  const Matrix va = random_matrix({2, 8}, DType::BF16, rng), vb = random_matrix({24, 2}, DType::BF16, rng);
  TensorFileBuilder ad;
  ad.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", qa, DType::BF16);
  ad.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", qb, DType::BF16);
  ad.add("base_model.model.visual.blocks.0.attn.qkv.lora_A.weight", va, DType::BF16);
  ad.add("base_model.model.visual.blocks.0.attn.qkv.lora_B.weight", vb, DType::BF16);
  ad.save(adapter / "adapter_model.safetensors");
  write_json(adapter / "adapter_config.json", lora_config(2, 2, {{"target_modules", "(.*q_proj|.*qkv)"}}));
  MergeOptions options;
  options.max_shard_size = 200;  // forces two shards
  const Checkpoint out(merge(base, {adapter}, dir / "out", options));
  EXPECT_TRUE(out.sharded());
  EXPECT_TRUE(fs::exists(dir / "out" / "model-00002-of-00002.safetensors"));
  expect_matches(read_tensor(out, "model.language_model.layers.0.self_attn.q_proj.weight"),
                 reference_lora(q, qa, qb, 1.0, false), DType::BF16, "language model");
  expect_matches(read_tensor(out, "model.visual.blocks.0.attn.qkv.weight"), reference_lora(vis, va, vb, 1.0, false),
                 DType::BF16, "vision tower");
}

std::string merge_error(const fs::path& base, const fs::path& adapter, const fs::path& out, MergeOptions options = {}) {
  try {
    merge(base, {adapter}, out, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(MergeTest, RejectsInconsistentAdapters) {
  const auto base = make_dir("base"), adapter = make_dir("adapter");
  TensorFileBuilder b;
  b.add("model.layers.0.self_attn.q_proj.weight", random_matrix({8, 6}, DType::BF16, rng), DType::BF16);
  b.save(base / "model.safetensors");
  auto write_adapter = [&](const std::string& module, std::vector<uint64_t> a_shape, std::vector<uint64_t> b_shape,
                           json config, double poison = 0) {
    Matrix a = random_matrix(a_shape, DType::F32, rng);
    if (poison != 0) a.values[0] = poison;
    TensorFileBuilder ad;
    ad.add("base_model.model." + module + ".lora_A.weight", a, DType::F32);
    ad.add("base_model.model." + module + ".lora_B.weight", random_matrix(b_shape, DType::F32, rng), DType::F32);
    ad.save(adapter / "adapter_model.safetensors");
    write_json(adapter / "adapter_config.json", config);
  };
  const std::string q = "model.layers.0.self_attn.q_proj";

  write_adapter(q, {2, 7}, {8, 2}, lora_config(2, 2));
  std::string err = merge_error(base, adapter, dir / "o1");
  EXPECT_NE(err.find("do not fit base tensor"), std::string::npos) << err;
  EXPECT_NE(err.find(q), std::string::npos) << err;

  write_adapter("model.layers.9.self_attn.q_proj", {2, 6}, {8, 2}, lora_config(2, 2));
  err = merge_error(base, adapter, dir / "o2");
  EXPECT_NE(err.find("has no weight in the base model"), std::string::npos) << err;

  write_adapter(q, {2, 6}, {8, 2}, lora_config(2, 2, {{"peft_type", "IA3"}}));
  err = merge_error(base, adapter, dir / "o3");
  EXPECT_NE(err.find("unsupported peft_type"), std::string::npos) << err;

  write_adapter(q, {2, 6}, {8, 2}, lora_config(3, 2));
  err = merge_error(base, adapter, dir / "o4");
  EXPECT_NE(err.find("rank from adapter_config.json is 3"), std::string::npos) << err;

  write_adapter(q, {2, 6}, {8, 2}, lora_config(2, 2), NAN);
  err = merge_error(base, adapter, dir / "o5");
  EXPECT_NE(err.find("non-finite"), std::string::npos) << err;
  EXPECT_NE(err.find("--allow_nonfinite"), std::string::npos) << err;
  MergeOptions allow;
  allow.allow_nonfinite = true;
  EXPECT_EQ(merge_error(base, adapter, dir / "o6", allow), "") << "with --allow_nonfinite NaN is a warning";

  for (const char* out : {"o1", "o2", "o3", "o4", "o5"}) EXPECT_FALSE(fs::exists(dir / out)) << out;
}

TEST(MergePaths, DirectoryPathDropsTrailingSeparatorsAndDots) {
  const fs::path cwd = fs::current_path();
  EXPECT_EQ(directory_path("out/"), cwd / "out");
  EXPECT_EQ(directory_path("out/."), cwd / "out");
  EXPECT_EQ(directory_path("a/../out//"), cwd / "out");
  EXPECT_EQ(directory_path("."), cwd);
  EXPECT_EQ(directory_path("/"), fs::path("/"));
}

TEST_F(MergeTest, RefusesUnsafeOutputLocations) {
  const auto base = make_dir("base"), adapter = make_dir("adapter");
  TensorFileBuilder b;
  b.add("model.layers.0.self_attn.q_proj.weight", random_matrix({4, 4}, DType::BF16, rng), DType::BF16);
  b.save(base / "model.safetensors");
  TensorFileBuilder ad;
  ad.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", random_matrix({1, 4}, DType::BF16, rng), DType::BF16);
  ad.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", random_matrix({4, 1}, DType::BF16, rng), DType::BF16);
  ad.save(adapter / "adapter_model.safetensors");
  write_json(adapter / "adapter_config.json", lora_config(1, 1));

  EXPECT_NE(merge_error(base, adapter, base).find("inside input directory"), std::string::npos);
  EXPECT_NE(merge_error(base, adapter, base / "sub").find("inside input directory"), std::string::npos);
  EXPECT_NE(merge_error(base, adapter, dir.path()).find("contains input directory"), std::string::npos);
  fs::create_directories(dir / "busy");
  write_text_file(dir / "busy" / "keep.txt", "x");
  EXPECT_NE(merge_error(base, adapter, dir / "busy").find("--overwrite"), std::string::npos);
  MergeOptions overwrite;
  overwrite.overwrite = true;
  EXPECT_EQ(merge_error(base, adapter, dir / "busy", overwrite), "");
  EXPECT_FALSE(fs::exists(dir / "busy" / "keep.txt"));
  EXPECT_TRUE(fs::exists(dir / "busy" / "model.safetensors"));
}

TEST(AdapterConfig, PatternKeysFollowPeft) {
  // get_pattern_key: first key (file order) with re.match(rf"(.*\.)?({key})$", module).
  const std::vector<std::string> keys{"q_proj", "layers.1.self_attn.v_proj", "v_proj"};
  EXPECT_EQ(match_pattern_key(keys, "model.layers.0.self_attn.q_proj"), 0u);
  EXPECT_EQ(match_pattern_key(keys, "model.layers.1.self_attn.v_proj"), 1u);
  EXPECT_EQ(match_pattern_key(keys, "model.layers.11.self_attn.v_proj"), 2u);
  EXPECT_EQ(match_pattern_key(keys, "model.layers.0.self_attn.xq_proj"), std::nullopt);
}

}  // namespace
}  // namespace vlmforge::test
