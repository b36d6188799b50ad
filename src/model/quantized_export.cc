#include "model/quantized_export.h"

#include <chrono>
#include <memory>
#include <optional>

#include "io/json_file.h"
#include "model/quant_pack.h"
#include "util/error.h"
#include "util/progress.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

// How many tensors the kernel reads ahead of the export (as merge-lora).
constexpr size_t kReadAheadTensors = 2;

constexpr const char* kLinearSuffixes[] = {".self_attn.q_proj.weight", ".self_attn.k_proj.weight",
                                           ".self_attn.v_proj.weight", ".self_attn.o_proj.weight",
                                           ".mlp.gate_proj.weight",    ".mlp.up_proj.weight",
                                           ".mlp.down_proj.weight"};

bool is_vision_tensor(const std::string& name) {
  return name.starts_with("visual.") || name.starts_with("model.visual.");
}

std::string module_of(const std::string& weight) { return weight.substr(0, weight.size() - std::string(".weight").size()); }

nlohmann::ordered_json quantization_json(const QuantizationConfig& q, const std::vector<std::string>& kept) {
  nlohmann::ordered_json j;
  j["quant_method"] = q.method == QuantMethod::kAwq ? "awq" : "gptq";
  j["bits"] = q.bits;
  j["group_size"] = q.group_size;
  if (q.method == QuantMethod::kAwq) {
    j["zero_point"] = true;
    j["version"] = "gemm";
  } else {
    j["desc_act"] = false;
    j["sym"] = true;
    j["checkpoint_format"] = "gptq";
  }
  j["modules_to_not_convert"] = kept.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(kept);
  return j;
}

void refuse_quantized_input(const Checkpoint& base) {
  const fs::path config = base.root() / "config.json";
  if (fs::exists(config) && read_json_file(config).contains("quantization_config"))
    throw Error(config.string() + " has a quantization_config: the model is quantized already; export quantizes "
                "BF16/F16/F32 checkpoints (start from the unquantized model)");
  for (const auto& t : base.tensors())
    if (t.name().ends_with(".qweight"))
      throw Error("tensor '" + t.name() + "' in " + base.root().string() +
                  " is quantized already; export quantizes BF16/F16/F32 checkpoints (start from the unquantized model)");
}

}  // namespace

bool is_exported_linear(const std::string& tensor) {
  if (is_vision_tensor(tensor) || tensor.find(".layers.") == std::string::npos) return false;
  for (const char* suffix : kLinearSuffixes)
    if (tensor.ends_with(suffix)) return true;
  return false;
}

ExportPlan plan_export(const Checkpoint& base, const std::vector<Adapter>& adapters, const ExportOptions& options) {
  refuse_quantized_input(base);
  if (options.merge.output_dir.empty()) throw UsageError("--output_dir is required");
  MergeOptions merge = options.merge;
  merge.dtype = DType::F16;
  ExportPlan plan;
  plan.merge = plan_merge(base, adapters, merge);
  for (const auto& t : base.tensors())
    if (is_vision_tensor(t.name())) {
      plan.kept_modules = {"visual"};
      break;
    }
  plan.quantization_config = quantization_json(options.quant, plan.kept_modules);

  std::vector<TensorSpec> specs;
  for (size_t i = 0; i < plan.merge.tensors.size(); ++i) {
    const PlannedTensor& t = plan.merge.tensors[i];
    if (!is_exported_linear(t.output.name)) {
      plan.tensors.push_back({t.output, i, -1});
      continue;
    }
    if (t.output.shape.size() != 2 || !is_compute_float(t.base->info->dtype))
      throw Error("tensor '" + t.output.name + "' is " + std::string(dtype_name(t.base->info->dtype)) + " " +
                  t.base->info->shape_string() + "; export quantizes 2-D BF16/F16/F32 weights");
    const uint64_t rows = t.output.shape[0], cols = t.output.shape[1];
    if (const std::string why = unpackable_reason(options.quant, rows, cols); !why.empty())
      throw UsageError("cannot quantize '" + t.output.name + "' " + t.base->info->shape_string() + ": " + why +
                       "; choose a --group_size that divides its inputs, or -1 (one group per row)");
    const std::vector<TensorSpec> parts = PackedLinear::specs(options.quant, module_of(t.output.name), rows, cols);
    for (size_t p = 0; p < parts.size(); ++p) plan.tensors.push_back({parts[p], i, static_cast<int>(p)});
    ++plan.quantized_linears;
  }
  if (plan.quantized_linears == 0)
    throw Error(base.root().string() + " has no decoder linear (model.layers.N.self_attn.q_proj.weight, ...) to quantize");
  for (const auto& t : plan.tensors) {
    specs.push_back(t.output);
    plan.total_bytes += t.output.nbytes();
  }
  plan.shards = plan_shards(specs, options.merge.max_shard_size);
  return plan;
}

ExportStats execute_export(const Checkpoint& base, const ExportPlan& plan, const ExportOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<fs::path> inputs{options.merge.model_dir};
  inputs.insert(inputs.end(), options.merge.adapter_dirs.begin(), options.merge.adapter_dirs.end());
  StagedOutputDir staged(plan.merge.output_dir, inputs, options.merge.overwrite);

  ProgressBar progress("export", plan.merge.total_bytes, options.merge.progress);
  MergeStream stream(options.merge.threads, progress);
  const auto& planned = plan.merge.tensors;
  for (size_t i = 0; i < std::min(kReadAheadTensors, planned.size()); ++i) stream.read_ahead(*planned[i].base);
  // The quantized linear whose parts are being written (they may span two shards).
  std::optional<PackedLinear> packed;
  size_t packed_index = planned.size();
  std::vector<TensorSpec> outputs;
  for (const ExportTensor& e : plan.tensors) outputs.push_back(e.output);
  write_shards(staged.path(), outputs, plan.shards, plan.total_bytes, stream, [&](size_t i, SafetensorsWriter& writer) {
    const ExportTensor& e = plan.tensors[i];
    const PlannedTensor& t = planned[e.planned];
    if (e.part <= 0 && e.planned + kReadAheadTensors < planned.size())
      stream.read_ahead(*planned[e.planned + kReadAheadTensors].base);
    if (e.part < 0) return stream.write(t, writer);
    if (packed_index != e.planned) {
      packed.emplace(options.quant, module_of(t.output.name), t.output.shape[0], t.output.shape[1]);
      packed_index = e.planned;
      stream.merged_rows(t, PackedLinear::kRowMultiple,
                         [&](const float* rows, size_t row, size_t n) { packed->quantize_rows(rows, row, n); });
      progress.advance(t.output.nbytes());
    }
    stream.flush();  // blocks of the tensors before are written first
    writer.write(packed->data()[static_cast<size_t>(e.part)]);
  });
  packed.reset();
  copy_non_weight_files(base.root(), staged.path(), [&](nlohmann::ordered_json& config) {
    set_torch_dtype(config, DType::F16);
    config["quantization_config"] = plan.quantization_config;
  });
  progress.finish();
  staged.commit();
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), plan.total_bytes};
}

}  // namespace vlmforge
