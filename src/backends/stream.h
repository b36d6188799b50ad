#pragma once
// The backend op interface: what a device must run for the Qwen2 language model and the
// Qwen2.5-VL vision tower (in the spirit of ggml-backend's backend/stream: a queue on one device
// that takes copies and ops in order). Model code describes its tensors with the views below and
// calls these ops; only a backend ever reads or writes the memory behind a DeviceBuffer.
//
// Activations are fp32. Weights are BF16, F16 or F32 [rows, cols] row-major, as stored.
// Work submitted to a stream runs in submission order; copy_to_host returns once the data is on
// the host (so it waits for the work before it); synchronize() waits for everything.
// Ops refuse buffers of another device and cache slots past a cache's end (an Error: a placement
// or engine bug, never bad user input). Row indices (embed ids, gather/scatter indices) and view
// extents are the caller's to keep in range. Outputs may alias inputs row for row (out == x).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "backends/device.h"
#include "io/dtype.h"
#include "kernels/quant_format.h"

namespace vlmforge {

// fp32 rows in a device buffer: row r starts `offset + r * stride` floats into `buffer`.
struct F32Rows {
  const DeviceBuffer* buffer = nullptr;
  size_t offset = 0;  // floats
  size_t stride = 0;  // floats between rows
  // The same rows, `floats` further along each row (a column block such as qkv's keys).
  F32Rows columns_from(size_t floats) const { return {buffer, offset + floats, stride}; }
  // Rows from `first` onwards.
  F32Rows rows_from(size_t first) const { return {buffer, offset + first * stride, stride}; }
};

// A stored matrix [rows, cols] starting `offset` bytes into `buffer`: BF16/F16/F32 values, or,
// when quant.quantized(), group-quantized codes in kernels/quant_format.h's layout (dtype U8).
struct WeightView {
  const DeviceBuffer* buffer = nullptr;
  size_t offset = 0;  // bytes
  DType dtype = DType::F32;
  size_t rows = 0, cols = 0;
  kernels::QuantLayout quant;
  size_t bytes() const {
    return quant.quantized() ? quant.bytes(rows, cols) : rows * cols * (dtype_info(dtype).bits / 8);
  }
};

// Throws unless a quantized view is U8 bytes and the view fits its buffer (a placement or
// loader bug otherwise): every backend checks weights this way before reading them.
void check_weight_view(const WeightView& w, const std::string& device);

// `size` fp32 parameters (a norm weight, a bias, DoRA factors); size 0 means none.
struct VectorView {
  const DeviceBuffer* buffer = nullptr;
  size_t offset = 0;  // floats
  size_t size = 0;
  bool empty() const { return size == 0; }
};

// One LoRA adapter of a linear layer: y += scale · (x·Aᵀ)·Bᵀ, A [rank, in], B [out, rank].
struct LoraView {
  WeightView a, b;
  float scale = 1;
};

// A linear layer: y = x·Wᵀ + Σ LoRA deltas, each output scaled by DoRA's factor, then + bias
// (which DoRA leaves unscaled, as the merged model computes).
struct LinearView {
  WeightView weight;
  VectorView bias;
  std::vector<LoraView> loras;
  VectorView dora_factor;
  size_t out_features() const { return weight.rows; }
  size_t in_features() const { return weight.cols; }
};

// One layer's cache of one sequence: rows of kv_dim keys and values of `dtype` (F32, BF16).
// A paged cache (a block pool's buffers, shared by many sequences) keeps position p in row
// block_table[p / block_size] * block_size + p % block_size; without a block table position p is
// row p (a buffer of the sequence's own).
struct KvView {
  DType dtype = DType::F32;
  const DeviceBuffer* keys = nullptr;
  const DeviceBuffer* values = nullptr;
  size_t kv_dim = 0;
  std::span<const uint32_t> block_table = {};
  size_t block_size = 0;
  bool paged() const { return !block_table.empty(); }
  // The buffer row of `position` (inside the table: check_kv_slots checks that).
  size_t row(size_t position) const {
    return paged() ? size_t{block_table[position / block_size]} * block_size + position % block_size : position;
  }
};

// A token row's place in its sequence's cache: it writes position `position` and attends over
// positions [0, position].
struct KvSlot {
  KvView cache;
  size_t position = 0;
};

// The shape of grouped-query attention.
struct AttentionShape {
  size_t heads = 0, kv_heads = 0, head_dim = 0;
  float scale = 1;
};

// Throws unless every slot's cache buffers belong to `device` and hold every row the slot reaches:
// its position, and for a paged cache every block of [0, position] in its table (a placement or
// engine bug otherwise).
void check_kv_slots(std::span<const KvSlot> slots, const Device& device);

class Stream {
 public:
  virtual ~Stream() = default;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  Device& device() const { return device_; }

  // --- copies (queued; `src` must stay valid until synchronize() on an async device)
  virtual void copy_from_host(const DeviceBuffer& dst, size_t offset, std::span<const std::byte> src) = 0;
  virtual void copy_to_host(std::span<std::byte> dst, const DeviceBuffer& src, size_t offset) = 0;
  // Within this device.
  virtual void copy(const DeviceBuffer& dst, size_t dst_offset, const DeviceBuffer& src, size_t src_offset,
                    size_t bytes) = 0;
  virtual void synchronize() = 0;

  // --- ops
  // out[i] = table[ids[i]] as fp32 (ids are checked by the caller).
  virtual void embed(const WeightView& table, std::span<const int32_t> ids, F32Rows out) = 0;
  // out[i] = in[index[i]] (gather) / out[index[i]] = in[i] (scatter), `cols` floats per row.
  virtual void gather_rows(F32Rows in, std::span<const uint32_t> index, size_t cols, F32Rows out) = 0;
  virtual void scatter_rows(F32Rows in, std::span<const uint32_t> index, size_t cols, F32Rows out) = 0;
  // out = x / sqrt(mean(x²) + eps) · weight, per row.
  virtual void rms_norm(F32Rows x, const VectorView& weight, float eps, size_t rows, size_t cols, F32Rows out) = 0;
  // x += y, then out = rms_norm(x) (the residual add that ends a sub-layer and the next norm).
  virtual void add_rms_norm(F32Rows x, F32Rows y, const VectorView& weight, float eps, size_t rows, size_t cols,
                            F32Rows out) = 0;
  // x += y.
  virtual void add(F32Rows x, F32Rows y, size_t rows, size_t cols) = 0;
  // gate = silu(gate) · up (SwiGLU).
  virtual void silu_mul(F32Rows gate, F32Rows up, size_t rows, size_t cols) = 0;
  // x = GELU(x) with erf (the patch merger's nn.GELU()).
  virtual void gelu(F32Rows x, size_t rows, size_t cols) = 0;
  // Rotary embedding ("rotate half") in place on the first q_heads heads of q and k_heads of k,
  // with per-row cos/sin of head_dim / 2 values (any position scheme: 1D, M-RoPE, the tower's 2D).
  virtual void rope(F32Rows q, size_t q_heads, F32Rows k, size_t k_heads, size_t head_dim, F32Rows cos, F32Rows sin,
                    size_t rows) = 0;
  // Linear layers of one input [rows, in], in one pass over the device (q/k/v, gate/up).
  struct LinearOutput {
    const LinearView* linear;
    F32Rows out;
  };
  virtual void linear(F32Rows x, size_t rows, std::span<const LinearOutput> outputs) = 0;
  // Writes row r's keys and values (kv_dim floats each) at slots[r], converting to the cache dtype.
  virtual void kv_store(std::span<const KvSlot> slots, F32Rows keys, F32Rows values) = 0;
  // Causal attention of row r's query heads over its cache slots [0, slots[r].position]; query
  // head h reads KV head h / (heads / kv_heads) (heads a multiple of kv_heads).
  virtual void attention(F32Rows q, std::span<const KvSlot> slots, const AttentionShape& shape, F32Rows out) = 0;
  // Bidirectional attention within segments of rows [bounds[s], bounds[s+1]) (the tower's windows,
  // or the whole image): q, k, v and out are [rows, heads · head_dim]; k and v share a stride.
  virtual void segment_attention(F32Rows q, F32Rows k, F32Rows v, std::span<const size_t> bounds,
                                 const AttentionShape& shape, F32Rows out) = 0;

 protected:
  explicit Stream(Device& device) : device_(device) {}

 private:
  Device& device_;
};

}  // namespace vlmforge
