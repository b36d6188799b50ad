#pragma once
// Causal self-attention of one query position over a sequence's KV cache, for the query heads of
// one GQA group at once: each key and value row is loaded (and converted from bf16) once and used
// by every head of the group. SIMD via Highway with runtime dispatch.
#include <cstddef>
#include <cstdint>

#include "io/dtype.h"

namespace vlmforge::kernels {

struct KvRows {
  DType dtype;            // F32 or BF16
  const std::byte* keys;  // rows of `stride` elements; this kv head starts at element `offset`
  const std::byte* values;
  size_t stride;
  size_t offset;
  // Paged: position p is row block_table[p / block_size] * block_size + p % block_size; null: row p.
  const uint32_t* block_table = nullptr;
  size_t block_size = 0;
};

// For g < group: out[g] = Σ_p softmax_p(scale · q[g]·K[p]) · V[p] over positions p < length.
// q and out are [group, head_dim]; scores is scratch of group × length floats.
void attend(const float* q, size_t group, size_t head_dim, const KvRows& kv, size_t length, float scale,
            float* scores, float* out);

}  // namespace vlmforge::kernels
