#pragma once
// The Qwen2.5-VL vision tower (Qwen2_5_VisionTransformerPretrainedModel) on the CPU: patch
// embedding (the Conv3d as a matmul), 2D rotary embedding, window attention with full-attention
// blocks at fullatt_block_indexes, RMSNorm, SwiGLU MLP and the PatchMerger (ln_q + MLP), with the
// window reordering undone at the end. Weights BF16/F16/F32 used in place from the memory map,
// activations fp32, parallel on a ThreadPool.
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "io/safetensors.h"
#include "kernels/matmul.h"
#include "model/config.h"
#include "vision/vision_activations.h"
#include "model/runtime_lora.h"
#include "util/thread_pool.h"
#include "vision/image_processor.h"

namespace vlmforge::vision {

// get_window_index for one image (grid_t = 1): the merge groups (spatial_merge_size² patch rows
// each) in window order, and the window boundaries in patch rows (empty windows dropped).
struct WindowLayout {
  std::vector<uint32_t> group_order;  // window position -> merge group of the processor's order
  std::vector<size_t> boundaries;     // cumulative patch rows: 0, ..., rows
};
WindowLayout window_layout(uint32_t grid_h, uint32_t grid_w, const VisionConfig& config);

class VisionTower {
 public:
  // Reads the "visual.*" (published) or "model.visual.*" (transformers >= 4.52) tensors of
  // `checkpoint`, which must outlive the tower; checks every shape against `config.vision`.
  // `lora` (may be null; must outlive the tower): PEFT adapters on the tower's linear layers,
  // applied unmerged as in the language model.
  VisionTower(const Checkpoint& checkpoint, const ModelConfig& config, size_t threads, const RuntimeLora* lora = nullptr);

  const VisionConfig& config() const { return config_; }
  size_t output_size() const { return static_cast<size_t>(config_.out_hidden_size); }

  // Embeddings of one preprocessed image: [patches.tokens(merge), out_hidden_size], in the order of
  // the <|image_pad|> tokens they replace.
  std::vector<float> encode(const ImagePatches& patches);

 private:
  struct Block {
    kernels::WeightMatrix qkv, proj, gate, up, down;
    std::vector<float> qkv_bias, proj_bias, gate_bias, up_bias, down_bias, norm1, norm2;
  };
  // x·Wᵀ + bias with the layer's LoRA adapters, if any.
  void project(const float* x, size_t rows, const kernels::WeightMatrix& w, const std::vector<float>* bias, float* out);
  void gemm(const float* x, size_t rows, const kernels::WeightMatrix& w, const float* bias, float* out);

  VisionConfig config_;
  kernels::WeightMatrix patch_embed_{};
  std::vector<Block> blocks_;
  std::vector<float> merger_norm_, merger_bias0_, merger_bias2_;
  kernels::WeightMatrix merger0_{}, merger2_{};
  std::vector<float> inv_freq_;  // head_dim / 4 rotary frequencies per axis
  std::unordered_map<const std::byte*, const LinearAdapters*> lora_by_weight_;
  ThreadPool pool_;
};

}  // namespace vlmforge::vision
