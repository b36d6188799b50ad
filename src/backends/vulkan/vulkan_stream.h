#pragma once
// The Vulkan backend's stream: ops are recorded as compute dispatches into one command buffer
// (a barrier between consecutive dispatches, so each reads what the one before wrote) and
// submitted when the host needs a result (copy_to_host, synchronize) or a buffer is freed.
// Host-side arrays an op takes (token ids, row indices, KV slots) are copied into a host-visible
// arena that lives until the submission completes.
#include <span>
#include <vector>

#include "backends/device_array.h"
#include "backends/stream.h"
#include "backends/vulkan/vulkan_device.h"

namespace vlmforge {

class VulkanStream final : public Stream {
 public:
  explicit VulkanStream(VulkanDevice& device);
  ~VulkanStream() override;

  void copy_from_host(const DeviceBuffer& dst, size_t offset, std::span<const std::byte> src) override;
  void copy_to_host(std::span<std::byte> dst, const DeviceBuffer& src, size_t offset) override;
  void copy(const DeviceBuffer& dst, size_t dst_offset, const DeviceBuffer& src, size_t src_offset,
            size_t bytes) override;
  void synchronize() override;

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

  // Submits what is recorded and waits for it (the device calls this before freeing a buffer).
  void flush();

 private:
  uint64_t rows_address(const F32Rows& v) const { return vk_.address(v.buffer, v.offset * sizeof(float)); }
  uint64_t vector_address(const VectorView& v) const {
    return v.empty() ? 0 : vk_.address(v.buffer, v.offset * sizeof(float));
  }
  VkCommandBuffer recording();
  // Records `shader` over `groups` workgroups (x, y; x folded past 65535 where the shader
  // takes a flat index) with `push` as its push constants, then a barrier.
  template <typename Push>
  void dispatch(VulkanShader shader, const Push& push, uint32_t groups_x, uint32_t groups_y = 1);
  // Binds `shader`, pushes `push` and records a dispatch of x × y × z workgroups, then the barrier.
  template <typename Push>
  void record(VulkanShader shader, const Push& push, uint32_t x, uint32_t y, uint32_t z);
  template <typename Push>
  void dispatch_flat(VulkanShader shader, const Push& push, size_t groups);
  void barrier(VkCommandBuffer c);
  // Copies `bytes` into the arena; its device address, valid until the next flush.
  uint64_t stage(std::span<const std::byte> bytes);
  void check_slots(std::span<const KvSlot> slots) const;
  void product(uint64_t x, size_t x_stride, size_t rows, const WeightView& w, uint64_t bias, uint64_t out,
               size_t out_stride);
  void eltwise(uint32_t op, F32Rows a, uint64_t b, size_t b_stride, uint64_t factor, uint64_t bias, size_t rows,
               size_t cols, float scale);
  // `rows` spans of 4 entries (keys, values, length, block table's byte offset from the spans or 0),
  // followed by the block tables they name.
  void attend(F32Rows q, std::span<const uint64_t> spans, size_t rows, size_t kv_stride, DType dtype, size_t block_size,
              const AttentionShape& shape, F32Rows out);
  // Grows a workspace array, first running the work that may still read the old one.
  void ensure(DeviceArray& array, size_t floats);

  VulkanDevice& vk_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer commands_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  bool recording_ = false;
  VulkanHostBuffer arena_;
  size_t arena_used_ = 0;
  DeviceArray lora_projected_, lora_delta_;
};

}  // namespace vlmforge
