#include "model/random_checkpoint.h"

#include <cmath>
#include <cstring>
#include <map>

#include "io/convert.h"
#include "io/json_file.h"
#include "io/safetensors_writer.h"
#include "util/bytes.h"
#include "util/error.h"
#include "util/progress.h"
#include "util/thread_pool.h"

namespace vlmforge {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kChunkBytes = 8u << 20;

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t name_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ seed;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Norm weights near 1, biases and weights small: a forward pass through the result stays finite.
std::pair<float, float> value_range(const std::string& name) {
  if (ends_with(name, "norm.weight") || ends_with(name, "norm1.weight") || ends_with(name, "norm2.weight") ||
      ends_with(name, "ln_q.weight"))
    return {1.0f, 0.1f};
  if (ends_with(name, ".bias")) return {0.0f, 0.02f};
  return {0.0f, 0.05f};
}

// Values depend only on (seed, tensor name, position), not on the thread count: each 1 MiB
// piece of the tensor has its own generator state.
void write_random_tensor(SafetensorsWriter& writer, const TensorSpec& spec, uint64_t seed, ThreadPool& pool,
                         ProgressBar& progress) {
  constexpr size_t kPieceBytes = 1u << 20;
  const uint64_t tensor_seed = name_seed(seed, spec.name);
  const auto [center, spread] = value_range(spec.name);
  std::vector<std::byte> chunk(kChunkBytes);
  const uint64_t total = spec.nbytes();
  for (uint64_t done = 0; done < total;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(total - done, chunk.size()));
    const size_t pieces = (n + kPieceBytes - 1) / kPieceBytes;
    pool.parallel_for(pieces, [&](size_t begin, size_t end) {
      for (size_t p = begin; p < end; ++p) {
        uint64_t state = tensor_seed + (done / kPieceBytes + p) * 0x9e3779b97f4a7c15ull;
        const size_t offset = p * kPieceBytes;
        fill_random(std::span(chunk).subspan(offset, std::min(kPieceBytes, n - offset)), spec.dtype, state, center,
                    spread);
      }
    });
    writer.write(std::span(chunk).first(n));
    progress.advance(n);
    done += n;
  }
}

json generation_config(const ModelConfig& c) {
  return {{"bos_token_id", c.bos_token_id},
          {"do_sample", true},
          {"eos_token_id", {c.eos_token_id, 151643}},
          {"pad_token_id", 151643},
          {"repetition_penalty", 1.05},
          {"temperature", 0.7},
          {"top_k", 20},
          {"top_p", 0.8},
          {"transformers_version", "4.49.0"}};
}

std::string torch_dtype_name(DType d) {
  switch (d) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    case DType::F32: return "float32";
    default: throw UsageError("checkpoints can be generated in bfloat16, float16 or float32 only");
  }
}

}  // namespace

void fill_random(std::span<std::byte> out, DType dtype, uint64_t& state, float center, float spread) {
  auto next = [&] {
    const double u = static_cast<double>(splitmix64(state) >> 11) * 0x1p-53;  // [0, 1)
    return static_cast<float>(center + (2.0 * u - 1.0) * spread);
  };
  if (!is_compute_float(dtype)) {
    for (auto& b : out) b = static_cast<std::byte>(splitmix64(state));
    return;
  }
  const size_t count = out.size() / (dtype_info(dtype).bits / 8);
  for (size_t i = 0; i < count; ++i) store_float(dtype, out.data(), i, next());
}

void generate_checkpoint(const ModelConfig& config, const fs::path& out_dir, const CheckpointOptions& options) {
  ModelConfig written = config;
  written.torch_dtype = torch_dtype_name(options.dtype);
  const std::vector<TensorSpec> tensors = checkpoint_tensors(config, options.dtype, options.layout);
  const auto shards = plan_shards(tensors, options.max_shard_size);
  fs::create_directories(out_dir);
  write_text_file(out_dir / "config.json", written.to_json().dump(2) + "\n");
  write_text_file(out_dir / "generation_config.json", generation_config(config).dump(2) + "\n");

  uint64_t total = 0;
  for (const auto& t : tensors) total += t.nbytes();
  ProgressBar progress("generate", total, options.progress);
  ThreadPool pool;
  std::map<std::string, std::string> weight_map;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file_name = shard_file_name(s, shards.size());
    std::vector<TensorSpec> shard_tensors;
    for (size_t i : shards[s]) {
      shard_tensors.push_back(tensors[i]);
      weight_map[tensors[i].name] = file_name;
    }
    SafetensorsWriter writer(out_dir / file_name, shard_tensors);
    for (const auto& spec : shard_tensors) write_random_tensor(writer, spec, options.seed, pool, progress);
    writer.finish();
  }
  progress.finish();
  if (shards.size() > 1)
    write_text_file(out_dir / "model.safetensors.index.json", make_shard_index(total, weight_map).dump(2) + "\n");
}

void generate_adapter(const Checkpoint& base, const fs::path& out_dir, const AdapterOptions& options) {
  if (options.r <= 0) throw UsageError("adapter rank r must be positive");
  const double scaling = options.use_rslora ? options.lora_alpha / std::sqrt(options.r) : options.lora_alpha / options.r;
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  uint64_t state = options.seed * 0x2545f4914f6cdd1dull + 7;
  auto add_random = [&](std::string name, std::vector<uint64_t> shape, float spread) {
    TensorSpec spec{std::move(name), options.dtype, std::move(shape)};
    std::vector<std::byte> bytes(spec.nbytes());
    fill_random(bytes, options.dtype, state, 0.0f, spread);
    specs.push_back(std::move(spec));
    data.push_back(std::move(bytes));
  };
  for (const auto& ref : base.tensors()) {
    const std::string& name = ref.name();
    if (!ends_with(name, ".weight") || ref.info->shape.size() != 2) continue;
    if (!options.include_vision && name.find("visual.") != std::string::npos) continue;
    const std::string module = name.substr(0, name.size() - 7);
    const std::string leaf = module.substr(module.rfind('.') + 1);
    bool targeted = false;
    for (const auto& t : options.target_modules) targeted |= (leaf == t);
    if (!targeted) continue;
    const uint64_t out_features = ref.info->shape[0], in_features = ref.info->shape[1];
    const uint64_t r = static_cast<uint64_t>(options.r);
    const std::string key = "base_model.model." + module;
    // Kaiming-like A and a trained-looking B, sized so the update is a few percent of W.
    add_random(key + ".lora_A.weight", {r, in_features}, static_cast<float>(1.0 / std::sqrt(in_features)));
    add_random(key + ".lora_B.weight", {out_features, r}, static_cast<float>(0.02 / scaling));
    if (options.use_dora) {
      // Magnitudes near the base rows' norms, as DoRA initialises them, then perturbed.
      if (!is_compute_float(ref.info->dtype))
        throw Error("tensor '" + name + "': DoRA adapters need a BF16/F16/F32 base");
      const std::byte* w = ref.data().data();
      TensorSpec spec{key + ".lora_magnitude_vector", options.dtype, {out_features}};
      std::vector<std::byte> bytes(spec.nbytes());
      for (uint64_t row = 0; row < out_features; ++row) {
        double sum = 0;
        for (uint64_t col = 0; col < in_features; ++col) {
          const double v = load_float(ref.info->dtype, w, row * in_features + col);
          sum += v * v;
        }
        const double m = std::sqrt(sum) * (1.0 + 0.05 * std::sin(static_cast<double>(row)));
        store_float(options.dtype, bytes.data(), row, static_cast<float>(m));
      }
      specs.push_back(std::move(spec));
      data.push_back(std::move(bytes));
    }
  }
  if (specs.empty()) throw UsageError("no module of " + base.root().string() + " matches the target modules");
  fs::create_directories(out_dir);
  std::vector<std::span<const std::byte>> views(data.begin(), data.end());
  save_safetensors(out_dir / "adapter_model.safetensors", specs, views);
  const json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", fs::absolute(base.root()).string()},
      {"r", options.r},
      {"lora_alpha", options.lora_alpha},
      {"lora_dropout", 0.05},
      {"target_modules", options.target_modules},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"use_rslora", options.use_rslora},
      {"use_dora", options.use_dora},
      {"modules_to_save", nullptr},
      {"rank_pattern", json::object()},
      {"alpha_pattern", json::object()},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
  };
  write_text_file(out_dir / "adapter_config.json", config.dump(2) + "\n");
}

}  // namespace vlmforge
