#pragma once
// Qwen2.5-VL's multimodal rotary positions (Qwen2_5_VLModel.get_rope_index, images only): text
// tokens advance all three positions (t, h, w) together; an image's merged tokens take
// t = 0, h = row, w = column, offset by the position after the preceding text; text after an
// image continues from the largest position so far + 1.
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"

namespace vlmforge {

struct ImageGrid {
  uint32_t t = 1, h = 0, w = 0;  // image_grid_thw, in patches
};

struct MropePositions {
  std::vector<std::array<int64_t, 3>> positions;  // per token
  int64_t delta = 0;  // generated token at cache slot p has position p + delta (rope_deltas)
};

// `grids`: one per run of <|image_pad|> tokens, in order; each run must hold t·h·w / merge² tokens.
// Throws Error when the runs and the grids disagree.
MropePositions mrope_positions(std::span<const int32_t> tokens, std::span<const ImageGrid> grids, const ModelConfig& config);

}  // namespace vlmforge
