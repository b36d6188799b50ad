#pragma once
// The activation memory of one forward step of the language model, for the model (its devices
// allocate exactly these buffers) and for the device planner (which has no weights loaded).
#include <cstddef>

#include "model/config.h"

namespace vlmforge {

// fp32 buffers, in floats, of a device that runs decoder layers on `rows` token rows.
struct LayerActivations {
  size_t x, normed, q, k, v, attention, projected, gate, up, cos, sin;
  size_t floats() const { return x + normed + q + k + v + attention + projected + gate + up + cos + sin; }
};
LayerActivations layer_activations(const ModelConfig& config, size_t rows);

}  // namespace vlmforge
