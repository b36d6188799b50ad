#include "vision/vision_tower.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/ops.h"
#include "util/error.h"

namespace vlmforge::vision {

namespace {

constexpr float kNormEps = 1e-6f;  // Qwen2RMSNorm(eps=1e-6) in every vision block and the merger
constexpr size_t kQueryTile = kAttentionQueryTile;

}  // namespace

WindowLayout window_layout(uint32_t grid_h, uint32_t grid_w, const VisionConfig& c) {
  const uint32_t merge = static_cast<uint32_t>(c.spatial_merge_size);
  const uint32_t unit = merge * merge;
  // Windows of window_size pixels, counted in merge groups.
  const uint32_t window = static_cast<uint32_t>(c.window_size / c.spatial_merge_size / c.patch_size);
  if (window == 0) throw Error("vision_config: window_size " + std::to_string(c.window_size) + " is smaller than one merge group");
  const uint32_t gh = grid_h / merge, gw = grid_w / merge;
  // transformers pads each side up to the next multiple of the window (a full extra window when it
  // divides evenly); padded windows are empty and dropped.
  const uint32_t windows_h = (gh + window - gh % window) / window, windows_w = (gw + window - gw % window) / window;
  WindowLayout layout;
  layout.boundaries.push_back(0);
  for (uint32_t wy = 0; wy < windows_h; ++wy)
    for (uint32_t wx = 0; wx < windows_w; ++wx) {
      size_t count = 0;
      for (uint32_t y = wy * window; y < std::min((wy + 1) * window, gh); ++y)
        for (uint32_t x = wx * window; x < std::min((wx + 1) * window, gw); ++x, ++count) layout.group_order.push_back(y * gw + x);
      if (count > 0) layout.boundaries.push_back(layout.boundaries.back() + count * unit);
    }
  return layout;
}

VisionTower::VisionTower(const Checkpoint& ckpt, const ModelConfig& model_config, size_t threads, const RuntimeLora* lora)
    : pool_(threads) {
  if (!model_config.vision) throw Error(ckpt.root().string() + ": config.json has no vision_config");
  config_ = *model_config.vision;
  const VisionConfig& c = config_;
  if (c.hidden_size % c.num_heads != 0 || (c.hidden_size / c.num_heads) % 4 != 0)
    throw Error(ckpt.root().string() + ": vision hidden_size " + std::to_string(c.hidden_size) + " / num_heads " +
                std::to_string(c.num_heads) + " must give a head size divisible by 4");
  const std::string prefix = ckpt.find("visual.patch_embed.proj.weight") ? "visual." : "model.visual.";
  auto get = [&](const std::string& name, const std::vector<uint64_t>& shape) -> const TensorRef& {
    const TensorRef* t = lora ? lora->replacement(prefix + name) : nullptr;  // modules_to_save
    if (!t) t = ckpt.find(prefix + name);
    if (!t) throw Error(ckpt.root().string() + ": model is missing tensor '" + prefix + name + "'");
    if (t->info->shape != shape) {
      std::string want;
      for (uint64_t s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
      throw Error(ckpt.root().string() + ": tensor '" + prefix + name + "' has shape " + t->info->shape_string() +
                  ", expected [" + want + "] from vision_config");
    }
    if (!is_compute_float(t->info->dtype))
      throw Error(ckpt.root().string() + ": tensor '" + prefix + name + "' is " + std::string(dtype_name(t->info->dtype)) +
                  "; only BF16, F16 and F32 weights are supported");
    return *t;
  };
  auto matrix = [&](const std::string& name, uint64_t rows, uint64_t cols) {
    const TensorRef& t = get(name, {rows, cols});
    if (const LinearAdapters* layer = lora ? lora->find(prefix + name) : nullptr) lora_by_weight_[t.data().data()] = layer;
    return kernels::WeightMatrix{t.info->dtype, t.data().data(), rows, cols};
  };
  // A bias also receives the lora_B biases of its layer's adapters.
  auto vector = [&](const std::string& name, uint64_t n) {
    std::vector<float> v = kernels::tensor_to_f32(get(name, {n}));
    const std::string weight = name.ends_with(".bias") ? name.substr(0, name.size() - 5) + ".weight" : "";
    if (const LinearAdapters* layer = lora && !weight.empty() ? lora->find(prefix + weight) : nullptr)
      for (size_t i = 0; i < layer->bias_delta.size(); ++i) v[i] += layer->bias_delta[i];
    return v;
  };
  if (lora && lora->find(prefix + "patch_embed.proj.weight"))
    throw Error(ckpt.root().string() + ": a LoRA adapter targets the vision patch embedding (a Conv3d); merge it with "
                "`vlmforge merge-lora` instead of applying it at runtime");
  const uint64_t d = c.hidden_size, inter = c.intermediate_size;
  const uint64_t k = uint64_t(c.in_channels) * c.temporal_patch_size * c.patch_size * c.patch_size;
  // Conv3d with kernel = stride = (temporal, patch, patch) and no bias is one matmul per patch row.
  const TensorRef& pe = get("patch_embed.proj.weight", {d, uint64_t(c.in_channels), uint64_t(c.temporal_patch_size),
                                                        uint64_t(c.patch_size), uint64_t(c.patch_size)});
  patch_embed_ = {pe.info->dtype, pe.data().data(), d, k};
  for (int b = 0; b < c.depth; ++b) {
    const std::string p = "blocks." + std::to_string(b) + ".";
    Block block;
    block.norm1 = vector(p + "norm1.weight", d);
    block.norm2 = vector(p + "norm2.weight", d);
    block.qkv = matrix(p + "attn.qkv.weight", 3 * d, d);
    block.qkv_bias = vector(p + "attn.qkv.bias", 3 * d);
    block.proj = matrix(p + "attn.proj.weight", d, d);
    block.proj_bias = vector(p + "attn.proj.bias", d);
    block.gate = matrix(p + "mlp.gate_proj.weight", inter, d);
    block.gate_bias = vector(p + "mlp.gate_proj.bias", inter);
    block.up = matrix(p + "mlp.up_proj.weight", inter, d);
    block.up_bias = vector(p + "mlp.up_proj.bias", inter);
    block.down = matrix(p + "mlp.down_proj.weight", d, inter);
    block.down_bias = vector(p + "mlp.down_proj.bias", d);
    blocks_.push_back(std::move(block));
  }
  const uint64_t merged = d * c.spatial_merge_size * c.spatial_merge_size;
  merger_norm_ = vector("merger.ln_q.weight", d);
  merger0_ = matrix("merger.mlp.0.weight", merged, merged);
  merger_bias0_ = vector("merger.mlp.0.bias", merged);
  merger2_ = matrix("merger.mlp.2.weight", uint64_t(c.out_hidden_size), merged);
  merger_bias2_ = vector("merger.mlp.2.bias", uint64_t(c.out_hidden_size));
  // VisionRotaryEmbedding(head_dim / 2, theta 10000): frequencies computed in float32 as torch does.
  const size_t rotary_dim = d / c.num_heads / 2;
  for (size_t i = 0; i < rotary_dim / 2; ++i)
    inv_freq_.push_back(1.0f / std::pow(10000.0f, static_cast<float>(2 * i) / static_cast<float>(rotary_dim)));
}

void VisionTower::project(const float* x, size_t rows, const kernels::WeightMatrix& w, const std::vector<float>* bias,
                          float* out) {
  const auto it = lora_by_weight_.find(w.data);
  if (it == lora_by_weight_.end()) return gemm(x, rows, w, bias ? bias->data() : nullptr, out);
  // y = x·Wᵀ + Σ s·(x·Aᵀ)·Bᵀ, DoRA rows scaled, then the bias (which DoRA leaves unscaled).
  const LinearAdapters& layer = *it->second;
  gemm(x, rows, w, nullptr, out);
  std::vector<float> projected, delta(rows * w.rows);
  for (const LinearLora& l : layer.loras) {
    projected.resize(rows * l.rank);
    gemm(x, rows, {DType::F32, reinterpret_cast<const std::byte*>(l.a.data()), l.rank, w.cols}, nullptr, projected.data());
    gemm(projected.data(), rows, {DType::F32, reinterpret_cast<const std::byte*>(l.b.data()), w.rows, l.rank}, nullptr,
         delta.data());
    for (size_t i = 0; i < delta.size(); ++i) out[i] += l.scale * delta[i];
  }
  for (size_t t = 0; t < rows; ++t)
    for (size_t o = 0; o < w.rows; ++o) {
      float& y = out[t * w.rows + o];
      if (!layer.dora_factor.empty()) y *= layer.dora_factor[o];
      if (bias) y += (*bias)[o];
    }
}

void VisionTower::gemm(const float* x, size_t rows, const kernels::WeightMatrix& w, const float* bias, float* out) {
  // An image has thousands of patch rows; the GEMM packs all the rows it is given per 512-input
  // block, so blocks of kRowBlock rows keep that packing in L2 (a whole image's would stream
  // from memory once per weight panel). Weights are re-read once per block, a small cost.
  constexpr size_t kRowBlock = 256;
  const size_t groups = (w.rows + 3) / 4;  // the kernel's tile height
  pool_.parallel_for(groups, [&](size_t begin, size_t end) {
    for (size_t r0 = 0; r0 < rows; r0 += kRowBlock)
      kernels::matmul_rows(x + r0 * w.cols, std::min(kRowBlock, rows - r0), w.cols, w, bias, out + r0 * w.rows, w.rows,
                           begin * 4, std::min(end * 4, w.rows));
  });
}

std::vector<float> VisionTower::encode(const ImagePatches& patches) {
  const VisionConfig& c = config_;
  const size_t n = patches.rows(), d = c.hidden_size, heads = c.num_heads, head_dim = d / heads;
  const size_t merge = c.spatial_merge_size, unit = merge * merge, inter = c.intermediate_size;
  if (patches.row_size != patch_embed_.cols || patches.grid_t != 1 || n == 0 || patches.grid_h % merge != 0 ||
      patches.grid_w % merge != 0)
    throw Error("image patches of " + std::to_string(patches.row_size) + " values on a " + std::to_string(patches.grid_t) +
                "x" + std::to_string(patches.grid_h) + "x" + std::to_string(patches.grid_w) +
                " grid do not fit this vision tower (" + std::to_string(patch_embed_.cols) + " values per patch)");
  // Allocated in the phases vision_activations() counts.
  const VisionActivations sizes = vision_activations(c, n);
  std::vector<float> embedded(sizes.hidden), x(sizes.hidden), cos(sizes.rope / 2), sin(sizes.rope / 2);
  auto for_rows = [&](size_t count, auto&& body) {
    pool_.parallel_for(count, [&](size_t begin, size_t end) {
      for (size_t r = begin; r < end; ++r) body(r);
    });
  };

  project(patches.values.data(), n, patch_embed_, nullptr, embedded.data());

  // Window order: merge groups regrouped window by window, each group's rows kept together.
  const WindowLayout layout = window_layout(patches.grid_h, patches.grid_w, c);
  const size_t groups_w = patches.grid_w / merge, quarter = head_dim / 4;
  for_rows(n, [&](size_t r) {
    const size_t group = layout.group_order[r / unit], within = r % unit;
    std::copy_n(embedded.data() + (group * unit + within) * d, d, x.data() + r * d);
    // The processor's row order gives each patch's grid position: (block row, block column, row, column).
    const float h = static_cast<float>(group / groups_w * merge + within / merge);
    const float w = static_cast<float>(group % groups_w * merge + within % merge);
    for (size_t i = 0; i < quarter; ++i) {
      const float ah = h * inv_freq_[i], aw = w * inv_freq_[i];
      cos[r * head_dim / 2 + i] = std::cos(ah), sin[r * head_dim / 2 + i] = std::sin(ah);
      cos[r * head_dim / 2 + quarter + i] = std::cos(aw), sin[r * head_dim / 2 + quarter + i] = std::sin(aw);
    }
  });
  embedded = {};
  std::vector<float> normed(sizes.normed), qkv(sizes.qkv), attn(sizes.attention), gate(sizes.mlp_gate), up(sizes.mlp_up);

  // Attention segments: windows, or the whole image in the full-attention blocks.
  const std::vector<size_t> full{0, n};
  const size_t lanes = pool_.size();
  std::vector<std::vector<float>> scores(lanes, std::vector<float>(sizes.scores_per_lane));
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (size_t b = 0; b < blocks_.size(); ++b) {
    const Block& block = blocks_[b];
    const bool full_attention =
        std::find(c.fullatt_block_indexes.begin(), c.fullatt_block_indexes.end(), static_cast<int>(b)) !=
        c.fullatt_block_indexes.end();
    const std::vector<size_t>& bounds = full_attention ? full : layout.boundaries;
    for_rows(n, [&](size_t r) { kernels::rms_norm(x.data() + r * d, block.norm1.data(), kNormEps, normed.data() + r * d, d); });
    project(normed.data(), n, block.qkv, &block.qkv_bias, qkv.data());
    for_rows(n, [&](size_t r) {
      for (size_t h = 0; h < heads; ++h) {
        kernels::apply_rope(qkv.data() + r * 3 * d + h * head_dim, head_dim, cos.data() + r * head_dim / 2,
                            sin.data() + r * head_dim / 2);
        kernels::apply_rope(qkv.data() + r * 3 * d + d + h * head_dim, head_dim, cos.data() + r * head_dim / 2,
                            sin.data() + r * head_dim / 2);
      }
    });
    // Items: (segment, head, tile of up to kQueryTile query rows). A tile's queries go through
    // attend() as one "group", so each key and value row is loaded once per tile, not per query.
    std::vector<std::array<size_t, 3>> items;  // first query row, query count, head
    for (size_t s = 0; s + 1 < bounds.size(); ++s)
      for (size_t h = 0; h < heads; ++h)
        for (size_t r = bounds[s]; r < bounds[s + 1]; r += kQueryTile) items.push_back({r, std::min(kQueryTile, bounds[s + 1] - r), h});
    pool_.parallel_for(lanes, [&](size_t lane_begin, size_t lane_end) {
      for (size_t lane = lane_begin; lane < lane_end; ++lane) {
        float* q_tile = scores[lane].data();
        float* out_tile = q_tile + kQueryTile * head_dim;
        float* tile_scores = out_tile + kQueryTile * head_dim;
        for (size_t i = lane; i < items.size(); i += lanes) {
          const auto [first, count, h] = items[i];
          const auto seg = std::upper_bound(bounds.begin(), bounds.end(), first) - 1;
          const size_t start = *seg, length = *(seg + 1) - start;
          for (size_t j = 0; j < count; ++j) std::copy_n(qkv.data() + (first + j) * 3 * d + h * head_dim, head_dim, q_tile + j * head_dim);
          const auto* base = reinterpret_cast<const std::byte*>(qkv.data() + start * 3 * d);
          const kernels::KvRows kv{DType::F32, base + d * sizeof(float), base + 2 * d * sizeof(float), 3 * d, h * head_dim};
          kernels::attend(q_tile, count, head_dim, kv, length, scale, tile_scores, out_tile);
          for (size_t j = 0; j < count; ++j) std::copy_n(out_tile + j * head_dim, head_dim, attn.data() + (first + j) * d + h * head_dim);
        }
      }
    });
    project(attn.data(), n, block.proj, &block.proj_bias, normed.data());
    for_rows(n, [&](size_t r) {
      kernels::add_in_place(x.data() + r * d, normed.data() + r * d, d);
      kernels::rms_norm(x.data() + r * d, block.norm2.data(), kNormEps, normed.data() + r * d, d);
    });
    project(normed.data(), n, block.gate, &block.gate_bias, gate.data());
    project(normed.data(), n, block.up, &block.up_bias, up.data());
    for_rows(n, [&](size_t r) { kernels::silu_mul(gate.data() + r * inter, up.data() + r * inter, inter); });
    project(gate.data(), n, block.down, &block.down_bias, normed.data());
    for_rows(n, [&](size_t r) { kernels::add_in_place(x.data() + r * d, normed.data() + r * d, d); });
  }
  qkv = {}, attn = {}, gate = {}, up = {}, scores = {};

  // PatchMerger: ln_q per patch, the group's rows side by side, Linear → GELU (erf) → Linear.
  for_rows(n, [&](size_t r) { kernels::rms_norm(x.data() + r * d, merger_norm_.data(), kNormEps, normed.data() + r * d, d); });
  const size_t tokens = n / unit, out_size = c.out_hidden_size, merged = d * unit;
  std::vector<float> hidden(sizes.merged_hidden);
  project(normed.data(), tokens, merger0_, &merger_bias0_, hidden.data());
  for_rows(tokens, [&](size_t t) {
    for (size_t i = 0; i < merged; ++i) {
      float& v = hidden[t * merged + i];
      v = 0.5f * v * (1.0f + std::erf(v * static_cast<float>(M_SQRT1_2)));
    }
  });
  std::vector<float> windowed(tokens * out_size), out(tokens * out_size);
  project(hidden.data(), tokens, merger2_, &merger_bias2_, windowed.data());
  // Undo the window order: token i of the windowed sequence is merge group group_order[i].
  for_rows(tokens, [&](size_t i) {
    std::copy_n(windowed.data() + i * out_size, out_size, out.data() + size_t{layout.group_order[i]} * out_size);
  });
  return out;
}

}  // namespace vlmforge::vision
