#pragma once
// The CPU backend's stream: the op interface run by the Highway kernels of src/kernels on the
// device's thread pool, synchronously (copies and ops are done when the call returns). Its
// workspace (attention scores per worker, LoRA intermediates, the activations prepared for
// quantized products) is accounted on the device.
#include <vector>

#include "backends/cpu_device.h"
#include "backends/device_array.h"
#include "backends/stream.h"

namespace vlmforge {

// Queries of one tower attention segment that share a pass over its keys and values.
inline constexpr size_t kCpuAttentionQueryTile = 16;

// Workspace floats per worker of CpuStream::attention for a query group of `group` heads over
// `positions` positions, and of segment_attention for segments of up to `rows` rows.
inline size_t cpu_attention_scores(size_t group, size_t positions) { return group * positions; }
inline size_t cpu_segment_attention_scratch(size_t rows, size_t head_dim) {
  return kCpuAttentionQueryTile * (rows + 2 * head_dim);  // a query tile, its output and its scores
}

class CpuStream final : public Stream {
 public:
  explicit CpuStream(CpuDevice& device);

  void copy_from_host(const DeviceBuffer& dst, size_t offset, std::span<const std::byte> src) override;
  void copy_to_host(std::span<std::byte> dst, const DeviceBuffer& src, size_t offset) override;
  void copy(const DeviceBuffer& dst, size_t dst_offset, const DeviceBuffer& src, size_t src_offset,
            size_t bytes) override;
  void synchronize() override {}

  void embed(const WeightView& table, std::span<const int32_t> ids, F32Rows out) override;
  void gather_rows(F32Rows in, std::span<const uint32_t> index, size_t cols, F32Rows out) override;
  void scatter_rows(F32Rows in, std::span<const uint32_t> index, size_t cols, F32Rows out) override;
  void rms_norm(F32Rows x, const VectorView& weight, float eps, size_t rows, size_t cols, F32Rows out) override;
  void add_rms_norm(F32Rows x, F32Rows y, const VectorView& weight, float eps, size_t rows, size_t cols,
                    F32Rows out) override;
  void add(F32Rows x, F32Rows y, size_t rows, size_t cols) override;
  void silu_mul(F32Rows gate, F32Rows up, size_t rows, size_t cols) override;
  void gelu(F32Rows x, size_t rows, size_t cols) override;
  void rope(F32Rows q, size_t q_heads, F32Rows k, size_t k_heads, size_t head_dim, F32Rows cos, F32Rows sin,
            size_t rows) override;
  void linear(F32Rows x, size_t rows, std::span<const LinearOutput> outputs) override;
  void kv_store(std::span<const KvSlot> slots, F32Rows keys, F32Rows values) override;
  void attention(F32Rows q, std::span<const KvSlot> slots, const AttentionShape& shape, F32Rows out) override;
  void segment_attention(F32Rows q, F32Rows k, F32Rows v, std::span<const size_t> bounds, const AttentionShape& shape,
                         F32Rows out) override;

 private:
  float* rows_of(const F32Rows& v) const;
  const std::byte* bytes_of(const DeviceBuffer* buffer, size_t offset) const;
  template <typename Body>
  void for_rows(size_t rows, Body&& body);
  // A linear weight's bytes, checked to lie within its buffer (and quantized ones to be U8).
  const std::byte* weight_bytes(const WeightView& w) const;
  // out = x·Wᵀ (+ bias) for weight rows [0, w.rows), parallel over the weight's row tiles.
  void product(const float* x, size_t x_stride, size_t rows, const WeightView& w, const float* bias, float* out,
               size_t out_stride);
  void linear_with_adapters(F32Rows x, size_t rows, const LinearView& layer, F32Rows out);
  DeviceArray& lane_scratch(size_t lane, size_t floats);

  CpuDevice& cpu_;
  ThreadPool& pool_;
  std::vector<DeviceArray> lanes_;  // per-worker attention workspace
  DeviceArray lora_projected_, lora_delta_;
  DeviceArray quant_inputs_;  // activations prepared for quantized products (kernels/quant_matmul.h)
};

}  // namespace vlmforge
