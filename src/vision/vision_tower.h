#pragma once
// The Qwen2.5-VL vision tower (Qwen2_5_VisionTransformerPretrainedModel), placed on a device like
// any layer and run through its stream's ops: patch embedding (the Conv3d as a linear layer), 2D
// rotary embedding, window attention with full-attention blocks at fullatt_block_indexes,
// RMSNorm, SwiGLU MLP and the PatchMerger (ln_q + MLP), with the window reordering undone at the
// end. Weights BF16/F16/F32 as stored, activations fp32 in accounted buffers of the device.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backends/stream.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/device_weights.h"
#include "model/runtime_lora.h"
#include "vision/image_processor.h"
#include "vision/vision_activations.h"

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
  // applied unmerged as in the language model. Runs on `device` (which must outlive the tower),
  // sharing its threads with whatever else runs there.
  VisionTower(const Checkpoint& checkpoint, const ModelConfig& config, Device& device, const RuntimeLora* lora = nullptr);

  Device& device() const { return stream_->device(); }

  const VisionConfig& config() const { return config_; }
  size_t output_size() const { return static_cast<size_t>(config_.out_hidden_size); }

  // Embeddings of one preprocessed image: [patches.tokens(merge), out_hidden_size], in the order of
  // the <|image_pad|> tokens they replace. `stop` (may be empty) is asked before each block: true
  // throws Cancelled once the work queued so far has run, so every buffer of the call is released.
  std::vector<float> encode(const ImagePatches& patches, const std::function<bool()>& stop = {});

 private:
  struct Block {
    LinearView qkv, proj, gate, up, down;
    VectorView norm1, norm2;
  };

  VisionConfig config_;
  std::unique_ptr<Stream> stream_;
  DeviceWeights weights_;
  LinearView patch_embed_;
  std::vector<Block> blocks_;
  VectorView merger_norm_;
  LinearView merger0_, merger2_;
  std::vector<float> inv_freq_;  // head_dim / 4 rotary frequencies per axis
};

}  // namespace vlmforge::vision
