#include "model/runtime_lora.h"

#include <cmath>

#include "kernels/convert.h"
#include "kernels/low_rank.h"
#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

// m / ‖W_i + Σ s·B_i·A‖ for every row i of the base weight.
std::vector<float> dora_factor(const TensorRef& weight, const LinearAdapters& layer, const std::vector<float>& magnitude) {
  const size_t rows = weight.info->shape[0], cols = weight.info->shape[1];
  std::vector<float> factor(rows), row(cols);
  for (size_t r = 0; r < rows; ++r) {
    kernels::to_f32(weight.info->dtype, weight.data().data() + r * cols * (dtype_info(weight.info->dtype).bits / 8),
                    row.data(), cols);
    for (const auto& l : layer.loras) kernels::add_low_rank(row.data(), 1, cols, l.b.data() + r * l.rank, l.a.data(), l.rank, l.scale);
    double sum = 0;
    for (float v : row) sum += static_cast<double>(v) * v;
    factor[r] = static_cast<float>(magnitude[r] / std::sqrt(sum));
  }
  return factor;
}

}  // namespace

RuntimeLora::RuntimeLora(const Checkpoint& base, const std::vector<fs::path>& adapter_dirs) {
  for (const auto& dir : adapter_dirs) adapters_.emplace_back(dir);
  for (const Adapter& adapter : adapters_) {
    const std::string where = adapter.dir().string();
    if (adapter.config().fan_in_fan_out)
      throw Error(where + ": fan_in_fan_out adapters can only be merged (vlmforge merge-lora), not applied at inference");
    for (const auto& m : adapter.modules()) {
      if (m.kind == LoraLayerKind::kEmbedding)
        throw Error(where + ": module '" + m.module + "' is an embedding LoRA; merge it first with `vlmforge merge-lora`");
      const TensorRef* weight = resolve_base_tensor(base, m.module + ".weight");
      if (!weight) throw Error(where + ": target module '" + m.module + "' has no weight in the base model");
      const auto& w = weight->info->shape;
      if (w.size() != 2 || m.a->info->shape[1] != w[1] || m.b->info->shape[0] != w[0])
        throw Error(where + ": module '" + m.module + "': lora_A " + m.a->info->shape_string() + " and lora_B " +
                    m.b->info->shape_string() + " do not fit base tensor '" + weight->name() + "' " +
                    weight->info->shape_string());
      LinearAdapters& layer = layers_[weight->name()];
      if (!layer.dora_factor.empty() || (m.magnitude && !layer.loras.empty()))
        throw Error(where + ": module '" + m.module + "' has DoRA together with another adapter; merge them instead");
      layer.loras.push_back({kernels::tensor_to_f32(*m.a), kernels::tensor_to_f32(*m.b), static_cast<size_t>(m.rank), static_cast<float>(m.scaling)});
      if (m.b_bias) {
        const std::vector<float> bias = kernels::tensor_to_f32(*m.b_bias);
        layer.bias_delta.resize(bias.size(), 0.0f);
        for (size_t i = 0; i < bias.size(); ++i) layer.bias_delta[i] += static_cast<float>(m.scaling) * bias[i];
      }
      if (m.magnitude) layer.dora_factor = dora_factor(*weight, layer, kernels::tensor_to_f32(*m.magnitude));
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
