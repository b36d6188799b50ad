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
    case VulkanShader::kMatmulQuant: return kMatmulQuantSpirv;
    case VulkanShader::kKvStore: return kKvStoreSpirv;
    case VulkanShader::kAttention: return kAttentionSpirv;
    case VulkanShader::kCount: break;
  }
  throw Error("internal error: unknown vulkan shader");
}

constexpr size_t kStagingBytes = size_t{16} << 20;
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
  for (uint32_t h = 0; h < memory_properties_.memoryHeapCount; ++h)
    if (memory_properties_.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
      device_local_bytes_ += memory_properties_.memoryHeaps[h].size;

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
  const VkDeviceCreateInfo info{.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &features,
                                .queueCreateInfoCount = 1, .pQueueCreateInfos = &queue};
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
  for (auto& [address, a] : allocations_) {
    vkDestroyBuffer(device_, a.buffer, nullptr);
    vkFreeMemory(device_, a.memory, nullptr);
  }
  for (VkPipeline p : pipelines_)
    if (p) vkDestroyPipeline(device_, p, nullptr);
  vkDestroyFence(device_, transfer_fence_, nullptr);
  vkDestroyCommandPool(device_, transfer_pool_, nullptr);
  vkDestroyPipelineLayout(device_, layout_, nullptr);
  vkDestroyDevice(device_, nullptr);
}

MemoryInfo VulkanDevice::memory() const {
  const uint64_t used = allocated(), total = cap_ ? std::min(*cap_, device_local_bytes_) : device_local_bytes_;
  return {total > used ? total - used : 0, total};
}

bool VulkanDevice::may_allocate(size_t bytes) const { return allocated() + bytes <= memory().total; }

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
  const RawBuffer b = make_buffer(device_, bytes, [&](uint32_t allowed) {
    return memory_type(allowed, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
  });
  if (!b.buffer) return nullptr;
  std::lock_guard hold(lock_);
  allocations_[b.address] = {b.buffer, b.memory, bytes};
  return reinterpret_cast<std::byte*>(b.address);
}

void VulkanDevice::raw_free(std::byte* data, size_t) {
  std::lock_guard hold(lock_);
  // Recorded work may still read the buffer: run it all first.
  for (VulkanStream* s : streams_) s->flush();
  vkQueueWaitIdle(queue_);
  const auto it = allocations_.find(reinterpret_cast<uint64_t>(data));
  if (it == allocations_.end()) return;
  vkDestroyBuffer(device_, it->second.buffer, nullptr);
  vkFreeMemory(device_, it->second.memory, nullptr);
  allocations_.erase(it);
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
  const auto it = allocations_.find(at);
  if (it == allocations_.end()) throw Error("internal error: a " + name() + " buffer that this device did not allocate");
  return {it->second.buffer, offset};
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
  VkPhysicalDeviceMemoryProperties m;
  vkGetPhysicalDeviceMemoryProperties(instance_->devices().at(static_cast<size_t>(physical_index)), &m);
  uint64_t total = 0;
  for (uint32_t h = 0; h < m.memoryHeapCount; ++h)
    if (m.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) total += m.memoryHeaps[h].size;
  return {total, total};
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
