#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <random>

#include "io/json_file.h"
#include "io/safetensors_writer.h"
#include "support/test_support.h"
#include "util/error.h"

namespace vlmforge {
namespace {
namespace fs = std::filesystem;
using test::TempDir;

std::vector<std::byte> pattern_bytes(size_t n, uint8_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 31 + seed) & 0xff);
  return v;
}

void write_raw(const fs::path& path, const std::string& header, const std::vector<std::byte>& data) {
  std::ofstream out(path, std::ios::binary);
  uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, RoundTripsEveryDtypeEmptyAndScalarTensors) {
  TempDir dir;
  std::vector<TensorSpec> specs;
  for (DType d : {DType::BOOL, DType::U8, DType::I8, DType::I16, DType::U16, DType::F16, DType::BF16, DType::I32,
                  DType::U32, DType::F32, DType::F64, DType::I64, DType::U64, DType::F8_E4M3, DType::F8_E5M2,
                  DType::F8_E8M0, DType::C64})
    specs.push_back({"t_" + std::string(dtype_name(d)), d, {3, 5}});
  specs.push_back({"f4_packed", DType::F4, {4, 2}});
  specs.push_back({"empty", DType::BF16, {0, 7}});
  specs.push_back({"scalar", DType::F32, {}});
  std::vector<std::vector<std::byte>> data;
  for (size_t i = 0; i < specs.size(); ++i) data.push_back(pattern_bytes(specs[i].nbytes(), static_cast<uint8_t>(i)));
  std::vector<std::span<const std::byte>> views(data.begin(), data.end());
  save_safetensors(dir / "all.safetensors", specs, views, {{"format", "pt"}, {"note", "x"}});

  const SafetensorsFile file(dir / "all.safetensors");
  EXPECT_EQ(file.header().metadata.at("format"), "pt");
  EXPECT_EQ(file.header().metadata.at("note"), "x");
  EXPECT_EQ(file.header().data_start % 8, 0u) << "header must be padded to 8 bytes";
  ASSERT_EQ(file.tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorInfo* t = file.find(specs[i].name);
    ASSERT_NE(t, nullptr) << specs[i].name;
    EXPECT_EQ(t->dtype, specs[i].dtype);
    EXPECT_EQ(t->shape, specs[i].shape);
    const auto bytes = file.data(*t);
    ASSERT_EQ(bytes.size(), data[i].size());
    EXPECT_TRUE(std::ranges::equal(bytes, data[i])) << specs[i].name;
  }
  EXPECT_EQ(file.find("scalar")->num_elements(), 1u);
  EXPECT_EQ(file.find("empty")->nbytes(), 0u);
}

TEST(Safetensors, ShardPlanningMatchesHuggingfaceHub) {
  std::vector<TensorSpec> specs{{"a", DType::U8, {40}}, {"b", DType::U8, {50}}, {"c", DType::U8, {200}},
                                {"d", DType::U8, {30}}, {"e", DType::U8, {70}}, {"f", DType::U8, {10}}};
  // Limit 100: a+b fit (90); c is oversized and becomes a shard of its own at once; d would
  // overflow [a,b], which closes; d+e fill exactly 100; f starts the last shard.
  const auto shards = plan_shards(specs, 100);
  const std::vector<std::vector<size_t>> expected{{2}, {0, 1}, {3, 4}, {5}};
  EXPECT_EQ(shards, expected);
  EXPECT_EQ(shard_file_name(0, 1), "model.safetensors");
  EXPECT_EQ(shard_file_name(1, 4), "model-00002-of-00004.safetensors");
}

TEST(Safetensors, ShardedCheckpointRoundTrip) {
  TempDir dir;
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 5; ++i) specs.push_back({"layer." + std::to_string(i), DType::BF16, {8, 8}});
  const auto shards = plan_shards(specs, 300);
  ASSERT_EQ(shards.size(), 3u);
  std::map<std::string, std::string> weight_map;
  uint64_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    std::vector<TensorSpec> shard_specs;
    std::vector<std::vector<std::byte>> data;
    for (size_t i : shards[s]) {
      shard_specs.push_back(specs[i]);
      data.push_back(pattern_bytes(specs[i].nbytes(), static_cast<uint8_t>(i)));
      weight_map[specs[i].name] = shard_file_name(s, shards.size());
      total += specs[i].nbytes();
    }
    std::vector<std::span<const std::byte>> views(data.begin(), data.end());
    save_safetensors(dir / shard_file_name(s, shards.size()), shard_specs, views);
  }
  write_text_file(dir / "model.safetensors.index.json", make_shard_index(total, weight_map).dump());
  const Checkpoint ckpt(dir.path());
  EXPECT_TRUE(ckpt.sharded());
  EXPECT_EQ(ckpt.files().size(), 3u);
  EXPECT_EQ(ckpt.total_bytes(), total);
  for (int i = 0; i < 5; ++i) {
    const TensorRef* t = ckpt.find("layer." + std::to_string(i));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->data()[0], pattern_bytes(1, static_cast<uint8_t>(i))[0]);
  }
  const auto index = read_json_file(dir / "model.safetensors.index.json");
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);

  fs::remove(dir / "model-00002-of-00003.safetensors");
  const std::string err = error_of([&] { Checkpoint{dir.path()}; });
  EXPECT_NE(err.find("model-00002-of-00003.safetensors"), std::string::npos) << err;
  EXPECT_NE(err.find("does not exist"), std::string::npos) << err;
}

struct BadHeaderCase {
  const char* name;
  std::string header;
  size_t data_bytes;
  const char* expected;  // substring of the error
};

TEST(Safetensors, RejectsBadHeadersWithClearErrors) {
  const std::vector<BadHeaderCase> cases{
      {"invalid_json", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})", 4, "invalid JSON"},
      {"not_object", R"([1, 2])", 0, "not a JSON object"},
      {"unknown_dtype", R"({"w": {"dtype": "F12", "shape": [1], "data_offsets": [0, 4]}})", 4, "unknown dtype"},
      {"size_mismatch", R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 4, "needs 8"},
      {"out_of_range", R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8, "truncated"},
      {"overlap", R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12, "overlaps"},
      {"gap", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8, "gap"},
      {"trailing", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 12, "trailing"},
      {"negative_dim", R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4, "negative"},
      {"reversed", R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}})", 4, "end before"},
      {"bad_offsets", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4, "data_offsets"},
      {"overflow", R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", 4, "overflows"},
      {"number_overflow", R"({"a": {"dtype": "F32", "shape": [1e792], "data_offsets": [0, 4]}})", 4, "invalid JSON"},
      {"bad_metadata", R"({"__metadata__": {"format": 1}})", 0, "not a string"},
  };
  for (const auto& c : cases) {
    TempDir dir;
    const fs::path path = dir / (std::string(c.name) + ".safetensors");
    write_raw(path, c.header, std::vector<std::byte>(c.data_bytes));
    const std::string err = error_of([&] { SafetensorsFile{path}; });
    EXPECT_NE(err.find(c.expected), std::string::npos) << c.name << ": " << err;
    EXPECT_NE(err.find(path.string()), std::string::npos) << c.name << " must name the file: " << err;
  }
}

TEST(Safetensors, RejectsTruncatedAndAbsurdFiles) {
  TempDir dir;
  {
    std::ofstream(dir / "short.safetensors") << "abc";
  }
  EXPECT_NE(error_of([&] { SafetensorsFile{dir / "short.safetensors"}; }).find("truncated"), std::string::npos);
  {
    std::ofstream out(dir / "huge.safetensors", std::ios::binary);
    const uint64_t len = 200'000'000;
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << "{}";
  }
  EXPECT_NE(error_of([&] { SafetensorsFile{dir / "huge.safetensors"}; }).find("absurd"), std::string::npos);
  {
    std::ofstream out(dir / "past.safetensors", std::ios::binary);
    const uint64_t len = 1000;
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << "{}";
  }
  EXPECT_NE(error_of([&] { SafetensorsFile{dir / "past.safetensors"}; }).find("past the end"), std::string::npos);

  // A valid file cut short loses its last tensor's data.
  const std::vector<TensorSpec> specs{{"w", DType::F32, {64}}};
  const auto data = pattern_bytes(256, 1);
  const std::vector<std::span<const std::byte>> views{data};
  save_safetensors(dir / "cut.safetensors", specs, views);
  fs::resize_file(dir / "cut.safetensors", fs::file_size(dir / "cut.safetensors") - 10);
  const std::string err = error_of([&] { SafetensorsFile{dir / "cut.safetensors"}; });
  EXPECT_NE(err.find("'w'"), std::string::npos) << err;
}

// Property test: random mutations of a valid file never crash the parser; every input either
// parses into a self-consistent header or is rejected with an Error.
TEST(Safetensors, SeededMutationFuzz) {
  TempDir dir;
  const std::vector<TensorSpec> specs{{"a", DType::BF16, {3, 4}}, {"b", DType::F32, {2}}, {"c", DType::U8, {0}}};
  std::vector<std::vector<std::byte>> data;
  for (const auto& s : specs) data.push_back(pattern_bytes(s.nbytes(), 3));
  std::vector<std::span<const std::byte>> views(data.begin(), data.end());
  save_safetensors(dir / "seed.safetensors", specs, views);
  std::ifstream in(dir / "seed.safetensors", std::ios::binary);
  const std::string seed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  std::mt19937_64 rng(12345);
  size_t accepted = 0;
  for (int iteration = 0; iteration < 20000; ++iteration) {
    std::string bytes = seed;
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations; ++m) {
      switch (rng() % 4) {
        case 0: bytes[rng() % bytes.size()] = static_cast<char>(rng()); break;
        case 1: bytes.resize(rng() % (bytes.size() + 1)); break;
        case 2: bytes.insert(rng() % (bytes.size() + 1), 1, "{}[],:\"0123456789"[rng() % 17]); break;
        case 3: if (!bytes.empty()) bytes.erase(rng() % bytes.size(), 1); break;
      }
      if (bytes.empty()) break;
    }
    const auto span = std::as_bytes(std::span(bytes.data(), bytes.size()));
    try {
      const SafetensorsHeader h = parse_safetensors_header(span, "fuzz");
      ++accepted;
      uint64_t cursor = 0;
      for (const auto& t : h.tensors) {
        ASSERT_EQ(t.begin, cursor);
        cursor = t.end;
      }
      ASSERT_EQ(h.data_start + cursor, bytes.size());
    } catch (const Error&) {
    }
  }
  EXPECT_GT(accepted, 0u) << "some mutations (e.g. inside tensor data) leave the file valid";
}

}  // namespace
}  // namespace vlmforge
