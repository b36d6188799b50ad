#pragma once
// Qwen2 / Qwen2.5 causal language model (Qwen2ForCausalLM): every step runs through the backend op
// interface (backends/stream.h) on the devices of its placement, one stream per device; weights
// BF16, F16 or F32 as stored (lent from the memory map where the device addresses host memory)
// or AWQ / GPTQ quantized linears repacked into the device quant layout, activations and
// accumulation in fp32.
#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "backends/cpu_device.h"
#include "backends/device_array.h"
#include "backends/stream.h"
#include "kernels/quantize.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/device_weights.h"
#include "model/kv_cache.h"
#include "model/runtime_lora.h"
#include "model/stage_link.h"

namespace vlmforge {

struct Qwen2Layer {
  LinearView q, k, v, o, gate, up, down;
  VectorView input_norm, post_attention_norm;
};

// Tokens of one sequence to run: appended to `cache` at positions cache->length() onwards.
struct SequenceChunk {
  KvCache* cache;
  std::span<const int32_t> tokens;
  bool all_logits = false;  // logits for every token (scoring) instead of the last only
  // Qwen2.5-VL: embedding rows (hidden_size floats each) that replace, in order, the embeddings of
  // the tokens equal to config().image_token_id — the vision tower's output.
  std::span<const float> image_embeds = {};
  // Rotary positions (t, h, w) per token, M-RoPE (get_rope_index). Empty: all three are the cache
  // slot + position_delta (text after the images continues from the largest position + 1).
  std::span<const std::array<int64_t, 3>> positions = {};
  int64_t position_delta = 0;
};

// Where each part of the model runs: its weights, KV cache and activations are buffers of that
// device and its ops run on the device's stream. The devices must outlive the model.
struct ModelPlacement {
  Device* embed = nullptr;
  std::vector<Device*> layers;
  Device* norm = nullptr;
  Device* head = nullptr;
  Device* vision = nullptr;  // Qwen2.5-VL's tower (run by the engine; null: the embedding device)
  // KV caches hold max_model_len from the start (--device_map runs fail at the start, not
  // midway) instead of growing with the sequence.
  bool preallocate_kv = true;
  // A pipeline stage (engine/pipeline.h): `layers` are layers first_layer.. of the model; embed is
  // null on every stage but the first, norm and head on every stage but the last. The first
  // stage's `next_stage` (must outlive the model) runs the layers after its own.
  size_t first_layer = 0;
  StageLink* next_stage = nullptr;
};

class Qwen2Model {
 public:
  // Loads config.json and the checkpoint in `model_dir`; checks every tensor's presence and shape.
  // `adapter_dirs`: PEFT LoRA adapters applied unmerged (see RuntimeLora). Without `placement`
  // the model runs on one host device of its own with `threads` threads, KV caches grown with
  // the sequence.
  // `quantize_on_load`: the decoder's and lm_head's float linears quantized while loading
  // (--quant_method q8_0 / q4_0; refused for an AWQ / GPTQ checkpoint).
  Qwen2Model(const std::filesystem::path& model_dir, size_t threads,
             const std::vector<std::filesystem::path>& adapter_dirs = {}, const ModelPlacement* placement = nullptr,
             std::optional<kernels::QuantScheme> quantize_on_load = std::nullopt);

  const ModelConfig& config() const { return config_; }
  const Checkpoint& checkpoint() const { return checkpoint_; }
  const RuntimeLora* lora() const { return lora_.get(); }  // the adapters given, or null
  size_t vocab_size() const { return static_cast<size_t>(config_.vocab_size); }
  // The device of the embedding layer: where image embeddings enter (and where a tower runs
  // without a placement of its own).
  Device& embedding_device() const { return *contexts_[embed_context_]->device; }
  KvCache make_cache(size_t max_tokens) const;
  // A pool of `blocks` KV blocks of kKvBlockSize positions on the layers' devices, in the caches'
  // dtype, for paged caches (KvCache(pool, max_tokens)).
  KvBlockPool make_block_pool(size_t blocks, bool prefix_caching) const;
  // Storage of the caches make_cache returns: DType::F32 (default) or DType::BF16.
  void set_kv_cache_dtype(DType dtype);

  // Runs all chunks together (each weight matrix is read once for all their tokens) and returns
  // logits: for each chunk its last token's row, or every token's row when all_logits.
  std::vector<float> forward(std::span<const SequenceChunk> chunks);

  // A later pipeline stage: runs its layers on the hidden states of `batch` against its mirrors of
  // the first stage's KV caches (created on first use, freed as released). Returns the logits on
  // the last stage (as forward), the hidden states leaving this stage otherwise.
  std::vector<float> forward_stage(const StageBatch& batch);
  bool last_stage() const { return has_head_; }

 private:
  // A device the model runs on: its stream and activations, kept between calls so decode steps
  // do not allocate.
  struct Scratch {
    explicit Scratch(Device* d)
        : x(d, "hidden states"), normed(d, "activations"), q(d, "activations"), k(d, "activations"),
          v(d, "activations"), attn(d, "activations"), tmp(d, "activations"), gate(d, "MLP activations"),
          up(d, "MLP activations"), cos(d, "rope tables"), sin(d, "rope tables"), image(d, "image embeddings"),
          final_rows(d, "final norm rows"), logits(d, "logits") {}
    DeviceArray x, normed, q, k, v, attn, tmp, gate, up, cos, sin, image, final_rows, logits;
  };
  struct Context {
    Device* device;
    std::unique_ptr<Stream> stream;
    Scratch scratch;
    bool holds_layers = false;
  };
  size_t context_of(Device* device);
  void load_weights(const ModelPlacement& placement, const std::optional<kernels::QuantScheme>& quantize_on_load);
  // One row per token of a step: its cache slot and rotary position per M-RoPE axis.
  struct Row {
    KvCache* cache;
    size_t position;
    std::array<int64_t, 3> rope;  // all equal for text
  };
  void embed_tokens(std::span<const SequenceChunk> chunks, size_t rows);
  // The step's rope tables and activations on every device holding layers, then this stage's
  // layers over the hidden states in the first layer's device's x; returns the context they end on.
  size_t run_layers(std::span<const Row> rows, size_t start_context);
  // The stream of each layer's device, in layer order (what KV caches and pools live on).
  std::vector<Stream*> layer_streams() const;
  // The final norm and lm_head over `logit_rows` of the n rows of hidden states in context `current`'s x.
  std::vector<float> logits(std::span<const uint32_t> logit_rows, size_t n, size_t current);
  // Copies `count` floats of `from`'s array `member` to the same array of `to`.
  void hand_over(Context& from, Context& to, DeviceArray Scratch::*member, size_t count);

  ModelConfig config_;
  Checkpoint checkpoint_;
  std::unique_ptr<RuntimeLora> lora_;
  std::unique_ptr<CpuDevice> host_;  // the device of runs without a placement
  std::vector<std::unique_ptr<Context>> contexts_;
  std::unique_ptr<DeviceWeights> weights_;  // destroyed before the devices and streams it uses
  WeightView embed_table_{};
  LinearView lm_head_{};
  std::vector<Qwen2Layer> layers_;
  VectorView final_norm_{};
  std::vector<float> inv_freq_;  // RoPE frequencies, head_dim / 2
  std::vector<uint8_t> rope_axis_;  // M-RoPE: which position (t, h, w) each frequency uses (mrope_section)
  DType kv_cache_dtype_ = DType::F32;
  bool preallocate_kv_ = false;
  std::vector<size_t> layer_context_;
  size_t embed_context_ = 0, norm_context_ = 0, head_context_ = 0;
  size_t first_layer_ = 0;
  bool has_embed_ = true, has_head_ = true;
  StageLink* next_stage_ = nullptr;
  // make_cache is const (sequences hold a const model); ids and releases are the pipeline's bookkeeping.
  mutable std::mutex released_mutex_;  // caches may be created and destroyed on other threads than the stepping one
  mutable uint64_t next_cache_id_ = 1;
  mutable std::vector<uint64_t> released_caches_;
  std::unordered_map<uint64_t, KvCache> stage_caches_;  // a later stage's mirrors, by the first stage's id
  std::vector<float> staging_;     // host copy of activations handed between devices
  std::vector<float> rope_host_;   // cos and sin for this step's positions, computed on the host
};

}  // namespace vlmforge
