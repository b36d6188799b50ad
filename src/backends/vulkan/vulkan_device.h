#pragma once
// A Vulkan compute device (vulkan:0, vulkan:1, …): device-local buffers the host cannot address,
// uploads and downloads through a host-visible staging buffer, one compute queue, and the
// compute pipelines of the op interface (GLSL compiled to SPIR-V at build time, embedded).
// Buffers are reached from shaders by device address (Vulkan 1.2 bufferDeviceAddress), so a
// DeviceBuffer's data() holds the buffer's device address, which only this backend interprets.
//
// Buffers are sub-allocated from large blocks. Every stream of a device records and submits under
// the device's one lock, and a buffer is freed only after every stream's queued work has run (so a grown workspace or KV cache never
// frees memory a recorded command still reads).
#include <vulkan/vulkan.h>

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "backends/device.h"
#include "backends/registry.h"

namespace vlmforge {

// The compute shaders of the op interface (shaders/*.comp).
enum class VulkanShader { kEmbed, kRows, kNorm, kEltwise, kRope, kMatmul, kMatmulTiled, kMatmulQuant, kKvStore, kAttention, kCount };

// The process's Vulkan instance and its physical devices; shared by the devices it opens.
class VulkanInstance {
 public:
  // Throws an Error saying why when no instance can be made (no ICD installed, ...).
  VulkanInstance();
  ~VulkanInstance();
  VulkanInstance(const VulkanInstance&) = delete;
  VulkanInstance& operator=(const VulkanInstance&) = delete;

  VkInstance handle() const { return instance_; }
  // Devices with Vulkan 1.2, bufferDeviceAddress and 16-bit storage (the others cannot run the shaders).
  const std::vector<VkPhysicalDevice>& devices() const { return devices_; }
  // Devices present but unusable, with the reason ("llvmpipe: no bufferDeviceAddress").
  const std::vector<std::string>& skipped() const { return skipped_; }

 private:
  VkInstance instance_ = VK_NULL_HANDLE;
  std::vector<VkPhysicalDevice> devices_;
  std::vector<std::string> skipped_;
};

class VulkanStream;

// A host-visible, mapped buffer (staging copies, a stream's small per-op arrays).
struct VulkanHostBuffer {
  VkDevice device = VK_NULL_HANDLE;
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  std::byte* mapped = nullptr;
  uint64_t address = 0;
  size_t size = 0;
  VulkanHostBuffer() = default;
  VulkanHostBuffer(VulkanHostBuffer&& other) noexcept { *this = std::move(other); }
  VulkanHostBuffer& operator=(VulkanHostBuffer&& other) noexcept;
  ~VulkanHostBuffer();
};

class VulkanDevice : public Device {
 public:
  VulkanDevice(std::shared_ptr<const VulkanInstance> instance, int index, VkPhysicalDevice physical,
               std::optional<uint64_t> cap);
  ~VulkanDevice() override;

  MemoryInfo memory() const override;
  DeviceCaps caps() const override { return {.host_addressable = false, .async = true, .alignment = 256}; }
  std::unique_ptr<Stream> open_stream() override;
  void copy_from_host(const DeviceBuffer& dst, size_t offset, std::span<const std::byte> src) override;
  void copy_to_host(std::span<std::byte> dst, const DeviceBuffer& src, size_t offset) override;
  const std::string& description() const { return description_; }

  // --- for VulkanStream
  // The device address of byte `offset` of `buffer`; throws unless the buffer is this device's.
  uint64_t address(const DeviceBuffer* buffer, size_t offset) const;
  struct Resolved {
    VkBuffer buffer;
    VkDeviceSize offset;
  };
  Resolved resolve(const DeviceBuffer& buffer, size_t offset) const;
  VkDevice handle() const { return device_; }
  VkPipelineLayout pipeline_layout() const { return layout_; }
  VkPipeline pipeline(VulkanShader shader);
  uint32_t queue_family() const { return queue_family_; }
  // Submits one recorded command buffer and waits for it (under the lock).
  void submit_and_wait(VkCommandBuffer commands, VkFence fence);
  VulkanHostBuffer host_buffer(size_t bytes, std::string_view what) const;
  std::recursive_mutex& lock() const { return lock_; }
  void add_stream(VulkanStream* stream);
  void remove_stream(VulkanStream* stream);

 protected:
  bool may_allocate(size_t bytes) const override;
  std::byte* raw_allocate(size_t bytes) override;
  void raw_free(std::byte* data, size_t bytes) override;

 private:
  // A driver allocation that buffers are carved from (first fit, neighbours coalesced on free),
  // so a model's hundreds of small tensors cost a few driver allocations, far below
  // maxMemoryAllocationCount; it goes back to the driver once nothing in it is held.
  struct Block {
    VkBuffer buffer;
    VkDeviceMemory memory;
    uint64_t address;
    size_t size;
    size_t used = 0;
    std::map<size_t, size_t> free;  // offset → bytes
  };
  // The block holding `address` (an engine bug when there is none).
  template <typename Blocks>
  static auto& block_of(Blocks& blocks, uint64_t address, const std::string& device);
  uint32_t memory_type(uint32_t allowed, VkMemoryPropertyFlags wanted, VkMemoryPropertyFlags fallback) const;
  // Runs `record` on the device's transfer command buffer, submitted and waited for.
  template <typename Record>
  void transfer(Record&& record);

  std::shared_ptr<const VulkanInstance> instance_;
  VkPhysicalDevice physical_;
  std::optional<uint64_t> cap_;
  std::string description_;
  VkPhysicalDeviceMemoryProperties memory_properties_{};
  bool memory_budget_ = false;  // VK_EXT_memory_budget
  VkDevice device_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkQueue queue_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  std::array<VkPipeline, static_cast<size_t>(VulkanShader::kCount)> pipelines_{};
  VkCommandPool transfer_pool_ = VK_NULL_HANDLE;
  VkCommandBuffer transfer_commands_ = VK_NULL_HANDLE;
  VkFence transfer_fence_ = VK_NULL_HANDLE;
  VulkanHostBuffer staging_;
  mutable std::recursive_mutex lock_;
  std::map<uint64_t, Block> blocks_;  // by device address
  uint64_t max_allocation_ = 0;       // maxMemoryAllocationSize
  std::set<VulkanStream*> streams_;
};

// Enumerates vulkan devices; present in builds with Vulkan (VLMFORGE_WITH_VULKAN).
class VulkanBackend : public DeviceBackend {
 public:
  VulkanBackend();
  std::string type() const override { return "vulkan"; }
  std::string visible_devices_variable() const override { return ""; }
  std::optional<size_t> physical_count() const override { return instance_ ? instance_->devices().size() : 0; }
  MemoryInfo query(int physical_index) const override;
  std::unique_ptr<Device> open(const DeviceSpec& spec, int physical_index, std::optional<uint64_t> cap,
                               size_t threads) const override;
  std::string describe(int physical_index) const override;
  std::string unavailable() const override { return unavailable_; }

 private:
  std::shared_ptr<const VulkanInstance> instance_;
  std::string unavailable_;
};

// Throws an Error naming the call and the VkResult unless it succeeded.
void vk_check(VkResult result, const char* call);

}  // namespace vlmforge
