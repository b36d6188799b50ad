#include "model/quantization.h"

#include <algorithm>
#include <cctype>

#include "util/error.h"

namespace vlmforge {
using nlohmann::json;

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Typed access to the fields of quantization_config; errors name the file and the field.
class QuantFields {
 public:
  QuantFields(const json& j, const std::string& source) : j_(j), source_(source) {}
  template <typename T>
  T get(const char* key, T fallback) const {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    try {
      return it->get<T>();
    } catch (const json::exception&) {
      throw Error(where(key) + " has the wrong type (" + it->dump() + ")");
    }
  }
  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
  std::string where(const char* key) const { return source_ + ": quantization_config." + key; }

 private:
  const json& j_;
  const std::string& source_;
};

}  // namespace

QuantizationConfig QuantizationConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": quantization_config is not a JSON object");
  const QuantFields f(j, source);
  QuantizationConfig c;
  const std::string method = lower(f.get<std::string>("quant_method", ""));
  if (method == "awq") c.method = QuantMethod::kAwq;
  else if (method == "gptq") c.method = QuantMethod::kGptq;
  else
    throw Error(f.where("quant_method") + " is '" + method +
                "'; supported: awq (AutoAWQ GEMM) and gptq (AutoGPTQ / GPTQModel); dequantize the checkpoint "
                "to BF16/F16 to run it");
  c.bits = f.get<int>("bits", f.get<int>("w_bit", 0));
  if (c.bits != 4 && (c.bits != 8 || c.method == QuantMethod::kAwq))
    throw Error(f.where("bits") + " is " + std::to_string(c.bits) + "; supported: " +
                (c.method == QuantMethod::kAwq ? "4 (AWQ)" : "4 and 8 (GPTQ)"));
  c.group_size = f.get<int>("group_size", f.get<int>("q_group_size", 128));
  if (c.group_size != -1 && (c.group_size <= 0 || c.group_size % 32 != 0))
    throw Error(f.where("group_size") + " is " + std::to_string(c.group_size) +
                "; supported: -1 (one group per row) or a positive multiple of 32");
  c.modules_to_not_convert = f.get<std::vector<std::string>>("modules_to_not_convert", {});
  if (c.method == QuantMethod::kAwq) {
    // AutoAWQ's GEMM packing only: GEMV, GEMV_fast, exllama, marlin and ipex checkpoints
    // interleave their codes differently.
    const std::string version = lower(f.get<std::string>("version", "gemm"));
    if (version != "gemm")
      throw Error(f.where("version") + " is '" + version + "'; only AutoAWQ's \"gemm\" packing is supported");
    const std::string backend = lower(f.get<std::string>("backend", "autoawq"));
    if (backend != "autoawq")
      throw Error(f.where("backend") + " is '" + backend + "'; only AutoAWQ (\"autoawq\") checkpoints are supported");
    if (!f.get<bool>("zero_point", true))
      throw Error(f.where("zero_point") + " is false; only AWQ checkpoints with zero points are supported");
    c.sym = false;
    c.zeros_minus_one = false;
  } else {
    c.desc_act = f.get<bool>("desc_act", false);
    c.sym = f.get<bool>("sym", true);
    const char* format_key = f.has("checkpoint_format") ? "checkpoint_format" : "format";
    const std::string format = lower(f.get<std::string>(format_key, "gptq"));
    if (format == "gptq_v2") c.zeros_minus_one = false;
    else if (format != "gptq")
      throw Error(f.where(format_key) + " is '" + format +
                  "'; supported: gptq (v1) and gptq_v2 (marlin, bitblas, ipex and other repacked formats are not)");
    if (f.get<bool>("is_marlin_format", false))
      throw Error(f.where("is_marlin_format") + " is true; Marlin-packed GPTQ checkpoints are not supported");
  }
  return c;
}

std::string QuantizationConfig::describe() const {
  std::string s = std::string(method == QuantMethod::kAwq ? "awq" : "gptq") + " " + std::to_string(bits) + "-bit";
  if (method == QuantMethod::kGptq) s += zeros_minus_one ? " v1" : " v2";
  s += group_size == -1 ? ", one group per row" : ", group " + std::to_string(group_size);
  if (desc_act) s += ", desc_act";
  if (method == QuantMethod::kGptq) s += sym ? ", sym" : ", asym";
  return s;
}

kernels::QuantLayout QuantizationConfig::device_layout(uint64_t cols, bool has_perm) const {
  const size_t group = group_size == -1 ? (cols + 31) / 32 * 32 : static_cast<size_t>(group_size);
  return {static_cast<uint32_t>(bits), group, has_perm};
}

bool QuantizationConfig::keeps_unquantized(const std::string& module) const {
  return std::any_of(modules_to_not_convert.begin(), modules_to_not_convert.end(),
                     [&](const std::string& m) { return !m.empty() && module.find(m) != std::string::npos; });
}

}  // namespace vlmforge
