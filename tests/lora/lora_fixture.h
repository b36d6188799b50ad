#pragma once
// Builds small base checkpoints and adapters with known values, and reads merged tensors back,
// so merge results can be compared with a naive double-precision reference.
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "io/convert.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "lora/merge.h"
#include "support/test_support.h"

namespace vlmforge::test {

// A dense tensor held as doubles (the values exactly as stored in `dtype`).
struct Matrix {
  std::vector<uint64_t> shape;
  std::vector<double> values;
  size_t rows() const { return shape.empty() ? 1 : shape[0]; }
  size_t cols() const { return shape.size() < 2 ? values.size() : shape[1]; }
  double at(size_t r, size_t c) const { return values[r * cols() + c]; }
};

inline Matrix random_matrix(std::vector<uint64_t> shape, DType dtype, std::mt19937& rng, double spread = 0.1,
                            double center = 0) {
  std::uniform_real_distribution<double> dist(center - spread, center + spread);
  Matrix m{std::move(shape), {}};
  size_t n = 1;
  for (auto d : m.shape) n *= d;
  std::vector<std::byte> scratch(4);
  for (size_t i = 0; i < n; ++i) {
    // Round through the storage dtype so the doubles are exactly what the file holds.
    store_float(dtype, scratch.data(), 0, static_cast<float>(dist(rng)));
    m.values.push_back(load_float(dtype, scratch.data(), 0));
  }
  return m;
}

class TensorFileBuilder {
 public:
  void add(const std::string& name, const Matrix& m, DType dtype) {
    specs_.push_back({name, dtype, m.shape});
    std::vector<std::byte> bytes(specs_.back().nbytes());
    for (size_t i = 0; i < m.values.size(); ++i) store_float(dtype, bytes.data(), i, static_cast<float>(m.values[i]));
    data_.push_back(std::move(bytes));
  }
  void save(const std::filesystem::path& path) const {
    std::vector<std::span<const std::byte>> views(data_.begin(), data_.end());
    save_safetensors(path, specs_, views);
  }

 private:
  std::vector<TensorSpec> specs_;
  std::vector<std::vector<std::byte>> data_;
};

inline void write_json(const std::filesystem::path& path, const nlohmann::json& j) { write_text_file(path, j.dump(2)); }

inline nlohmann::json lora_config(int r, double alpha, nlohmann::json extra = nlohmann::json::object()) {
  nlohmann::json j = {{"peft_type", "LORA"}, {"r", r}, {"lora_alpha", alpha}, {"target_modules", {"q_proj", "v_proj"}},
                      {"bias", "none"},      {"fan_in_fan_out", false},      {"use_rslora", false},
                      {"use_dora", false},   {"rank_pattern", nlohmann::json::object()},
                      {"alpha_pattern", nlohmann::json::object()}};
  j.update(extra);
  return j;
}

inline Matrix read_tensor(const Checkpoint& ckpt, const std::string& name) {
  const TensorRef* t = ckpt.find(name);
  if (!t) throw std::runtime_error("missing tensor " + name);
  Matrix m{t->info->shape, {}};
  for (uint64_t i = 0; i < t->info->num_elements(); ++i) m.values.push_back(load_float(t->info->dtype, t->data().data(), i));
  return m;
}

// Runs plan + execute as the CLI does; returns the output directory.
inline std::filesystem::path merge(const std::filesystem::path& base, const std::vector<std::filesystem::path>& adapters,
                                   const std::filesystem::path& out, MergeOptions options = {}) {
  options.model_dir = base;
  options.adapter_dirs = adapters;
  options.output_dir = out;
  const Checkpoint ckpt(base);
  std::vector<Adapter> loaded;
  for (const auto& a : adapters) loaded.emplace_back(a);
  const MergePlan plan = plan_merge(ckpt, loaded, options);
  execute_merge(ckpt, plan, options);
  return out;
}

// Spacing of representable values of `dtype` around x.
inline double ulp_of(double x, DType dtype) {
  const int mantissa = dtype == DType::BF16 ? 7 : dtype == DType::F16 ? 10 : 23;
  const int min_exp = dtype == DType::BF16 ? -126 : dtype == DType::F16 ? -14 : -126;
  const int e = std::max(std::ilogb(std::max(std::abs(x), 1e-300)), min_exp);
  return std::ldexp(1.0, e - mantissa);
}

}  // namespace vlmforge::test
