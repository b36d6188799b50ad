#include "model/qwen2.h"

#include <algorithm>
#include <cmath>

#include "backends/transfer.h"
#include "model/activations.h"
#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

constexpr const char* kSupported =
    "Qwen2ForCausalLM (Qwen2, Qwen2.5, Qwen2.5-Coder/Math; model_type qwen2), Qwen2_5_VLForConditionalGeneration";

F32Rows rows_of(const DeviceArray& a, size_t stride) { return {&a.buffer(), 0, stride}; }

}  // namespace

Qwen2Model::Qwen2Model(const fs::path& model_dir, size_t threads, const std::vector<fs::path>& adapter_dirs,
                       const ModelPlacement* placement, std::optional<kernels::QuantScheme> quantize_on_load)
    : config_(ModelConfig::load(model_dir)), checkpoint_(model_dir) {
  if (quantize_on_load && config_.quantization)
    throw UsageError(model_dir.string() + " is already quantized (" + config_.quantization->describe() +
                     "); drop --quant_method to run it as it is");
  if (!adapter_dirs.empty())
    lora_ = std::make_unique<RuntimeLora>(checkpoint_, adapter_dirs,
                                          config_.quantization ? &*config_.quantization : nullptr);
  const bool vision_language = config_.model_type == "qwen2_5_vl" || config_.architecture == "Qwen2_5_VLForConditionalGeneration";
  if (config_.model_type != "qwen2" && config_.architecture != "Qwen2ForCausalLM" && !vision_language)
    throw Error(model_dir.string() + ": unsupported architecture '" +
                (config_.architecture.empty() ? config_.model_type : config_.architecture) + "'; supported: " + kSupported);
  // Qwen2.5-VL's rope_scaling {"type": "mrope"} (transformers rewrites it to "default") only
  // splits the frequencies between the t/h/w positions.
  const bool mrope = !config_.mrope_section.empty() &&
                     (config_.rope_scaling_type == "mrope" || config_.rope_scaling_type == "default");
  if (!config_.rope_scaling_type.empty() && config_.rope_scaling_type != "default" && !mrope)
    throw Error(model_dir.string() + "/config.json: rope_scaling type '" + config_.rope_scaling_type +
                "' is not implemented yet (supported: none/default, mrope); remove rope_scaling to run at the native context length");
  for (int axis = 0; axis < static_cast<int>(config_.mrope_section.size()) && mrope; ++axis)
    rope_axis_.insert(rope_axis_.end(), static_cast<size_t>(std::max(config_.mrope_section[axis], 0)), static_cast<uint8_t>(axis % 3));
  if (mrope && rope_axis_.size() != static_cast<size_t>(config_.head_dim() / 2))
    throw Error(model_dir.string() + "/config.json: mrope_section sums to " + std::to_string(rope_axis_.size()) +
                ", expected head_dim / 2 = " + std::to_string(config_.head_dim() / 2));
  rope_axis_.resize(static_cast<size_t>(config_.head_dim() / 2), 0);
  const size_t head_dim = static_cast<size_t>(config_.head_dim());
  for (size_t i = 0; i < head_dim / 2; ++i)
    inv_freq_.push_back(static_cast<float>(1.0 / std::pow(config_.rope_theta, static_cast<double>(2 * i) / head_dim)));
  if (placement) {
    load_weights(*placement, quantize_on_load);
    return;
  }
  host_ = std::make_unique<CpuDevice>(0, std::nullopt, threads);
  ModelPlacement one_device{host_.get(), std::vector<Device*>(static_cast<size_t>(config_.num_hidden_layers), host_.get()),
                            host_.get(), host_.get(), nullptr, false};
  load_weights(one_device, quantize_on_load);
}

size_t Qwen2Model::context_of(Device* device) {
  for (size_t c = 0; c < contexts_.size(); ++c)
    if (contexts_[c]->device == device) return c;
  contexts_.push_back(std::make_unique<Context>(Context{device, device->open_stream(), Scratch(device)}));
  return contexts_.size() - 1;
}

void Qwen2Model::load_weights(const ModelPlacement& p, const std::optional<kernels::QuantScheme>& quantize_on_load) {
  const size_t layer_count = static_cast<size_t>(config_.num_hidden_layers);
  const bool last = p.first_layer + p.layers.size() == layer_count;
  // A first stage that is not also the last needs the link to the others; later stages are
  // driven by the pipeline through forward_stage.
  if (p.layers.empty() || p.first_layer + p.layers.size() > layer_count || (p.embed != nullptr) != (p.first_layer == 0) ||
      last != (p.norm != nullptr) || last != (p.head != nullptr) || (p.next_stage != nullptr) != (p.embed && !last))
    throw Error("internal error: the placement does not cover every part of the model");
  preallocate_kv_ = p.preallocate_kv;
  first_layer_ = p.first_layer;
  next_stage_ = p.next_stage;
  has_embed_ = p.embed != nullptr;
  has_head_ = p.head != nullptr;
  const uint64_t hidden = config_.hidden_size, inter = config_.intermediate_size, vocab = config_.vocab_size;
  const uint64_t kv_dim = static_cast<uint64_t>(config_.num_key_value_heads) * config_.head_dim();
  const std::string prefix = checkpoint_.find("model.embed_tokens.weight") ? "model." : "model.language_model.";
  weights_ = std::make_unique<DeviceWeights>(checkpoint_, lora_.get(), config_.quantization, "config.json");
  DeviceWeights& w = *weights_;
  if (quantize_on_load) w.quantize_on_load(*quantize_on_load);
  if (p.embed) embed_table_ = w.matrix(*p.embed, prefix + "embed_tokens.weight", vocab, hidden, "embed_tokens weights");
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const size_t l = p.first_layer + i;
    Device& d = *p.layers[i];
    const std::string n = prefix + "layers." + std::to_string(l) + ".", what = "layer " + std::to_string(l) + " weights";
    Qwen2Layer layer;
    layer.q = w.linear(d, n + "self_attn.q_proj", hidden, hidden, true, what);
    layer.k = w.linear(d, n + "self_attn.k_proj", kv_dim, hidden, true, what);
    layer.v = w.linear(d, n + "self_attn.v_proj", kv_dim, hidden, true, what);
    layer.o = w.linear(d, n + "self_attn.o_proj", hidden, hidden, false, what);
    layer.gate = w.linear(d, n + "mlp.gate_proj", inter, hidden, false, what);
    layer.up = w.linear(d, n + "mlp.up_proj", inter, hidden, false, what);
    layer.down = w.linear(d, n + "mlp.down_proj", hidden, inter, false, what);
    layer.input_norm = w.vector(d, n + "input_layernorm.weight", hidden, what);
    layer.post_attention_norm = w.vector(d, n + "post_attention_layernorm.weight", hidden, what);
    layers_.push_back(std::move(layer));
    layer_context_.push_back(context_of(&d));
    contexts_[layer_context_.back()]->holds_layers = true;
  }
  if (p.embed) embed_context_ = context_of(p.embed);
  if (!last) return;
  final_norm_ = w.vector(*p.norm, prefix + "norm.weight", hidden, "final norm");
  if (config_.tie_word_embeddings || !checkpoint_.find("lm_head.weight")) {
    if (!config_.tie_word_embeddings)
      throw Error(checkpoint_.root().string() +
                  ": model is missing tensor 'lm_head.weight' (config.json says tie_word_embeddings=false)");
    // Quantize-on-load gives the tied lm_head a quantized copy of its own (logits read the whole
    // matrix every step; an embedding reads one row per token and stays as stored), unless
    // adapters change the embedding; the copy may live on another device. The last stage of a
    // pipeline holds no embeddings: it loads the matrix (or that copy) again.
    const bool copy = w.quantizes(hidden) && !w.adapted(prefix + "embed_tokens");
    if (copy)
      lm_head_.weight = w.quantized_copy(*p.head, prefix + "embed_tokens.weight", vocab, hidden,
                                         "lm_head weights (tied, quantized)");
    else if (!p.embed)
      lm_head_.weight = w.matrix(*p.head, prefix + "embed_tokens.weight", vocab, hidden, "lm_head weights (tied)");
    else if (p.head != p.embed)
      throw Error("lm_head is tied to embed_tokens (one matrix) and must be on the same device");
    else
      lm_head_.weight = embed_table_;
  } else {
    lm_head_ = w.linear(*p.head, "lm_head", vocab, hidden, false, "lm_head weights");
  }
  norm_context_ = context_of(p.norm);
  head_context_ = context_of(p.head);
}

void Qwen2Model::hand_over(Context& from, Context& to, DeviceArray Scratch::*member, size_t count) {
  DeviceArray& dst = to.scratch.*member;
  dst.ensure(count);
  copy_between_devices(*from.stream, (from.scratch.*member).buffer(), *to.stream, dst.buffer(), count * sizeof(float),
                       staging_);
}

KvCache Qwen2Model::make_cache(size_t max_tokens) const {
  const size_t kv_dim = static_cast<size_t>(config_.num_key_value_heads * config_.head_dim());
  KvCache cache(layer_streams(), kv_dim, max_tokens, kv_cache_dtype_, preallocate_kv_);
  if (next_stage_) {
    const std::lock_guard lock(released_mutex_);
    cache.set_stage_id(next_cache_id_++, [this](uint64_t id) {
      const std::lock_guard lock(released_mutex_);
      released_caches_.push_back(id);
    });
  }
  return cache;
}

KvBlockPool Qwen2Model::make_block_pool(size_t blocks, bool prefix_caching) const {
  const size_t kv_dim = static_cast<size_t>(config_.num_key_value_heads * config_.head_dim());
  return KvBlockPool(layer_streams(), kv_dim, kv_cache_dtype_, blocks, kKvBlockSize, prefix_caching);
}

std::vector<Stream*> Qwen2Model::layer_streams() const {
  std::vector<Stream*> streams;
  for (size_t c : layer_context_) streams.push_back(contexts_[c]->stream.get());
  return streams;
}

void Qwen2Model::set_kv_cache_dtype(DType dtype) {
  if (dtype != DType::F32 && dtype != DType::BF16) throw Error("KV cache dtype must be float32 or bfloat16");
  kv_cache_dtype_ = dtype;
}

// Token embeddings into the embedding device's x, image embeddings over the <|image_pad|> rows.
void Qwen2Model::embed_tokens(std::span<const SequenceChunk> chunks, size_t n) {
  const size_t hidden = config_.hidden_size;
  Context& ctx = *contexts_[embed_context_];
  std::vector<int32_t> ids;
  std::vector<uint32_t> image_rows;
  std::vector<float> image_values;
  for (const auto& c : chunks) {
    size_t image_row = 0;
    for (int32_t token : c.tokens) {
      if (token < 0 || static_cast<uint64_t>(token) >= embed_table_.rows)
        throw Error("token id " + std::to_string(token) + " is outside the vocabulary (size " +
                    std::to_string(embed_table_.rows) + ")");
      if (token == config_.image_token_id && !c.image_embeds.empty()) {
        if ((image_row + 1) * hidden > c.image_embeds.size())
          throw Error("the prompt has more <|image_pad|> tokens than image embeddings (" +
                      std::to_string(c.image_embeds.size() / hidden) + ")");
        image_rows.push_back(static_cast<uint32_t>(ids.size()));
        ++image_row;
      }
      ids.push_back(token);
    }
    if (image_row * hidden != c.image_embeds.size())
      throw Error("the prompt has " + std::to_string(image_row) + " <|image_pad|> tokens but " +
                  std::to_string(c.image_embeds.size() / hidden) + " image embeddings");
    image_values.insert(image_values.end(), c.image_embeds.begin(), c.image_embeds.end());
  }
  ctx.scratch.x.ensure(n * hidden);
  ctx.stream->embed(embed_table_, ids, rows_of(ctx.scratch.x, hidden));
  if (image_rows.empty()) return;
  ctx.scratch.image.ensure(image_values.size());
  ctx.stream->copy_from_host(ctx.scratch.image.buffer(), 0, std::as_bytes(std::span(image_values)));
  ctx.stream->scatter_rows(rows_of(ctx.scratch.image, hidden), image_rows, hidden, rows_of(ctx.scratch.x, hidden));
  ctx.stream->synchronize();  // image_values is a local
}

std::vector<float> Qwen2Model::forward(std::span<const SequenceChunk> chunks) {
  if (!has_embed_) throw Error("internal error: a later pipeline stage runs forward_stage, not forward");
  std::vector<Row> rows;
  std::vector<uint32_t> logit_rows;  // the rows that give logits, for the final norm's gather
  for (const auto& c : chunks) {
    if (c.tokens.empty()) throw Error("internal error: empty sequence chunk");
    if (!c.positions.empty() && c.positions.size() != c.tokens.size())
      throw Error("internal error: " + std::to_string(c.positions.size()) + " rotary positions for " +
                  std::to_string(c.tokens.size()) + " tokens");
    c.cache->reserve_more(c.tokens.size());
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      if (c.all_logits || i + 1 == c.tokens.size()) logit_rows.push_back(static_cast<uint32_t>(rows.size()));
      const size_t slot = c.cache->length() + i;
      const int64_t p = static_cast<int64_t>(slot) + c.position_delta;
      rows.push_back({c.cache, slot, c.positions.empty() ? std::array<int64_t, 3>{p, p, p} : c.positions[i]});
    }
  }
  const size_t n = rows.size();
  embed_tokens(chunks, n);
  const size_t current = run_layers(rows, embed_context_);
  if (!next_stage_) {
    for (const auto& c : chunks) c.cache->commit(c.tokens.size());
    return logits(logit_rows, n, current);
  }
  // The stage boundary: the hidden states and what the later stages need to run their layers.
  StageBatch batch;
  {
    const std::lock_guard lock(released_mutex_);
    batch.released_caches = std::exchange(released_caches_, {});
  }
  for (const auto& c : chunks)
    batch.chunks.push_back({c.cache->stage_id(), c.cache->max_tokens(), c.cache->length(), c.tokens.size(), c.all_logits});
  for (const Row& r : rows) batch.rope.push_back(r.rope);
  batch.hidden.resize(n * config_.hidden_size);
  Context& ctx = *contexts_[current];
  ctx.stream->copy_to_host(std::as_writable_bytes(std::span(batch.hidden)), ctx.scratch.x.buffer(), 0);
  std::vector<float> out = next_stage_->forward(batch);
  // Committed only once the later stages ran too: a failed step leaves the caches as they were.
  for (const auto& c : chunks) c.cache->commit(c.tokens.size());
  return out;
}

std::vector<float> Qwen2Model::forward_stage(const StageBatch& batch) {
  const size_t hidden = config_.hidden_size;
  for (uint64_t id : batch.released_caches) stage_caches_.erase(id);
  std::vector<Row> rows;
  std::vector<uint32_t> logit_rows;
  std::vector<KvCache*> caches;
  for (const StageChunk& c : batch.chunks) {
    auto found = stage_caches_.find(c.cache_id);
    if (found == stage_caches_.end()) found = stage_caches_.emplace(c.cache_id, make_cache(c.max_tokens)).first;
    KvCache& cache = found->second;
    if (c.start == 0) cache.clear();
    if (cache.length() != c.start || c.tokens == 0)
      throw Error("internal error: pipeline cache " + std::to_string(c.cache_id) + " holds " +
                  std::to_string(cache.length()) + " positions, the first stage " + std::to_string(c.start));
    cache.reserve_more(c.tokens);
    for (size_t i = 0; i < c.tokens; ++i) {
      if (c.all_logits || i + 1 == c.tokens) logit_rows.push_back(static_cast<uint32_t>(rows.size()));
      if (rows.size() >= batch.rope.size()) throw Error("internal error: pipeline batch with fewer positions than rows");
      rows.push_back({&cache, cache.length() + i, batch.rope[rows.size()]});
    }
    caches.push_back(&cache);
  }
  const size_t n = rows.size();
  if (batch.rope.size() != n || batch.hidden.size() != n * hidden)
    throw Error("internal error: pipeline batch of " + std::to_string(n) + " rows with " +
                std::to_string(batch.hidden.size()) + " hidden values");
  const size_t first = layer_context_.front();
  Context& in = *contexts_[first];
  in.scratch.x.ensure(n * hidden);
  in.stream->copy_from_host(in.scratch.x.buffer(), 0, std::as_bytes(std::span(batch.hidden)));
  const size_t current = run_layers(rows, first);
  for (size_t i = 0; i < caches.size(); ++i) caches[i]->commit(batch.chunks[i].tokens);
  if (has_head_) return logits(logit_rows, n, current);
  std::vector<float> out(n * hidden);
  Context& ctx = *contexts_[current];
  ctx.stream->copy_to_host(std::as_writable_bytes(std::span(out)), ctx.scratch.x.buffer(), 0);
  return out;
}

size_t Qwen2Model::run_layers(std::span<const Row> rows, size_t start_context) {
  const size_t hidden = config_.hidden_size, inter = config_.intermediate_size;
  const size_t heads = config_.num_attention_heads, kv_heads = config_.num_key_value_heads;
  const size_t head_dim = config_.head_dim(), kv_dim = kv_heads * head_dim, half = head_dim / 2;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const AttentionShape shape{heads, kv_heads, head_dim, 1.0f / std::sqrt(static_cast<float>(head_dim))};
  const size_t n = rows.size();

  // cos/sin per row for its position, computed once on the host and copied to each device
  // holding layers.
  rope_host_.resize(2 * n * half);
  for (size_t r = 0; r < n; ++r)
    for (size_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(rows[r].rope[rope_axis_[i]]) * inv_freq_[i];
      rope_host_[r * half + i] = static_cast<float>(std::cos(angle));
      rope_host_[(n + r) * half + i] = static_cast<float>(std::sin(angle));
    }
  // Grown to the largest step seen, never shrunk: decode steps reuse the prefill's buffers.
  const LayerActivations sizes = layer_activations(config_, n);
  for (auto& c : contexts_)
    if (c->holds_layers) {
      Scratch& s = c->scratch;
      for (auto [array, floats] : {std::pair{&s.x, sizes.x}, {&s.normed, sizes.normed}, {&s.q, sizes.q}, {&s.k, sizes.k},
                                   {&s.v, sizes.v}, {&s.attn, sizes.attention}, {&s.tmp, sizes.projected},
                                   {&s.gate, sizes.gate}, {&s.up, sizes.up}, {&s.cos, sizes.cos}, {&s.sin, sizes.sin}})
        array->ensure(floats);
      c->stream->copy_from_host(s.cos.buffer(), 0, std::as_bytes(std::span(rope_host_.data(), n * half)));
      c->stream->copy_from_host(s.sin.buffer(), 0, std::as_bytes(std::span(rope_host_.data() + n * half, n * half)));
    }

  std::vector<KvSlot> slots(n);
  size_t current = start_context;
  for (size_t l = 0; l < layers_.size(); ++l) {
    // Entering another device's context hands the hidden states over.
    if (layer_context_[l] != current) {
      hand_over(*contexts_[current], *contexts_[layer_context_[l]], &Scratch::x, n * hidden);
      current = layer_context_[l];
    }
    Stream& st = *contexts_[current]->stream;
    Scratch& s = contexts_[current]->scratch;
    const Qwen2Layer& layer = layers_[l];
    const F32Rows x = rows_of(s.x, hidden), normed = rows_of(s.normed, hidden), q = rows_of(s.q, hidden);
    const F32Rows k = rows_of(s.k, kv_dim), v = rows_of(s.v, kv_dim), attn = rows_of(s.attn, hidden);
    const F32Rows tmp = rows_of(s.tmp, hidden), gate = rows_of(s.gate, inter), up = rows_of(s.up, inter);
    // Layers after the first on the same device got their input norm fused into the previous
    // layer's last residual add.
    if (l == 0 || layer_context_[l - 1] != current) st.rms_norm(x, layer.input_norm, eps, n, hidden, normed);
    const Stream::LinearOutput qkv[] = {{&layer.q, q}, {&layer.k, k}, {&layer.v, v}};
    st.linear(normed, n, qkv);
    st.rope(q, heads, k, kv_heads, head_dim, rows_of(s.cos, half), rows_of(s.sin, half), n);
    for (size_t r = 0; r < n; ++r) slots[r] = {rows[r].cache->layer(l), rows[r].position};
    st.kv_store(slots, k, v);
    st.attention(q, slots, shape, attn);
    const Stream::LinearOutput o[] = {{&layer.o, tmp}};
    st.linear(attn, n, o);
    st.add_rms_norm(x, tmp, layer.post_attention_norm, eps, n, hidden, normed);
    const Stream::LinearOutput gate_up[] = {{&layer.gate, gate}, {&layer.up, up}};
    st.linear(normed, n, gate_up);
    st.silu_mul(gate, up, n, inter);
    const Stream::LinearOutput down[] = {{&layer.down, tmp}};
    st.linear(gate, n, down);
    if (l + 1 < layers_.size() && layer_context_[l + 1] == current)
      st.add_rms_norm(x, tmp, layers_[l + 1].input_norm, eps, n, hidden, normed);
    else
      st.add(x, tmp, n, hidden);
  }
  return current;
}

std::vector<float> Qwen2Model::logits(std::span<const uint32_t> logit_rows, size_t n, size_t current) {
  const size_t hidden = config_.hidden_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  // The final norm over the rows that give logits only.
  const size_t m = logit_rows.size();
  if (norm_context_ != current) {
    hand_over(*contexts_[current], *contexts_[norm_context_], &Scratch::x, n * hidden);
    current = norm_context_;
  }
  {
    Context& c = *contexts_[current];
    c.scratch.final_rows.ensure(m * hidden);
    c.stream->gather_rows(rows_of(c.scratch.x, hidden), logit_rows, hidden, rows_of(c.scratch.final_rows, hidden));
    c.stream->rms_norm(rows_of(c.scratch.final_rows, hidden), final_norm_, eps, m, hidden,
                       rows_of(c.scratch.final_rows, hidden));
  }
  if (head_context_ != current) {
    hand_over(*contexts_[current], *contexts_[head_context_], &Scratch::final_rows, m * hidden);
    current = head_context_;
  }
  Context& head = *contexts_[current];
  const size_t vocab = lm_head_.out_features();
  std::vector<float> logits(m * vocab);
  if (head.device->caps().host_addressable) {
    // The result vector itself is the output buffer: no copy of m × vocab floats.
    const DeviceBuffer out = head.device->wrap_host(std::as_bytes(std::span(logits)), "logits");
    const Stream::LinearOutput direct[] = {{&lm_head_, {&out, 0, vocab}}};
    head.stream->linear(rows_of(head.scratch.final_rows, hidden), m, direct);
    head.stream->synchronize();
    return logits;
  }
  head.scratch.logits.ensure(m * vocab);
  const Stream::LinearOutput staged[] = {{&lm_head_, rows_of(head.scratch.logits, vocab)}};
  head.stream->linear(rows_of(head.scratch.final_rows, hidden), m, staged);
  head.stream->copy_to_host(std::as_writable_bytes(std::span(logits)), head.scratch.logits.buffer(), 0);
  return logits;
}

}  // namespace vlmforge
