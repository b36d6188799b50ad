// Shared by every vlmforge compute shader: buffers are reached through device addresses
// (Vulkan 1.2 bufferDeviceAddress) carried in push constants, so no descriptor sets exist.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference2 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require

layout(buffer_reference, std430, buffer_reference_align = 4) buffer Floats { float v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Uints { uint v[]; };
layout(buffer_reference, std430, buffer_reference_align = 8) buffer Addresses { uint64_t v[]; };
layout(buffer_reference, std430, buffer_reference_align = 2) buffer Halves { float16_t v[]; };
layout(buffer_reference, std430, buffer_reference_align = 2) buffer Shorts { uint16_t v[]; };

// Stored dtypes of weights and caches (VulkanStream's kDtype* values).
const uint kF32 = 0, kBF16 = 1, kF16 = 2;

// Element `i` of a BF16/F16/F32 array at `base`, as fp32.
float load_value(uint64_t base, uint dtype, uint i) {
  if (dtype == kF32) return Floats(base).v[i];
  if (dtype == kBF16) return uintBitsToFloat(uint(Shorts(base).v[i]) << 16);
  return float(Halves(base).v[i]);
}

// fp32 → bf16, round to nearest even, NaN kept a NaN (as torch's .to(bfloat16)).
uint16_t to_bf16(float x) {
  const uint bits = floatBitsToUint(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40u);
  return uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

void store_value(uint64_t base, uint dtype, uint i, float x) {
  if (dtype == kF32) Floats(base).v[i] = x;
  else if (dtype == kBF16) Shorts(base).v[i] = to_bf16(x);
  else Halves(base).v[i] = float16_t(x);
}

// Workgroups beyond 65535 fold into y: the flat index of this workgroup.
uint flat_group() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }
// The row of a [cols / 256, rows] dispatch whose rows past 65535 fold into z.
uint group_row() { return gl_WorkGroupID.z * 65535u + gl_WorkGroupID.y; }
