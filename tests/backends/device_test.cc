// Devices: accounted allocations on capped CPU devices, the --devices / --max_memory parsers,
// visible-device variables as the vendors read them, and the registry's resolution.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>

#include "backends/cpu_device.h"
#include "backends/registry.h"
#include "support/test_support.h"

namespace vlmforge {
namespace {

EnvLookup fake_env(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
}

using test::error_of;

TEST(CpuDevice, AccountsAllocationsAndPeak) {
  CpuDevice d(1, 1000, 1);
  EXPECT_EQ(d.name(), "cpu:1");
  EXPECT_EQ(d.memory().total, 1000u);
  {
    DeviceBuffer a = d.allocate(600, "test");
    EXPECT_EQ(d.allocated(), 600u);
    EXPECT_EQ(d.memory().free, 400u);
    DeviceBuffer b = d.allocate(400, "test");
    EXPECT_EQ(d.allocated(), 1000u);
    std::vector<std::byte> host(400, std::byte{7});
    d.copy_from_host(b, 0, host);
    std::vector<std::byte> back(400);
    d.copy_to_host(back, b, 0);
    EXPECT_EQ(back, host);
    DeviceBuffer moved = std::move(a);
    EXPECT_EQ(d.allocated(), 1000u);
  }
  EXPECT_EQ(d.allocated(), 0u);
  EXPECT_EQ(d.peak_allocated(), 1000u);
  d.reset_peak();
  EXPECT_EQ(d.peak_allocated(), 0u);
}

TEST(CpuDevice, ExceedingTheCapNamesDeviceBytesAskedAndFree) {
  CpuDevice d(2, 1000, 1);
  DeviceBuffer a = d.allocate(700, "layer 3 weights");
  try {
    d.allocate(301, "KV cache");
    FAIL() << "expected an out-of-memory error";
  } catch (const DeviceOutOfMemory& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cpu:2"), std::string::npos) << m;
    EXPECT_NE(m.find("301 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("300 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("KV cache"), std::string::npos) << m;
    EXPECT_EQ(e.asked(), 301u);
    EXPECT_EQ(e.free(), 300u);
  }
  EXPECT_EQ(d.allocated(), 700u);  // the failed allocation left nothing behind
}

TEST(CpuDevice, UncappedReportsHostMemory) {
  CpuDevice d(0, std::nullopt, 1);
  const MemoryInfo m = d.memory();
  EXPECT_GT(m.total, 0u);
  EXPECT_LE(m.free, m.total);
  EXPECT_TRUE(d.caps().host_addressable);
}

TEST(CpuDevice, WrappedHostMemoryIsAccountedAndNotCopied) {
  CpuDevice d(0, uint64_t{1000}, 1);
  std::vector<std::byte> host(600);
  {
    DeviceBuffer b = d.wrap_host(host, "weights");
    EXPECT_EQ(b.data(), host.data());
    EXPECT_TRUE(b.wraps_host());
    EXPECT_EQ(d.allocated(), 600u);
    EXPECT_THROW(d.wrap_host(host, "more weights"), DeviceOutOfMemory);  // past the cap
  }
  EXPECT_EQ(d.allocated(), 0u);  // released without freeing the lender's memory
  EXPECT_EQ(d.peak_allocated(), 600u);
}

TEST(DeviceFlags, ParsesDeviceLists) {
  EXPECT_EQ(parse_device_list("cpu:0,cpu:1,cpu:2"),
            (std::vector<DeviceSpec>{{"cpu", 0}, {"cpu", 1}, {"cpu", 2}}));
  EXPECT_EQ(parse_device_list("npu:0-7").size(), 8u);
  EXPECT_EQ(parse_device_list("npu:2-3"), (std::vector<DeviceSpec>{{"npu", 2}, {"npu", 3}}));
  EXPECT_EQ(parse_device_list("cpu"), (std::vector<DeviceSpec>{{"cpu", 0}}));
  EXPECT_EQ(parse_device_list(" cuda:1 , cuda:0 "), (std::vector<DeviceSpec>{{"cuda", 1}, {"cuda", 0}}));
  for (const char* bad : {"", "gpu:0", "cuda", "cuda:x", "cpu:0,,cpu:1", "cpu:0,cpu:0", "npu:3-1", "npu:0-", "cuda:-1",
                          "npu:0-3,npu:2", "cpu:1.5"})
    EXPECT_THROW(parse_device_list(bad), UsageError) << bad;
}

TEST(DeviceFlags, ParsesMaxMemory) {
  const MaxMemory all = parse_max_memory("60GiB");
  ASSERT_TRUE(all.all);
  EXPECT_EQ(*all.all, 60ull << 30);
  const MaxMemory per = parse_max_memory("cpu:1=2GB, 0=1MB,cpu=5");
  EXPECT_EQ(per.per_device.at("cpu:1"), 2'000'000'000u);
  EXPECT_EQ(per.per_device.at("0"), 1'000'000u);
  EXPECT_EQ(per.per_device.at("cpu:0"), 5u);
  EXPECT_FALSE(per.all);
  EXPECT_THROW(parse_max_memory("cpu:0=2GiB,cpu:0=1GiB"), UsageError);
  for (const char* bad : {"", "12XB", "cpu:0=abc", "cpu:0=2GiB,cpu:1", "gpu:0=1GB", "cpu:0=-1GB", "=5GB"})
    EXPECT_THROW(parse_max_memory(bad), UsageError) << bad;
}

TEST(VisibleDevices, CudaOrderAndRenumbering) {
  EXPECT_EQ(parse_visible_devices("CUDA_VISIBLE_DEVICES", "2,0", 4), (std::vector<int>{2, 0}));
  EXPECT_EQ(parse_visible_devices("CUDA_VISIBLE_DEVICES", " 3", 4), (std::vector<int>{3}));
  EXPECT_TRUE(parse_visible_devices("CUDA_VISIBLE_DEVICES", "", 4).empty());
  EXPECT_EQ(parse_visible_devices("CUDA_VISIBLE_DEVICES", "7,9", std::nullopt), (std::vector<int>{7, 9}));
  const std::string missing = error_of([] { parse_visible_devices("CUDA_VISIBLE_DEVICES", "0,5,1", 4); });
  EXPECT_NE(missing.find("device 5 does not exist"), std::string::npos) << missing;
  EXPECT_NE(missing.find("only the 1"), std::string::npos) << missing;
  EXPECT_NE(error_of([] { parse_visible_devices("CUDA_VISIBLE_DEVICES", "1,1", 4); }).find("twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_visible_devices("CUDA_VISIBLE_DEVICES", "0,x", 4); }).find("'x'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_visible_devices("CUDA_VISIBLE_DEVICES", "0,-1", 4); }).find("'-1'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_visible_devices("CUDA_VISIBLE_DEVICES", "GPU-8a3f", 4); }).find("UUID"),
            std::string::npos);
}

TEST(VisibleDevices, AscendIdsCommasOnlyAscending) {
  EXPECT_EQ(parse_visible_devices("ASCEND_RT_VISIBLE_DEVICES", "1,2,3", 8), (std::vector<int>{1, 2, 3}));
  EXPECT_NE(error_of([] { parse_visible_devices("ASCEND_RT_VISIBLE_DEVICES", "1, 2,3", 8); }).find("' 2'"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_visible_devices("ASCEND_RT_VISIBLE_DEVICES", "1,3,8", 8); }).find("device 8 does not exist"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_visible_devices("ASCEND_RT_VISIBLE_DEVICES", "3,1", 8); }).find("ascending"),
            std::string::npos);
}

TEST(Registry, ResolvesCapsAndRenumbersThroughTheVariables) {
  const DeviceRegistry r = DeviceRegistry::builtin();
  const auto targets = r.resolve(parse_device_list("npu:0-1"), parse_max_memory("npu:0=60GiB,1=30GiB"),
                                 fake_env({{"ASCEND_RT_VISIBLE_DEVICES", "4,6"}}));
  ASSERT_EQ(targets.size(), 2u);
  EXPECT_EQ(targets[0].capacity, 60ull << 30);
  EXPECT_EQ(targets[1].capacity, 30ull << 30);
  EXPECT_FALSE(targets[0].present);
  const std::string gone = error_of([&] {
    r.resolve(parse_device_list("npu:0-2"), parse_max_memory("60GiB"), fake_env({{"ASCEND_RT_VISIBLE_DEVICES", "4,6"}}));
  });
  EXPECT_NE(gone.find("npu:2 does not exist"), std::string::npos) << gone;
  EXPECT_NE(gone.find("2 device(s) visible"), std::string::npos) << gone;
  EXPECT_NE(error_of([&] {
              r.resolve(parse_device_list("cuda:0"), parse_max_memory("1GB"), fake_env({{"CUDA_VISIBLE_DEVICES", ""}}));
            }).find("cuda:0 does not exist"),
            std::string::npos);
  // Devices without a backend need a size; --max_memory may only name listed devices.
  EXPECT_THROW(r.resolve(parse_device_list("cuda:0"), {}, fake_env({})), UsageError);
  EXPECT_THROW(r.resolve(parse_device_list("cpu:0"), parse_max_memory("cpu:1=1GB"), fake_env({})), UsageError);
  // Capped CPU devices open with their caps.
  const auto cpus = r.resolve(parse_device_list("cpu:0,cpu:1"), parse_max_memory("cpu:0=2MiB,cpu:1=3MiB"), fake_env({}));
  const auto opened = r.open(cpus, 1);
  ASSERT_EQ(opened.size(), 2u);
  EXPECT_EQ(opened[1]->name(), "cpu:1");
  EXPECT_EQ(opened[1]->memory().total, 3ull << 20);
  EXPECT_THROW(r.open(targets, 1), Error);  // npu: planning only in this build
}

TEST(DevicesCli, ListsDevicesAndRejectsBadFlags) {
  auto r = test::run_vlmforge({"devices", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["devices"][0]["name"], "cpu:0");
  EXPECT_GT(j["devices"][0]["total"].get<uint64_t>(), 0u);
  r = test::run_vlmforge({"devices", "--devices", "npu:0-3", "--max_memory", "60GiB", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["devices"].size(), 4u);
  r = test::run_vlmforge({"devices", "--devices", "gpu:0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("gpu:0"), std::string::npos) << r.err;
  r = test::run_vlmforge({"devices", "--devices", "cuda:0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--max_memory"), std::string::npos) << r.err;
  r = test::run_vlmforge({"devices", "--devices", "cpu:0", "--max_memory", "cpu:0=lots"});
  EXPECT_EQ(r.exit_code, 2);
}

TEST(DevicesCli, VisibleDeviceVariablesRenumberAndMissingDevicesAreErrors) {
  // The child inherits this process's environment.
  ASSERT_EQ(setenv("ASCEND_RT_VISIBLE_DEVICES", "4,5", 1), 0);
  auto r = test::run_vlmforge({"devices", "--devices", "npu:0-1", "--max_memory", "60GiB", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = test::run_vlmforge({"plan", "--preset", "qwen2.5-7b", "--devices", "npu:0-3", "--max_memory", "60GiB"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("npu:2 does not exist: ASCEND_RT_VISIBLE_DEVICES=4,5 makes 2 device(s) visible"),
            std::string::npos)
      << r.err;
  ASSERT_EQ(setenv("ASCEND_RT_VISIBLE_DEVICES", "5,4", 1), 0);
  r = test::run_vlmforge({"devices", "--devices", "npu:0", "--max_memory", "60GiB"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("ascending"), std::string::npos) << r.err;
  unsetenv("ASCEND_RT_VISIBLE_DEVICES");
  ASSERT_EQ(setenv("CUDA_VISIBLE_DEVICES", "0,0", 1), 0);
  r = test::run_vlmforge({"plan", "--preset", "qwen2.5-0.5b", "--devices", "cuda:0", "--max_memory", "8GB"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("listed twice"), std::string::npos) << r.err;
  unsetenv("CUDA_VISIBLE_DEVICES");
}

}  // namespace
}  // namespace vlmforge
