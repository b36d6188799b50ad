#include "model/activations.h"

namespace vlmforge {

LayerActivations layer_activations(const ModelConfig& c, size_t rows) {
  const size_t hidden = c.hidden_size, inter = c.intermediate_size, head_dim = c.head_dim();
  const size_t kv_dim = static_cast<size_t>(c.num_key_value_heads) * head_dim;
  return {.x = rows * hidden, .normed = rows * hidden, .q = rows * hidden, .k = rows * kv_dim, .v = rows * kv_dim,
          .attention = rows * hidden, .projected = rows * hidden, .gate = rows * inter, .up = rows * inter,
          .cos = rows * head_dim / 2, .sin = rows * head_dim / 2};
}

}  // namespace vlmforge
