// Seeded property test over the placement parsers (the fuzz target fuzz/fuzz_device_flags.cc
// explores the same invariants without a seed bound): random strings built from the characters
// these inputs use either parse into values with the documented invariants or throw Error.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "backends/registry.h"
#include "model/layout.h"
#include "plan/planner.h"

namespace vlmforge {
namespace {

std::string random_text(std::mt19937& rng, const std::vector<std::string>& pieces) {
  std::string s;
  const size_t n = rng() % 8;
  for (size_t i = 0; i < n; ++i) s += pieces[rng() % pieces.size()];
  return s;
}

TEST(FlagsProperty, DeviceListsAndMaxMemory) {
  std::mt19937 rng(6);
  const std::vector<std::string> pieces{"cpu", "cuda", "npu", ":", "0", "1", "7", "-", ",", "=", "GiB", "GB", " ",
                                        "x", "2", ".", "99999999999"};
  size_t parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string text = random_text(rng, pieces);
    try {
      const auto specs = parse_device_list(text);
      ASSERT_FALSE(specs.empty()) << text;
      for (size_t a = 0; a < specs.size(); ++a) {
        EXPECT_EQ(parse_device_name(specs[a].name()), specs[a]) << text;
        for (size_t b = 0; b < a; ++b) EXPECT_FALSE(specs[a] == specs[b]) << text;
      }
      ++parsed;
    } catch (const Error&) {
    }
    try {
      EXPECT_FALSE(parse_max_memory(text).empty()) << text;
      ++parsed;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(parsed, 100u);  // the generator reaches valid inputs too
}

TEST(FlagsProperty, VisibleDevices) {
  std::mt19937 rng(7);
  const std::vector<std::string> pieces{"0", "1", "2", "3", "9", ",", " ", "-1", "GPU-", "a"};
  size_t parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string text = random_text(rng, pieces);
    const size_t physical = rng() % 6;
    for (const bool ascend : {false, true}) {
      try {
        const auto ids =
            parse_visible_devices(ascend ? "ASCEND_RT_VISIBLE_DEVICES" : "CUDA_VISIBLE_DEVICES", text, physical);
        for (size_t a = 0; a < ids.size(); ++a) {
          EXPECT_LT(static_cast<size_t>(ids[a]), physical) << text;
          for (size_t b = 0; b < a; ++b) {
            EXPECT_NE(ids[a], ids[b]) << text;
            if (ascend) {
              EXPECT_LT(ids[b], ids[a]) << text;
            }
          }
        }
        ++parsed;
      } catch (const Error&) {
      }
    }
  }
  EXPECT_GT(parsed, 100u);
}

TEST(FlagsProperty, DeviceMapsPlaceEveryModuleOrFail) {
  std::mt19937 rng(8);
  const ModelShape shape = ModelShape::from_config(preset_config("tiny"), DType::BF16, "tiny");
  std::vector<DeviceTarget> devices;
  for (int i = 0; i < 3; ++i) {
    DeviceTarget t;
    t.spec = {"cpu", i};
    t.capacity = t.total = 64ull << 20;
    devices.push_back(t);
  }
  const std::vector<std::string> keys{"", "model", "model.embed_tokens", "model.layers.0", "model.layers.1",
                                      "model.layers", "model.norm", "lm_head", "model.layers.0.mlp", "visual"};
  const std::vector<nlohmann::json> values{"cpu:0", "cpu:1", "cpu:2", 0, 1, 2, "cpu:3", "disk", "cuda:0", nullptr, -1};
  PlanOptions o;
  o.max_model_len = 64;
  size_t placed = 0;
  for (int i = 0; i < 5000; ++i) {
    nlohmann::json map = nlohmann::json::object();
    const size_t n = rng() % 6;
    for (size_t k = 0; k < n; ++k) map[keys[rng() % keys.size()]] = values[rng() % values.size()];
    try {
      const Plan plan = plan_from_map(shape, devices, map, o, "map.json");
      for (size_t d : plan.module_device) EXPECT_LT(d, devices.size());
      // Tied: lm_head with the embeddings.
      EXPECT_EQ(plan.module_device.front(), plan.module_device.back()) << map.dump();
      ++placed;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(placed, 50u);
}

}  // namespace
}  // namespace vlmforge
