#include "backends/vulkan/vulkan_stream.h"

#include <algorithm>
#include <cstring>

namespace vlmforge {

namespace {

constexpr size_t kArenaBytes = size_t{1} << 20;
constexpr uint32_t kMaxGroups = 65535;
constexpr uint32_t kEltwiseAdd = 0, kEltwiseSiluMul = 1, kEltwiseGelu = 2, kEltwiseScaleBias = 3;
constexpr size_t kMaxHeadDim = 256;  // attention.comp's shared query
// Workgroups of a matrix product per block of tokens: enough to fill a large GPU (an H200 has
// 132 multiprocessors), few enough that launching them is not the cost (it is on lavapipe).
constexpr size_t kMatmulGroups = 1024;
// From this many tokens, float products take the shared-memory tiled GEMM (each weight read once
// per 64 tokens rather than per 8).
constexpr size_t kTiledTokens = 16;

// The shaders' dtype codes (common.glsl).
uint32_t dtype_code(DType d) {
  switch (d) {
    case DType::F32: return 0;
    case DType::BF16: return 1;
    case DType::F16: return 2;
    default: throw Error("vulkan: tensors of dtype " + std::string(dtype_name(d)) + " are not supported");
  }
}

uint32_t u32(size_t v) {
  if (v > UINT32_MAX) throw Error("vulkan: a size of " + std::to_string(v) + " is past what the shaders index");
  return static_cast<uint32_t>(v);
}

uint32_t blocks(size_t n, size_t per) { return u32((n + per - 1) / per); }

// Push constants, laid out as the shaders' push blocks (std430: 8-byte addresses first).
struct EmbedPush {
  uint64_t table, ids, out;
  uint32_t dtype, cols, out_stride, rows;
};
struct RowsPush {
  uint64_t in, out, index;
  uint32_t in_stride, out_stride, cols, rows, scatter;
};
struct NormPush {
  uint64_t x, y, weight, out;
  uint32_t x_stride, y_stride, out_stride, cols, rows;
  float eps;
};
struct EltwisePush {
  uint64_t a, b, factor, bias;
  uint32_t a_stride, b_stride, cols, rows, op;
  float scale;
};
struct RopePush {
  uint64_t q, k, cos, sin;
  uint32_t q_stride, k_stride, cos_stride, sin_stride, q_heads, k_heads, head_dim, rows;
};
struct MatmulPush {
  uint64_t x, w, bias, out;
  uint32_t x_stride, out_stride, tokens, out_features, in_features, w_dtype, group_rows;
};
struct TiledPush {
  uint64_t x, w, bias, out;
  uint32_t x_stride, out_stride, tokens, out_features, in_features, w_dtype;
};
struct MatmulQuantPush {
  uint64_t x, w, bias, out;
  uint32_t scales_offset, zeros_offset, perm_offset, has_perm;
  uint32_t x_stride, out_stride, tokens, out_features, in_features, bits, group_size, row_code_bytes, groups,
      group_rows;
};
struct KvStorePush {
  uint64_t slots, keys, values;
  uint32_t k_stride, v_stride, kv_dim, dtype, rows;
};
struct AttentionPush {
  uint64_t q, out, spans;
  uint32_t q_stride, out_stride, heads, kv_heads, head_dim, kv_stride, dtype, rows, block_size;
  float scale;
};

}  // namespace

VulkanStream::VulkanStream(VulkanDevice& device)
    : Stream(device),
      vk_(device),
      lora_projected_(&device, "LoRA activations"),
      lora_delta_(&device, "LoRA activations") {
  const VkCommandPoolCreateInfo pool{.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                     .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                     .queueFamilyIndex = vk_.queue_family()};
  vk_check(vkCreateCommandPool(vk_.handle(), &pool, nullptr, &pool_), "vkCreateCommandPool");
  const VkCommandBufferAllocateInfo commands{.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                             .commandPool = pool_, .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                             .commandBufferCount = 1};
  vk_check(vkAllocateCommandBuffers(vk_.handle(), &commands, &commands_), "vkAllocateCommandBuffers");
  const VkFenceCreateInfo fence{.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  vk_check(vkCreateFence(vk_.handle(), &fence, nullptr, &fence_), "vkCreateFence");
  arena_ = vk_.host_buffer(kArenaBytes, "op arguments");
  vk_.add_stream(this);
}

VulkanStream::~VulkanStream() {
  {
    std::lock_guard hold(vk_.lock());
    flush();
    vk_.remove_stream(this);
  }
  vkDestroyFence(vk_.handle(), fence_, nullptr);
  vkDestroyCommandPool(vk_.handle(), pool_, nullptr);
}

VkCommandBuffer VulkanStream::recording() {
  if (!recording_) {
    const VkCommandBufferBeginInfo begin{.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                         .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    vk_check(vkBeginCommandBuffer(commands_, &begin), "vkBeginCommandBuffer");
    recording_ = true;
  }
  return commands_;
}

void VulkanStream::flush() {
  std::lock_guard hold(vk_.lock());
  if (recording_) {
    recording_ = false;
    vk_check(vkEndCommandBuffer(commands_), "vkEndCommandBuffer");
    vk_.submit_and_wait(commands_, fence_);
  }
  arena_used_ = 0;
}

void VulkanStream::synchronize() { flush(); }

void VulkanStream::barrier(VkCommandBuffer c) {
  const VkMemoryBarrier b{.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                           VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT};
  const VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  vkCmdPipelineBarrier(c, stages, stages, 0, 1, &b, 0, nullptr, 0, nullptr);
}

template <typename Push>
void VulkanStream::record(VulkanShader shader, const Push& push, uint32_t x, uint32_t y, uint32_t z) {
  static_assert(sizeof(Push) <= 128, "push constants past Vulkan's guaranteed 128 bytes");
  std::lock_guard hold(vk_.lock());
  const VkPipeline pipeline = vk_.pipeline(shader);
  VkCommandBuffer c = recording();
  vkCmdBindPipeline(c, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
  vkCmdPushConstants(c, vk_.pipeline_layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(Push), &push);
  vkCmdDispatch(c, x, y, z);
  barrier(c);
}

template <typename Push>
void VulkanStream::dispatch(VulkanShader shader, const Push& push, uint32_t groups_x, uint32_t groups_y) {
  if (groups_x == 0 || groups_y == 0) return;
  if (groups_x > kMaxGroups) throw Error("internal error: a vulkan dispatch wider than 65535 workgroups");
  // Rows past 65535 fold into z (group_row() in the shaders).
  record(shader, push, groups_x, std::min(groups_y, kMaxGroups), (groups_y + kMaxGroups - 1) / kMaxGroups);
}

template <typename Push>
void VulkanStream::dispatch_flat(VulkanShader shader, const Push& push, size_t groups) {
  if (groups == 0) return;
  const uint32_t x = static_cast<uint32_t>(std::min<size_t>(groups, kMaxGroups));
  const size_t y = (groups + x - 1) / x;
  if (y > kMaxGroups) throw Error("vulkan: " + std::to_string(groups) + " workgroups are more than one dispatch takes");
  record(shader, push, x, static_cast<uint32_t>(y), 1);
}

uint64_t VulkanStream::stage(std::span<const std::byte> bytes) {
  std::lock_guard hold(vk_.lock());
  const size_t size = (bytes.size() + 15) / 16 * 16;
  if (arena_used_ + size > arena_.size) {
    flush();  // what is recorded reads the arena: run it before reusing the space
    if (size > arena_.size) arena_ = vk_.host_buffer(std::max(size, 2 * arena_.size), "op arguments");
  }
  std::memcpy(arena_.mapped + arena_used_, bytes.data(), bytes.size());
  const uint64_t at = arena_.address + arena_used_;
  arena_used_ += size;
  return at;
}

void VulkanStream::ensure(DeviceArray& array, size_t floats) {
  if (array.size() >= floats) return;
  flush();
  array.ensure(floats);
}

void VulkanStream::copy_from_host(const DeviceBuffer& dst, size_t offset, std::span<const std::byte> src) {
  vk_.copy_from_host(dst, offset, src);  // runs this stream's recorded work first
}

void VulkanStream::copy_to_host(std::span<std::byte> dst, const DeviceBuffer& src, size_t offset) {
  vk_.copy_to_host(dst, src, offset);
}

void VulkanStream::copy(const DeviceBuffer& dst, size_t dst_offset, const DeviceBuffer& src, size_t src_offset,
                        size_t bytes) {
  if (dst_offset + bytes > dst.size() || src_offset + bytes > src.size())
    throw Error("internal error: copy past the end of a " + vk_.name() + " buffer");
  if (bytes == 0) return;
  std::lock_guard hold(vk_.lock());
  const VulkanDevice::Resolved to = vk_.resolve(dst, dst_offset), from = vk_.resolve(src, src_offset);
  VkCommandBuffer c = recording();
  const VkBufferCopy region{from.offset, to.offset, bytes};
  vkCmdCopyBuffer(c, from.buffer, to.buffer, 1, &region);
  barrier(c);
}

void VulkanStream::embed(const WeightView& table, std::span<const int32_t> ids, F32Rows out) {
  std::lock_guard hold(vk_.lock());  // staged arguments and their dispatch in one submission
  if (ids.empty()) return;
  const EmbedPush push{vk_.address(table.buffer, table.offset), stage(std::as_bytes(ids)), rows_address(out),
                       dtype_code(table.dtype), u32(table.cols), u32(out.stride), u32(ids.size())};
  dispatch(VulkanShader::kEmbed, push, blocks(table.cols, 256), u32(ids.size()));
}

void VulkanStream::gather_rows(F32Rows in, std::span<const uint32_t> index, size_t cols, F32Rows out) {
  std::lock_guard hold(vk_.lock());  // staged arguments and their dispatch in one submission
  if (index.empty()) return;
  const RowsPush push{rows_address(in), rows_address(out), stage(std::as_bytes(index)), u32(in.stride),
                      u32(out.stride), u32(cols), u32(index.size()), 0};
  dispatch(VulkanShader::kRows, push, blocks(cols, 256), u32(index.size()));
}

void VulkanStream::scatter_rows(F32Rows in, std::span<const uint32_t> index, size_t cols, F32Rows out) {
  std::lock_guard hold(vk_.lock());  // staged arguments and their dispatch in one submission
  if (index.empty()) return;
  const RowsPush push{rows_address(in), rows_address(out), stage(std::as_bytes(index)), u32(in.stride),
                      u32(out.stride), u32(cols), u32(index.size()), 1};
  dispatch(VulkanShader::kRows, push, blocks(cols, 256), u32(index.size()));
}

void VulkanStream::rms_norm(F32Rows x, const VectorView& weight, float eps, size_t rows, size_t cols, F32Rows out) {
  const NormPush push{rows_address(x), 0, vector_address(weight), rows_address(out), u32(x.stride), 0,
                      u32(out.stride), u32(cols), u32(rows), eps};
  dispatch_flat(VulkanShader::kNorm, push, rows);
}

void VulkanStream::add_rms_norm(F32Rows x, F32Rows y, const VectorView& weight, float eps, size_t rows, size_t cols,
                                F32Rows out) {
  const NormPush push{rows_address(x), rows_address(y), vector_address(weight), rows_address(out), u32(x.stride),
                      u32(y.stride), u32(out.stride), u32(cols), u32(rows), eps};
  dispatch_flat(VulkanShader::kNorm, push, rows);
}

void VulkanStream::eltwise(uint32_t op, F32Rows a, uint64_t b, size_t b_stride, uint64_t factor, uint64_t bias,
                           size_t rows, size_t cols, float scale) {
  const EltwisePush push{rows_address(a), b, factor, bias, u32(a.stride), u32(b_stride), u32(cols), u32(rows), op, scale};
  dispatch(VulkanShader::kEltwise, push, blocks(cols, 256), u32(rows));
}

void VulkanStream::add(F32Rows x, F32Rows y, size_t rows, size_t cols) {
  eltwise(kEltwiseAdd, x, rows_address(y), y.stride, 0, 0, rows, cols, 1.0f);
}

void VulkanStream::silu_mul(F32Rows gate, F32Rows up, size_t rows, size_t cols) {
  eltwise(kEltwiseSiluMul, gate, rows_address(up), up.stride, 0, 0, rows, cols, 1.0f);
}

void VulkanStream::gelu(F32Rows x, size_t rows, size_t cols) { eltwise(kEltwiseGelu, x, 0, 0, 0, 0, rows, cols, 1.0f); }

void VulkanStream::rope(F32Rows q, size_t q_heads, F32Rows k, size_t k_heads, size_t head_dim, F32Rows cos,
                        F32Rows sin, size_t rows) {
  const RopePush push{rows_address(q), k_heads ? rows_address(k) : 0, rows_address(cos), rows_address(sin),
                      u32(q.stride), u32(k.stride), u32(cos.stride), u32(sin.stride), u32(q_heads), u32(k_heads),
                      u32(head_dim), u32(rows)};
  dispatch_flat(VulkanShader::kRope, push, rows * (q_heads + k_heads));
}

void VulkanStream::product(uint64_t x, size_t x_stride, size_t rows, const WeightView& w, uint64_t bias, uint64_t out,
                           size_t out_stride) {
  const uint64_t weight = vk_.address(w.buffer, w.offset);  // throws unless this device's
  check_weight_view(w, vk_.name());
  // About kMatmulGroups workgroups per block of 8 tokens, at least one row each.
  const size_t group_rows = std::max<size_t>(1, (w.rows + kMatmulGroups - 1) / kMatmulGroups);
  const size_t groups = ((w.rows + group_rows - 1) / group_rows) * ((rows + 7) / 8);
  if (const kernels::QuantLayout& q = w.quant; q.quantized()) {
    if ((q.bits != 4 && q.bits != 8) || q.group_size == 0 || q.group_size % 32 != 0)
      throw Error("internal error: a quantized layout of " + std::to_string(q.bits) + " bits, groups of " +
                  std::to_string(q.group_size));
    const MatmulQuantPush push{x, weight, bias, out,
                               u32(q.scales_offset(w.rows, w.cols)), u32(q.zeros_offset(w.rows, w.cols)),
                               u32(q.has_perm ? q.perm_offset(w.rows, w.cols) : 0), q.has_perm ? 1u : 0u,
                               u32(x_stride), u32(out_stride), u32(rows), u32(w.rows), u32(w.cols), q.bits,
                               u32(q.group_size), u32(q.row_code_bytes(w.cols)), u32(q.groups(w.cols)), u32(group_rows)};
    return dispatch_flat(VulkanShader::kMatmulQuant, push, groups);
  }
  if (rows >= kTiledTokens) {
    const TiledPush push{x, weight, bias, out, u32(x_stride), u32(out_stride), u32(rows), u32(w.rows), u32(w.cols),
                         dtype_code(w.dtype)};
    return dispatch_flat(VulkanShader::kMatmulTiled, push, ((w.rows + 63) / 64) * ((rows + 63) / 64));
  }
  const MatmulPush push{x, weight, bias, out, u32(x_stride), u32(out_stride), u32(rows),
                        u32(w.rows), u32(w.cols), dtype_code(w.dtype), u32(group_rows)};
  dispatch_flat(VulkanShader::kMatmul, push, groups);
}

// y = x·Wᵀ + Σ s·(x·Aᵀ)·Bᵀ, DoRA columns scaled, then the bias (which DoRA leaves unscaled).
void VulkanStream::linear(F32Rows x, size_t rows, std::span<const LinearOutput> outputs) {
  const uint64_t xs = rows_address(x);
  for (const LinearOutput& o : outputs) {
    const LinearView& l = *o.linear;
    if (l.in_features() > x.stride) throw Error("internal error: linear input rows are shorter than the layer's input");
    const uint64_t out = rows_address(o.out), bias = vector_address(l.bias);
    if (l.loras.empty() && l.dora_factor.empty()) {
      product(xs, x.stride, rows, l.weight, bias, out, o.out.stride);
      continue;
    }
    product(xs, x.stride, rows, l.weight, 0, out, o.out.stride);
    for (const LoraView& lora : l.loras) {
      ensure(lora_projected_, rows * lora.a.rows);
      ensure(lora_delta_, rows * l.out_features());
      const uint64_t projected = vk_.address(&lora_projected_.buffer(), 0), delta = vk_.address(&lora_delta_.buffer(), 0);
      product(xs, x.stride, rows, lora.a, 0, projected, lora.a.rows);
      product(projected, lora.a.rows, rows, lora.b, 0, delta, l.out_features());
      eltwise(kEltwiseAdd, o.out, delta, l.out_features(), 0, 0, rows, l.out_features(), lora.scale);
    }
    if (!l.dora_factor.empty() || !l.bias.empty())
      eltwise(kEltwiseScaleBias, o.out, 0, 0, vector_address(l.dora_factor), bias, rows, l.out_features(), 1.0f);
  }
}

void VulkanStream::check_slots(std::span<const KvSlot> slots) const {
  check_kv_slots(slots, vk_);
  for (const KvSlot& s : slots)  // one dtype and width per dispatch
    if (s.cache.dtype != slots[0].cache.dtype || s.cache.kv_dim != slots[0].cache.kv_dim ||
        s.cache.block_size != slots[0].cache.block_size)
      throw Error("internal error: KV caches of one op differ in dtype, width or block size");
}

void VulkanStream::kv_store(std::span<const KvSlot> slots, F32Rows keys, F32Rows values) {
  std::lock_guard hold(vk_.lock());  // staged arguments and their dispatch in one submission
  if (slots.empty()) return;
  check_slots(slots);
  const KvView& first = slots[0].cache;
  const size_t element = dtype_info(first.dtype).bits / 8;
  std::vector<uint64_t> at;
  for (const KvSlot& s : slots) {
    const size_t offset = s.cache.row(s.position) * s.cache.kv_dim * element;
    at.push_back(vk_.address(s.cache.keys, offset));
    at.push_back(vk_.address(s.cache.values, offset));
  }
  const KvStorePush push{stage(std::as_bytes(std::span(at))), rows_address(keys), rows_address(values),
                         u32(keys.stride), u32(values.stride), u32(first.kv_dim), dtype_code(first.dtype),
                         u32(slots.size())};
  dispatch(VulkanShader::kKvStore, push, blocks(first.kv_dim, 256), u32(slots.size()));
}

void VulkanStream::attend(F32Rows q, std::span<const uint64_t> spans, size_t rows, size_t kv_stride, DType dtype,
                          size_t block_size, const AttentionShape& shape, F32Rows out) {
  std::lock_guard hold(vk_.lock());  // staged arguments and their dispatch in one submission
  if (shape.kv_heads == 0 || shape.heads % shape.kv_heads != 0)
    throw Error("internal error: " + std::to_string(shape.heads) + " attention heads do not form groups of " +
                std::to_string(shape.kv_heads) + " KV heads");
  if (shape.head_dim > kMaxHeadDim)
    throw Error("vulkan: attention heads of " + std::to_string(shape.head_dim) + " dimensions (at most " +
                std::to_string(kMaxHeadDim) + ")");
  const AttentionPush push{rows_address(q), rows_address(out), stage(std::as_bytes(spans)), u32(q.stride),
                           u32(out.stride), u32(shape.heads), u32(shape.kv_heads), u32(shape.head_dim), u32(kv_stride),
                           dtype_code(dtype), u32(rows), u32(block_size), shape.scale};
  dispatch_flat(VulkanShader::kAttention, push, rows * shape.heads);
}

void VulkanStream::attention(F32Rows q, std::span<const KvSlot> slots, const AttentionShape& shape, F32Rows out) {
  if (slots.empty()) return;
  check_slots(slots);
  // Spans, then the block tables of paged caches (each distinct table once: a prompt's rows share
  // one), staged together so one arena address serves both; a span's fourth entry is its table's
  // byte offset from the spans (0: not paged).
  std::vector<uint64_t> spans;
  std::vector<uint32_t> tables;
  std::vector<std::pair<std::span<const uint32_t>, size_t>> staged;  // a table → its offset in `tables`
  for (const KvSlot& s : slots) {
    size_t table = 0;
    if (s.cache.paged()) {
      const auto it = std::find_if(staged.begin(), staged.end(),
                                   [&](const auto& t) {
                                     return t.first.data() == s.cache.block_table.data() &&
                                            t.first.size() == s.cache.block_table.size();
                                   });
      if (it != staged.end()) {
        table = it->second;
      } else {
        table = tables.size();
        staged.emplace_back(s.cache.block_table, table);
        tables.insert(tables.end(), s.cache.block_table.begin(), s.cache.block_table.end());
      }
    }
    spans.insert(spans.end(), {vk_.address(s.cache.keys, 0), vk_.address(s.cache.values, 0), s.position + 1,
                               s.cache.paged() ? 4 * table : 0});
  }
  const size_t span_bytes = spans.size() * sizeof(uint64_t);
  for (size_t r = 0; r < slots.size(); ++r)
    if (slots[r].cache.paged()) spans[4 * r + 3] += span_bytes;
  spans.resize(spans.size() + (tables.size() + 1) / 2);
  std::memcpy(reinterpret_cast<std::byte*>(spans.data()) + span_bytes, tables.data(), tables.size() * sizeof(uint32_t));
  attend(q, spans, slots.size(), slots[0].cache.kv_dim, slots[0].cache.dtype, slots[0].cache.block_size, shape, out);
}

void VulkanStream::segment_attention(F32Rows q, F32Rows k, F32Rows v, std::span<const size_t> bounds,
                                     const AttentionShape& shape, F32Rows out) {
  if (bounds.size() < 2) return;
  std::vector<uint64_t> spans;
  for (size_t s = 0; s + 1 < bounds.size(); ++s)
    for (size_t r = bounds[s]; r < bounds[s + 1]; ++r)
      spans.insert(spans.end(), {rows_address(k.rows_from(bounds[s])), rows_address(v.rows_from(bounds[s])),
                                 bounds[s + 1] - bounds[s], 0});
  // Rows before the first bound take no part (the op's rows are [bounds.front(), bounds.back())).
  attend(q.rows_from(bounds.front()), spans, spans.size() / 4, k.stride, DType::F32, 0, shape,
         out.rows_from(bounds.front()));
}

}  // namespace vlmforge
