#pragma once
// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) with PEFT's
// semantics: scaling alpha/r or alpha/sqrt(r) (rsLoRA), rank_pattern / alpha_pattern,
// target_modules, DoRA magnitudes, lora_B biases, embedding LoRA, and full tensors saved by
// modules_to_save or bias="all"/"lora_only".
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"

namespace vlmforge {

struct LoraConfig {
  std::string peft_type = "LORA";
  int r = 8;
  double lora_alpha = 8;
  bool use_rslora = false;
  bool use_dora = false;
  bool fan_in_fan_out = false;
  std::string bias = "none";
  // target_modules: a list (exact name or ".name" suffix match) or one regex (full match).
  std::vector<std::string> target_module_list;
  std::optional<std::string> target_module_regex;
  std::vector<std::string> modules_to_save;
  // Insertion order matters: PEFT takes the first pattern that matches.
  std::vector<std::pair<std::string, int>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;

  static LoraConfig from_json_file(const std::filesystem::path& path);

  int rank_for(const std::string& module) const;
  double alpha_for(const std::string& module) const;
  double scaling_for(const std::string& module) const;
  // Whether PEFT would have put a LoRA layer on `module` (module path without "base_model.model.").
  bool targets(const std::string& module) const;
};

// The base tensor for a model path as an adapter names it, trying both Qwen2.5-VL weight layouts
// (legacy "visual.*" / "model.layers.*" and transformers >= 4.52 "model.visual.*" /
// "model.language_model.*"): adapters trained with one transformers version load into the other.
const TensorRef* resolve_base_tensor(const Checkpoint& base, const std::string& name);

// PEFT's get_pattern_key: the first key such that re.match(rf"(.*\.)?({key})$", module) matches.
std::optional<size_t> match_pattern_key(const std::vector<std::string>& keys, const std::string& module);

enum class LoraLayerKind { kLinear, kEmbedding };

struct LoraModule {
  std::string module;  // model path as trained, e.g. "model.layers.0.self_attn.q_proj"
  LoraLayerKind kind = LoraLayerKind::kLinear;
  const TensorRef* a = nullptr;          // lora_A.weight [r, in]  or lora_embedding_A [r, num_embeddings]
  const TensorRef* b = nullptr;          // lora_B.weight [out, r] or lora_embedding_B [dim, r]
  const TensorRef* b_bias = nullptr;     // lora_B.bias [out] (lora_bias=True)
  const TensorRef* magnitude = nullptr;  // DoRA lora_magnitude_vector
  int rank = 0;
  double scaling = 0;
};

// A full tensor stored in the adapter that replaces the base tensor of the same name.
struct ReplacementTensor {
  std::string name;  // model path, e.g. "lm_head.weight"
  const TensorRef* tensor;
};

class Adapter {
 public:
  explicit Adapter(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const LoraConfig& config() const { return config_; }
  const std::vector<LoraModule>& modules() const { return modules_; }
  const std::vector<ReplacementTensor>& replacements() const { return replacements_; }
  const Checkpoint& tensors() const { return tensors_; }

  // Non-finite values in the adapter's tensors, as "tensor: N non-finite values".
  std::vector<std::string> non_finite_report() const;

 private:
  std::filesystem::path dir_;
  LoraConfig config_;
  Checkpoint tensors_;
  std::vector<LoraModule> modules_;
  std::vector<ReplacementTensor> replacements_;
};

}  // namespace vlmforge
