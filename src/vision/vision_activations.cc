#include "vision/vision_activations.h"

#include <algorithm>

#include "backends/cpu_stream.h"

namespace vlmforge::vision {

VisionActivations vision_activations(const VisionConfig& c, size_t rows) {
  const size_t d = c.hidden_size, unit = size_t(c.spatial_merge_size) * c.spatial_merge_size;
  const size_t k = size_t(c.in_channels) * c.temporal_patch_size * c.patch_size * c.patch_size;
  const size_t head_dim = d / c.num_heads;
  return {.patches = rows * k,
          .hidden = rows * d,
          .normed = rows * d,
          .qkv = rows * 3 * d,
          .attention = rows * d,
          .mlp_gate = rows * c.intermediate_size,
          .mlp_up = rows * c.intermediate_size,
          .rope = rows * head_dim,  // cos and sin, head_dim / 2 each
          .scores_per_lane = cpu_segment_attention_scratch(rows, head_dim),
          .merged_hidden = rows / unit * d * unit,
          .output = rows / unit * c.out_hidden_size * 2};  // the merger's output and the reordered copy
}

uint64_t VisionActivations::bytes(size_t lanes) const {
  // encode() holds the patches, the hidden state and the rotary tables throughout, and its stream
  // keeps the attention workspace; the block buffers are freed before the merger's are allocated
  // (the patch embedding's output is freed before the block buffers exist and is smaller).
  const size_t blocks = normed + qkv + attention + mlp_gate + mlp_up;
  const size_t merger = normed + merged_hidden + output;
  return uint64_t{patches + hidden + rope + scores_per_lane * lanes + std::max(blocks, merger)} * sizeof(float);
}

uint64_t max_image_tokens(const VisionConfig& c, uint64_t max_pixels) {
  const uint64_t patch_area = uint64_t(c.patch_size) * c.patch_size;
  const uint64_t unit = uint64_t(c.spatial_merge_size) * c.spatial_merge_size;
  // smart_resize keeps height·width <= max_pixels (when max_pixels >= 28·28), so at most this many patches.
  return std::max<uint64_t>(max_pixels / patch_area / unit, 1);
}

uint64_t vision_activation_bytes(const VisionConfig& c, uint64_t max_pixels, size_t threads) {
  const uint64_t unit = uint64_t(c.spatial_merge_size) * c.spatial_merge_size;
  const uint64_t rows = max_image_tokens(c, max_pixels) * unit;
  return vision_activations(c, rows).bytes(threads == 0 ? 1 : threads);
}

}  // namespace vlmforge::vision
