#pragma once
// Which SIMD code the kernels run. Highway compiles each kernel for several targets (SSE4, AVX2,
// AVX-512, NEON, ...) and picks the best one the CPU has at run time. Capping that choice lets the
// AVX2 path be measured and tested on an AVX-512 machine: VLMFORGE_SIMD_TARGET=avx2 for the CLI,
// benchmarks and tests alike.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vlmforge {

struct SimdTarget {
  int64_t bit;       // Highway's HWY_* target bit
  std::string name;  // lower case, as Highway names it: "avx2", "avx3", "neon", ...
};

// Targets compiled into this binary that this CPU can run (under the cap, if one was set), best first.
std::vector<SimdTarget> usable_simd_targets();

// The target that dispatch picks now.
std::string current_simd_target();

// Caps dispatch at `name` (one of usable_simd_targets()) for the rest of the process: better
// targets are no longer used. Throws UsageError naming the choices for an unknown or unusable name.
void limit_simd_target(std::string_view name);

// Applies VLMFORGE_SIMD_TARGET from the environment, if set.
void limit_simd_target_from_environment();

}  // namespace vlmforge
