#include "util/simd_targets.h"

#include <hwy/highway.h>
#include <hwy/targets.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "util/error.h"

namespace vlmforge {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

}  // namespace

std::vector<SimdTarget> usable_simd_targets() {
  std::vector<SimdTarget> targets;
  // Bits of better targets are lower.
  for (int64_t bits = hwy::SupportedTargets() & HWY_TARGETS; bits != 0; bits &= bits - 1) {
    const int64_t bit = bits & -bits;
    targets.push_back({bit, lower(hwy::TargetName(bit))});
  }
  return targets;
}

std::string current_simd_target() {
  const int64_t bits = hwy::SupportedTargets() & HWY_TARGETS;
  return lower(hwy::TargetName(bits & -bits));
}

void limit_simd_target(std::string_view name) {
  const auto targets = usable_simd_targets();
  const std::string wanted = lower(name);
  std::string choices;
  for (const auto& t : targets) {
    if (t.name == wanted) {
      // Every bit below this one is a better target.
      hwy::DisableTargets(t.bit - 1);
      return;
    }
    choices += (choices.empty() ? "" : ", ") + t.name;
  }
  throw UsageError("SIMD target '" + std::string(name) + "' is not usable here; this binary and CPU offer: " + choices);
}

void limit_simd_target_from_environment() {
  if (const char* name = std::getenv("VLMFORGE_SIMD_TARGET"); name && *name) limit_simd_target(name);
}

}  // namespace vlmforge
