#include "model/runtime_lora.h"

#include <cmath>
#include <functional>
#include <optional>

#include "kernels/convert.h"
#include "kernels/low_rank.h"
#include "model/quantized_checkpoint.h"
#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

// m / ‖W_i + Σ s·B_i·A‖ for every row i of the base weight [rows, cols]; read_row(i, out) writes
// row i of W as fp32.
std::vector<float> dora_factor(size_t rows, size_t cols, const std::function<void(size_t, float*)>& read_row,
                               const LinearAdapters& layer, const std::vector<float>& magnitude) {
  std::vector<float> factor(rows), row(cols);
  for (size_t r = 0; r < rows; ++r) {
    read_row(r, row.data());
    for (const auto& l : layer.loras) kernels::add_low_rank(row.data(), 1, cols, l.b.data() + r * l.rank, l.a.data(), l.rank, l.scale);
    double sum = 0;
    for (float v : row) sum += static_cast<double>(v) * v;
    factor[r] = static_cast<float>(magnitude[r] / std::sqrt(sum));
  }
  return factor;
}

// The rows of a stored BF16 / F16 / F32 weight.
std::function<void(size_t, float*)> stored_rows(const TensorRef& weight) {
  return [&weight](size_t r, float* out) {
    const size_t cols = weight.info->shape[1], bytes = dtype_info(weight.info->dtype).bits / 8;
    kernels::to_f32(weight.info->dtype, weight.data().data() + r * cols * bytes, out, cols);
  };
}

// A base linear as adapters see it: its weight tensor's name ("<module>.weight", also for a
// quantized module, whose layer DeviceWeights looks up by that name) and [out, in].
struct BaseLinear {
  std::string weight_name;
  uint64_t rows = 0, cols = 0;
  const TensorRef* stored = nullptr;                   // a BF16 / F16 / F32 weight,
  std::optional<CheckpointQuantizedLinear> quantized;  // or an AWQ / GPTQ one of this shape
  QuantizedShape quantized_shape;
};

std::optional<BaseLinear> find_base_linear(const Checkpoint& base, const std::string& module,
                                           const QuantizationConfig* quantization) {
  if (const TensorRef* weight = resolve_base_tensor(base, module + ".weight")) {
    const auto& shape = weight->info->shape;
    const bool matrix = shape.size() == 2;
    return BaseLinear{weight->name(), matrix ? shape[0] : 0, matrix ? shape[1] : 0, weight, {}, {}};
  }
  const TensorRef* qweight = resolve_base_tensor(base, module + ".qweight");
  if (!qweight) return std::nullopt;
  const std::string name = qweight->name().substr(0, qweight->name().size() - std::string_view(".qweight").size());
  BaseLinear l{name + ".weight", 0, 0, nullptr, find_quantized_linear(base, quantization, name), {}};
  l.quantized_shape = checked_quantized_shape(base, *quantization, l.quantized->tensors);
  l.rows = l.quantized_shape.rows;
  l.cols = l.quantized_shape.cols;
  return l;
}

}  // namespace

RuntimeLora::RuntimeLora(const Checkpoint& base, const std::vector<fs::path>& adapter_dirs,
                         const QuantizationConfig* quantization) {
  for (const auto& dir : adapter_dirs) adapters_.emplace_back(dir);
  for (const Adapter& adapter : adapters_) {
    const std::string where = adapter.dir().string();
    if (adapter.config().fan_in_fan_out)
      throw Error(where + ": fan_in_fan_out adapters can only be merged (vlmforge merge-lora), not applied at inference");
    for (const auto& m : adapter.modules()) {
      if (m.kind == LoraLayerKind::kEmbedding)
        throw Error(where + ": module '" + m.module + "' is an embedding LoRA; merge it first with `vlmforge merge-lora`");
      const std::optional<BaseLinear> weight = find_base_linear(base, m.module, quantization);
      if (!weight) throw Error(where + ": target module '" + m.module + "' has no weight in the base model");
      if (weight->rows == 0 || m.a->info->shape[1] != weight->cols || m.b->info->shape[0] != weight->rows)
        throw Error(where + ": module '" + m.module + "': lora_A " + m.a->info->shape_string() + " and lora_B " +
                    m.b->info->shape_string() + " do not fit base tensor '" + weight->weight_name + "' " +
                    (weight->stored ? weight->stored->info->shape_string()
                                    : "[" + std::to_string(weight->rows) + ", " + std::to_string(weight->cols) + "]"));
      LinearAdapters& layer = layers_[weight->weight_name];
      if (!layer.dora_factor.empty() || (m.magnitude && !layer.loras.empty()))
        throw Error(where + ": module '" + m.module + "' has DoRA together with another adapter; merge them instead");
      layer.loras.push_back({kernels::tensor_to_f32(*m.a), kernels::tensor_to_f32(*m.b), static_cast<size_t>(m.rank), static_cast<float>(m.scaling)});
      if (m.b_bias) {
        const std::vector<float> bias = kernels::tensor_to_f32(*m.b_bias);
        layer.bias_delta.resize(bias.size(), 0.0f);
        for (size_t i = 0; i < bias.size(); ++i) layer.bias_delta[i] += static_cast<float>(m.scaling) * bias[i];
      }
      if (m.magnitude) {
        std::vector<std::byte> layout;  // a quantized base's weight, dequantized a row at a time
        std::function<void(size_t, float*)> read_row;
        if (weight->stored) {
          read_row = stored_rows(*weight->stored);
        } else {
          layout = repack_quantized(*quantization, weight->quantized->tensors, weight->quantized_shape);
          read_row = [&](size_t r, float* out) { dequantize_row(weight->quantized_shape, layout, r, out); };
        }
        layer.dora_factor = dora_factor(weight->rows, weight->cols, read_row, layer, kernels::tensor_to_f32(*m.magnitude));
      }
    }
    for (const auto& r : adapter.replacements()) {
      const TensorRef* target = resolve_base_tensor(base, r.name);
      if (!target) throw Error(where + ": adapter tensor '" + r.tensor->name() + "' replaces '" + r.name + "', which is not in the base model");
      replacements_[target->name()] = r.tensor;
    }
  }
}

const LinearAdapters* RuntimeLora::find(const std::string& weight_name) const {
  const auto it = layers_.find(weight_name);
  return it == layers_.end() ? nullptr : &it->second;
}

const TensorRef* RuntimeLora::replacement(const std::string& name) const {
  const auto it = replacements_.find(name);
  return it == replacements_.end() ? nullptr : it->second;
}

}  // namespace vlmforge
