#pragma once
// The activation memory of encoding one image with the vision tower, for the tower itself (it
// allocates exactly these buffers) and for the device planner (which has no weights loaded).
#include <cstddef>
#include <cstdint>

#include "model/config.h"

namespace vlmforge::vision {

// The fp32 buffers (in floats) encode() allocates on its device for an image of `rows` patch rows
// (scores_per_lane: the CPU stream's attention workspace per worker); bytes() is their peak total
// with `lanes` threads.
struct VisionActivations {
  size_t patches, hidden, normed, qkv, attention, mlp_gate, mlp_up, rope, scores_per_lane, merged_hidden, output;
  uint64_t bytes(size_t lanes) const;
};
VisionActivations vision_activations(const VisionConfig& config, size_t rows);

// Tokens of the largest image of at most `max_pixels` pixels (smart_resize's patch grid, merged).
uint64_t max_image_tokens(const VisionConfig& config, uint64_t max_pixels);

// Peak activation bytes of encoding one image of at most `max_pixels` pixels (the largest patch
// grid smart_resize can give), for the device planner.
uint64_t vision_activation_bytes(const VisionConfig& config, uint64_t max_pixels, size_t threads);

}  // namespace vlmforge::vision
