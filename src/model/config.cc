#include "model/config.h"

#include "io/json_file.h"
#include "util/error.h"

namespace vlmforge {
using nlohmann::json;

namespace {

// Field lookup that prefers text_config (newer transformers nest the language model's fields
// there for Qwen2.5-VL) and falls back to the top level.
class Fields {
 public:
  Fields(const json& root, const std::string& source) : root_(root), source_(source) {
    if (const auto it = root.find("text_config"); it != root.end() && it->is_object()) text_ = &*it;
  }
  const json* find(const char* key) const {
    if (text_) {
      if (const auto it = text_->find(key); it != text_->end() && !it->is_null()) return &*it;
    }
    if (const auto it = root_.find(key); it != root_.end() && !it->is_null()) return &*it;
    return nullptr;
  }
  template <typename T>
  T required(const char* key) const {
    const json* v = find(key);
    if (!v) throw Error(source_ + ": missing required field \"" + key + "\"");
    try {
      return v->get<T>();
    } catch (const json::exception&) {
      throw Error(source_ + ": field \"" + key + "\" has the wrong type (" + v->dump() + ")");
    }
  }
  template <typename T>
  T optional(const char* key, T fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    try {
      return v->get<T>();
    } catch (const json::exception&) {
      throw Error(source_ + ": field \"" + key + "\" has the wrong type (" + v->dump() + ")");
    }
  }

 private:
  const json& root_;
  const json* text_ = nullptr;
  std::string source_;
};

int first_int(const json* v, int fallback) {
  if (!v) return fallback;
  if (v->is_number_integer()) return v->get<int>();
  if (v->is_array() && !v->empty() && (*v)[0].is_number_integer()) return (*v)[0].get<int>();
  return fallback;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": config is not a JSON object");
  const Fields f(j, source);
  ModelConfig c;
  c.model_type = f.optional<std::string>("model_type", "");
  if (const auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty() && (*it)[0].is_string())
    c.architecture = (*it)[0].get<std::string>();
  c.vocab_size = f.required<int>("vocab_size");
  c.hidden_size = f.required<int>("hidden_size");
  c.intermediate_size = f.required<int>("intermediate_size");
  c.num_hidden_layers = f.required<int>("num_hidden_layers");
  c.num_attention_heads = f.required<int>("num_attention_heads");
  c.num_key_value_heads = f.optional<int>("num_key_value_heads", c.num_attention_heads);
  c.max_position_embeddings = f.optional<int>("max_position_embeddings", 32768);
  c.rope_theta = f.optional<double>("rope_theta", 1e6);
  c.rms_norm_eps = f.optional<double>("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = f.optional<bool>("tie_word_embeddings", false);
  c.torch_dtype = f.optional<std::string>("torch_dtype", f.optional<std::string>("dtype", "bfloat16"));
  c.bos_token_id = first_int(f.find("bos_token_id"), 151643);
  c.eos_token_id = first_int(f.find("eos_token_id"), 151645);
  c.sliding_window = f.optional<int>("sliding_window", 32768);
  c.max_window_layers = f.optional<int>("max_window_layers", c.num_hidden_layers);
  if (c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0)
    throw Error(source + ": hidden_size " + std::to_string(c.hidden_size) +
                " is not a positive multiple of num_attention_heads " + std::to_string(c.num_attention_heads));
  if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0)
    throw Error(source + ": num_attention_heads must be a multiple of num_key_value_heads");
  if (const json* rs = f.find("rope_scaling"); rs && rs->is_object()) {
    c.rope_scaling_type = rs->value("rope_type", rs->value("type", std::string("default")));
    if (const auto it = rs->find("mrope_section"); it != rs->end() && it->is_array())
      c.mrope_section = it->get<std::vector<int>>();
  }
  if (const auto it = j.find("vision_config"); it != j.end() && it->is_object()) {
    const json& v = *it;
    VisionConfig vc;
    vc.depth = v.value("depth", vc.depth);
    vc.hidden_size = v.value("hidden_size", vc.hidden_size);
    vc.intermediate_size = v.value("intermediate_size", vc.intermediate_size);
    vc.num_heads = v.value("num_heads", vc.num_heads);
    vc.in_channels = v.value("in_chans", v.value("in_channels", vc.in_channels));
    vc.out_hidden_size = v.value("out_hidden_size", c.hidden_size);
    vc.patch_size = v.value("patch_size", v.value("spatial_patch_size", vc.patch_size));
    vc.spatial_merge_size = v.value("spatial_merge_size", vc.spatial_merge_size);
    vc.temporal_patch_size = v.value("temporal_patch_size", vc.temporal_patch_size);
    vc.window_size = v.value("window_size", vc.window_size);
    vc.fullatt_block_indexes = v.value("fullatt_block_indexes", vc.fullatt_block_indexes);
    vc.tokens_per_second = v.value("tokens_per_second", vc.tokens_per_second);
    c.vision = vc;
    c.image_token_id = first_int(f.find("image_token_id"), c.image_token_id);
    c.vision_start_token_id = first_int(f.find("vision_start_token_id"), c.vision_start_token_id);
  }
  if (const auto it = j.find("quantization_config"); it != j.end() && !it->is_null())
    c.quantization = QuantizationConfig::from_json(*it, source);
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "config.json";
  return from_json(read_json_file(path), path.string());
}

json ModelConfig::to_json() const {
  json j = {
      {"architectures", {architecture}},
      {"model_type", model_type},
      {"attention_dropout", 0.0},
      {"bos_token_id", bos_token_id},
      {"eos_token_id", eos_token_id},
      {"hidden_act", "silu"},
      {"hidden_size", hidden_size},
      {"initializer_range", 0.02},
      {"intermediate_size", intermediate_size},
      {"max_position_embeddings", max_position_embeddings},
      {"max_window_layers", max_window_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_hidden_layers", num_hidden_layers},
      {"num_key_value_heads", num_key_value_heads},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_theta", rope_theta},
      {"sliding_window", sliding_window},
      {"tie_word_embeddings", tie_word_embeddings},
      {"torch_dtype", torch_dtype},
      {"use_cache", true},
      {"use_sliding_window", false},
      {"vocab_size", vocab_size},
  };
  j["rope_scaling"] = mrope_section.empty() ? json(nullptr)
                                            : json{{"type", "mrope"}, {"mrope_section", mrope_section}};
  if (vision) {
    j["image_token_id"] = image_token_id;
    j["video_token_id"] = 151656;
    j["vision_start_token_id"] = vision_start_token_id;
    j["vision_end_token_id"] = 151653;
    j["vision_token_id"] = 151654;
    j["vision_config"] = {
        {"depth", vision->depth},
        {"hidden_act", "silu"},
        {"hidden_size", vision->hidden_size},
        {"intermediate_size", vision->intermediate_size},
        {"num_heads", vision->num_heads},
        {"in_chans", vision->in_channels},
        {"out_hidden_size", vision->out_hidden_size},
        {"patch_size", vision->patch_size},
        {"spatial_merge_size", vision->spatial_merge_size},
        {"spatial_patch_size", vision->patch_size},
        {"window_size", vision->window_size},
        {"fullatt_block_indexes", vision->fullatt_block_indexes},
        {"tokens_per_second", vision->tokens_per_second},
        {"temporal_patch_size", vision->temporal_patch_size},
    };
  }
  return j;
}

}  // namespace vlmforge
