#include "backends/cpu_stream.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant_matmul.h"
#include "util/error.h"

namespace vlmforge {
namespace {

// The matmul kernel's tile height in weight rows.
constexpr size_t kTileRows = 4;
// Inputs of more than kBlockedRows rows go through the product in blocks of kRowBlock: the
// kernel packs all rows it is given per 512-input block, so blocks keep that packing in L2 (an
// image's thousands of patch rows would stream from memory once per weight panel).
constexpr size_t kRowBlock = 256, kBlockedRows = 512;

// A linear weight resolved for the kernels: float weights go to matmul_rows, quantized ones to
// quant_matmul_rows with the activations prepared for them once per call.
struct Operand {
  const WeightView* view;
  const std::byte* data;
  kernels::QuantInputs inputs;

  bool quantized() const { return view->quant.quantized(); }
  kernels::QuantMatrix quant() const { return {data, view->rows, view->cols, view->quant}; }
  void rows(const float* x, size_t tokens, size_t x_stride, const float* bias, float* out, size_t out_stride,
            size_t begin, size_t end) const {
    if (quantized())
      kernels::quant_matmul_rows(inputs, quant(), bias, out, out_stride, begin, end);
    else
      kernels::matmul_rows(x, tokens, x_stride, {view->dtype, data, view->rows, view->cols}, bias, out, out_stride,
                           begin, end);
  }
};

}  // namespace

CpuStream::CpuStream(CpuDevice& device)
    : Stream(device),
      cpu_(device),
      pool_(device.pool()),
      lora_projected_(&device, "LoRA activations"),
      lora_delta_(&device, "LoRA activations"),
      quant_inputs_(&device, "quantized-product inputs") {
  for (size_t i = 0; i < pool_.size(); ++i) lanes_.emplace_back(&device, "attention scores");
}

float* CpuStream::rows_of(const F32Rows& v) const {
  if (!v.buffer || v.buffer->device() != &cpu_)
    throw Error("internal error: an op on " + cpu_.name() + " was given a buffer of another device");
  return v.buffer->as<float>() + v.offset;
}

const std::byte* CpuStream::bytes_of(const DeviceBuffer* buffer, size_t offset) const {
  if (!buffer || buffer->device() != &cpu_)
    throw Error("internal error: an op on " + cpu_.name() + " was given a buffer of another device");
  return buffer->data() + offset;
}

template <typename Body>
void CpuStream::for_rows(size_t rows, Body&& body) {
  pool_.parallel_for(rows, [&](size_t begin, size_t end) {
    for (size_t r = begin; r < end; ++r) body(r);
  });
}

void CpuStream::copy_from_host(const DeviceBuffer& dst, size_t offset, std::span<const std::byte> src) {
  cpu_.copy_from_host(dst, offset, src);
}

void CpuStream::copy_to_host(std::span<std::byte> dst, const DeviceBuffer& src, size_t offset) {
  cpu_.copy_to_host(dst, src, offset);
}

void CpuStream::copy(const DeviceBuffer& dst, size_t dst_offset, const DeviceBuffer& src, size_t src_offset,
                     size_t bytes) {
  if (dst_offset + bytes > dst.size() || src_offset + bytes > src.size())
    throw Error("internal error: copy past the end of a " + cpu_.name() + " buffer");
  std::byte* to = const_cast<std::byte*>(bytes_of(&dst, dst_offset));
  if (bytes) std::memmove(to, bytes_of(&src, src_offset), bytes);
}

void CpuStream::embed(const WeightView& table, std::span<const int32_t> ids, F32Rows out) {
  const std::byte* data = bytes_of(table.buffer, table.offset);
  float* o = rows_of(out);
  const size_t row_bytes = table.cols * (dtype_info(table.dtype).bits / 8);
  for (size_t i = 0; i < ids.size(); ++i)
    kernels::to_f32(table.dtype, data + static_cast<size_t>(ids[i]) * row_bytes, o + i * out.stride, table.cols);
}

void CpuStream::gather_rows(F32Rows in, std::span<const uint32_t> index, size_t cols, F32Rows out) {
  const float* src = rows_of(in);
  float* dst = rows_of(out);
  for_rows(index.size(), [&](size_t i) { std::copy_n(src + index[i] * in.stride, cols, dst + i * out.stride); });
}

void CpuStream::scatter_rows(F32Rows in, std::span<const uint32_t> index, size_t cols, F32Rows out) {
  const float* src = rows_of(in);
  float* dst = rows_of(out);
  for_rows(index.size(), [&](size_t i) { std::copy_n(src + i * in.stride, cols, dst + index[i] * out.stride); });
}

void CpuStream::rms_norm(F32Rows x, const VectorView& weight, float eps, size_t rows, size_t cols, F32Rows out) {
  const float* xs = rows_of(x);
  const float* w = reinterpret_cast<const float*>(bytes_of(weight.buffer, weight.offset * sizeof(float)));
  float* o = rows_of(out);
  for_rows(rows, [&](size_t r) { kernels::rms_norm(xs + r * x.stride, w, eps, o + r * out.stride, cols); });
}

void CpuStream::add_rms_norm(F32Rows x, F32Rows y, const VectorView& weight, float eps, size_t rows, size_t cols,
                             F32Rows out) {
  float* xs = rows_of(x);
  const float* ys = rows_of(y);
  const float* w = reinterpret_cast<const float*>(bytes_of(weight.buffer, weight.offset * sizeof(float)));
  float* o = rows_of(out);
  for_rows(rows, [&](size_t r) {
    kernels::add_in_place(xs + r * x.stride, ys + r * y.stride, cols);
    kernels::rms_norm(xs + r * x.stride, w, eps, o + r * out.stride, cols);
  });
}

void CpuStream::add(F32Rows x, F32Rows y, size_t rows, size_t cols) {
  float* xs = rows_of(x);
  const float* ys = rows_of(y);
  for_rows(rows, [&](size_t r) { kernels::add_in_place(xs + r * x.stride, ys + r * y.stride, cols); });
}

void CpuStream::silu_mul(F32Rows gate, F32Rows up, size_t rows, size_t cols) {
  float* g = rows_of(gate);
  const float* u = rows_of(up);
  for_rows(rows, [&](size_t r) { kernels::silu_mul(g + r * gate.stride, u + r * up.stride, cols); });
}

void CpuStream::gelu(F32Rows x, size_t rows, size_t cols) {
  float* xs = rows_of(x);
  for_rows(rows, [&](size_t r) {
    for (float* v = xs + r * x.stride; v != xs + r * x.stride + cols; ++v)
      *v = 0.5f * *v * (1.0f + std::erf(*v * static_cast<float>(M_SQRT1_2)));
  });
}

void CpuStream::rope(F32Rows q, size_t q_heads, F32Rows k, size_t k_heads, size_t head_dim, F32Rows cos, F32Rows sin,
                     size_t rows) {
  float* qs = rows_of(q);
  float* ks = k_heads ? rows_of(k) : nullptr;
  const float* c = rows_of(cos);
  const float* s = rows_of(sin);
  for_rows(rows, [&](size_t r) {
    const float* cr = c + r * cos.stride;
    const float* sr = s + r * sin.stride;
    for (size_t h = 0; h < q_heads; ++h) kernels::apply_rope(qs + r * q.stride + h * head_dim, head_dim, cr, sr);
    for (size_t h = 0; h < k_heads; ++h) kernels::apply_rope(ks + r * k.stride + h * head_dim, head_dim, cr, sr);
  });
}

const std::byte* CpuStream::weight_bytes(const WeightView& w) const {
  const std::byte* data = bytes_of(w.buffer, w.offset);
  check_weight_view(w, cpu_.name());
  return data;
}

void CpuStream::product(const float* x, size_t x_stride, size_t rows, const WeightView& w, const float* bias,
                        float* out, size_t out_stride) {
  Operand op{&w, weight_bytes(w), {}};
  const size_t block = rows > kBlockedRows ? kRowBlock : rows;
  const size_t tiles = (w.rows + kTileRows - 1) / kTileRows;
  if (op.quantized()) {
    // Each row block's activations are prepared once, then shared by the threads' row tiles.
    for (size_t r0 = 0; r0 < rows; r0 += block) {
      const size_t n = std::min(block, rows - r0);
      quant_inputs_.ensure(kernels::quant_inputs_floats(op.quant(), n));
      op.inputs = kernels::prepare_quant_inputs(x + r0 * x_stride, n, x_stride, op.quant(), quant_inputs_.data());
      pool_.parallel_for(tiles, [&](size_t begin, size_t end) {
        op.rows(nullptr, n, x_stride, bias, out + r0 * out_stride, out_stride, begin * kTileRows,
                std::min(end * kTileRows, w.rows));
      });
    }
    return;
  }
  pool_.parallel_for(tiles, [&](size_t begin, size_t end) {
    for (size_t r0 = 0; r0 < rows; r0 += block)
      op.rows(x + r0 * x_stride, std::min(block, rows - r0), x_stride, bias, out + r0 * out_stride, out_stride,
              begin * kTileRows, std::min(end * kTileRows, w.rows));
  });
}

void CpuStream::linear(F32Rows x, size_t rows, std::span<const LinearOutput> outputs) {
  const float* xs = rows_of(x);
  size_t groups = 0;
  for (const LinearOutput& o : outputs) {
    if (o.linear->in_features() > x.stride)
      throw Error("internal error: linear input rows are shorter than the layer's input");
    if (!o.linear->loras.empty() || !o.linear->dora_factor.empty()) {
      for (const LinearOutput& each : outputs) linear_with_adapters(x, rows, *each.linear, each.out);
      return;
    }
    groups += (o.linear->out_features() + kTileRows - 1) / kTileRows;
  }
  if (outputs.size() == 1) {
    const LinearView& l = *outputs[0].linear;
    const float* bias = l.bias.empty() ? nullptr : reinterpret_cast<const float*>(bytes_of(l.bias.buffer, l.bias.offset * 4));
    return product(xs, x.stride, rows, l.weight, bias, rows_of(outputs[0].out), outputs[0].out.stride);
  }
  // Several products of one input in one parallel_for: one thread hand-off instead of one per
  // matrix (a measurable share of a small model's decode step). Row tiles of all products are
  // laid end to end; a thread's range may span several products.
  struct Resolved {
    Operand op;
    const float* bias;
    float* out;
    size_t out_stride;
  };
  std::vector<Resolved> resolved;
  size_t prepared_floats = 0;
  for (const LinearOutput& o : outputs) {
    const LinearView& l = *o.linear;
    resolved.push_back({{&l.weight, weight_bytes(l.weight), {}},
                        l.bias.empty() ? nullptr : reinterpret_cast<const float*>(bytes_of(l.bias.buffer, l.bias.offset * 4)),
                        rows_of(o.out), o.out.stride});
    if (resolved.back().op.quantized()) prepared_floats += kernels::quant_inputs_floats(resolved.back().op.quant(), rows);
  }
  // Each quantized product's activations (permutations differ between matrices) in one array.
  quant_inputs_.ensure(prepared_floats);
  float* scratch = quant_inputs_.data();
  for (Resolved& p : resolved)
    if (p.op.quantized()) {
      p.op.inputs = kernels::prepare_quant_inputs(xs, rows, x.stride, p.op.quant(), scratch);
      scratch += kernels::quant_inputs_floats(p.op.quant(), rows);
    }
  pool_.parallel_for(groups, [&](size_t begin, size_t end) {
    size_t first = 0;
    for (const Resolved& p : resolved) {
      const size_t count = (p.op.view->rows + kTileRows - 1) / kTileRows;
      const size_t from = std::max(begin, first), to = std::min(end, first + count);
      if (from < to)
        p.op.rows(xs, rows, x.stride, p.bias, p.out, p.out_stride, (from - first) * kTileRows,
                  std::min((to - first) * kTileRows, p.op.view->rows));
      first += count;
    }
  });
}

// y = x·Wᵀ + Σ s·(x·Aᵀ)·Bᵀ, DoRA rows scaled, then the bias (which DoRA leaves unscaled).
void CpuStream::linear_with_adapters(F32Rows x, size_t rows, const LinearView& layer, F32Rows out) {
  const float* xs = rows_of(x);
  float* o = rows_of(out);
  const size_t n_out = layer.out_features();
  product(xs, x.stride, rows, layer.weight, nullptr, o, out.stride);
  lora_delta_.ensure(rows * n_out);
  float* delta = lora_delta_.data();
  for (const LoraView& l : layer.loras) {
    lora_projected_.ensure(rows * l.a.rows);
    product(xs, x.stride, rows, l.a, nullptr, lora_projected_.data(), l.a.rows);
    product(lora_projected_.data(), l.a.rows, rows, l.b, nullptr, delta, n_out);
    for_rows(rows, [&](size_t t) {
      for (size_t i = 0; i < n_out; ++i) o[t * out.stride + i] += l.scale * delta[t * n_out + i];
    });
  }
  const float* dora = layer.dora_factor.empty() ? nullptr
      : reinterpret_cast<const float*>(bytes_of(layer.dora_factor.buffer, layer.dora_factor.offset * 4));
  const float* bias = layer.bias.empty() ? nullptr
      : reinterpret_cast<const float*>(bytes_of(layer.bias.buffer, layer.bias.offset * 4));
  if (!dora && !bias) return;
  for_rows(rows, [&](size_t t) {
    for (size_t i = 0; i < n_out; ++i) {
      float& y = o[t * out.stride + i];
      if (dora) y *= dora[i];
      if (bias) y += bias[i];
    }
  });
}

void CpuStream::kv_store(std::span<const KvSlot> slots, F32Rows keys, F32Rows values) {
  check_kv_slots(slots, cpu_);
  const float* k = rows_of(keys);
  const float* v = rows_of(values);
  for_rows(slots.size(), [&](size_t r) {
    const KvSlot& s = slots[r];
    const size_t at = s.cache.row(s.position) * s.cache.kv_dim * (dtype_info(s.cache.dtype).bits / 8);
    kernels::from_f32(s.cache.dtype, k + r * keys.stride, s.cache.keys->data() + at, s.cache.kv_dim);
    kernels::from_f32(s.cache.dtype, v + r * values.stride, s.cache.values->data() + at, s.cache.kv_dim);
  });
}

DeviceArray& CpuStream::lane_scratch(size_t lane, size_t floats) {
  lanes_[lane].ensure(floats);
  return lanes_[lane];
}

void CpuStream::attention(F32Rows q, std::span<const KvSlot> slots, const AttentionShape& shape, F32Rows out) {
  check_kv_slots(slots, cpu_);
  if (shape.kv_heads == 0 || shape.heads % shape.kv_heads != 0)
    throw Error("internal error: " + std::to_string(shape.heads) + " attention heads do not form groups of " +
                std::to_string(shape.kv_heads) + " KV heads");
  const float* qs = rows_of(q);
  float* o = rows_of(out);
  const size_t group = shape.heads / shape.kv_heads, hd = shape.head_dim;
  // One item per (row, kv head) serves the kv head's whole query group; items are dealt
  // round-robin to the workers because later rows of a prompt attend over more positions.
  const size_t items = slots.size() * shape.kv_heads, lanes = pool_.size();
  pool_.parallel_for(lanes, [&](size_t lane_begin, size_t lane_end) {
    for (size_t lane = lane_begin; lane < lane_end; ++lane)
      for (size_t item = lane; item < items; item += lanes) {
        const size_t r = item / shape.kv_heads, kvh = item % shape.kv_heads;
        const KvSlot& s = slots[r];
        const kernels::KvRows kv{s.cache.dtype, s.cache.keys->data(), s.cache.values->data(), s.cache.kv_dim, kvh * hd,
                                 s.cache.paged() ? s.cache.block_table.data() : nullptr, s.cache.block_size};
        float* scores = lane_scratch(lane, cpu_attention_scores(group, s.position + 1)).data();
        kernels::attend(qs + r * q.stride + kvh * group * hd, group, hd, kv, s.position + 1, shape.scale, scores,
                        o + r * out.stride + kvh * group * hd);
      }
  });
}

void CpuStream::segment_attention(F32Rows q, F32Rows k, F32Rows v, std::span<const size_t> bounds,
                                  const AttentionShape& shape, F32Rows out) {
  if (k.stride != v.stride) throw Error("internal error: segment attention keys and values with different strides");
  const float* qs = rows_of(q);
  const float* ks = rows_of(k);
  const float* vs = rows_of(v);
  float* o = rows_of(out);
  const size_t hd = shape.head_dim, tile = kCpuAttentionQueryTile;
  size_t longest = 0;
  // Items: (segment, head, tile of up to `tile` query rows). A tile's queries go through attend()
  // as one "group", so each key and value row is loaded once per tile, not per query.
  struct Item {
    size_t first, count, head, start, length;
  };
  std::vector<Item> items;
  for (size_t s = 0; s + 1 < bounds.size(); ++s) {
    const size_t start = bounds[s], length = bounds[s + 1] - start;
    longest = std::max(longest, length);
    for (size_t h = 0; h < shape.heads; ++h)
      for (size_t r = start; r < bounds[s + 1]; r += tile) items.push_back({r, std::min(tile, bounds[s + 1] - r), h, start, length});
  }
  const size_t lanes = pool_.size();
  for (size_t lane = 0; lane < lanes; ++lane) lane_scratch(lane, cpu_segment_attention_scratch(longest, hd));
  pool_.parallel_for(lanes, [&](size_t lane_begin, size_t lane_end) {
    for (size_t lane = lane_begin; lane < lane_end; ++lane) {
      float* q_tile = lanes_[lane].data();
      float* out_tile = q_tile + tile * hd;
      float* tile_scores = out_tile + tile * hd;
      for (size_t i = lane; i < items.size(); i += lanes) {
        const Item& it = items[i];
        for (size_t j = 0; j < it.count; ++j) std::copy_n(qs + (it.first + j) * q.stride + it.head * hd, hd, q_tile + j * hd);
        const kernels::KvRows kv{DType::F32, reinterpret_cast<const std::byte*>(ks + it.start * k.stride),
                                 reinterpret_cast<const std::byte*>(vs + it.start * v.stride), k.stride, it.head * hd};
        kernels::attend(q_tile, it.count, hd, kv, it.length, shape.scale, tile_scores, out_tile);
        for (size_t j = 0; j < it.count; ++j) std::copy_n(out_tile + j * hd, hd, o + (it.first + j) * out.stride + it.head * hd);
      }
    }
  });
}

}  // namespace vlmforge
