#include "model/device_weights.h"

#include "kernels/convert.h"
#include "util/error.h"

namespace vlmforge {

DeviceWeights::DeviceWeights(const Checkpoint& checkpoint, const RuntimeLora* lora,
                             std::optional<QuantizationConfig> quantization, std::string shape_source)
    : checkpoint_(checkpoint),
      lora_(lora),
      quantization_(std::move(quantization)),
      shape_source_(std::move(shape_source)) {}

bool DeviceWeights::has(const std::string& name) const {
  return (lora_ && lora_->replacement(name)) || checkpoint_.find(name);
}

const TensorRef& DeviceWeights::tensor(const std::string& name, const std::vector<uint64_t>& shape) const {
  const TensorRef* t = lora_ ? lora_->replacement(name) : nullptr;  // modules_to_save
  if (!t) t = checkpoint_.find(name);
  if (!t) throw Error(checkpoint_.root().string() + ": model is missing tensor '" + name + "'");
  if (t->info->shape != shape) {
    std::string want;
    for (uint64_t s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
    throw Error(checkpoint_.root().string() + ": tensor '" + name + "' has shape " + t->info->shape_string() +
                ", expected [" + want + "] from " + shape_source_);
  }
  if (!is_compute_float(t->info->dtype))
    throw Error(checkpoint_.root().string() + ": tensor '" + name + "' is " + std::string(dtype_name(t->info->dtype)) +
                "; only BF16, F16 and F32 weights are supported");
  return *t;
}

const DeviceBuffer& DeviceWeights::keep(DeviceBuffer buffer) { return buffers_.emplace_back(std::move(buffer)); }

WeightView DeviceWeights::matrix(Device& device, const std::string& name, uint64_t rows, uint64_t cols,
                                 const std::string& what) {
  return matrix(device, name, {rows, cols}, rows, cols, what);
}

WeightView DeviceWeights::matrix(Device& device, const std::string& name, const std::vector<uint64_t>& shape,
                                 uint64_t rows, uint64_t cols, const std::string& what) {
  const TensorRef& t = tensor(name, shape);
  const DeviceBuffer& b = keep(device.wrap_host(t.data(), what));
  // A copy was made: the host need not keep the mapped pages.
  if (!b.wraps_host()) t.release();
  return {&b, 0, t.info->dtype, rows, cols, {}};
}

WeightView DeviceWeights::quantized_copy(Device& device, const std::string& name, uint64_t rows, uint64_t cols,
                                        const std::string& what) {
  const TensorRef& t = tensor(name, {rows, cols});
  const kernels::QuantLayout layout = quantize_on_load_->layout();
  std::vector<std::byte> codes(layout.bytes(rows, cols));  // one weight's worth beyond the model
  kernels::quantize_rows(t.info->dtype, t.data().data(), rows, cols, *quantize_on_load_, codes.data());
  const DeviceBuffer& b = keep(device.upload(codes, what));
  t.release();  // the codes replace the mapped pages
  return {&b, 0, DType::U8, rows, cols, layout};
}

WeightView DeviceWeights::quantized_matrix(Device& device, const CheckpointQuantizedLinear& linear, uint64_t rows,
                                           uint64_t cols, const std::string& what) {
  const std::string& name = linear.tensors.qweight.name;
  const QuantizedShape shape = checked_quantized_shape(checkpoint_, *quantization_, linear.tensors);
  if (shape.rows != rows || shape.cols != cols)
    throw Error(checkpoint_.root().string() + ": tensor '" + name + "' holds a weight of [" + std::to_string(shape.rows) +
                ", " + std::to_string(shape.cols) + "] (out, in), expected [" + std::to_string(rows) + ", " +
                std::to_string(cols) + "] from " + shape_source_);
  std::vector<std::byte> repacked;  // lives only until uploaded: one weight's worth beyond the model
  try {
    repacked = repack_quantized(*quantization_, linear.tensors, shape);
  } catch (const Error& e) {
    throw Error(checkpoint_.root().string() + ": " + e.what());
  }
  const DeviceBuffer& b = keep(device.upload(repacked, what));
  for (const TensorRef* t : linear.refs) t->release();
  return {&b, 0, DType::U8, rows, cols, shape.layout};
}

VectorView DeviceWeights::put_vector(Device& device, std::vector<float> values, const std::string& what) {
  const std::vector<float>& kept = host_vectors_.emplace_back(std::move(values));
  const DeviceBuffer& b = keep(device.wrap_host(std::as_bytes(std::span(kept)), what));
  const size_t size = kept.size();
  if (!b.wraps_host()) host_vectors_.pop_back();
  return {&b, 0, size};
}

VectorView DeviceWeights::vector(Device& device, const std::string& name, uint64_t n, const std::string& what) {
  std::vector<float> v = kernels::tensor_to_f32(tensor(name, {n}));
  // A bias also receives the lora_B biases of its layer's adapters.
  const std::string weight = name.ends_with(".bias") ? name.substr(0, name.size() - 5) + ".weight" : "";
  if (const LinearAdapters* layer = lora_ && !weight.empty() ? lora_->find(weight) : nullptr)
    for (size_t i = 0; i < layer->bias_delta.size(); ++i) v[i] += layer->bias_delta[i];
  return put_vector(device, std::move(v), what);
}

bool DeviceWeights::adapted(const std::string& module) const {
  return lora_ && lora_->find(module + ".weight");
}

LinearView DeviceWeights::linear(Device& device, const std::string& module, uint64_t out, uint64_t in, bool bias,
                                 const std::string& what) {
  LinearView l;
  // A modules_to_save replacement of the weight is a full matrix, whatever the base stores.
  const bool replaced = lora_ && lora_->replacement(module + ".weight");
  const QuantizationConfig* quantization = quantization_ ? &*quantization_ : nullptr;
  if (const auto q = replaced ? std::nullopt : find_quantized_linear(checkpoint_, quantization, module)) {
    if (quantization_->keeps_unquantized(module))
      throw Error(checkpoint_.root().string() + ": tensor '" + q->tensors.qweight.name +
                  "' is quantized, but config.json's quantization_config.modules_to_not_convert lists its module");
    l.weight = quantized_matrix(device, *q, out, in, what);
  } else if (quantizes(in)) {
    l.weight = quantized_copy(device, module + ".weight", out, in, what);
  } else {
    l.weight = matrix(device, module + ".weight", out, in, what);
  }
  if (bias) l.bias = vector(device, module + ".bias", out, what);
  if (const LinearAdapters* adapters = lora_ ? lora_->find(module + ".weight") : nullptr) {
    // The factors live as long as the RuntimeLora: lent, not copied, where the device allows.
    auto lend = [&](const std::vector<float>& v, size_t rows, size_t cols) {
      const DeviceBuffer& b = keep(device.wrap_host(std::as_bytes(std::span(v)), what + " (LoRA)"));
      return WeightView{&b, 0, DType::F32, rows, cols, {}};
    };
    for (const LinearLora& lora : adapters->loras)
      l.loras.push_back({lend(lora.a, lora.rank, in), lend(lora.b, out, lora.rank), lora.scale});
    if (!adapters->dora_factor.empty()) {
      const DeviceBuffer& b = keep(device.wrap_host(std::as_bytes(std::span(adapters->dora_factor)), what + " (DoRA)"));
      l.dora_factor = {&b, 0, adapters->dora_factor.size()};
    }
  }
  return l;
}

}  // namespace vlmforge
