#pragma once
// The model the quantize-on-load tests (model and plan) load: a tiny tied-embedding Qwen2 whose
// MLP width (176) is not a multiple of 32, so down_proj stays float while the rest is quantized.
#include "model/random_checkpoint.h"

namespace vlmforge::test {

inline ModelConfig quantize_on_load_config() {
  ModelConfig c = preset_config("tiny");
  c.intermediate_size = 176;
  c.tie_word_embeddings = true;
  return c;
}

}  // namespace vlmforge::test
