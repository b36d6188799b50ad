#pragma once
// Model hyper-parameters read from a Hugging Face config.json (Qwen2 / Qwen2.5 / Qwen2.5-VL).
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/quantization.h"

namespace vlmforge {

struct VisionConfig {
  int depth = 32;
  int hidden_size = 1280;
  int intermediate_size = 3420;
  int num_heads = 16;
  int in_channels = 3;
  int out_hidden_size = 3584;
  int patch_size = 14;
  int spatial_merge_size = 2;
  int temporal_patch_size = 2;
  int window_size = 112;
  std::vector<int> fullatt_block_indexes{7, 15, 23, 31};
  int tokens_per_second = 2;
};

struct ModelConfig {
  std::string model_type;    // "qwen2", "qwen2_5_vl"
  std::string architecture;  // "Qwen2ForCausalLM", "Qwen2_5_VLForConditionalGeneration"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int max_position_embeddings = 32768;
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "bfloat16";
  int bos_token_id = 151643;
  int eos_token_id = 151645;
  int sliding_window = 32768;
  int max_window_layers = 28;
  std::string rope_scaling_type;        // rope_scaling.type / rope_type; "" when rope_scaling is null
  std::vector<int> mrope_section;       // Qwen2.5-VL rope_scaling.mrope_section
  std::optional<VisionConfig> vision;   // present for vision-language models
  int image_token_id = 151655;          // <|image_pad|>
  int vision_start_token_id = 151652;   // <|vision_start|>
  std::optional<QuantizationConfig> quantization;  // AWQ / GPTQ checkpoints (quantization_config)

  int head_dim() const { return hidden_size / num_attention_heads; }
  bool is_vision_language() const { return vision.has_value(); }

  // Parses config.json; missing required fields are errors naming the file and field.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig load(const std::filesystem::path& model_dir);
  // The config.json that transformers would write for this model.
  nlohmann::json to_json() const;
};

}  // namespace vlmforge
