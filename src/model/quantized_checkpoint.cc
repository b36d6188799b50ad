#include "model/quantized_checkpoint.h"

#include <map>
#include <set>

#include "util/error.h"

namespace vlmforge {

namespace {

constexpr std::string_view kQweight = ".qweight";

StoredTensor stored(const TensorRef& t) { return {t.name(), t.info->dtype, t.info->shape, t.data()}; }

}  // namespace

std::optional<CheckpointQuantizedLinear> find_quantized_linear(const Checkpoint& checkpoint,
                                                               const QuantizationConfig* config,
                                                               const std::string& module) {
  const TensorRef* qweight = checkpoint.find(module + std::string(kQweight));
  if (!qweight) return std::nullopt;
  if (!config)
    throw Error(checkpoint.root().string() + ": tensor '" + qweight->name() +
                "' is quantized, but config.json has no quantization_config saying how (AWQ or GPTQ, bits, group_size)");
  auto required = [&](const char* suffix) -> const TensorRef& {
    const TensorRef* t = checkpoint.find(module + suffix);
    if (!t)
      throw Error(checkpoint.root().string() + ": model has '" + qweight->name() + "' but is missing tensor '" + module +
                  suffix + "'");
    return *t;
  };
  const TensorRef& qzeros = required(".qzeros");
  const TensorRef& scales = required(".scales");
  CheckpointQuantizedLinear l{{stored(*qweight), stored(qzeros), stored(scales), std::nullopt}, {qweight, &qzeros, &scales}};
  if (const TensorRef* g_idx = checkpoint.find(module + ".g_idx")) {
    l.tensors.g_idx = stored(*g_idx);
    l.refs.push_back(g_idx);
  }
  return l;
}

QuantizedShape checked_quantized_shape(const Checkpoint& checkpoint, const QuantizationConfig& config,
                                       const QuantizedTensors& tensors) {
  try {
    return quantized_shape(config, tensors);
  } catch (const Error& e) {
    throw Error(checkpoint.root().string() + ": " + e.what());
  }
}

std::vector<std::pair<std::string, uint64_t>> device_tensor_bytes(const Checkpoint& checkpoint,
                                                                  const QuantizationConfig* config) {
  std::map<std::string, uint64_t> repacked;  // qweight -> layout bytes
  std::set<std::string> folded;              // companions, counted in their qweight's layout
  for (const TensorRef& t : checkpoint.tensors()) {
    if (!t.name().ends_with(kQweight)) continue;
    const std::string module = t.name().substr(0, t.name().size() - kQweight.size());
    const auto linear = find_quantized_linear(checkpoint, config, module);
    for (const TensorRef* ref : linear->refs)
      if (ref != &t) folded.insert(ref->name());
    repacked[t.name()] = checked_quantized_shape(checkpoint, *config, linear->tensors).bytes();
  }
  std::vector<std::pair<std::string, uint64_t>> out;
  for (const TensorRef& t : checkpoint.tensors()) {
    if (const auto it = repacked.find(t.name()); it != repacked.end()) out.emplace_back(t.name(), it->second);
    else if (!folded.count(t.name())) out.emplace_back(t.name(), t.info->nbytes());
  }
  return out;
}

}  // namespace vlmforge
