// The planner: byte totals against arithmetic written out here from the configs, placement rules
// (no split layers, tied weights together, strategies, offload), explicit maps, errors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "model/layout.h"
#include "model/random_checkpoint.h"
#include "plan/plan_flags.h"
#include "plan/planner.h"
#include "support/test_support.h"

namespace vlmforge {
namespace {
using nlohmann::json;

using test::error_of;

std::vector<DeviceTarget> devices(const std::string& type, int count, uint64_t bytes) {
  std::vector<DeviceTarget> out;
  for (int i = 0; i < count; ++i) {
    DeviceTarget t;
    t.spec = {type, i};
    t.capacity = t.total = bytes;
    t.capped = true;
    out.push_back(t);
  }
  return out;
}

// Parameters of one Qwen2 decoder layer, from the config's sizes.
uint64_t layer_params(uint64_t h, uint64_t i, uint64_t heads, uint64_t kv_heads) {
  const uint64_t kv = kv_heads * (h / heads);
  return (h * h + h) + 2 * (kv * h + kv) + h * h + 3 * h * i + 2 * h;
}

TEST(PlanShapes, Qwen25_7bBytesMatchTheConfigArithmetic) {
  const ModelShape s = ModelShape::from_config(preset_config("qwen2.5-7b"), DType::BF16, "7b");
  const uint64_t layer = layer_params(3584, 18944, 28, 4);
  const uint64_t embed = 152064ull * 3584;
  // 7,615,616,512 parameters: the published Qwen2.5-7B count.
  EXPECT_EQ(28 * layer + 2 * embed + 3584, 7'615'616'512ull);
  EXPECT_EQ(s.weight_bytes(), 2 * 7'615'616'512ull);
  ASSERT_EQ(s.modules.size(), 28u + 3u);
  EXPECT_EQ(s.modules[0].name, "model.embed_tokens");
  EXPECT_EQ(s.modules[0].weight_bytes, 2 * embed);
  EXPECT_EQ(s.modules[5].name, "model.layers.4");
  EXPECT_EQ(s.modules[5].weight_bytes, 2 * layer);
  EXPECT_EQ(s.modules[29].name, "model.norm");
  EXPECT_EQ(s.modules[30].name, "lm_head");
  EXPECT_EQ(s.modules[30].weight_bytes, 2 * embed);
}

TEST(PlanShapes, VisionTowerIsOneModule) {
  const ModelConfig c = preset_config("qwen2.5-vl-32b");
  const ModelShape s = ModelShape::from_config(c, DType::BF16, "vl32b");
  ASSERT_EQ(s.modules[0].name, "visual");
  const uint64_t vh = 1280, vi = 3420, depth = 32, out = 5120, m = vh * 4;
  const uint64_t block = 2 * vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + 2 * (vi * vh + vi) + (vh * vi + vh);
  const uint64_t vision = vh * 3 * 2 * 14 * 14 + depth * block + vh + (m * m + m) + (out * m + out);
  EXPECT_EQ(s.modules[0].weight_bytes, 2 * vision);
  const uint64_t text = 64 * layer_params(5120, 27648, 40, 8) + 2 * 152064ull * 5120 + 5120;
  EXPECT_EQ(s.weight_bytes(), 2 * (vision + text));
  // The transformers >= 4.52 layout names the same modules under model.
  std::vector<std::pair<std::string, uint64_t>> tensors;
  for (const auto& t : checkpoint_tensors(c, DType::BF16, VlWeightLayout::kTransformers)) tensors.emplace_back(t.name, t.nbytes());
  const ModelShape n = ModelShape::from_tensors(c, tensors, "new");
  EXPECT_EQ(n.modules[0].name, "model.visual");
  EXPECT_EQ(n.modules[1].name, "model.language_model.embed_tokens");
  EXPECT_EQ(n.weight_bytes(), s.weight_bytes());
}

TEST(PlanShapes, HeadersOfAGeneratedCheckpointGiveTheSameModules) {
  test::TempDir dir;
  CheckpointOptions o;
  o.max_shard_size = 40'000;  // several shards
  generate_checkpoint(preset_config("tiny-vl"), dir.path(), o);
  const ModelShape from_headers = ModelShape::from_checkpoint(dir.path());
  const ModelShape from_config = ModelShape::from_config(preset_config("tiny-vl"), DType::BF16, "cfg");
  ASSERT_EQ(from_headers.modules.size(), from_config.modules.size());
  for (size_t i = 0; i < from_config.modules.size(); ++i) {
    EXPECT_EQ(from_headers.modules[i].name, from_config.modules[i].name);
    EXPECT_EQ(from_headers.modules[i].weight_bytes, from_config.modules[i].weight_bytes);
  }
}

TEST(PlanShapes, QuantizedCheckpointsCountTheirRepackedLayout) {
  for (const auto& [name, permuted] : {std::pair{"qwen2-micro-awq", false}, {"qwen2-micro-gptq-int4", true},
                                       {"qwen2-micro-gptq-int8-v2", false}}) {
    SCOPED_TRACE(name);
    const std::filesystem::path dir = test::shared_dir() / "golden" / name;
    VLMFORGE_REQUIRE_SHARED(dir / "model.safetensors");
    const ModelShape s = ModelShape::from_checkpoint(dir);
    const QuantizationConfig& q = *s.config.quantization;
    // A layer: q, k, v, o [out, in] and gate, up, down repacked, the q/k/v biases and both norms F16.
    uint64_t layer = (64 + 32 + 32) * 2 + 2 * 64 * 2;
    for (const auto& [out, in] : {std::pair<uint64_t, uint64_t>{64, 64}, {32, 64}, {32, 64}, {64, 64}, {160, 64},
                                  {160, 64}, {64, 160}})
      layer += q.device_layout(in, permuted).bytes(out, in);
    ASSERT_EQ(s.modules[1].name, "model.layers.0");
    EXPECT_EQ(s.modules[1].weight_bytes, layer);
    // The config alone gives the same bytes (GPTQ desc_act taken as permuted).
    const ModelShape from_config = ModelShape::from_config(s.config, DType::F16, "cfg");
    ASSERT_EQ(from_config.modules.size(), s.modules.size());
    for (size_t i = 0; i < s.modules.size(); ++i) EXPECT_EQ(from_config.modules[i].weight_bytes, s.modules[i].weight_bytes);

    const auto r = test::run_vlmforge({"plan", "--model", dir.string(), "--devices", "cuda:0", "--max_memory", "4GB",
                                       "--max_model_len", "256", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["weights"].get<uint64_t>(), s.weight_bytes());
  }
}

// The host's quantized-product inputs are part of the plan: a quantized run's accounted peak
// matches the estimate.
TEST(PlanRuntime, QuantizedRunsPeakAtThePlan) {
  const std::filesystem::path golden = test::shared_dir() / "golden";
  VLMFORGE_REQUIRE_SHARED(golden / "qwen2-micro-gptq-int4" / "model.safetensors");
  test::TempDir dir;
  for (const char* f : {"config.json", "model.safetensors"})
    std::filesystem::copy_file(golden / "qwen2-micro-gptq-int4" / f, dir / f);
  std::filesystem::copy_file(golden / "qwen2-tiny-f32" / "tokenizer.json", dir / "tokenizer.json");
  std::string ids;
  for (int i = 0; i < 48; ++i) ids += std::to_string(7 * i + 3) + ",";
  ids.pop_back();
  const auto r = test::run_vlmforge({"score", "--model", dir.path().string(), "--ids", ids, "--device_map", "auto",
                                     "--devices", "cpu:0,cpu:1", "--max_memory", "1GiB", "--memory_report"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto report = test::memory_report(r.err);
  ASSERT_FALSE(report.empty()) << r.err;
  for (const auto& [device, values] : report)
    EXPECT_NEAR(values.first / values.second, 1.0, 0.02) << device << ": peak " << values.first << ", plan " << values.second;
}

TEST(PlanRuntime, KvCacheAndWorkspaceFollowTheFormulas) {
  const ModelShape s = ModelShape::from_config(preset_config("qwen2.5-7b"), DType::BF16, "7b");
  PlanOptions o;
  o.max_batch_size = 4;
  o.max_model_len = 8192;
  o.kv_cache_dtype = DType::BF16;
  o.threads = 2;
  const Plan p = make_plan(s, devices("cuda", 2, 64ull << 30), o);
  uint64_t kv = 0;
  for (const auto& d : p.devices) kv += d.kv_cache;
  // keys + values, kv_dim = 4 heads x 128, bf16, per layer, batch x length.
  EXPECT_EQ(kv, 28ull * 2 * 512 * 2 * 4 * 8192);
  // A device holding layers and the head: rows = min(512, len) prefill rows.
  const uint64_t rows = 512, h = 3584, i = 18944, kvd = 512, hd = 128, group = 7;
  const uint64_t layer_ws = 4 * (rows * (5 * h + 2 * kvd + 2 * i + hd) + 1 * group * 8192);
  const uint64_t head_ws = 4 * (4 * (h + 152064));
  EXPECT_EQ(p.devices.back().workspace, layer_ws + head_ws);
  EXPECT_EQ(p.devices.back().reserve, 1ull << 30);
  for (const auto& d : p.devices) EXPECT_GE(d.free_after(), 0);
}

TEST(PlanPlacement, Vl32bOnEight64GbDevicesSpreadsEvenly) {
  const ModelShape s = ModelShape::from_config(preset_config("qwen2.5-vl-32b"), DType::BF16, "vl32b");
  PlanOptions o;
  o.max_model_len = 32768;
  o.kv_cache_dtype = DType::BF16;
  const Plan p = make_plan(s, devices("npu", 8, 64'000'000'000), o);
  ASSERT_EQ(p.devices.size(), 8u);
  size_t most = 0, least = SIZE_MAX;
  uint64_t weights = 0;
  for (const auto& d : p.devices) {
    size_t layers = 0;
    for (size_t m : d.modules) layers += s.modules[m].kind == ModuleKind::kLayer;
    most = std::max(most, layers);
    least = std::min(least, layers);
    weights += d.weights;
    EXPECT_GE(d.free_after(), 0);
  }
  EXPECT_EQ(weights, s.weight_bytes());
  EXPECT_LE(most - least, 8u);  // device 0 also holds the vision tower and embeddings
  const auto map = p.hf_device_map();
  EXPECT_EQ(map.size(), s.modules.size());
  EXPECT_EQ(map["visual"], "npu:0");
  EXPECT_EQ(map["lm_head"], "npu:7");
}

TEST(PlanPlacement, SequentialFillsTheFirstDevice) {
  const ModelShape s = ModelShape::from_config(preset_config("qwen2.5-0.5b"), DType::BF16, "0.5b");
  PlanOptions o;
  o.max_model_len = 1024;
  o.strategy = PlanStrategy::kSequential;
  const Plan p = make_plan(s, devices("cuda", 3, 40ull << 30), o);
  EXPECT_EQ(p.devices[0].modules.size(), s.modules.size());
  EXPECT_TRUE(p.devices[1].modules.empty());
}

TEST(PlanPlacement, TiedLmHeadStaysWithTheEmbeddings) {
  const ModelShape s = ModelShape::from_config(preset_config("qwen2.5-0.5b"), DType::BF16, "0.5b");
  PlanOptions o;
  o.max_model_len = 1024;
  const Plan p = make_plan(s, devices("cuda", 4, 2ull << 30), o);
  const auto map = p.hf_device_map();
  EXPECT_EQ(map["lm_head"], map["model.embed_tokens"]);
  EXPECT_NE(map["model.layers.23"], map["model.embed_tokens"]);
}

TEST(PlanPlacement, NothingFitsReportsShortfallAndRemedies) {
  const ModelShape s = ModelShape::from_config(preset_config("qwen2.5-7b"), DType::BF16, "7b");
  PlanOptions o;
  o.max_model_len = 32768;
  o.max_batch_size = 8;
  const std::string e = error_of([&] { make_plan(s, devices("cuda", 2, 16'000'000'000), o); });
  EXPECT_NE(e.find("cuda:0"), std::string::npos) << e;
  EXPECT_NE(e.find("short by"), std::string::npos) << e;
  EXPECT_NE(e.find("--max_model_len"), std::string::npos) << e;
  EXPECT_NE(e.find("--max_batch_size"), std::string::npos) << e;
  EXPECT_NE(e.find("more device(s)"), std::string::npos) << e;
  EXPECT_NE(e.find("--cpu_offload"), std::string::npos) << e;
  // A cap below one decoder layer: never split.
  const std::string small = error_of([&] { make_plan(s, devices("cpu", 3, 100'000'000), o); });
  EXPECT_NE(small.find("never split"), std::string::npos) << small;
}

TEST(PlanPlacement, OffloadPutsTheRestOnTheHostWithAWarning) {
  const ModelShape s = ModelShape::from_config(preset_config("qwen2.5-7b"), DType::BF16, "7b");
  PlanOptions o;
  o.max_model_len = 4096;
  o.cpu_offload = true;
  o.offload_memory = 64ull << 30;
  const Plan p = make_plan(s, devices("cuda", 1, 16'000'000'000), o);
  ASSERT_EQ(p.devices.size(), 2u);
  EXPECT_TRUE(p.devices[1].offload);
  ASSERT_EQ(p.warnings.size(), 1u);
  EXPECT_NE(p.warnings[0].find("slow"), std::string::npos);
  EXPECT_EQ(p.hf_device_map()["lm_head"], "cpu");
  EXPECT_EQ(p.hf_device_map()["model.embed_tokens"], "cuda:0");
}

TEST(PlanMaps, ExplicitMapsAreValidated) {
  const ModelShape s = ModelShape::from_config(preset_config("qwen2.5-0.5b"), DType::BF16, "0.5b");
  PlanOptions o;
  o.max_model_len = 512;
  const auto devs = devices("cuda", 2, 4ull << 30);
  // A planner map is accepted back unchanged.
  const Plan p = make_plan(s, devs, o);
  const Plan back = plan_from_map(s, devs, json::parse(p.hf_device_map().dump()), o, "map.json");
  EXPECT_EQ(back.module_device, p.module_device);
  // Prefixes and integer devices as accelerate writes them.
  const Plan prefix = plan_from_map(s, devs, json{{"model", 0}, {"model.layers.20", 1}, {"lm_head", 0}}, o, "m");
  EXPECT_EQ(prefix.hf_device_map()["model.layers.20"], "cuda:1");
  EXPECT_EQ(prefix.hf_device_map()["model.layers.19"], "cuda:0");
  auto e = error_of([&] { plan_from_map(s, devs, json{{"", 0}, {"model.decoder", 1}}, o, "m"); });
  EXPECT_NE(e.find("\"model.decoder\" is not a module"), std::string::npos) << e;
  e = error_of([&] { plan_from_map(s, devs, json{{"model.embed_tokens", 0}, {"lm_head", 0}}, o, "m"); });
  EXPECT_NE(e.find("leaves out model.layers.0"), std::string::npos) << e;
  e = error_of([&] { plan_from_map(s, devs, json{{"", 0}, {"model.layers.3.mlp", 1}}, o, "m"); });
  EXPECT_NE(e.find("never split"), std::string::npos) << e;
  e = error_of([&] { plan_from_map(s, devs, json{{"", 0}, {"lm_head", 1}}, o, "m"); });
  EXPECT_NE(e.find("tied"), std::string::npos) << e;
  e = error_of([&] { plan_from_map(s, devs, json{{"", "disk"}}, o, "m"); });
  EXPECT_NE(e.find("disk"), std::string::npos) << e;
  e = error_of([&] { plan_from_map(s, devs, json{{"", "cuda:5"}}, o, "m"); });
  EXPECT_NE(e.find("cuda:5"), std::string::npos) << e;
  e = error_of([&] { plan_from_map(s, devs, json{{"", true}}, o, "m"); });
  EXPECT_NE(e.find("expected a device name"), std::string::npos) << e;
  e = error_of([&] { plan_from_map(s, devices("cuda", 2, 500'000'000), json{{"", 0}}, o, "m"); });
  EXPECT_NE(e.find("short by"), std::string::npos) << e;
}

TEST(PlanCli, PlansPresetsAndConfigsWithoutWeights) {
  auto r = test::run_vlmforge({"plan", "--preset", "qwen2.5-vl-32b", "--devices", "npu:0-7", "--max_memory", "64GB",
                               "--max_model_len", "32768", "--kv_cache_dtype", "bfloat16", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["devices"].size(), 8u);
  EXPECT_EQ(j["device_map"]["visual"], "npu:0");
  test::TempDir dir;
  {
    std::ofstream(dir / "config.json") << preset_config("qwen2.5-7b").to_json().dump();
  }
  r = test::run_vlmforge({"plan", "--model", dir.path().string(), "--devices", "cuda:0", "--max_memory", "16GB",
                          "--max_model_len", "4096"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("short by"), std::string::npos) << r.err;
  r = test::run_vlmforge({"plan", "--model", dir.path().string(), "--devices", "cuda:0", "--max_memory", "16GB",
                          "--max_model_len", "4096", "--cpu_offload"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: offloading"), std::string::npos) << r.err;
  for (const auto& bad : std::vector<std::vector<std::string>>{
           {"--devices", "gpu:0", "--max_memory", "1GB"},
           {"--devices", "cuda:0", "--max_memory", "1XB"},
           {"--devices", "cuda:0"},
           {"--devices", "cuda:0", "--max_memory", "1GB", "--strategy", "greedy"},
           {"--device_map", "/nonexistent/map.json"}}) {
    std::vector<std::string> args{"plan", "--preset", "qwen2.5-0.5b"};
    args.insert(args.end(), bad.begin(), bad.end());
    r = test::run_vlmforge(args);
    EXPECT_EQ(r.exit_code, 2) << bad[1] << ": " << r.err;
  }
  {
    std::ofstream(dir / "map.json") << R"({"model.embed_tokens": "cuda:0", "lm_head": "cuda:0"})";
  }
  r = test::run_vlmforge({"plan", "--preset", "qwen2.5-0.5b", "--device_map", (dir / "map.json").string(),
                          "--max_memory", "8GB"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("leaves out"), std::string::npos) << r.err;
}

}  // namespace
// Sets an environment variable for the scope of a test (the vlmforge children inherit it).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

TEST(PlanCli, VisionWorkspaceFollowsTheMaxPixelsEnvironmentAsInfer) {
  auto workspace = [](std::vector<std::string> extra) {
    std::vector<std::string> args{"plan", "--preset", "tiny-vl", "--max_model_len", "256", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = test::run_vlmforge(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["workspace"].get<uint64_t>() : 0;
  };
  const uint64_t by_default = workspace({});
  const uint64_t by_flag = workspace({"--max_pixels", "200704"});
  EXPECT_LT(by_flag, by_default);
  {
    const ScopedEnv env("MAX_PIXELS", "200704");  // swift's way to bound image memory
    EXPECT_EQ(workspace({}), by_flag);
    EXPECT_EQ(workspace({"--max_pixels", "12845056"}), by_default);  // the flag wins, as in infer
  }
  {
    const ScopedEnv env("MIN_PIXELS", "401408");
    const auto r = test::run_vlmforge({"plan", "--preset", "tiny-vl", "--max_model_len", "256", "--max_pixels", "200704", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("larger than max_pixels"), std::string::npos) << r.err;
  }
}

}  // namespace vlmforge
