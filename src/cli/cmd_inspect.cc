// vlmforge inspect: what is in a model directory, a safetensors file or an adapter directory.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/config.h"
#include "model/quantized_checkpoint.h"
#include "util/bytes.h"
#include "util/error.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct InspectArgs {
  std::string path;
  bool json = false;
  bool summary = false;
};

// "model.layers.12.mlp.up_proj.weight" -> "model.layers.12"; "" when not in a numbered block.
std::string block_of(const std::string& name) {
  for (std::string_view marker : {"layers.", "blocks."}) {
    for (size_t pos = name.find(marker); pos != std::string::npos; pos = name.find(marker, pos + 1)) {
      if (pos != 0 && name[pos - 1] != '.') continue;
      const size_t digits = pos + marker.size();
      size_t end = digits;
      while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
      if (end > digits && end < name.size() && name[end] == '.') return name.substr(0, end);
    }
  }
  return "";
}

json config_json(const ModelConfig& c) {
  json j = {{"architecture", c.architecture},
            {"model_type", c.model_type},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.num_hidden_layers},
            {"num_attention_heads", c.num_attention_heads},
            {"num_key_value_heads", c.num_key_value_heads},
            {"head_dim", c.head_dim()},
            {"vocab_size", c.vocab_size},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"torch_dtype", c.torch_dtype},
            {"rope_theta", c.rope_theta},
            {"max_position_embeddings", c.max_position_embeddings}};
  if (c.quantization) {
    const QuantizationConfig& q = *c.quantization;
    j["quantization"] = {{"quant_method", q.method == QuantMethod::kAwq ? "awq" : "gptq"},
                         {"bits", q.bits},
                         {"group_size", q.group_size},
                         {"desc_act", q.desc_act},
                         {"sym", q.sym},
                         {"zeros_minus_one", q.zeros_minus_one},
                         {"modules_to_not_convert", q.modules_to_not_convert}};
  }
  if (c.vision)
    j["vision"] = {{"depth", c.vision->depth},
                   {"hidden_size", c.vision->hidden_size},
                   {"intermediate_size", c.vision->intermediate_size},
                   {"num_heads", c.vision->num_heads},
                   {"out_hidden_size", c.vision->out_hidden_size},
                   {"patch_size", c.vision->patch_size},
                   {"window_size", c.vision->window_size}};
  return j;
}

json adapter_json(const Adapter& a) {
  const LoraConfig& c = a.config();
  json targets = c.target_module_regex ? json(*c.target_module_regex) : json(c.target_module_list);
  json modules = json::array();
  for (const auto& m : a.modules())
    modules.push_back({{"module", m.module},
                       {"kind", m.kind == LoraLayerKind::kEmbedding ? "embedding" : "linear"},
                       {"rank", m.rank},
                       {"scaling", m.scaling},
                       {"dora", m.magnitude != nullptr},
                       {"lora_bias", m.b_bias != nullptr}});
  json replaced = json::array();
  for (const auto& r : a.replacements()) replaced.push_back(r.name);
  return {{"peft_type", c.peft_type}, {"r", c.r}, {"lora_alpha", c.lora_alpha}, {"use_rslora", c.use_rslora},
          {"use_dora", c.use_dora}, {"fan_in_fan_out", c.fan_in_fan_out}, {"bias", c.bias},
          {"target_modules", targets}, {"modules_to_save", c.modules_to_save}, {"modules", modules},
          {"replaced_tensors", replaced}};
}

int run(const InspectArgs& args) {
  const fs::path path = args.path;
  if (!fs::exists(path)) throw Error(path.string() + ": no such file or directory");
  const bool is_adapter = fs::is_directory(path) && fs::exists(path / "adapter_config.json");
  std::optional<Adapter> adapter;
  std::optional<Checkpoint> checkpoint;
  if (is_adapter) adapter.emplace(path);
  else checkpoint.emplace(path);
  const Checkpoint& ckpt = adapter ? adapter->tensors() : *checkpoint;

  json out = {{"path", path.string()}, {"kind", is_adapter ? "adapter" : fs::is_directory(path) ? "model" : "file"}};
  std::optional<ModelConfig> config;
  if (!is_adapter && fs::is_directory(path) && fs::exists(path / "config.json")) config = ModelConfig::load(path);
  if (config) out["config"] = config_json(*config);
  if (adapter) out["adapter"] = adapter_json(*adapter);

  uint64_t parameters = 0, total = 0;
  std::map<std::string, uint64_t> block_bytes;  // sorted by name; numeric order restored below
  std::vector<std::string> block_order;
  json tensors = json::array();
  for (const auto& t : ckpt.tensors()) {
    parameters += t.info->num_elements();
    total += t.info->nbytes();
    const std::string block = block_of(t.name());
    if (!block.empty()) {
      if (!block_bytes.count(block)) block_order.push_back(block);
      block_bytes[block] += t.info->nbytes();
    }
    tensors.push_back({{"name", t.name()}, {"dtype", dtype_name(t.info->dtype)}, {"shape", t.info->shape},
                       {"bytes", t.info->nbytes()}, {"file", t.file->path().filename().string()}});
  }
  json blocks = json::array();
  for (const auto& b : block_order) blocks.push_back({{"name", b}, {"bytes", block_bytes[b]}});
  out["files"] = ckpt.files().size();
  out["parameters"] = parameters;
  out["total_bytes"] = total;
  out["blocks"] = blocks;
  out["tensors"] = tensors;
  // A quantized model's weights once its linears are repacked for the devices (what `plan` counts).
  std::optional<uint64_t> device_bytes;
  if (config && config->quantization) {
    device_bytes = 0;
    for (const auto& [name, bytes] : device_tensor_bytes(ckpt, &*config->quantization)) *device_bytes += bytes;
    out["device_bytes"] = *device_bytes;
  }

  if (args.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return kExitOk;
  }
  std::printf("%s (%s): %zu tensors in %zu file%s, %.3f B parameters, %s\n", path.string().c_str(),
              out["kind"].get<std::string>().c_str(), tensors.size(), ckpt.files().size(),
              ckpt.files().size() == 1 ? "" : "s", static_cast<double>(parameters) / 1e9, format_bytes(total).c_str());
  if (config) {
    const auto& c = *config;
    std::printf("  %s (%s): hidden %d, intermediate %d, %d layers, %d heads / %d KV heads (head_dim %d), vocab %d, %s, %s\n",
                c.architecture.c_str(), c.model_type.c_str(), c.hidden_size, c.intermediate_size, c.num_hidden_layers,
                c.num_attention_heads, c.num_key_value_heads, c.head_dim(), c.vocab_size,
                c.tie_word_embeddings ? "tied embeddings" : "separate lm_head", c.torch_dtype.c_str());
    if (c.quantization)
      std::printf("  quantized: %s; %s on the devices once repacked\n", c.quantization->describe().c_str(),
                  format_bytes(*device_bytes).c_str());
    if (c.vision)
      std::printf("  vision tower: %d blocks, hidden %d, intermediate %d, %d heads, output %d, patch %d, window %d\n",
                  c.vision->depth, c.vision->hidden_size, c.vision->intermediate_size, c.vision->num_heads,
                  c.vision->out_hidden_size, c.vision->patch_size, c.vision->window_size);
  }
  if (adapter) {
    const auto& c = adapter->config();
    std::printf("  %s adapter: r=%d alpha=%g%s%s, %zu LoRA modules, %zu replaced tensors\n", c.peft_type.c_str(), c.r,
                c.lora_alpha, c.use_rslora ? " rslora" : "", c.use_dora ? " dora" : "", adapter->modules().size(),
                adapter->replacements().size());
  }
  if (!block_order.empty()) {
    std::printf("Bytes per block:\n");
    for (const auto& b : block_order) std::printf("  %-40s %s\n", b.c_str(), format_bytes(block_bytes[b]).c_str());
  }
  if (!args.summary) {
    std::printf("Tensors:\n");
    for (const auto& t : ckpt.tensors())
      std::printf("  %-64s %-5s %-20s %12s\n", t.name().c_str(), std::string(dtype_name(t.info->dtype)).c_str(),
                  t.info->shape_string().c_str(), format_bytes(t.info->nbytes()).c_str());
  }
  return kExitOk;
}

}  // namespace

void add_inspect_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Show a checkpoint's config, parameter count, tensors (name, dtype, shape, bytes) and bytes per\n"
                 "decoder layer; for AWQ / GPTQ models also the quantization and the bytes once repacked for the\n"
                 "devices. PATH: a model directory, a .safetensors file, or a PEFT adapter directory.");
  cmd->add_option("PATH", args->path, "Model directory, safetensors file or adapter directory")->required();
  cmd->add_flag("--json", args->json, "Print everything as one JSON object");
  cmd->add_flag("--summary", args->summary, "Leave out the per-tensor table");
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace vlmforge::cli
