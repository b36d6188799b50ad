#include "lora/adapter.h"

#include <cmath>
#include <map>
#include <set>

#include "io/json_file.h"
#include "kernels/convert.h"
#include "util/error.h"
#include "util/regex.h"

namespace vlmforge {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::string_view kPeftPrefix = "base_model.model.";

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

template <typename T>
T get_field(const json& j, const char* key, T fallback, const std::string& source) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw Error(source + ": field \"" + key + "\" has the wrong type (" + it->dump() + ")");
  }
}

// What one adapter tensor key means.
struct ParsedKey {
  enum Role { kA, kB, kBBias, kEmbeddingA, kEmbeddingB, kMagnitude, kFull } role;
  std::string module;        // for LoRA roles: the module path
  std::string adapter_name;  // "" when the key has no adapter-name segment
  std::string full_name;     // for kFull: the model tensor it replaces
};

ParsedKey parse_key(std::string key) {
  if (starts_with(key, kPeftPrefix)) key.erase(0, kPeftPrefix.size());
  struct Marker {
    std::string_view text;
    ParsedKey::Role role;
  };
  // Order matters: "lora_embedding_A" must not be read as "lora_A"-less garbage, etc.
  static constexpr Marker kMarkers[] = {
      {".lora_embedding_A", ParsedKey::kEmbeddingA}, {".lora_embedding_B", ParsedKey::kEmbeddingB},
      {".lora_magnitude_vector", ParsedKey::kMagnitude}, {".lora_A", ParsedKey::kA}, {".lora_B", ParsedKey::kB},
  };
  for (const auto& marker : kMarkers) {
    const size_t pos = key.find(marker.text);
    if (pos == std::string::npos) continue;
    const std::string rest = key.substr(pos + marker.text.size());  // "", ".weight", ".default.weight", ".default"
    if (!rest.empty() && rest[0] != '.') continue;
    std::vector<std::string> parts;
    for (size_t i = 1; i <= rest.size();) {
      const size_t dot = std::min(rest.find('.', i), rest.size());
      parts.push_back(rest.substr(i, dot - i));
      i = dot + 1;
    }
    ParsedKey parsed{marker.role, key.substr(0, pos), "", ""};
    const bool last_is_param = !parts.empty() && (parts.back() == "weight" || parts.back() == "bias");
    if (last_is_param && parts.back() == "bias") {
      if (marker.role != ParsedKey::kB) continue;
      parsed.role = ParsedKey::kBBias;
    }
    if (last_is_param) parts.pop_back();
    if (parts.size() > 1) continue;
    if (parts.size() == 1) parsed.adapter_name = parts[0];
    return parsed;
  }
  // modules_to_save copies may keep their wrapper segment: "x.modules_to_save.default.weight".
  if (const size_t pos = key.find(".modules_to_save."); pos != std::string::npos) {
    const size_t name_end = key.find('.', pos + 17);
    if (name_end != std::string::npos) key = key.substr(0, pos) + key.substr(name_end);
  }
  return {ParsedKey::kFull, "", "", key};
}

// Names a model tensor can have in the other Qwen2.5-VL weight layout: adapters trained with one
// transformers version must merge into checkpoints saved by another.
std::vector<std::string> name_candidates(const std::string& name) {
  std::vector<std::string> out{name};
  auto swap_prefix = [&](std::string_view from, std::string_view to) {
    if (starts_with(name, from)) out.push_back(std::string(to) + name.substr(from.size()));
  };
  swap_prefix("model.language_model.", "model.");
  swap_prefix("model.visual.", "visual.");
  swap_prefix("visual.", "model.visual.");
  if (starts_with(name, "model.") && !starts_with(name, "model.visual.") && !starts_with(name, "model.language_model."))
    out.push_back("model.language_model." + name.substr(6));
  swap_prefix("language_model.model.", "model.");
  swap_prefix("language_model.lm_head.", "lm_head.");
  return out;
}

}  // namespace

const TensorRef* resolve_base_tensor(const Checkpoint& base, const std::string& name) {
  for (const auto& candidate : name_candidates(name))
    if (const TensorRef* t = base.find(candidate)) return t;
  return nullptr;
}

std::optional<size_t> match_pattern_key(const std::vector<std::string>& keys, const std::string& module) {
  for (size_t i = 0; i < keys.size(); ++i) {
    const Regex re("(.*\\.)?(" + keys[i] + ")$", "rank_pattern/alpha_pattern key '" + keys[i] + "'");
    if (re.match_prefix(module)) return i;
  }
  return std::nullopt;
}

LoraConfig LoraConfig::from_json_file(const fs::path& path) {
  const std::string source = path.string();
  const json j = read_json_file(path);
  if (!j.is_object()) throw Error(source + ": not a JSON object");
  LoraConfig c;
  c.peft_type = get_field<std::string>(j, "peft_type", "LORA", source);
  if (c.peft_type != "LORA")
    throw Error(source + ": unsupported peft_type \"" + c.peft_type +
                "\": vlmforge merges LoRA adapters (including rsLoRA and DoRA) only");
  c.r = get_field<int>(j, "r", 8, source);
  c.lora_alpha = get_field<double>(j, "lora_alpha", 8.0, source);
  if (c.r <= 0) throw Error(source + ": \"r\" must be positive");
  c.use_rslora = get_field<bool>(j, "use_rslora", false, source);
  c.use_dora = get_field<bool>(j, "use_dora", false, source);
  c.fan_in_fan_out = get_field<bool>(j, "fan_in_fan_out", false, source);
  c.bias = get_field<std::string>(j, "bias", "none", source);
  if (c.bias != "none" && c.bias != "all" && c.bias != "lora_only")
    throw Error(source + ": unsupported bias \"" + c.bias + "\" (expected none, all or lora_only)");
  if (const auto it = j.find("target_modules"); it != j.end() && !it->is_null()) {
    if (it->is_string()) c.target_module_regex = it->get<std::string>();
    else c.target_module_list = get_field<std::vector<std::string>>(j, "target_modules", {}, source);
  }
  c.modules_to_save = get_field<std::vector<std::string>>(j, "modules_to_save", {}, source);
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) throw Error(source + ": \"" + key + "\" must be an object");
    // nlohmann::json sorts keys; PEFT uses the file's order. Re-read with ordered_json.
    const auto ordered = nlohmann::ordered_json::parse(it->dump());
    for (const auto& [pattern, value] : ordered.items()) {
      if (!value.is_number()) throw Error(source + ": \"" + key + "\" value for '" + pattern + "' is not a number");
      if (std::string_view(key) == "rank_pattern") c.rank_pattern.emplace_back(pattern, value.get<int>());
      else c.alpha_pattern.emplace_back(pattern, value.get<double>());
    }
  }
  return c;
}

namespace {
template <typename V>
std::optional<V> lookup_pattern(const std::vector<std::pair<std::string, V>>& patterns, const std::string& module) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : patterns) keys.push_back(k);
  if (const auto i = match_pattern_key(keys, module)) return patterns[*i].second;
  return std::nullopt;
}
}  // namespace

int LoraConfig::rank_for(const std::string& module) const { return lookup_pattern(rank_pattern, module).value_or(r); }

double LoraConfig::alpha_for(const std::string& module) const {
  return lookup_pattern(alpha_pattern, module).value_or(lora_alpha);
}

double LoraConfig::scaling_for(const std::string& module) const {
  const double rank = rank_for(module);
  return use_rslora ? alpha_for(module) / std::sqrt(rank) : alpha_for(module) / rank;
}

bool LoraConfig::targets(const std::string& module) const {
  if (target_module_regex) {
    if (*target_module_regex == "all-linear") return true;
    return Regex(*target_module_regex, "target_modules").full_match(module);
  }
  for (const auto& t : target_module_list) {
    if (t == "all-linear" || module == t) return true;
    if (module.size() > t.size() && module.compare(module.size() - t.size(), t.size(), t) == 0 &&
        module[module.size() - t.size() - 1] == '.')
      return true;
  }
  return false;
}

Adapter::Adapter(const fs::path& dir)
    : dir_(dir),
      config_([&] {
        if (!fs::is_directory(dir)) throw Error(dir.string() + ": adapter directory does not exist");
        const auto path = dir / "adapter_config.json";
        if (!fs::exists(path)) throw Error(dir.string() + ": no adapter_config.json (is this a PEFT LoRA adapter directory?)");
        return LoraConfig::from_json_file(path);
      }()),
      tensors_([&] {
        const auto path = dir / "adapter_model.safetensors";
        if (!fs::exists(path)) {
          if (fs::exists(dir / "adapter_model.bin"))
            throw Error(dir.string() + ": only adapter_model.bin (pickle) is present; vlmforge reads safetensors only. "
                        "Re-save the adapter with save_pretrained(..., safe_serialization=True)");
          throw Error(dir.string() + ": no adapter_model.safetensors");
        }
        return Checkpoint(path);
      }()) {
  const std::string source = (dir / "adapter_model.safetensors").string();
  std::map<std::string, LoraModule> by_module;
  std::set<std::string> adapter_names;
  for (const auto& ref : tensors_.tensors()) {
    const ParsedKey key = parse_key(ref.name());
    if (key.role == ParsedKey::kFull) {
      replacements_.push_back({key.full_name, &ref});
      continue;
    }
    if (!key.adapter_name.empty()) adapter_names.insert(key.adapter_name);
    LoraModule& m = by_module[key.module];
    m.module = key.module;
    const TensorRef** slot = nullptr;
    switch (key.role) {
      case ParsedKey::kA: slot = &m.a; break;
      case ParsedKey::kB: slot = &m.b; break;
      case ParsedKey::kBBias: slot = &m.b_bias; break;
      case ParsedKey::kEmbeddingA: slot = &m.a; m.kind = LoraLayerKind::kEmbedding; break;
      case ParsedKey::kEmbeddingB: slot = &m.b; m.kind = LoraLayerKind::kEmbedding; break;
      case ParsedKey::kMagnitude: slot = &m.magnitude; break;
      case ParsedKey::kFull: break;
    }
    if (*slot) throw Error(source + ": module '" + key.module + "' has two tensors for the same role ('" +
                           (*slot)->name() + "' and '" + ref.name() + "')");
    *slot = &ref;
  }
  if (adapter_names.size() > 1) {
    std::string names;
    for (const auto& n : adapter_names) names += (names.empty() ? "" : ", ") + n;
    throw Error(source + ": holds several adapters (" + names + "); save each adapter to its own directory");
  }
  for (auto& [name, m] : by_module) {
    if (!m.a || !m.b)
      throw Error(source + ": module '" + name + "' has lora_" + (m.a ? "A" : "B") + " but no lora_" + (m.a ? "B" : "A"));
    for (const TensorRef* t : {m.a, m.b})
      if (t->info->shape.size() != 2 || !is_compute_float(t->info->dtype))
        throw Error(source + ": tensor '" + t->name() + "' must be a 2-D BF16/F16/F32 matrix, got " +
                    std::string(dtype_name(t->info->dtype)) + " " + t->info->shape_string());
    if (m.magnitude && !config_.use_dora)
      throw Error(source + ": module '" + name + "' has a DoRA magnitude vector but adapter_config.json says use_dora=false");
    if (!m.magnitude && config_.use_dora)
      throw Error(source + ": adapter_config.json says use_dora=true but module '" + name + "' has no lora_magnitude_vector");
    m.rank = config_.rank_for(name);
    m.scaling = config_.scaling_for(name);
    // lora_A is [r, in] (Linear) or [r, num_embeddings] (Embedding); lora_B is [out, r] / [dim, r].
    const auto& a_shape = m.a->info->shape;
    const auto& b_shape = m.b->info->shape;
    if (a_shape[0] != static_cast<uint64_t>(m.rank) || b_shape[1] != static_cast<uint64_t>(m.rank))
      throw Error(source + ": module '" + name + "': rank from adapter_config.json is " + std::to_string(m.rank) +
                  " but lora_A is " + m.a->info->shape_string() + " and lora_B is " + m.b->info->shape_string());
    modules_.push_back(std::move(m));
  }
}

std::vector<std::string> Adapter::non_finite_report() const {
  std::vector<std::string> report;
  for (const auto& ref : tensors_.tensors()) {
    if (!is_compute_float(ref.info->dtype)) continue;
    const uint64_t bad = kernels::count_non_finite(ref.info->dtype, ref.data().data(), ref.info->num_elements());
    ref.release();  // keep RSS flat: the merge reads each tensor again only once
    if (bad) report.push_back(ref.name() + ": " + std::to_string(bad) + " non-finite value" + (bad > 1 ? "s" : ""));
  }
  return report;
}

}  // namespace vlmforge
