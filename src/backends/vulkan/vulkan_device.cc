#include "backends/vulkan/vulkan_device.h"

#include <algorithm>
#include <cstring>

#include "backends/vulkan/vulkan_stream.h"

namespace vlmforge {

namespace {

// The shaders' SPIR-V, compiled from shaders/*.comp by glslc at build time.
constexpr uint32_t kEmbedSpirv[] =
#include "embed.spv.inc"
    ;
constexpr uint32_t kRowsSpirv[] =
#include "rows.spv.inc"
    ;
constexpr uint32_t kNormSpirv[] =
#include "norm.spv.inc"
    ;
constexpr uint32_t kEltwiseSpirv[] =
#include "eltwise.spv.inc"
    ;
constexpr uint32_t kRopeSpirv[] =
#include "rope.spv.inc"
    ;
constexpr uint32_t kMatmulSpirv[] =
#include "matmul.spv.inc"
    ;
constexpr uint32_t kMatmulTiledSpirv[] =
#include "matmul_tiled.spv.inc"
    ;
constexpr uint32_t kMatmulQuantSpirv[] =
#include "matmul_quant.spv.inc"
    ;
constexpr uint32_t kKvStoreSpirv[] =
#include "kv_store.spv.inc"
    ;
constexpr uint32_t kAttentionSpirv[] =
#include "attention.spv.inc"
    ;

std::span<const uint32_t> spirv(VulkanShader shader) {
  switch (shader) {
    case VulkanShader::kEmbed: return kEmbedSpirv;
    case VulkanShader::kRows: return kRowsSpirv;
    case VulkanShader::kNorm: return kNormSpirv;
    case VulkanShader::kEltwise: return kEltwiseSpirv;
    case VulkanShader::kRope: return kRopeSpirv;
    case VulkanShader::kMatmul: return kMatmulSpirv;
    case VulkanShader::kMatmulTiled: return kMatmulTiledSpirv;
    case VulkanShader::kMatmulQuant: return kMatmulQuantSpirv;
    case VulkanShader::kKvStore: return kKvStoreSpirv;
    case VulkanShader::kAttention: return kAttentionSpirv;
    case VulkanShader::kCount: break;
  }
  throw Error("internal error: unknown vulkan shader");
}

constexpr size_t kStagingBytes = size_t{16} << 20;
// Driver allocations buffers are carved from, and the alignment of each buffer in them (a
// multiple of every minStorageBufferOffsetAlignment, and of 64 for the quantized layouts).
constexpr size_t kBlockBytes = size_t{64} << 20, kSubAlignment = 256;
constexpr uint32_t kPushConstantBytes = 128;

// What the shaders need of a device, or the first thing missing.
std::string missing_feature(VkPhysicalDevice device) {
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(device, &props);
  if (props.apiVersion < VK_API_VERSION_1_2) return "Vulkan 1.2";
  VkPhysicalDeviceVulkan11Features v11{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  VkPhysicalDeviceVulkan12Features v12{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = &v11};
  VkPhysicalDeviceFeatures2 features{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &v12};
  vkGetPhysicalDeviceFeatures2(device, &features);
  if (!v12.bufferDeviceAddress) return "bufferDeviceAddress";
  if (!v11.storageBuffer16BitAccess) return "storageBuffer16BitAccess";
  if (!v12.shaderFloat16) return "shaderFloat16";
  if (!features.features.shaderInt64) return "shaderInt64";
  if (!features.features.shaderInt16) return "shaderInt16";
  VkPhysicalDeviceSubgroupProperties subgroup{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceProperties2 props2{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &subgroup};
  vkGetPhysicalDeviceProperties2(device, &props2);
  if (!(subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) ||
      !(subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT))
    return "subgroup arithmetic in compute shaders";
  uint32_t families = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(device, &families, nullptr);
  std::vector<VkQueueFamilyProperties> family(families);
  vkGetPhysicalDeviceQueueFamilyProperties(device, &families, family.data());
  for (const auto& f : family)
    if (f.queueFlags & VK_QUEUE_COMPUTE_BIT) return "";
  return "a compute queue";
}

bool has_memory_budget(VkPhysicalDevice device) {
  uint32_t count = 0;
  vkEnumerateDeviceExtensionProperties(device, nullptr, &count, nullptr);
  std::vector<VkExtensionProperties> extensions(count);
  vkEnumerateDeviceExtensionProperties(device, nullptr, &count, extensions.data());
  return std::any_of(extensions.begin(), extensions.end(), [](const VkExtensionProperties& e) {
    return std::strcmp(e.extensionName, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME) == 0;
  });
}

// Free and total bytes of the device-local heaps: the driver's budget less what the process uses
// where VK_EXT_memory_budget is there (it sees other processes and the driver's own use), the
// heap sizes otherwise.
MemoryInfo device_local_memory(VkPhysicalDevice device, bool budget) {
  VkPhysicalDeviceMemoryBudgetPropertiesEXT used{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
  VkPhysicalDeviceMemoryProperties2 props{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
                                          .pNext = budget ? &used : nullptr};
  vkGetPhysicalDeviceMemoryProperties2(device, &props);
  MemoryInfo m;
  for (uint32_t h = 0; h < props.memoryProperties.memoryHeapCount; ++h) {
    if (!(props.memoryProperties.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)) continue;
    const uint64_t size = props.memoryProperties.memoryHeaps[h].size;
    m.total += size;
    m.free += budget ? (used.heapBudget[h] > used.heapUsage[h] ? used.heapBudget[h] - used.heapUsage[h] : 0) : size;
  }
  return m;
}

}  // namespace

void vk_check(VkResult result, const char* call) {
  if (result != VK_SUCCESS) throw Error(std::string("vulkan: ") + call + " failed (VkResult " + std::to_string(result) + ")");
}

VulkanInstance::VulkanInstance() {
  const VkApplicationInfo app{.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "vlmforge",
                              .apiVersion = VK_API_VERSION_1_2};
  const VkInstanceCreateInfo info{.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app};
  const VkResult created = vkCreateInstance(&info, nullptr, &instance_);
  if (created == VK_ERROR_INCOMPATIBLE_DRIVER)
    throw Error("no Vulkan driver is installed (for the CPU: apt install mesa-vulkan-drivers)");
  vk_check(created, "vkCreateInstance");
  uint32_t count = 0;
  vkEnumeratePhysicalDevices(instance_, &count, nullptr);
  std::vector<VkPhysicalDevice> all(count);
  vkEnumeratePhysicalDevices(instance_, &count, all.data());
  for (VkPhysicalDevice d : all) {
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(d, &props);
    if (const std::string missing = missing_feature(d); !missing.empty())
      skipped_.push_back(std::string(props.deviceName) + ": no " + missing);
    else
      devices_.push_back(d);
  }
}

VulkanInstance::~VulkanInstance() { vkDestroyInstance(instance_, nullptr); }

VulkanHostBuffer& VulkanHostBuffer::operator=(VulkanHostBuffer&& other) noexcept {
  std::swap(device, other.device);
  std::swap(buffer, other.buffer);
  std::swap(memory, other.memory);
  std::swap(mapped, other.mapped);
  std::swap(address, other.address);
  std::swap(size, other.size);
  return *this;
}

VulkanHostBuffer::~VulkanHostBuffer() {
  if (!device) return;
  vkDestroyBuffer(device, buffer, nullptr);
  vkFreeMemory(device, memory, nullptr);
}

VulkanDevice::VulkanDevice(std::shared_ptr<const VulkanInstance> instance, int index, VkPhysicalDevice physical,
                           std::optional<uint64_t> cap)
    : Device("vulkan", index), instance_(std::move(instance)), physical_(physical), cap_(cap) {
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(physical_, &props);
  description_ = props.deviceName;
  vkGetPhysicalDeviceMemoryProperties(physical_, &memory_properties_);
  memory_budget_ = has_memory_budget(physical_);
  VkPhysicalDeviceMaintenance3Properties limits{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  VkPhysicalDeviceProperties2 props2{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &limits};
  vkGetPhysicalDeviceProperties2(physical_, &props2);
  max_allocation_ = limits.maxMemoryAllocationSize;

  uint32_t families = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(physical_, &families, nullptr);
  std::vector<VkQueueFamilyProperties> family(families);
  vkGetPhysicalDeviceQueueFamilyProperties(physical_, &families, family.data());
  queue_family_ = static_cast<uint32_t>(std::find_if(family.begin(), family.end(), [](const auto& f) {
                                          return (f.queueFlags & VK_QUEUE_COMPUTE_BIT) != 0;
                                        }) - family.begin());
  const float priority = 1;
  const VkDeviceQueueCreateInfo queue{.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                      .queueFamilyIndex = queue_family_, .queueCount = 1,
                                      .pQueuePriorities = &priority};
  VkPhysicalDeviceVulkan11Features v11{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                       .storageBuffer16BitAccess = VK_TRUE};
  VkPhysicalDeviceVulkan12Features v12{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = &v11,
                                       .shaderFloat16 = VK_TRUE, .bufferDeviceAddress = VK_TRUE};
  VkPhysicalDeviceFeatures2 features{.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &v12};
  features.features.shaderInt64 = VK_TRUE;
  features.features.shaderInt16 = VK_TRUE;
  const char* budget_extension = VK_EXT_MEMORY_BUDGET_EXTENSION_NAME;
  const VkDeviceCreateInfo info{.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &features,
                                .queueCreateInfoCount = 1, .pQueueCreateInfos = &queue,
                                .enabledExtensionCount = memory_budget_ ? 1u : 0u,
                                .ppEnabledExtensionNames = &budget_extension};
  vk_check(vkCreateDevice(physical_, &info, nullptr, &device_), "vkCreateDevice");
  vkGetDeviceQueue(device_, queue_family_, 0, &queue_);

  const VkPushConstantRange push{VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushConstantBytes};
  const VkPipelineLayoutCreateInfo layout{.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                          .pushConstantRangeCount = 1, .pPushConstantRanges = &push};
  vk_check(vkCreatePipelineLayout(device_, &layout, nullptr, &layout_), "vkCreatePipelineLayout");
  const VkCommandPoolCreateInfo pool{.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                     .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                     .queueFamilyIndex = queue_family_};
  vk_check(vkCreateCommandPool(device_, &pool, nullptr, &transfer_pool_), "vkCreateCommandPool");
  const VkCommandBufferAllocateInfo commands{.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                             .commandPool = transfer_pool_, .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                             .commandBufferCount = 1};
  vk_check(vkAllocateCommandBuffers(device_, &commands, &transfer_commands_), "vkAllocateCommandBuffers");
  const VkFenceCreateInfo fence{.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  vk_check(vkCreateFence(device_, &fence, nullptr, &transfer_fence_), "vkCreateFence");
  staging_ = host_buffer(kStagingBytes, "staging");
}

VulkanDevice::~VulkanDevice() {
  vkDeviceWaitIdle(device_);
  staging_ = {};
  for (auto& [address, b] : blocks_) {
    vkDestroyBuffer(device_, b.buffer, nullptr);
    vkFreeMemory(device_, b.memory, nullptr);
  }
  for (VkPipeline p : pipelines_)
    if (p) vkDestroyPipeline(device_, p, nullptr);
  vkDestroyFence(device_, transfer_fence_, nullptr);
  vkDestroyCommandPool(device_, transfer_pool_, nullptr);
  vkDestroyPipelineLayout(device_, layout_, nullptr);
  vkDestroyDevice(device_, nullptr);
}

MemoryInfo VulkanDevice::memory() const {
  const MemoryInfo device = device_local_memory(physical_, memory_budget_);
  if (!memory_budget_) {
    // Heap sizes alone: what this device has allocated is all that is known to be in use.
    const uint64_t total = cap_ ? std::min(*cap_, device.total) : device.total;
    return {total > allocated() ? total - allocated() : 0, total};
  }
  if (!cap_) return device;
  const uint64_t left = *cap_ > allocated() ? *cap_ - allocated() : 0;
  return {std::min(left, device.free), *cap_};
}

// From the accounting and the cap (a budget query per allocation would be a driver call on the
// decode path); the driver refuses what it cannot give.
bool VulkanDevice::may_allocate(size_t bytes) const {
  return !cap_ || allocated() + bytes <= *cap_;
}

std::unique_ptr<Stream> VulkanDevice::open_stream() { return std::make_unique<VulkanStream>(*this); }

uint32_t VulkanDevice::memory_type(uint32_t allowed, VkMemoryPropertyFlags wanted,
                                   VkMemoryPropertyFlags fallback) const {
  for (VkMemoryPropertyFlags flags : {wanted, fallback})
    for (uint32_t i = 0; i < memory_properties_.memoryTypeCount; ++i)
      if ((allowed & (1u << i)) && (memory_properties_.memoryTypes[i].propertyFlags & flags) == flags) return i;
  throw Error("vulkan: " + description_ + " has no suitable memory type");
}

namespace {

// A buffer with its own memory, addressable from shaders; VK_NULL_HANDLE buffer when out of memory.
struct RawBuffer {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  uint64_t address = 0;
};

template <typename PickType>
RawBuffer make_buffer(VkDevice device, size_t bytes, PickType&& pick_type) {
  RawBuffer b;
  const VkBufferCreateInfo info{.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = bytes,
                                .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                         VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT,
                                .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
  vk_check(vkCreateBuffer(device, &info, nullptr, &b.buffer), "vkCreateBuffer");
  VkMemoryRequirements needs;
  vkGetBufferMemoryRequirements(device, b.buffer, &needs);
  const VkMemoryAllocateFlagsInfo flags{.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
                                        .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT};
  const VkMemoryAllocateInfo alloc{.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .pNext = &flags,
                                   .allocationSize = needs.size, .memoryTypeIndex = pick_type(needs.memoryTypeBits)};
  const VkResult allocated = vkAllocateMemory(device, &alloc, nullptr, &b.memory);
  if (allocated == VK_ERROR_OUT_OF_DEVICE_MEMORY || allocated == VK_ERROR_OUT_OF_HOST_MEMORY) {
    vkDestroyBuffer(device, b.buffer, nullptr);
    return {};
  }
  vk_check(allocated, "vkAllocateMemory");
  vk_check(vkBindBufferMemory(device, b.buffer, b.memory, 0), "vkBindBufferMemory");
  const VkBufferDeviceAddressInfo where{.sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO, .buffer = b.buffer};
  b.address = vkGetBufferDeviceAddress(device, &where);
  return b;
}

}  // namespace

std::byte* VulkanDevice::raw_allocate(size_t bytes) {
  const size_t size = (bytes + kSubAlignment - 1) / kSubAlignment * kSubAlignment;
  std::lock_guard hold(lock_);
  for (auto& [address, b] : blocks_)
    for (auto it = b.free.begin(); it != b.free.end(); ++it)
      if (it->second >= size) {
        const auto [offset, length] = *it;
        b.free.erase(it);
        if (length > size) b.free[offset + size] = length - size;
        b.used += size;
        return reinterpret_cast<std::byte*>(address + offset);
      }
  if (size > max_allocation_) return nullptr;
  const size_t block_bytes = std::max(size, std::min<size_t>(kBlockBytes, max_allocation_));
  const RawBuffer made = make_buffer(device_, block_bytes, [&](uint32_t allowed) {
    return memory_type(allowed, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
  });
  if (!made.buffer) return nullptr;
  Block& b = blocks_[made.address] = {made.buffer, made.memory, made.address, block_bytes, size, {}};
  if (block_bytes > size) b.free[size] = block_bytes - size;
  return reinterpret_cast<std::byte*>(made.address);
}

template <typename Blocks>
auto& VulkanDevice::block_of(Blocks& blocks, uint64_t address, const std::string& device) {
  auto it = blocks.upper_bound(address);
  if (it == blocks.begin() || address >= std::prev(it)->first + std::prev(it)->second.size)
    throw Error("internal error: a " + device + " buffer that this device did not allocate");
  return std::prev(it)->second;
}

void VulkanDevice::raw_free(std::byte* data, size_t bytes) {
  std::lock_guard hold(lock_);
  // Recorded work may still read the buffer: run it all first.
  for (VulkanStream* s : streams_) s->flush();
  vkQueueWaitIdle(queue_);
  const uint64_t at = reinterpret_cast<uint64_t>(data);
  Block& b = block_of(blocks_, at, name());
  size_t offset = at - b.address, size = (bytes + kSubAlignment - 1) / kSubAlignment * kSubAlignment;
  b.used -= size;
  if (b.used == 0) {
    vkDestroyBuffer(device_, b.buffer, nullptr);
    vkFreeMemory(device_, b.memory, nullptr);
    blocks_.erase(b.address);
    return;
  }
  // Coalesce with the free ranges on either side.
  if (auto next = b.free.find(offset + size); next != b.free.end()) {
    size += next->second;
    b.free.erase(next);
  }
  if (auto after = b.free.lower_bound(offset); after != b.free.begin()) {
    auto before = std::prev(after);
    if (before->first + before->second == offset) {
      offset = before->first;
      size += before->second;
      b.free.erase(before);
    }
  }
  b.free[offset] = size;
}

VulkanHostBuffer VulkanDevice::host_buffer(size_t bytes, std::string_view what) const {
  const RawBuffer b = make_buffer(device_, bytes, [&](uint32_t allowed) {
    return memory_type(allowed, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                       VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
  });
  if (!b.buffer) throw Error("vulkan: out of host-visible memory for the " + std::string(what) + " buffer on " + name());
  VulkanHostBuffer h;
  h.device = device_;
  h.buffer = b.buffer;
  h.memory = b.memory;
  h.address = b.address;
  h.size = bytes;
  void* mapped = nullptr;
  vk_check(vkMapMemory(device_, b.memory, 0, VK_WHOLE_SIZE, 0, &mapped), "vkMapMemory");
  h.mapped = static_cast<std::byte*>(mapped);
  return h;
}

uint64_t VulkanDevice::address(const DeviceBuffer* buffer, size_t offset) const {
  if (!buffer || buffer->device() != this)
    throw Error("internal error: an op on " + name() + " was given a buffer of another device");
  return reinterpret_cast<uint64_t>(buffer->data()) + offset;
}

VulkanDevice::Resolved VulkanDevice::resolve(const DeviceBuffer& buffer, size_t offset) const {
  const uint64_t at = address(&buffer, 0);
  std::lock_guard hold(lock_);
  const Block& b = block_of(blocks_, at, name());
  return {b.buffer, at - b.address + offset};
}

VkPipeline VulkanDevice::pipeline(VulkanShader shader) {
  std::lock_guard hold(lock_);
  VkPipeline& p = pipelines_[static_cast<size_t>(shader)];
  if (p) return p;
  const std::span<const uint32_t> code = spirv(shader);
  const VkShaderModuleCreateInfo module_info{.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                             .codeSize = code.size_bytes(), .pCode = code.data()};
  VkShaderModule module;
  vk_check(vkCreateShaderModule(device_, &module_info, nullptr, &module), "vkCreateShaderModule");
  const VkComputePipelineCreateInfo info{
      .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
      .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                .module = module, .pName = "main"},
      .layout = layout_};
  const VkResult made = vkCreateComputePipelines(device_, VK_NULL_HANDLE, 1, &info, nullptr, &p);
  vkDestroyShaderModule(device_, module, nullptr);
  vk_check(made, "vkCreateComputePipelines");
  return p;
}

void VulkanDevice::submit_and_wait(VkCommandBuffer commands, VkFence fence) {
  std::lock_guard hold(lock_);
  const VkSubmitInfo submit{.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                            .pCommandBuffers = &commands};
  vk_check(vkQueueSubmit(queue_, 1, &submit, fence), "vkQueueSubmit");
  vk_check(vkWaitForFences(device_, 1, &fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
  vk_check(vkResetFences(device_, 1, &fence), "vkResetFences");
}

template <typename Record>
void VulkanDevice::transfer(Record&& record) {
  const VkCommandBufferBeginInfo begin{.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                       .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  vk_check(vkBeginCommandBuffer(transfer_commands_, &begin), "vkBeginCommandBuffer");
  record(transfer_commands_);
  vk_check(vkEndCommandBuffer(transfer_commands_), "vkEndCommandBuffer");
  submit_and_wait(transfer_commands_, transfer_fence_);
}

void VulkanDevice::copy_from_host(const DeviceBuffer& dst, size_t offset, std::span<const std::byte> src) {
  if (offset + src.size() > dst.size()) throw Error("internal error: copy past the end of a " + name() + " buffer");
  std::lock_guard hold(lock_);
  for (VulkanStream* s : streams_) s->flush();  // work queued before the copy reads the old contents
  const Resolved to = resolve(dst, offset);
  for (size_t done = 0; done < src.size(); done += kStagingBytes) {
    const size_t n = std::min(kStagingBytes, src.size() - done);
    std::memcpy(staging_.mapped, src.data() + done, n);
    transfer([&](VkCommandBuffer c) {
      const VkBufferCopy region{0, to.offset + done, n};
      vkCmdCopyBuffer(c, staging_.buffer, to.buffer, 1, &region);
    });
  }
}

void VulkanDevice::copy_to_host(std::span<std::byte> dst, const DeviceBuffer& src, size_t offset) {
  if (offset + dst.size() > src.size()) throw Error("internal error: copy past the end of a " + name() + " buffer");
  std::lock_guard hold(lock_);
  for (VulkanStream* s : streams_) s->flush();  // the copy reads what queued work writes
  const Resolved from = resolve(src, offset);
  for (size_t done = 0; done < dst.size(); done += kStagingBytes) {
    const size_t n = std::min(kStagingBytes, dst.size() - done);
    transfer([&](VkCommandBuffer c) {
      const VkBufferCopy region{from.offset + done, 0, n};
      vkCmdCopyBuffer(c, from.buffer, staging_.buffer, 1, &region);
    });
    std::memcpy(dst.data() + done, staging_.mapped, n);
  }
}

void VulkanDevice::add_stream(VulkanStream* stream) {
  std::lock_guard hold(lock_);
  streams_.insert(stream);
}

void VulkanDevice::remove_stream(VulkanStream* stream) {
  std::lock_guard hold(lock_);
  streams_.erase(stream);
}

VulkanBackend::VulkanBackend() {
  try {
    instance_ = std::make_shared<const VulkanInstance>();
    if (instance_->devices().empty()) {
      unavailable_ = "no Vulkan device with what the shaders need";
      for (const auto& s : instance_->skipped()) unavailable_ += "; " + s;
    }
  } catch (const Error& e) {
    unavailable_ = e.what();
  }
}

MemoryInfo VulkanBackend::query(int physical_index) const {
  const VkPhysicalDevice device = instance_->devices().at(static_cast<size_t>(physical_index));
  return device_local_memory(device, has_memory_budget(device));
}

std::string VulkanBackend::describe(int physical_index) const {
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(instance_->devices().at(static_cast<size_t>(physical_index)), &props);
  return std::string(props.deviceName) + ", Vulkan " + std::to_string(VK_API_VERSION_MAJOR(props.apiVersion)) + "." +
         std::to_string(VK_API_VERSION_MINOR(props.apiVersion));
}

std::unique_ptr<Device> VulkanBackend::open(const DeviceSpec& spec, int physical_index, std::optional<uint64_t> cap,
                                            size_t) const {
  return std::make_unique<VulkanDevice>(instance_, spec.index, instance_->devices().at(static_cast<size_t>(physical_index)),
                                        cap);
}

}  // namespace vlmforge
