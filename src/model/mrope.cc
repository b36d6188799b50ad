#include "model/mrope.h"

#include <algorithm>

#include "util/error.h"

namespace vlmforge {

MropePositions mrope_positions(std::span<const int32_t> tokens, std::span<const ImageGrid> grids, const ModelConfig& c) {
  const int32_t image_token = c.image_token_id;
  const uint32_t merge = c.vision ? static_cast<uint32_t>(c.vision->spatial_merge_size) : 2;
  MropePositions out;
  out.positions.reserve(tokens.size());
  int64_t next = 0;  // the position after everything so far (max + 1)
  size_t image = 0;
  for (size_t i = 0; i < tokens.size();) {
    if (tokens[i] != image_token) {
      out.positions.push_back({next, next, next});
      ++next, ++i;
      continue;
    }
    if (image >= grids.size())
      throw Error("the prompt has more images (<|image_pad|> runs) than image grids (" + std::to_string(grids.size()) + ")");
    const ImageGrid g = grids[image++];
    const uint32_t gh = g.h / merge, gw = g.w / merge;
    const size_t count = size_t{g.t} * gh * gw;
    if (i + count > tokens.size() || std::any_of(tokens.begin() + i, tokens.begin() + i + count, [&](int32_t t) { return t != image_token; }))
      throw Error("image " + std::to_string(image) + " needs " + std::to_string(count) +
                  " consecutive <|image_pad|> tokens in the prompt");
    // Images have second_per_grid_t = 0, so every frame's t is 0.
    int64_t largest = next;
    for (uint32_t t = 0; t < g.t; ++t)
      for (uint32_t y = 0; y < gh; ++y)
        for (uint32_t x = 0; x < gw; ++x) {
          out.positions.push_back({next, next + y, next + x});
          largest = std::max(largest, next + std::max<int64_t>(y, x));
        }
    next = largest + 1;
    i += count;
  }
  if (image != grids.size())
    throw Error("the prompt has " + std::to_string(image) + " images (<|image_pad|> runs) but " +
                std::to_string(grids.size()) + " image grids");
  out.delta = next - static_cast<int64_t>(tokens.size());
  return out;
}

}  // namespace vlmforge
