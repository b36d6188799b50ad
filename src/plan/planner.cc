#include "plan/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "backends/cpu_device.h"
#include "io/safetensors.h"
#include "model/layout.h"
#include "model/quantized_checkpoint.h"
#include "util/bytes.h"
#include "util/error.h"
#include "backends/cpu_stream.h"
#include "kernels/quant_matmul.h"
#include "model/activations.h"
#include "vision/vision_activations.h"

namespace vlmforge {
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

constexpr uint64_t kF32 = 4;

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

const char* kind_name(ModuleKind k) {
  switch (k) {
    case ModuleKind::kVision: return "vision";
    case ModuleKind::kEmbed: return "embed";
    case ModuleKind::kLayer: return "layer";
    case ModuleKind::kNorm: return "norm";
    case ModuleKind::kHead: return "lm_head";
  }
  return "";
}

// Placement units: what must stay on one device. A tied lm_head travels with the embeddings.
std::vector<std::vector<size_t>> placement_units(const ModelShape& shape) {
  std::vector<std::vector<size_t>> units;
  size_t embed_unit = SIZE_MAX;
  for (size_t i = 0; i < shape.modules.size(); ++i) {
    const PlanModule& m = shape.modules[i];
    if (m.kind == ModuleKind::kHead && shape.config.tie_word_embeddings && embed_unit != SIZE_MAX) {
      units[embed_unit].push_back(i);
      continue;
    }
    if (m.kind == ModuleKind::kEmbed) embed_unit = units.size();
    units.push_back({i});
  }
  return units;
}

uint64_t default_reserve(const DeviceTarget& t) { return t.spec.type == "cpu" ? 0 : (uint64_t{1} << 30); }

uint64_t usable(const DeviceTarget& t, const PlanOptions& o) {
  const uint64_t reserve = o.reserve ? *o.reserve : default_reserve(t);
  return t.capacity > reserve ? t.capacity - reserve : 0;
}

std::string module_list(const ModelShape& shape, const std::vector<size_t>& modules) {
  // Runs of consecutive layers collapse to "layers 3-17".
  std::string out;
  for (size_t i = 0; i < modules.size();) {
    const PlanModule& m = shape.modules[modules[i]];
    std::string item;
    if (m.kind == ModuleKind::kLayer) {
      size_t j = i;
      while (j + 1 < modules.size() && shape.modules[modules[j + 1]].kind == ModuleKind::kLayer &&
             shape.modules[modules[j + 1]].layer == shape.modules[modules[j]].layer + 1)
        ++j;
      const int a = m.layer, b = shape.modules[modules[j]].layer;
      item = a == b ? "layer " + std::to_string(a) : "layers " + std::to_string(a) + "-" + std::to_string(b);
      i = j + 1;
    } else {
      item = kind_name(m.kind);
      ++i;
    }
    out += (out.empty() ? "" : ", ") + item;
  }
  return out.empty() ? "-" : out;
}

struct Packing {
  std::vector<std::vector<size_t>> per_device;  // module indices
  bool complete = false;
  size_t placed_units = 0;
};

// Greedy in-order packing with budget `fraction` × usable per device. Greedy is optimal for
// whether a contiguous placement fits per-device budgets, so searching `fraction` gives the most
// even spread that fits.
Packing pack(const ModelShape& shape, const std::vector<std::vector<size_t>>& units,
             const std::vector<DeviceTarget>& devices, const PlanOptions& o, double fraction, size_t first_unit = 0) {
  Packing p;
  p.per_device.resize(devices.size());
  size_t d = 0, u = first_unit;
  while (u < units.size() && d < devices.size()) {
    std::vector<size_t> trial = p.per_device[d];
    trial.insert(trial.end(), units[u].begin(), units[u].end());
    const double budget = fraction * static_cast<double>(usable(devices[d], o));
    if (static_cast<double>(device_cost(shape, trial, o, devices[d]).total()) <= budget) {
      p.per_device[d] = std::move(trial);
      ++u;
    } else {
      ++d;
    }
  }
  p.placed_units = u - first_unit;
  p.complete = u == units.size();
  return p;
}

// The smallest budget fraction (possibly > 1: then it does not fit) at which everything packs.
double min_fraction(const ModelShape& shape, const std::vector<std::vector<size_t>>& units,
                    const std::vector<DeviceTarget>& devices, const PlanOptions& o) {
  double lo = 0, hi = 1;
  while (!pack(shape, units, devices, o, hi).complete) {
    hi *= 2;
    if (hi > 1e12) return hi;  // a device set with no usable memory
  }
  for (int i = 0; i < 40; ++i) {
    const double mid = (lo + hi) / 2;
    (pack(shape, units, devices, o, mid).complete ? hi : lo) = mid;
  }
  return hi;
}

Plan build(const ModelShape& shape, const std::vector<DeviceTarget>& devices, const PlanOptions& o,
           const std::vector<std::vector<size_t>>& per_device, const std::vector<bool>& offload) {
  Plan plan{shape, o, {}, std::vector<size_t>(shape.modules.size(), SIZE_MAX), {}};
  for (size_t d = 0; d < devices.size(); ++d) {
    DeviceUse use;
    use.target = devices[d];
    use.modules = per_device[d];
    std::sort(use.modules.begin(), use.modules.end());
    const DeviceCost c = device_cost(shape, use.modules, o, devices[d]);
    use.weights = c.weights;
    use.kv_cache = c.kv_cache;
    use.workspace = c.workspace;
    use.reserve = o.reserve ? *o.reserve : default_reserve(devices[d]);
    use.offload = offload[d];
    for (size_t m : use.modules) plan.module_device[m] = d;
    plan.devices.push_back(std::move(use));
  }
  return plan;
}

bool fits(const ModelShape& shape, const std::vector<DeviceTarget>& devices, const PlanOptions& o) {
  return pack(shape, placement_units(shape), devices, o, 1.0).complete;
}

[[noreturn]] void throw_does_not_fit(const ModelShape& shape, const std::vector<DeviceTarget>& devices,
                                     const PlanOptions& o) {
  const auto units = placement_units(shape);
  // Each unit alone must fit on some device.
  uint64_t best_usable = 0;
  for (const auto& t : devices) best_usable = std::max(best_usable, usable(t, o));
  for (const auto& unit : units) {
    if (std::any_of(devices.begin(), devices.end(), [&](const DeviceTarget& t) {
          return device_cost(shape, unit, o, t).total() <= usable(t, o);
        }))
      continue;
    const DeviceCost c = device_cost(shape, unit, o, devices.front());
    std::string names;
    for (size_t m : unit) names += (names.empty() ? "" : " + ") + shape.modules[m].name;
    throw Error("cannot place " + names + ": it needs " + format_bytes(c.total()) + " on one device (weights " +
                format_bytes(c.weights) + ", KV cache " + format_bytes(c.kv_cache) + ", workspace " +
                format_bytes(c.workspace) + ") and the largest device has " + format_bytes(best_usable) +
                " usable; a decoder layer is never split across devices. Raise --max_memory, or lower "
                "--max_model_len / --max_batch_size" +
                (o.kv_cache_dtype == DType::F32 ? " or use --kv_cache_dtype bfloat16" : ""));
  }
  const double f = min_fraction(shape, units, devices, o);
  const Packing p = pack(shape, units, devices, o, f);
  std::string msg = "the model does not fit on " + std::to_string(devices.size()) + " device(s)";
  msg += " (max_batch_size " + std::to_string(o.max_batch_size) + ", max_model_len " + std::to_string(o.max_model_len) +
         ", KV cache " + std::string(dtype_name(o.kv_cache_dtype)) + "). An even spread needs:";
  uint64_t shortfall = 0;
  for (size_t d = 0; d < devices.size(); ++d) {
    const DeviceCost c = device_cost(shape, p.per_device[d], o, devices[d]);
    const uint64_t u = usable(devices[d], o);
    const uint64_t short_d = c.total() > u ? c.total() - u : 0;
    shortfall += short_d;
    msg += "\n  " + devices[d].spec.name() + ": " + format_bytes(c.total()) + " (weights " + format_bytes(c.weights) +
           ", KV " + format_bytes(c.kv_cache) + ", workspace " + format_bytes(c.workspace) + ") of " + format_bytes(u) +
           " usable" + (short_d ? ": short by " + format_bytes(short_d) : "");
  }
  msg += "\n  total short: " + format_bytes(shortfall) + ". It would fit with:";
  PlanOptions t = o;
  // Shorter sequences.
  size_t lo = 0, hi = o.max_model_len;
  while (hi - lo > 1) {
    const size_t mid = (lo + hi) / 2;
    t.max_model_len = mid;
    (fits(shape, devices, t) ? lo : hi) = mid;
  }
  t = o;
  if (lo >= 1) msg += "\n  - --max_model_len " + std::to_string(lo) + " or less";
  if (o.max_batch_size > 1) {
    size_t b = o.max_batch_size - 1;
    for (; b >= 1; --b) {
      t.max_batch_size = b;
      if (fits(shape, devices, t)) break;
    }
    t = o;
    if (b >= 1) msg += "\n  - --max_batch_size " + std::to_string(b);
  }
  if (o.kv_cache_dtype == DType::F32) {
    t.kv_cache_dtype = DType::BF16;
    if (fits(shape, devices, t)) msg += "\n  - --kv_cache_dtype bfloat16";
    t = o;
  }
  std::vector<DeviceTarget> more = devices;
  for (int extra = 1; extra <= 256; ++extra) {
    DeviceTarget copy = devices.back();
    copy.spec.index = devices.back().spec.index + extra;
    more.push_back(copy);
    if (fits(shape, more, o)) {
      msg += "\n  - " + std::to_string(extra) + " more device(s) like " + devices.back().spec.name();
      break;
    }
  }
  if (!o.cpu_offload) msg += "\n  - --cpu_offload (what does not fit runs on the host CPU: slow)";
  throw Error(msg);
}

}  // namespace

uint64_t ModelShape::weight_bytes() const {
  uint64_t sum = 0;
  for (const auto& m : modules) sum += m.weight_bytes;
  return sum;
}

ModelShape ModelShape::from_tensors(const ModelConfig& config,
                                    const std::vector<std::pair<std::string, uint64_t>>& tensors, std::string source) {
  ModelShape shape{config, {}, std::move(source)};
  std::map<std::string, size_t> index;
  std::vector<PlanModule> vision, embed, norm, head;
  std::map<int, PlanModule> layers;
  auto add = [&](std::vector<PlanModule>& group, const std::string& name, ModuleKind kind, uint64_t bytes) {
    if (group.empty()) group.push_back({name, kind, -1, 0});
    group.front().weight_bytes += bytes;
  };
  for (const auto& [name, bytes] : tensors) {
    std::string text_prefix;
    for (const char* p : {"model.language_model.", "model."})
      if (starts_with(name, p)) {
        text_prefix = p;
        break;
      }
    if (starts_with(name, "visual.")) add(vision, "visual", ModuleKind::kVision, bytes);
    else if (starts_with(name, "model.visual.")) add(vision, "model.visual", ModuleKind::kVision, bytes);
    else if (name == "lm_head.weight") add(head, "lm_head", ModuleKind::kHead, bytes);
    else if (!text_prefix.empty() && name == text_prefix + "embed_tokens.weight")
      add(embed, text_prefix + "embed_tokens", ModuleKind::kEmbed, bytes);
    else if (!text_prefix.empty() && name == text_prefix + "norm.weight")
      add(norm, text_prefix + "norm", ModuleKind::kNorm, bytes);
    else if (!text_prefix.empty() && starts_with(name, text_prefix + "layers.")) {
      const std::string rest = name.substr(text_prefix.size() + 7);
      const size_t dot = rest.find('.');
      int layer = -1;
      try {
        layer = std::stoi(rest.substr(0, dot));
      } catch (const std::exception&) {
      }
      if (layer < 0 || layer >= config.num_hidden_layers || dot == std::string::npos)
        throw Error(shape.source + ": tensor '" + name + "' names decoder layer '" + rest.substr(0, dot) +
                    "', but config.json has num_hidden_layers " + std::to_string(config.num_hidden_layers));
      PlanModule& m = layers[layer];
      if (m.name.empty()) m = {text_prefix + "layers." + std::to_string(layer), ModuleKind::kLayer, layer, 0};
      m.weight_bytes += bytes;
    } else {
      throw Error(shape.source + ": tensor '" + name +
                  "' belongs to no module the planner knows (vision tower, embed_tokens, layers.N, norm, lm_head)");
    }
  }
  if (embed.empty()) throw Error(shape.source + ": no embed_tokens.weight tensor");
  if (static_cast<int>(layers.size()) != config.num_hidden_layers)
    throw Error(shape.source + ": " + std::to_string(layers.size()) + " decoder layers have tensors, config.json says " +
                std::to_string(config.num_hidden_layers));
  if (norm.empty()) throw Error(shape.source + ": no final norm.weight tensor");
  if (head.empty()) {
    if (!config.tie_word_embeddings)
      throw Error(shape.source + ": no lm_head.weight tensor and config.json says tie_word_embeddings=false");
    head.push_back({"lm_head", ModuleKind::kHead, -1, 0});
  }
  for (auto* group : {&vision, &embed})
    for (auto& m : *group) shape.modules.push_back(m);
  for (auto& [l, m] : layers) shape.modules.push_back(m);
  shape.modules.push_back(norm.front());
  shape.modules.push_back(head.front());
  return shape;
}

ModelShape ModelShape::from_checkpoint(const std::filesystem::path& model_dir,
                                      const kernels::QuantScheme* quantize_on_load) {
  const ModelConfig config = ModelConfig::load(model_dir);
  const Checkpoint ckpt(model_dir);
  // Quantized linears take their repacked layout's bytes on the device.
  auto tensors = device_tensor_bytes(ckpt, config.quantization ? &*config.quantization : nullptr);
  if (!quantize_on_load || config.quantization) return from_tensors(config, tensors, model_dir.string());
  // As Qwen2Model quantizes on load: the layers' projections and lm_head (a tied one as a copy of
  // the embedding matrix), where the input size is a multiple of 32.
  const kernels::QuantLayout layout = quantize_on_load->layout();
  bool has_head = false;
  for (auto& [name, bytes] : tensors) {
    const bool linear = (name.find(".layers.") != std::string::npos && name.ends_with("_proj.weight")) ||
                        name == "lm_head.weight";
    has_head |= name == "lm_head.weight";
    const TensorRef* t = ckpt.find(name);
    if (linear && t && t->info->shape.size() == 2 && t->info->shape[1] % 32 == 0)
      bytes = layout.bytes(t->info->shape[0], t->info->shape[1]);
  }
  if (!has_head && config.tie_word_embeddings && config.hidden_size % 32 == 0)
    tensors.emplace_back("lm_head.weight", layout.bytes(static_cast<uint64_t>(config.vocab_size),
                                                        static_cast<uint64_t>(config.hidden_size)));
  ModelShape shape = from_tensors(config, tensors, model_dir.string());
  shape.quantized_on_load = layout;
  return shape;
}

ModelShape ModelShape::from_config(const ModelConfig& config, DType dtype, std::string source) {
  std::vector<std::pair<std::string, uint64_t>> tensors;
  const std::optional<QuantizationConfig>& q = config.quantization;
  for (const auto& spec : checkpoint_tensors(config, dtype)) {
    // Published AWQ / GPTQ checkpoints quantize the decoder layers' linear weights (a GPTQ
    // desc_act one with its column permutation); the rest stays as stored.
    const std::string module = spec.name.substr(0, spec.name.size() - std::string_view(".weight").size());
    const bool quantized = q && spec.name.find(".layers.") != std::string::npos && spec.name.ends_with("_proj.weight") &&
                           !q->keeps_unquantized(module);
    tensors.emplace_back(spec.name, quantized ? q->device_layout(spec.shape[1], q->desc_act).bytes(spec.shape[0], spec.shape[1])
                                              : spec.nbytes());
  }
  return from_tensors(config, tensors, std::move(source));
}

PlanStrategy parse_plan_strategy(const std::string& name) {
  if (name == "auto" || name == "balanced") return PlanStrategy::kBalanced;
  if (name == "sequential") return PlanStrategy::kSequential;
  throw UsageError("--strategy: expected auto, balanced or sequential, got '" + name + "'");
}

namespace {

// A host device lays out the activations of a layer's quantized products for the kernels
// (CpuStream's "quantized-product inputs"): the largest of a layer's linear calls (q/k/v or
// gate/up together, down), for `rows` tokens on the decode path, which needs the most.
uint64_t cpu_quant_input_floats(const ModelShape& shape, uint64_t rows) {
  const ModelConfig& c = shape.config;
  if (!c.quantization && !shape.quantized_on_load) return 0;
  auto floats = [&](uint64_t cols) {
    const kernels::QuantLayout layout =
        c.quantization ? c.quantization->device_layout(cols, c.quantization->desc_act) : *shape.quantized_on_load;
    const kernels::QuantMatrix w{nullptr, 0, cols, layout};
    return static_cast<uint64_t>(kernels::quant_inputs_floats(w, rows, kernels::QuantPath::Decode));
  };
  return std::max(3 * floats(static_cast<uint64_t>(c.hidden_size)), floats(static_cast<uint64_t>(c.intermediate_size)));
}

}  // namespace

DeviceCost device_cost(const ModelShape& shape, const std::vector<size_t>& modules, const PlanOptions& o,
                       const DeviceTarget& target) {
  const ModelConfig& c = shape.config;
  const uint64_t hidden = c.hidden_size, head_dim = c.head_dim();
  const uint64_t kv_dim = static_cast<uint64_t>(c.num_key_value_heads) * head_dim;
  const uint64_t group = static_cast<uint64_t>(c.num_attention_heads / c.num_key_value_heads);
  const uint64_t len = o.max_model_len ? o.max_model_len : static_cast<uint64_t>(c.max_position_embeddings);
  const uint64_t batch = o.max_batch_size;
  // Rows of one forward step: a prefill chunk of one sequence, or one token of each in a batch.
  const uint64_t rows = std::max<uint64_t>(std::min<uint64_t>(o.prefill_chunk, len), batch);
  const uint64_t logit_rows = o.logit_rows ? o.logit_rows : batch;
  // Host devices keep one attention-score row buffer per thread; accelerator kernels are assumed
  // to stream scores (one buffer).
  const uint64_t lanes = target.spec.type == "cpu" ? std::max<size_t>(o.threads, 1) : 1;
  const uint64_t kv_elem = dtype_info(o.kv_cache_dtype).bits / 8;

  DeviceCost cost;
  bool layers = false, text = false, embed = false, head = false, vision = false;
  for (size_t i : modules) {
    const PlanModule& m = shape.modules[i];
    cost.weights += m.weight_bytes;
    switch (m.kind) {
      case ModuleKind::kLayer:
        layers = true;
        cost.kv_cache += 2 * kv_dim * kv_elem * batch * len;
        break;
      case ModuleKind::kHead: head = true; break;
      case ModuleKind::kVision: vision = true; break;
      case ModuleKind::kEmbed: embed = text = true; break;
      default: text = true; break;
    }
  }
  // Hidden states arrive in (and embeddings are written to) an x buffer of rows × hidden; an
  // lm_head alone receives only the normed rows of the logits.
  uint64_t floats = 0;
  if (layers) {
    // The buffers the model's devices allocate, and the attention scores of each worker.
    floats += layer_activations(c, rows).floats() + lanes * cpu_attention_scores(group, len);
    if (target.spec.type == "cpu") floats += cpu_quant_input_floats(shape, rows);
  } else if (text) {
    floats += rows * hidden;
  }
  if (head) floats += logit_rows * (hidden + static_cast<uint64_t>(c.vocab_size));  // normed rows + logits
  // The embedding layer receives one image's embeddings at a time (the largest the budget allows).
  if (embed && c.vision) floats += vision::max_image_tokens(*c.vision, o.max_pixels) * hidden;
  uint64_t vision_bytes = 0;
  // One image at a time at max_pixels: exactly the buffers VisionTower::encode allocates.
  if (vision && c.vision) vision_bytes = vision::vision_activation_bytes(*c.vision, o.max_pixels, lanes);
  cost.workspace = floats * kF32 + vision_bytes;
  return cost;
}

Plan make_plan(const ModelShape& shape, const std::vector<DeviceTarget>& devices, const PlanOptions& options) {
  if (devices.empty()) throw UsageError("no devices to plan for");
  if (options.max_batch_size == 0) throw UsageError("--max_batch_size must be at least 1");
  PlanOptions o = options;
  if (!o.max_model_len) o.max_model_len = static_cast<size_t>(shape.config.max_position_embeddings);
  const auto units = placement_units(shape);
  std::vector<DeviceTarget> targets = devices;
  std::vector<bool> offload(targets.size(), false);
  const double fraction = o.strategy == PlanStrategy::kSequential ? 1.0 : min_fraction(shape, units, targets, o);
  Packing p = pack(shape, units, targets, o, std::min(fraction, 1.0));
  if (p.complete) return build(shape, targets, o, p.per_device, offload);
  if (!o.cpu_offload) throw_does_not_fit(shape, targets, o);

  // Offload: fill the devices in order, then the host takes the rest.
  if (std::any_of(targets.begin(), targets.end(), [](const DeviceTarget& t) { return t.spec.type == "cpu"; }))
    throw UsageError("--cpu_offload adds the host CPU after the devices; the device list already has a cpu device");
  p = pack(shape, units, targets, o, 1.0);
  DeviceTarget host;
  host.spec = {"cpu", 0};
  const MemoryInfo m = host_memory();
  host.capacity = o.offload_memory ? *o.offload_memory : m.free;
  host.total = o.offload_memory ? *o.offload_memory : m.total;
  host.capped = o.offload_memory.has_value();
  host.present = true;
  host.physical = 0;
  std::vector<DeviceTarget> with_host = targets;
  with_host.push_back(host);
  Packing rest = pack(shape, units, {host}, o, 1.0, p.placed_units);
  if (!rest.complete) throw_does_not_fit(shape, with_host, o);
  p.per_device.push_back(rest.per_device[0]);
  offload.push_back(true);
  Plan plan = build(shape, with_host, o, p.per_device, offload);
  plan.warnings.push_back("offloading " + module_list(shape, plan.devices.back().modules) + " (" +
                          format_bytes(plan.devices.back().weights) +
                          " of weights) to the host CPU: those layers run at host memory speed, far slower than on "
                          "the accelerators; more devices or a shorter --max_model_len avoid it");
  return plan;
}

std::vector<DeviceSpec> devices_in_map(const json& map, const std::string& source) {
  if (!map.is_object() || map.empty())
    throw Error(source + ": a device map is a non-empty JSON object of module -> device (e.g. {\"model.embed_tokens\": "
                "\"cuda:0\", ...})");
  std::vector<DeviceSpec> out;
  for (const auto& [key, value] : map.items()) {
    DeviceSpec spec;
    if (value.is_number_integer() && value.get<int64_t>() >= 0) spec = {"", static_cast<int>(value.get<int64_t>())};
    else if (value.is_string()) {
      if (value == "disk")
        throw Error(source + ": \"" + key + "\" is mapped to \"disk\"; vlmforge does not offload to disk (use cpu)");
      spec = parse_device_name(value.get<std::string>(), source + " \"" + key + "\"");
    } else {
      throw Error(source + ": \"" + key + "\" maps to " + value.dump() +
                  "; expected a device name (\"cuda:0\", \"npu:1\", \"cpu\") or a device index");
    }
    if (std::find(out.begin(), out.end(), spec) == out.end()) out.push_back(spec);
  }
  // Bare indices mean the accelerator type the map names elsewhere (accelerate's integer keys).
  std::string accel = "cpu";
  for (const auto& s : out)
    if (!s.type.empty() && s.type != "cpu") accel = s.type;
  std::vector<DeviceSpec> resolved;
  for (auto s : out) {
    if (s.type.empty()) s.type = accel;
    if (std::find(resolved.begin(), resolved.end(), s) == resolved.end()) resolved.push_back(s);
  }
  return resolved;
}

Plan plan_from_map(const ModelShape& shape, const std::vector<DeviceTarget>& devices, const json& map,
                   const PlanOptions& options, const std::string& source) {
  PlanOptions o = options;
  if (!o.max_model_len) o.max_model_len = static_cast<size_t>(shape.config.max_position_embeddings);
  devices_in_map(map, source);  // validates the values
  std::string accel = "cpu";
  for (const auto& t : devices)
    if (t.spec.type != "cpu") {
      accel = t.spec.type;
      break;
    }
  auto device_of = [&](const std::string& key, const json& value) -> size_t {
    const DeviceSpec spec = value.is_number_integer() ? DeviceSpec{accel, value.get<int>()}
                                                       : parse_device_name(value.get<std::string>(), source);
    for (size_t d = 0; d < devices.size(); ++d)
      if (devices[d].spec == spec) return d;
    throw Error(source + ": \"" + key + "\" is mapped to " + spec.name() + ", which is not among the devices");
  };
  // Each module takes the device of the longest key that is the module or a prefix of it.
  std::vector<size_t> module_device(shape.modules.size(), SIZE_MAX);
  std::vector<size_t> key_length(shape.modules.size(), 0);
  for (const auto& [key, value] : map.items()) {
    bool matched = false;
    for (size_t i = 0; i < shape.modules.size(); ++i) {
      const std::string& name = shape.modules[i].name;
      if (starts_with(key, name + ".")) {
        throw Error(source + ": \"" + key + "\" is a part of " + name + "; vlmforge places whole modules (a decoder "
                    "layer is never split across devices): map \"" + name + "\" instead");
      }
      const bool covers = key.empty() || key == name || starts_with(name, key + ".");
      if (!covers) continue;
      matched = true;
      if (module_device[i] == SIZE_MAX || key.size() >= key_length[i]) {
        module_device[i] = device_of(key, value);
        key_length[i] = key.size();
      }
    }
    if (!matched) {
      std::string known = shape.modules.front().name + ", …, " + shape.modules.back().name;
      throw Error(source + ": \"" + key + "\" is not a module of this model (modules: " + known + ")");
    }
  }
  std::vector<std::string> missing;
  for (size_t i = 0; i < shape.modules.size(); ++i)
    if (module_device[i] == SIZE_MAX) missing.push_back(shape.modules[i].name);
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 8; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 8) list += ", … (" + std::to_string(missing.size()) + " in all)";
    throw Error(source + ": the map leaves out " + list + "; every module needs a device");
  }
  // Tied embeddings and lm_head are one matrix.
  if (shape.config.tie_word_embeddings) {
    size_t embed = SIZE_MAX, head = SIZE_MAX;
    for (size_t i = 0; i < shape.modules.size(); ++i) {
      if (shape.modules[i].kind == ModuleKind::kEmbed) embed = i;
      if (shape.modules[i].kind == ModuleKind::kHead) head = i;
    }
    if (module_device[embed] != module_device[head])
      throw Error(source + ": " + shape.modules[embed].name + " and lm_head are tied (one matrix, "
                  "tie_word_embeddings=true) and must be on the same device; the map puts them on " +
                  devices[module_device[embed]].spec.name() + " and " + devices[module_device[head]].spec.name());
  }
  std::vector<std::vector<size_t>> per_device(devices.size());
  for (size_t i = 0; i < shape.modules.size(); ++i) per_device[module_device[i]].push_back(i);
  Plan plan = build(shape, devices, o, per_device, std::vector<bool>(devices.size(), false));
  std::string over;
  for (const auto& d : plan.devices)
    if (d.free_after() < 0)
      over += "\n  " + d.target.spec.name() + ": needs " + format_bytes(d.total()) + " (weights " +
              format_bytes(d.weights) + ", KV " + format_bytes(d.kv_cache) + ", workspace " + format_bytes(d.workspace) +
              ", reserve " + format_bytes(d.reserve) + ") of " + format_bytes(d.target.capacity) + ": short by " +
              format_bytes(static_cast<uint64_t>(-d.free_after()));
  if (!over.empty())
    throw Error(source + ": the map does not fit:" + over +
                "\n  move modules to devices with room, lower --max_model_len / --max_batch_size, or use --device_map auto");
  return plan;
}

ordered_json Plan::hf_device_map() const {
  ordered_json map = ordered_json::object();
  for (size_t i = 0; i < shape.modules.size(); ++i) {
    const DeviceUse& d = devices[module_device[i]];
    map[shape.modules[i].name] = d.offload || (d.target.spec.type == "cpu" && d.target.spec.index == 0 &&
                                               devices.size() == 1)
                                     ? "cpu"
                                     : d.target.spec.name();
  }
  return map;
}

ordered_json Plan::to_json() const {
  ordered_json devs = ordered_json::array();
  for (const auto& d : devices) {
    ordered_json mods = ordered_json::array();
    for (size_t m : d.modules) mods.push_back(shape.modules[m].name);
    devs.push_back({{"device", d.target.spec.name()},
                    {"offload", d.offload},
                    {"capacity", d.target.capacity},
                    {"modules", mods},
                    {"summary", module_list(shape, d.modules)},
                    {"weights", d.weights},
                    {"kv_cache", d.kv_cache},
                    {"workspace", d.workspace},
                    {"reserve", d.reserve},
                    {"total", d.total()},
                    {"free_after", d.free_after()}});
  }
  uint64_t kv = 0, ws = 0;
  for (const auto& d : devices) {
    kv += d.kv_cache;
    ws += d.workspace;
  }
  return {{"source", shape.source},
          {"max_batch_size", options.max_batch_size},
          {"max_model_len", options.max_model_len},
          {"kv_cache_dtype", std::string(dtype_name(options.kv_cache_dtype))},
          {"weights", shape.weight_bytes()},
          {"kv_cache", kv},
          {"workspace", ws},
          {"devices", devs},
          {"device_map", hf_device_map()},
          {"warnings", warnings}};
}

std::string Plan::table() const {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-9s %-34s %11s %11s %11s %11s %11s %11s\n", "device", "modules", "weights",
                "kv cache", "workspace", "reserve", "capacity", "free after");
  out += line;
  for (const auto& d : devices) {
    std::string free_after = format_bytes(static_cast<uint64_t>(std::abs(d.free_after())));
    if (d.free_after() < 0) free_after.insert(free_after.begin(), '-');
    std::string mods = module_list(shape, d.modules);
    if (d.offload) mods += " (offload)";
    std::snprintf(line, sizeof line, "%-9s %-34s %11s %11s %11s %11s %11s %11s\n", d.target.spec.name().c_str(),
                  mods.c_str(), format_bytes(d.weights).c_str(), format_bytes(d.kv_cache).c_str(),
                  format_bytes(d.workspace).c_str(), format_bytes(d.reserve).c_str(),
                  format_bytes(d.target.capacity).c_str(), free_after.c_str());
    out += line;
  }
  return out;
}

}  // namespace vlmforge
