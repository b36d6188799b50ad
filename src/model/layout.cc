#include "model/layout.h"

#include <array>

#include "util/error.h"

namespace vlmforge {

std::vector<TensorSpec> checkpoint_tensors(const ModelConfig& c, DType dtype, VlWeightLayout layout) {
  using Shape = std::vector<uint64_t>;
  std::vector<TensorSpec> out;
  auto add = [&](std::string name, Shape shape) { out.push_back({std::move(name), dtype, std::move(shape)}); };
  const bool new_layout = c.vision && layout == VlWeightLayout::kTransformers;
  const std::string text_prefix = new_layout ? "model.language_model." : "model.";
  const uint64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const uint64_t kv_dim = static_cast<uint64_t>(c.num_key_value_heads) * c.head_dim();

  // Qwen2_5_VLForConditionalGeneration registers the vision tower before the language model.
  if (c.vision) {
    const VisionConfig& v = *c.vision;
    const std::string vp = new_layout ? "model.visual." : "visual.";
    const uint64_t vh = v.hidden_size, vi = v.intermediate_size;
    add(vp + "patch_embed.proj.weight", {vh, static_cast<uint64_t>(v.in_channels), static_cast<uint64_t>(v.temporal_patch_size),
                                         static_cast<uint64_t>(v.patch_size), static_cast<uint64_t>(v.patch_size)});
    for (int b = 0; b < v.depth; ++b) {
      const std::string p = vp + "blocks." + std::to_string(b) + ".";
      add(p + "norm1.weight", {vh});
      add(p + "norm2.weight", {vh});
      add(p + "attn.qkv.weight", {3 * vh, vh});
      add(p + "attn.qkv.bias", {3 * vh});
      add(p + "attn.proj.weight", {vh, vh});
      add(p + "attn.proj.bias", {vh});
      add(p + "mlp.gate_proj.weight", {vi, vh});
      add(p + "mlp.gate_proj.bias", {vi});
      add(p + "mlp.up_proj.weight", {vi, vh});
      add(p + "mlp.up_proj.bias", {vi});
      add(p + "mlp.down_proj.weight", {vh, vi});
      add(p + "mlp.down_proj.bias", {vh});
    }
    const uint64_t merged = vh * v.spatial_merge_size * v.spatial_merge_size;
    add(vp + "merger.ln_q.weight", {vh});
    add(vp + "merger.mlp.0.weight", {merged, merged});
    add(vp + "merger.mlp.0.bias", {merged});
    add(vp + "merger.mlp.2.weight", {static_cast<uint64_t>(v.out_hidden_size), merged});
    add(vp + "merger.mlp.2.bias", {static_cast<uint64_t>(v.out_hidden_size)});
  }
  add(text_prefix + "embed_tokens.weight", {static_cast<uint64_t>(c.vocab_size), hidden});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = text_prefix + "layers." + std::to_string(l) + ".";
    add(p + "self_attn.q_proj.weight", {hidden, hidden});
    add(p + "self_attn.q_proj.bias", {hidden});
    add(p + "self_attn.k_proj.weight", {kv_dim, hidden});
    add(p + "self_attn.k_proj.bias", {kv_dim});
    add(p + "self_attn.v_proj.weight", {kv_dim, hidden});
    add(p + "self_attn.v_proj.bias", {kv_dim});
    add(p + "self_attn.o_proj.weight", {hidden, hidden});
    add(p + "mlp.gate_proj.weight", {inter, hidden});
    add(p + "mlp.up_proj.weight", {inter, hidden});
    add(p + "mlp.down_proj.weight", {hidden, inter});
    add(p + "input_layernorm.weight", {hidden});
    add(p + "post_attention_layernorm.weight", {hidden});
  }
  add(text_prefix + "norm.weight", {hidden});
  if (!c.tie_word_embeddings) add("lm_head.weight", {static_cast<uint64_t>(c.vocab_size), hidden});
  return out;
}

namespace {

struct Preset {
  const char* name;
  int vocab, hidden, intermediate, layers, heads, kv_heads, max_positions;
  bool tied;
  int vision_intermediate;  // 0: text-only model
};

// Values from the config.json files of the published Qwen/Qwen2.5-* and Qwen/Qwen2.5-VL-* models.
constexpr std::array<Preset, 13> kPresets{{
    {"qwen2.5-0.5b", 151936, 896, 4864, 24, 14, 2, 32768, true, 0},
    {"qwen2.5-1.5b", 151936, 1536, 8960, 28, 12, 2, 32768, true, 0},
    {"qwen2.5-3b", 151936, 2048, 11008, 36, 16, 2, 32768, true, 0},
    {"qwen2.5-7b", 152064, 3584, 18944, 28, 28, 4, 32768, false, 0},
    {"qwen2.5-14b", 152064, 5120, 13824, 48, 40, 8, 32768, false, 0},
    {"qwen2.5-32b", 152064, 5120, 27648, 64, 40, 8, 32768, false, 0},
    {"qwen2.5-72b", 152064, 8192, 29568, 80, 64, 8, 32768, false, 0},
    {"qwen2.5-vl-3b", 151936, 2048, 11008, 36, 16, 2, 128000, true, 3420},
    {"qwen2.5-vl-7b", 152064, 3584, 18944, 28, 28, 4, 128000, false, 3420},
    {"qwen2.5-vl-32b", 152064, 5120, 27648, 64, 40, 8, 128000, false, 3420},
    {"qwen2.5-vl-72b", 152064, 8192, 29568, 80, 64, 8, 128000, false, 3456},
    // Small shapes with the same structure, for tests and the demo.
    {"tiny", 512, 64, 160, 2, 4, 2, 32768, true, 0},
    {"tiny-vl", 512, 64, 160, 2, 4, 2, 32768, false, 96},
}};

}  // namespace

ModelConfig preset_config(const std::string& name) {
  for (const auto& p : kPresets) {
    if (name != p.name) continue;
    ModelConfig c;
    const bool vl = p.vision_intermediate != 0;
    c.model_type = vl ? "qwen2_5_vl" : "qwen2";
    c.architecture = vl ? "Qwen2_5_VLForConditionalGeneration" : "Qwen2ForCausalLM";
    c.vocab_size = p.vocab;
    c.hidden_size = p.hidden;
    c.intermediate_size = p.intermediate;
    c.num_hidden_layers = p.layers;
    c.num_attention_heads = p.heads;
    c.num_key_value_heads = p.kv_heads;
    c.max_position_embeddings = p.max_positions;
    c.max_window_layers = p.layers;
    c.tie_word_embeddings = p.tied;
    if (vl) {
      c.mrope_section = {16, 24, 24};
      VisionConfig v;
      v.intermediate_size = p.vision_intermediate;
      v.out_hidden_size = p.hidden;
      if (name == "tiny-vl") {
        v.depth = 4;
        v.hidden_size = 32;
        v.num_heads = 2;
        v.fullatt_block_indexes = {1, 3};
        c.mrope_section = {2, 3, 3};
      }
      c.vision = v;
    }
    return c;
  }
  std::string names;
  for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  throw UsageError("unknown model preset '" + name + "' (known: " + names + ")");
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.emplace_back(p.name);
  return names;
}

}  // namespace vlmforge
