// The shared golden merges (computed by an independent implementation) must be reproduced within
// one bf16 ulp for every element of every tensor.
#include <gtest/gtest.h>

#include "lora/lora_fixture.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;

class GoldenMerge : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenMerge, MatchesReferenceWithinOneBf16Ulp) {
  const fs::path golden = shared_dir() / "golden" / "lora";
  VLMFORGE_REQUIRE_SHARED(golden / GetParam() / "merged-reference.safetensors");
  TempDir dir;
  const Checkpoint out(merge(golden / "base", {golden / GetParam()}, dir / "merged"));
  const SafetensorsFile reference(golden / GetParam() / "merged-reference.safetensors");
  ASSERT_EQ(out.tensors().size(), reference.tensors().size());
  size_t changed = 0;
  for (const auto& info : reference.tensors()) {
    const TensorRef* t = out.find(info.name);
    ASSERT_NE(t, nullptr) << info.name;
    ASSERT_EQ(t->info->dtype, info.dtype) << info.name;
    ASSERT_EQ(t->info->shape, info.shape) << info.name;
    const auto want = reference.data(info);
    const auto got = t->data();
    changed += std::memcmp(want.data(), got.data(), want.size()) != 0 || info.name.find("proj") != std::string::npos;
    for (uint64_t i = 0; i < info.num_elements(); ++i) {
      const double w = load_float(info.dtype, want.data(), i), g = load_float(info.dtype, got.data(), i);
      ASSERT_LE(std::abs(w - g), ulp_of(w, info.dtype)) << GetParam() << " " << info.name << "[" << i << "]";
    }
  }
  EXPECT_GT(changed, 0u);
}

INSTANTIATE_TEST_SUITE_P(Shared, GoldenMerge, ::testing::Values("lora", "rslora", "dora"));

// An AWQ base (the micro model has the golden adapters' shapes) cannot take a merge: the error
// says so and what to do instead.
TEST(GoldenMerge, QuantizedBaseIsRefusedPointingAtRuntimeAdapters) {
  const fs::path base = shared_dir() / "golden" / "qwen2-micro-awq", adapter = shared_dir() / "golden" / "lora" / "lora";
  VLMFORGE_REQUIRE_SHARED(base / "model.safetensors");
  TempDir dir;
  const std::string error = error_of([&] { merge(base, {adapter}, dir / "merged"); });
  EXPECT_NE(error.find("' is quantized (AWQ / GPTQ '.qweight') in the base model"), std::string::npos) << error;
  EXPECT_NE(error.find("apply the adapter unmerged with --adapters"), std::string::npos) << error;
}

}  // namespace
}  // namespace vlmforge::test
