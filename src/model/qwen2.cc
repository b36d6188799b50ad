#include "model/qwen2.h"

#include <algorithm>
#include <cmath>

#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/ops.h"
#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

constexpr const char* kSupported =
    "Qwen2ForCausalLM (Qwen2, Qwen2.5, Qwen2.5-Coder/Math; model_type qwen2), Qwen2_5_VLForConditionalGeneration";

class WeightLoader {
 public:
  // Replacement tensors and LoRA layers come from `lora` (may be null); LoRA layers found are
  // recorded in `lora_by_weight`, keyed by the weight's data pointer.
  WeightLoader(const Checkpoint& ckpt, std::string prefix, const RuntimeLora* lora,
               std::unordered_map<const std::byte*, const LinearAdapters*>& lora_by_weight)
      : ckpt_(ckpt), prefix_(std::move(prefix)), lora_(lora), lora_by_weight_(lora_by_weight) {}

  const TensorRef& get(const std::string& name, const std::vector<uint64_t>& shape) const {
    const TensorRef* t = lora_ ? lora_->replacement(name) : nullptr;
    if (!t) t = ckpt_.find(name);
    if (!t) throw Error(ckpt_.root().string() + ": model is missing tensor '" + name + "'");
    if (t->info->shape != shape) {
      std::string want = "[";
      for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
      throw Error(ckpt_.root().string() + ": tensor '" + name + "' has shape " + t->info->shape_string() +
                  ", expected " + want + "] from config.json");
    }
    if (!is_compute_float(t->info->dtype))
      throw Error(ckpt_.root().string() + ": tensor '" + name + "' is " + std::string(dtype_name(t->info->dtype)) +
                  "; only BF16, F16 and F32 weights are supported");
    return *t;
  }
  kernels::WeightMatrix matrix(const std::string& name, uint64_t rows, uint64_t cols) const {
    const TensorRef& t = get(prefix_ + name, {rows, cols});
    if (const LinearAdapters* layer = lora_ ? lora_->find(prefix_ + name) : nullptr)
      lora_by_weight_[t.data().data()] = layer;
    return {t.info->dtype, t.data().data(), rows, cols};
  }
  // A bias also receives the lora_B biases of its layer's adapters.
  std::vector<float> vector(const std::string& name, uint64_t n) const {
    std::vector<float> v = kernels::tensor_to_f32(get(prefix_ + name, {n}));
    const std::string weight = name.size() > 5 && name.ends_with(".bias") ? name.substr(0, name.size() - 5) + ".weight" : "";
    if (const LinearAdapters* layer = lora_ && !weight.empty() ? lora_->find(prefix_ + weight) : nullptr)
      for (size_t i = 0; i < layer->bias_delta.size(); ++i) v[i] += layer->bias_delta[i];
    return v;
  }
  bool has(const std::string& name) const { return ckpt_.find(name) != nullptr; }

 private:
  const Checkpoint& ckpt_;
  std::string prefix_;
  const RuntimeLora* lora_;
  std::unordered_map<const std::byte*, const LinearAdapters*>& lora_by_weight_;
};

}  // namespace

Qwen2Model::Qwen2Model(const fs::path& model_dir, size_t threads, const std::vector<fs::path>& adapter_dirs,
                       const ModelPlacement* placement)
    : config_(ModelConfig::load(model_dir)), checkpoint_(model_dir) {
  if (!adapter_dirs.empty()) lora_ = std::make_unique<RuntimeLora>(checkpoint_, adapter_dirs);
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
  const uint64_t hidden = config_.hidden_size, inter = config_.intermediate_size, vocab = config_.vocab_size;
  const uint64_t kv_dim = static_cast<uint64_t>(config_.num_key_value_heads) * config_.head_dim();
  const WeightLoader w(checkpoint_, checkpoint_.find("model.embed_tokens.weight") ? "model." : "model.language_model.",
                       lora_.get(), lora_by_weight_);
  embed_tokens_ = w.matrix("embed_tokens.weight", vocab, hidden);
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    Qwen2Layer layer;
    layer.q = w.matrix(p + "self_attn.q_proj.weight", hidden, hidden);
    layer.k = w.matrix(p + "self_attn.k_proj.weight", kv_dim, hidden);
    layer.v = w.matrix(p + "self_attn.v_proj.weight", kv_dim, hidden);
    layer.o = w.matrix(p + "self_attn.o_proj.weight", hidden, hidden);
    layer.q_bias = w.vector(p + "self_attn.q_proj.bias", hidden);
    layer.k_bias = w.vector(p + "self_attn.k_proj.bias", kv_dim);
    layer.v_bias = w.vector(p + "self_attn.v_proj.bias", kv_dim);
    layer.gate = w.matrix(p + "mlp.gate_proj.weight", inter, hidden);
    layer.up = w.matrix(p + "mlp.up_proj.weight", inter, hidden);
    layer.down = w.matrix(p + "mlp.down_proj.weight", hidden, inter);
    layer.input_norm = w.vector(p + "input_layernorm.weight", hidden);
    layer.post_attention_norm = w.vector(p + "post_attention_layernorm.weight", hidden);
    layers_.push_back(std::move(layer));
  }
  final_norm_ = w.vector("norm.weight", hidden);
  if (config_.tie_word_embeddings || !w.has("lm_head.weight")) {
    if (!config_.tie_word_embeddings)
      throw Error(model_dir.string() + ": model is missing tensor 'lm_head.weight' (config.json says tie_word_embeddings=false)");
    lm_head_ = embed_tokens_;
  } else {
    const WeightLoader top(checkpoint_, "", lora_.get(), lora_by_weight_);
    lm_head_ = top.matrix("lm_head.weight", vocab, hidden);
  }
  const size_t head_dim = static_cast<size_t>(config_.head_dim());
  for (size_t i = 0; i < head_dim / 2; ++i)
    inv_freq_.push_back(static_cast<float>(1.0 / std::pow(config_.rope_theta, static_cast<double>(2 * i) / head_dim)));
  if (placement) {
    place_weights(*placement);
  } else {
    host_ = std::make_unique<CpuDevice>(0, std::nullopt, threads);
    embed_context_ = norm_context_ = head_context_ = context_of(host_.get());
    layer_context_.assign(layers_.size(), embed_context_);
    contexts_[embed_context_]->holds_layers = true;
  }
}

size_t Qwen2Model::context_of(Device* device) {
  for (size_t c = 0; c < contexts_.size(); ++c)
    if (contexts_[c]->device == device) return c;
  if (!device->host_pool())
    throw Error(device->name() + ": its backend brings no Qwen2 kernels yet, so the model cannot run there "
                "(see docs/backends.md)");
  contexts_.push_back(std::make_unique<Context>(Context{device, device->host_pool(), Scratch(device)}));
  return contexts_.size() - 1;
}

void Qwen2Model::place_weights(const ModelPlacement& p) {
  if (p.layers.size() != layers_.size() || !p.embed || !p.norm || !p.head)
    throw Error("internal error: the placement does not cover every part of the model");
  const bool tied = lm_head_.data == embed_tokens_.data;
  if (tied && p.head != p.embed)
    throw Error("lm_head is tied to embed_tokens (one matrix) and must be on the same device");
  auto upload = [&](kernels::WeightMatrix& w, Device* device, const std::string& what) {
    const size_t bytes = w.rows * w.cols * (dtype_info(w.dtype).bits / 8);
    DeviceBuffer b = device->upload({w.data, bytes}, what);
    if (const auto it = lora_by_weight_.find(w.data); it != lora_by_weight_.end()) {
      const LinearAdapters* adapters = it->second;
      lora_by_weight_.erase(it);
      lora_by_weight_[b.data()] = adapters;
    }
    w.data = b.data();
    placed_weights_.push_back(std::move(b));
  };
  upload(embed_tokens_, p.embed, "embed_tokens weights");
  if (tied) lm_head_ = embed_tokens_;
  else upload(lm_head_, p.head, "lm_head weights");
  for (size_t l = 0; l < layers_.size(); ++l) {
    Qwen2Layer& layer = layers_[l];
    const std::string what = "layer " + std::to_string(l) + " weights";
    for (kernels::WeightMatrix* w : {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate, &layer.up, &layer.down})
      upload(*w, p.layers[l], what);
    layer_context_.push_back(context_of(p.layers[l]));
    contexts_[layer_context_.back()]->holds_layers = true;
  }
  layer_devices_ = p.layers;
  // Nothing reads the memory map any more: drop its pages so the host holds one copy, not two.
  for (const TensorRef& t : checkpoint_.tensors()) t.release();
  embed_context_ = context_of(p.embed);
  norm_context_ = context_of(p.norm);
  head_context_ = context_of(p.head);
}

void Qwen2Model::hand_over(Context& from, Context& to, DeviceArray Scratch::*member, size_t count) {
  DeviceArray& dst = to.scratch.*member;
  dst.ensure(count);
  if (staging_.size() < count) staging_.resize(count);
  const auto bytes = std::as_writable_bytes(std::span(staging_.data(), count));
  from.device->copy_to_host(bytes, (from.scratch.*member).buffer(), 0);
  to.device->copy_from_host(dst.buffer(), 0, bytes);
}

KvCache Qwen2Model::make_cache(size_t max_tokens) const {
  const size_t kv_dim = static_cast<size_t>(config_.num_key_value_heads * config_.head_dim());
  if (!layer_devices_.empty()) return KvCache(layer_devices_, kv_dim, max_tokens, kv_cache_dtype_);
  return KvCache(layers_.size(), kv_dim, max_tokens, kv_cache_dtype_);
}

void Qwen2Model::set_kv_cache_dtype(DType dtype) {
  if (dtype != DType::F32 && dtype != DType::BF16) throw Error("KV cache dtype must be float32 or bfloat16");
  kv_cache_dtype_ = dtype;
}

void Qwen2Model::embed(int32_t token, float* out) const {
  if (token < 0 || static_cast<uint64_t>(token) >= embed_tokens_.rows)
    throw Error("token id " + std::to_string(token) + " is outside the vocabulary (size " +
                std::to_string(embed_tokens_.rows) + ")");
  const size_t row_bytes = embed_tokens_.cols * (dtype_info(embed_tokens_.dtype).bits / 8);
  kernels::to_f32(embed_tokens_.dtype, embed_tokens_.data + static_cast<size_t>(token) * row_bytes, out,
                  embed_tokens_.cols);
}

void Qwen2Model::matmul(const float* x, size_t tokens, const kernels::WeightMatrix& w, const std::vector<float>* bias,
                        float* out) {
  if (const auto lora = lora_by_weight_.find(w.data); lora != lora_by_weight_.end())
    return matmul_with_lora(x, tokens, w, *lora->second, bias, out);
  project(x, tokens, w, bias ? bias->data() : nullptr, out);
}

void Qwen2Model::project(const float* x, size_t tokens, const kernels::WeightMatrix& w, const float* bias, float* out) {
  // Split output rows across threads in groups of 4 (the kernel's tile height).
  const size_t groups = (w.rows + 3) / 4;
  pool_->parallel_for(groups, [&](size_t begin, size_t end) {
    kernels::matmul_rows(x, tokens, w.cols, w, bias, out, w.rows, begin * 4, std::min(end * 4, w.rows));
  });
}

void Qwen2Model::matmul_same_input(const float* x, size_t tokens, std::span<const Product> products) {
  size_t groups = 0;
  for (const Product& p : products) {
    if (lora_by_weight_.contains(p.w->data)) {
      for (const Product& each : products) matmul(x, tokens, *each.w, each.bias, each.out);
      return;
    }
    groups += (p.w->rows + 3) / 4;
  }
  // Row groups of all products laid end to end; each thread's range may span several products.
  pool_->parallel_for(groups, [&](size_t begin, size_t end) {
    size_t first = 0;
    for (const Product& p : products) {
      const size_t count = (p.w->rows + 3) / 4;
      const size_t from = std::max(begin, first), to = std::min(end, first + count);
      if (from < to)
        kernels::matmul_rows(x, tokens, p.w->cols, *p.w, p.bias ? p.bias->data() : nullptr, p.out, p.w->rows,
                             (from - first) * 4, std::min((to - first) * 4, p.w->rows));
      first += count;
    }
  });
}

// y = x·Wᵀ + Σ s·(x·Aᵀ)·Bᵀ, DoRA rows scaled, then the bias (which DoRA leaves unscaled).
void Qwen2Model::matmul_with_lora(const float* x, size_t tokens, const kernels::WeightMatrix& w,
                                  const LinearAdapters& layer, const std::vector<float>* bias, float* out) {
  project(x, tokens, w, nullptr, out);
  std::vector<float> projected, delta(tokens * w.rows);
  for (const LinearLora& l : layer.loras) {
    projected.resize(tokens * l.rank);
    project(x, tokens, {DType::F32, reinterpret_cast<const std::byte*>(l.a.data()), l.rank, w.cols}, nullptr,
            projected.data());
    project(projected.data(), tokens, {DType::F32, reinterpret_cast<const std::byte*>(l.b.data()), w.rows, l.rank},
            nullptr, delta.data());
    for (size_t i = 0; i < delta.size(); ++i) out[i] += l.scale * delta[i];
  }
  for (size_t t = 0; t < tokens; ++t)
    for (size_t o = 0; o < w.rows; ++o) {
      float& y = out[t * w.rows + o];
      if (!layer.dora_factor.empty()) y *= layer.dora_factor[o];
      if (bias) y += (*bias)[o];
    }
}

std::vector<float> Qwen2Model::forward(std::span<const SequenceChunk> chunks) {
  const size_t hidden = config_.hidden_size, inter = config_.intermediate_size;
  const size_t heads = config_.num_attention_heads, kv_heads = config_.num_key_value_heads;
  const size_t head_dim = config_.head_dim(), kv_dim = kv_heads * head_dim;
  const size_t group = heads / kv_heads;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const float attn_scale = 1.0f / std::sqrt(static_cast<float>(head_dim));

  // One row per token across all chunks.
  struct Row {
    KvCache* cache;
    size_t position;                // cache slot
    std::array<int64_t, 3> rope;    // rotary position per M-RoPE axis (all equal for text)
  };
  std::vector<Row> rows;
  std::vector<size_t> logit_rows;
  for (const auto& c : chunks) {
    if (c.tokens.empty()) throw Error("internal error: empty sequence chunk");
    if (!c.positions.empty() && c.positions.size() != c.tokens.size())
      throw Error("internal error: " + std::to_string(c.positions.size()) + " rotary positions for " +
                  std::to_string(c.tokens.size()) + " tokens");
    c.cache->reserve_more(c.tokens.size());
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      if (c.all_logits || i + 1 == c.tokens.size()) logit_rows.push_back(rows.size());
      const size_t slot = c.cache->length() + i;
      const int64_t p = static_cast<int64_t>(slot) + c.position_delta;
      rows.push_back({c.cache, slot, c.positions.empty() ? std::array<int64_t, 3>{p, p, p} : c.positions[i]});
    }
  }
  const size_t n = rows.size();
  // Grown to the largest step seen, never shrunk: decode steps reuse the prefill's buffers.
  auto buffer = [](DeviceArray& b, size_t size) -> DeviceArray& {
    b.ensure(size);
    return b;
  };
  // Work runs in the context of the device holding the current part of the model; entering
  // another device's context hands the hidden states over.
  size_t current = embed_context_;
  pool_ = contexts_[current]->pool;
  auto enter = [&](size_t c) {
    if (c != current) hand_over(*contexts_[current], *contexts_[c], &Scratch::x, n * hidden);
    current = c;
    pool_ = contexts_[c]->pool;
  };
  // Row-parallel step over the n token rows (norms, rope, residual adds).
  auto for_rows = [&](auto&& body) {
    pool_->parallel_for(n, [&](size_t begin, size_t end) {
      for (size_t r = begin; r < end; ++r) body(r);
    });
  };
  {
    auto& x = buffer(contexts_[current]->scratch.x, n * hidden);
    size_t r = 0;
    for (const auto& c : chunks) {
      size_t image_row = 0;
      for (int32_t token : c.tokens) {
        float* out = x.data() + (r++) * hidden;
        if (token != config_.image_token_id || c.image_embeds.empty()) {
          embed(token, out);
          continue;
        }
        if ((image_row + 1) * hidden > c.image_embeds.size())
          throw Error("the prompt has more <|image_pad|> tokens than image embeddings (" +
                      std::to_string(c.image_embeds.size() / hidden) + ")");
        std::copy_n(c.image_embeds.data() + (image_row++) * hidden, hidden, out);
      }
      if (image_row * hidden != c.image_embeds.size())
        throw Error("the prompt has " + std::to_string(image_row) + " <|image_pad|> tokens but " +
                    std::to_string(c.image_embeds.size() / hidden) + " image embeddings");
    }
  }
  // cos/sin per row for its position, computed once and copied to each device holding layers.
  const size_t half = head_dim / 2;
  rope_host_.resize(2 * n * half);
  for (size_t r = 0; r < n; ++r)
    for (size_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(rows[r].rope[rope_axis_[i]]) * inv_freq_[i];
      rope_host_[r * half + i] = static_cast<float>(std::cos(angle));
      rope_host_[(n + r) * half + i] = static_cast<float>(std::sin(angle));
    }
  for (auto& c : contexts_)
    if (c->holds_layers) {
      c->device->copy_from_host(buffer(c->scratch.cos, n * half).buffer(), 0,
                                std::as_bytes(std::span(rope_host_.data(), n * half)));
      c->device->copy_from_host(buffer(c->scratch.sin, n * half).buffer(), 0,
                                std::as_bytes(std::span(rope_host_.data() + n * half, n * half)));
    }

  for (size_t l = 0; l < layers_.size(); ++l) {
    enter(layer_context_[l]);
    Scratch& s = contexts_[current]->scratch;
    auto &x = buffer(s.x, n * hidden), &normed = buffer(s.normed, n * hidden), &q = buffer(s.q, n * hidden);
    auto &k = buffer(s.k, n * kv_dim), &v = buffer(s.v, n * kv_dim), &attn = buffer(s.attn, n * hidden);
    auto &tmp = buffer(s.tmp, n * hidden), &gate = buffer(s.gate, n * inter), &up = buffer(s.up, n * inter);
    const DeviceArray &cos = s.cos, &sin = s.sin;
    const Qwen2Layer& layer = layers_[l];
    for_rows([&](size_t r) {
      kernels::rms_norm(x.data() + r * hidden, layer.input_norm.data(), eps, normed.data() + r * hidden, hidden);
    });
    const Product qkv[] = {{&layer.q, &layer.q_bias, q.data()}, {&layer.k, &layer.k_bias, k.data()},
                           {&layer.v, &layer.v_bias, v.data()}};
    matmul_same_input(normed.data(), n, qkv);
    for_rows([&](size_t r) {
      const float* c = cos.data() + r * head_dim / 2;
      const float* sn = sin.data() + r * head_dim / 2;
      for (size_t h = 0; h < heads; ++h) kernels::apply_rope(q.data() + r * hidden + h * head_dim, head_dim, c, sn);
      for (size_t h = 0; h < kv_heads; ++h) kernels::apply_rope(k.data() + r * kv_dim + h * head_dim, head_dim, c, sn);
      rows[r].cache->store(l, rows[r].position, k.data() + r * kv_dim, v.data() + r * kv_dim);
    });
    // Causal attention: row r sees positions [0, position] of its own sequence. One item per
    // (row, kv head) serves the kv head's whole query group; items are dealt round-robin to the
    // workers because later rows of a prompt attend over more positions.
    const size_t items = n * kv_heads, lanes = pool_->size();
    while (s.scores.size() < lanes) s.scores.emplace_back(contexts_[current]->device, "attention scores");
    pool_->parallel_for(lanes, [&](size_t lane_begin, size_t lane_end) {
      for (size_t lane = lane_begin; lane < lane_end; ++lane)
        for (size_t item = lane; item < items; item += lanes) {
          const size_t r = item / kv_heads, kvh = item % kv_heads;
          const Row& row = rows[r];
          const KvCache& cache = *row.cache;
          const kernels::KvRows kv{cache.dtype(), cache.keys(l), cache.values(l), kv_dim, kvh * head_dim};
          DeviceArray& scores = buffer(s.scores[lane], group * (row.position + 1));
          kernels::attend(q.data() + r * hidden + kvh * group * head_dim, group, head_dim, kv, row.position + 1,
                          attn_scale, scores.data(), attn.data() + r * hidden + kvh * group * head_dim);
        }
    });
    matmul(attn.data(), n, layer.o, nullptr, tmp.data());
    for_rows([&](size_t r) {
      kernels::add_in_place(x.data() + r * hidden, tmp.data() + r * hidden, hidden);
      kernels::rms_norm(x.data() + r * hidden, layer.post_attention_norm.data(), eps, normed.data() + r * hidden,
                        hidden);
    });
    const Product gate_up[] = {{&layer.gate, nullptr, gate.data()}, {&layer.up, nullptr, up.data()}};
    matmul_same_input(normed.data(), n, gate_up);
    for_rows([&](size_t r) { kernels::silu_mul(gate.data() + r * inter, up.data() + r * inter, inter); });
    matmul(gate.data(), n, layer.down, nullptr, tmp.data());
    for_rows([&](size_t r) { kernels::add_in_place(x.data() + r * hidden, tmp.data() + r * hidden, hidden); });
  }
  for (const auto& c : chunks) c.cache->commit(c.tokens.size());

  const size_t m = logit_rows.size();
  enter(norm_context_);
  {
    Scratch& s = contexts_[current]->scratch;
    const float* x = s.x.data();
    float* final_rows = buffer(s.final_rows, m * hidden).data();
    for (size_t i = 0; i < m; ++i)
      kernels::rms_norm(x + logit_rows[i] * hidden, final_norm_.data(), eps, final_rows + i * hidden, hidden);
  }
  if (head_context_ != current) {
    hand_over(*contexts_[current], *contexts_[head_context_], &Scratch::final_rows, m * hidden);
    current = head_context_;
    pool_ = contexts_[current]->pool;
  }
  Context& head = *contexts_[current];
  std::vector<float> logits(m * lm_head_.rows);
  if (host_) {  // runs without a placement write the logits straight into the result
    matmul(head.scratch.final_rows.data(), m, lm_head_, nullptr, logits.data());
    return logits;
  }
  DeviceArray& out = buffer(head.scratch.logits, m * lm_head_.rows);
  matmul(head.scratch.final_rows.data(), m, lm_head_, nullptr, out.data());
  head.device->copy_to_host(std::as_writable_bytes(std::span(logits)), out.buffer(), 0);
  return logits;
}

}  // namespace vlmforge
