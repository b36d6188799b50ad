// Planning a merge: which base tensor each adapter tensor changes, with every shape checked,
// before anything is written.
#include <algorithm>
#include <unordered_map>

#include "lora/merge.h"
#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

std::string shape_str(const std::vector<uint64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Checks lora_A/lora_B/magnitude shapes against the base weight; returns whether delta is transposed.
bool check_module_shapes(const Adapter& adapter, const LoraModule& m, const TensorRef& weight) {
  const std::string where = adapter.dir().string() + ": module '" + m.module + "'";
  const auto& w = weight.info->shape;
  const auto& a = m.a->info->shape;
  const auto& b = m.b->info->shape;
  if (w.size() != 2)
    throw Error(where + ": base tensor '" + weight.name() + "' is " + shape_str(w) + ", not a 2-D weight");
  const bool embedding = m.kind == LoraLayerKind::kEmbedding;
  const bool transposed = embedding || adapter.config().fan_in_fan_out;
  // Stored weight is [out, in] (Linear), [in, out] (fan_in_fan_out) or [num_embeddings, dim].
  const uint64_t a_cols_expected = transposed ? w[0] : w[1];
  const uint64_t b_rows_expected = transposed ? w[1] : w[0];
  if (a[1] != a_cols_expected || b[0] != b_rows_expected)
    throw Error(where + ": lora_A " + shape_str(a) + " and lora_B " + shape_str(b) + " do not fit base tensor '" +
                weight.name() + "' " + shape_str(w) + " (was the adapter trained on a different model?)");
  if (m.magnitude) {
    const uint64_t expected = transposed ? w[1] : w[0];
    if (m.magnitude->info->num_elements() != expected || !is_compute_float(m.magnitude->info->dtype))
      throw Error(where + ": DoRA magnitude " + m.magnitude->info->shape_string() + " should have " +
                  std::to_string(expected) + " BF16/F16/F32 elements for base tensor '" + weight.name() + "'");
  }
  return transposed;
}

}  // namespace

size_t MergePlan::changed_tensors() const {
  size_t n = 0;
  for (const auto& t : tensors) n += !t.updates.empty();
  return n;
}

std::vector<fs::path> non_weight_files(const fs::path& model_dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(model_dir)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;  // .git, .cache, hidden temporaries
    const std::string ext = entry.path().extension().string();
    const bool weights = ext == ".safetensors" || ext == ".bin" || ext == ".pt" || ext == ".pth" || ext == ".ckpt" ||
                         ext == ".gguf" || ext == ".h5" || ext == ".msgpack" ||
                         name == "model.safetensors.index.json" || name == "pytorch_model.bin.index.json";
    if (!weights) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

fs::path directory_path(const fs::path& dir) {
  fs::path normal = fs::absolute(dir).lexically_normal();
  if (!normal.has_filename() && normal.has_relative_path()) normal = normal.parent_path();
  return normal;
}

MergePlan plan_merge(const Checkpoint& base, const std::vector<Adapter>& adapters, const MergeOptions& options) {
  MergePlan plan;
  std::unordered_map<std::string_view, size_t> index_of;
  for (const auto& ref : base.tensors()) {
    DType out_dtype = ref.info->dtype;
    if (options.dtype && is_compute_float(out_dtype)) out_dtype = *options.dtype;
    index_of.emplace(ref.name(), plan.tensors.size());
    plan.tensors.push_back({{ref.name(), out_dtype, ref.info->shape}, &ref, {}});
  }

  for (size_t ai = 0; ai < adapters.size(); ++ai) {
    const Adapter& adapter = adapters[ai];
    const std::string where = adapter.dir().string();
    for (const auto& issue : adapter.non_finite_report()) {
      if (!options.allow_nonfinite)
        throw Error(where + ": non-finite values in the adapter: " + issue +
                    " (a diverged training run?); pass --allow_nonfinite to merge it anyway");
      plan.warnings.push_back(where + ": non-finite values in the adapter: " + issue);
    }
    for (const auto& m : adapter.modules()) {
      const TensorRef* weight = resolve_base_tensor(base, m.module + ".weight");
      if (!weight && resolve_base_tensor(base, m.module + ".qweight"))
        throw Error(where + ": target module '" + m.module + "' is quantized (AWQ / GPTQ '.qweight') in the base model " +
                    base.root().string() + "; LoRA cannot be merged into quantized weights: apply the adapter unmerged "
                    "with --adapters (infer, score, deploy), or merge it into the unquantized model");
      if (!weight)
        throw Error(where + ": target module '" + m.module + "' (from adapter tensor '" + m.a->name() +
                    "') has no weight in the base model " + base.root().string() +
                    " (looked for '" + m.module + ".weight' in both Qwen2.5-VL weight layouts)");
      if (!is_compute_float(weight->info->dtype))
        throw Error(where + ": base tensor '" + weight->name() + "' is " + std::string(dtype_name(weight->info->dtype)) +
                    "; LoRA can be merged into BF16, F16 or F32 weights only");
      const bool transposed = check_module_shapes(adapter, m, *weight);
      if (!adapter.config().targets(m.module) &&
          (!adapter.config().target_module_list.empty() || adapter.config().target_module_regex))
        plan.warnings.push_back(where + ": module '" + m.module +
                                "' has LoRA weights but adapter_config.json's target_modules does not name it");
      const auto kind = m.magnitude ? TensorUpdate::Kind::kDora : TensorUpdate::Kind::kLora;
      plan.tensors[index_of.at(weight->name())].updates.push_back({kind, ai, &m, nullptr, transposed});
      if (m.b_bias) {
        const TensorRef* bias = resolve_base_tensor(base, m.module + ".bias");
        if (!bias)
          throw Error(where + ": module '" + m.module + "' has a lora_B bias (lora_bias=True) but the base layer has no bias");
        if (bias->info->num_elements() != m.b_bias->info->num_elements())
          throw Error(where + ": lora_B bias of '" + m.module + "' is " + m.b_bias->info->shape_string() +
                      " but the base bias is " + bias->info->shape_string());
        plan.tensors[index_of.at(bias->name())].updates.push_back({TensorUpdate::Kind::kLoraBias, ai, &m, nullptr, false});
      }
    }
    for (const auto& r : adapter.replacements()) {
      const TensorRef* target = resolve_base_tensor(base, r.name);
      if (!target)
        throw Error(where + ": adapter tensor '" + r.tensor->name() + "' (modules_to_save or trained bias) replaces '" +
                    r.name + "', which is not in the base model");
      if (target->info->shape != r.tensor->info->shape)
        throw Error(where + ": adapter tensor '" + r.tensor->name() + "' is " + r.tensor->info->shape_string() +
                    " but base tensor '" + target->name() + "' is " + target->info->shape_string());
      if (is_compute_float(target->info->dtype) != is_compute_float(r.tensor->info->dtype) ||
          (!is_compute_float(target->info->dtype) && target->info->dtype != r.tensor->info->dtype))
        throw Error(where + ": adapter tensor '" + r.tensor->name() + "' is " +
                    std::string(dtype_name(r.tensor->info->dtype)) + " but base tensor '" + target->name() + "' is " +
                    std::string(dtype_name(target->info->dtype)));
      auto& updates = plan.tensors[index_of.at(target->name())].updates;
      updates.clear();  // a saved full copy supersedes what earlier adapters did to this tensor
      updates.push_back({TensorUpdate::Kind::kReplace, ai, nullptr, r.tensor, false});
    }
  }

  std::vector<TensorSpec> specs;
  for (const auto& t : plan.tensors) {
    specs.push_back(t.output);
    plan.total_bytes += t.output.nbytes();
  }
  plan.shards = plan_shards(specs, options.max_shard_size);

  if (!options.output_dir.empty()) {
    plan.output_dir = directory_path(options.output_dir);
  } else {
    if (options.adapter_dirs.empty()) throw UsageError("--output_dir is required when no adapter is given");
    plan.output_dir = directory_path(options.adapter_dirs.front()).string() + "-merged";
  }
  return plan;
}

}  // namespace vlmforge
