#include "vision/vision_tower.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "util/error.h"

namespace vlmforge::vision {

namespace {

constexpr float kNormEps = 1e-6f;  // Qwen2RMSNorm(eps=1e-6) in every vision block and the merger

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

VisionTower::VisionTower(const Checkpoint& ckpt, const ModelConfig& model_config, Device& device, const RuntimeLora* lora)
    : stream_(device.open_stream()), weights_(ckpt, lora, model_config.quantization, "vision_config") {
  if (!model_config.vision) throw Error(ckpt.root().string() + ": config.json has no vision_config");
  config_ = *model_config.vision;
  const VisionConfig& c = config_;
  if (c.hidden_size % c.num_heads != 0 || (c.hidden_size / c.num_heads) % 4 != 0)
    throw Error(ckpt.root().string() + ": vision hidden_size " + std::to_string(c.hidden_size) + " / num_heads " +
                std::to_string(c.num_heads) + " must give a head size divisible by 4");
  const std::string prefix = ckpt.find("visual.patch_embed.proj.weight") ? "visual." : "model.visual.";
  if (weights_.adapted(prefix + "patch_embed.proj"))
    throw Error(ckpt.root().string() + ": a LoRA adapter targets the vision patch embedding (a Conv3d); merge it with "
                "`vlmforge merge-lora` instead of applying it at runtime");
  const uint64_t d = c.hidden_size, inter = c.intermediate_size;
  const uint64_t k = uint64_t(c.in_channels) * c.temporal_patch_size * c.patch_size * c.patch_size;
  const std::string what = "vision tower weights";
  // Conv3d with kernel = stride = (temporal, patch, patch) and no bias is one linear layer per patch row.
  patch_embed_.weight = weights_.matrix(device, prefix + "patch_embed.proj.weight",
                                        {d, uint64_t(c.in_channels), uint64_t(c.temporal_patch_size),
                                         uint64_t(c.patch_size), uint64_t(c.patch_size)},
                                        d, k, what);
  for (int b = 0; b < c.depth; ++b) {
    const std::string p = prefix + "blocks." + std::to_string(b) + ".";
    Block block;
    block.norm1 = weights_.vector(device, p + "norm1.weight", d, what);
    block.norm2 = weights_.vector(device, p + "norm2.weight", d, what);
    block.qkv = weights_.linear(device, p + "attn.qkv", 3 * d, d, true, what);
    block.proj = weights_.linear(device, p + "attn.proj", d, d, true, what);
    block.gate = weights_.linear(device, p + "mlp.gate_proj", inter, d, true, what);
    block.up = weights_.linear(device, p + "mlp.up_proj", inter, d, true, what);
    block.down = weights_.linear(device, p + "mlp.down_proj", d, inter, true, what);
    blocks_.push_back(std::move(block));
  }
  const uint64_t merged = d * c.spatial_merge_size * c.spatial_merge_size;
  merger_norm_ = weights_.vector(device, prefix + "merger.ln_q.weight", d, what);
  merger0_ = weights_.linear(device, prefix + "merger.mlp.0", merged, merged, true, what);
  merger2_ = weights_.linear(device, prefix + "merger.mlp.2", uint64_t(c.out_hidden_size), merged, true, what);
  // VisionRotaryEmbedding(head_dim / 2, theta 10000): frequencies computed in float32 as torch does.
  const size_t rotary_dim = d / c.num_heads / 2;
  for (size_t i = 0; i < rotary_dim / 2; ++i)
    inv_freq_.push_back(1.0f / std::pow(10000.0f, static_cast<float>(2 * i) / static_cast<float>(rotary_dim)));
}

std::vector<float> VisionTower::encode(const ImagePatches& patches, const std::function<bool()>& stop) {
  const VisionConfig& c = config_;
  const size_t n = patches.rows(), d = c.hidden_size, heads = c.num_heads, head_dim = d / heads;
  const size_t merge = c.spatial_merge_size, unit = merge * merge, inter = c.intermediate_size;
  if (patches.row_size != patch_embed_.in_features() || patches.grid_t != 1 || n == 0 || patches.grid_h % merge != 0 ||
      patches.grid_w % merge != 0)
    throw Error("image patches of " + std::to_string(patches.row_size) + " values on a " + std::to_string(patches.grid_t) +
                "x" + std::to_string(patches.grid_h) + "x" + std::to_string(patches.grid_w) +
                " grid do not fit this vision tower (" + std::to_string(patch_embed_.in_features()) + " values per patch)");
  Stream& st = *stream_;
  Device& dev = st.device();
  // Allocated in the phases vision_activations() counts.
  const VisionActivations sizes = vision_activations(c, n);
  auto buffer = [&](size_t floats, const char* what) { return dev.allocate(floats * sizeof(float), what); };
  auto rows = [](const DeviceBuffer& b, size_t stride) { return F32Rows{&b, 0, stride}; };
  const DeviceBuffer input = buffer(sizes.patches, "image patches");
  st.copy_from_host(input, 0, std::as_bytes(std::span(patches.values)));
  DeviceBuffer embedded = buffer(sizes.hidden, "vision activations");
  const Stream::LinearOutput embed[] = {{&patch_embed_, rows(embedded, d)}};
  st.linear(rows(input, patches.row_size), n, embed);

  // Window order: merge groups regrouped window by window, each group's rows kept together.
  const WindowLayout layout = window_layout(patches.grid_h, patches.grid_w, c);
  const size_t groups_w = patches.grid_w / merge, quarter = head_dim / 4, half = head_dim / 2;
  std::vector<uint32_t> source_row(n);
  std::vector<float> rope_host(2 * n * half);
  for (size_t r = 0; r < n; ++r) {
    const size_t group = layout.group_order[r / unit], within = r % unit;
    source_row[r] = static_cast<uint32_t>(group * unit + within);
    // The processor's row order gives each patch's grid position: (block row, block column, row, column).
    const float h = static_cast<float>(group / groups_w * merge + within / merge);
    const float w = static_cast<float>(group % groups_w * merge + within % merge);
    float* cos = rope_host.data() + r * half;
    float* sin = rope_host.data() + (n + r) * half;
    for (size_t i = 0; i < quarter; ++i) {
      const float ah = h * inv_freq_[i], aw = w * inv_freq_[i];
      cos[i] = std::cos(ah), sin[i] = std::sin(ah);
      cos[quarter + i] = std::cos(aw), sin[quarter + i] = std::sin(aw);
    }
  }
  const DeviceBuffer x = buffer(sizes.hidden, "vision activations");
  st.gather_rows(rows(embedded, d), source_row, d, rows(x, d));
  const DeviceBuffer rope = buffer(sizes.rope, "vision rope tables");
  st.copy_from_host(rope, 0, std::as_bytes(std::span(rope_host)));
  const F32Rows cos = rows(rope, half), sin = cos.rows_from(n);
  st.synchronize();  // the host tables above are locals
  embedded.reset();

  DeviceBuffer normed = buffer(sizes.normed, "vision activations");
  {
    const DeviceBuffer qkv = buffer(sizes.qkv, "vision activations"), attn = buffer(sizes.attention, "vision activations");
    const DeviceBuffer gate = buffer(sizes.mlp_gate, "vision MLP activations");
    const DeviceBuffer up = buffer(sizes.mlp_up, "vision MLP activations");
    // Attention segments: windows, or the whole image in the full-attention blocks.
    const std::vector<size_t> full{0, n};
    const AttentionShape shape{heads, heads, head_dim, 1.0f / std::sqrt(static_cast<float>(head_dim))};
    const F32Rows q = rows(qkv, 3 * d), k = q.columns_from(d), v = q.columns_from(2 * d);
    for (size_t b = 0; b < blocks_.size(); ++b) {
      if (stop) {
        // On an asynchronous device the blocks would otherwise all be queued before the first ran.
        st.synchronize();
        if (stop()) throw Cancelled("image encoding cancelled after " + std::to_string(b) + " of " +
                                    std::to_string(blocks_.size()) + " vision blocks");
      }
      const Block& block = blocks_[b];
      const bool full_attention =
          std::find(c.fullatt_block_indexes.begin(), c.fullatt_block_indexes.end(), static_cast<int>(b)) !=
          c.fullatt_block_indexes.end();
      st.rms_norm(rows(x, d), block.norm1, kNormEps, n, d, rows(normed, d));
      const Stream::LinearOutput qkv_out[] = {{&block.qkv, q}};
      st.linear(rows(normed, d), n, qkv_out);
      st.rope(q, heads, k, heads, head_dim, cos, sin, n);
      st.segment_attention(q, k, v, full_attention ? full : layout.boundaries, shape, rows(attn, d));
      const Stream::LinearOutput proj[] = {{&block.proj, rows(normed, d)}};
      st.linear(rows(attn, d), n, proj);
      st.add_rms_norm(rows(x, d), rows(normed, d), block.norm2, kNormEps, n, d, rows(normed, d));
      const Stream::LinearOutput gate_up[] = {{&block.gate, rows(gate, inter)}, {&block.up, rows(up, inter)}};
      st.linear(rows(normed, d), n, gate_up);
      st.silu_mul(rows(gate, inter), rows(up, inter), n, inter);
      const Stream::LinearOutput down[] = {{&block.down, rows(normed, d)}};
      st.linear(rows(gate, inter), n, down);
      st.add(rows(x, d), rows(normed, d), n, d);
    }
  }

  // PatchMerger: ln_q per patch, the group's rows side by side, Linear → GELU (erf) → Linear.
  st.rms_norm(rows(x, d), merger_norm_, kNormEps, n, d, rows(normed, d));
  const size_t tokens = n / unit, out_size = c.out_hidden_size, merged = d * unit;
  const DeviceBuffer hidden = buffer(sizes.merged_hidden, "vision merger activations");
  const Stream::LinearOutput first[] = {{&merger0_, rows(hidden, merged)}};
  st.linear(rows(normed, merged), tokens, first);
  st.gelu(rows(hidden, merged), tokens, merged);
  const DeviceBuffer windowed = buffer(tokens * out_size, "vision output");
  const DeviceBuffer ordered = buffer(tokens * out_size, "vision output");
  const Stream::LinearOutput second[] = {{&merger2_, rows(windowed, out_size)}};
  st.linear(rows(hidden, merged), tokens, second);
  // Undo the window order: token i of the windowed sequence is merge group group_order[i].
  st.scatter_rows(rows(windowed, out_size), layout.group_order, out_size, rows(ordered, out_size));
  std::vector<float> out(tokens * out_size);
  st.copy_to_host(std::as_writable_bytes(std::span(out)), ordered, 0);
  return out;
}

}  // namespace vlmforge::vision
