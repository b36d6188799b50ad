#include "cli/infer_session.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <thread>

#include "data/media_check.h"
#include "io/json_file.h"
#include "model/mrope.h"
#include "tokenizer/utf8.h"
#include "util/bytes.h"
#include "util/error.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void add_ids(const json& value, std::vector<int32_t>& out) {
  if (value.is_number_integer()) out.push_back(value.get<int32_t>());
  else if (value.is_array())
    for (const auto& v : value)
      if (v.is_number_integer()) out.push_back(v.get<int32_t>());
}

}  // namespace

void add_device_map_options(CLI::App* cmd, DeviceMapArgs& a) {
  cmd->add_option("--device_map", a.placement.device_map,
                  "Run across devices: auto / balanced / sequential (planned as `vlmforge plan` does) or a Hugging "
                  "Face-format JSON map (module -> device)");
  cmd->add_option("--devices", a.placement.devices, "Devices for --device_map: cpu:0,cpu:1,cpu:2 (default cpu:0)");
  cmd->add_option("--max_memory", a.placement.max_memory,
                  "Most memory per device (accelerate's max_memory): 2GiB for every device, or cpu:0=2GiB,cpu:1=1GiB");
  cmd->add_option("--reserve", a.placement.reserve, "Memory kept free per device (default 0 on cpu)");
  cmd->add_flag("--memory_report", a.memory_report,
                "After the run, print each device's peak accounted memory next to the plan's estimate");
}

PlanOptions generation_plan_options(size_t max_batch_size, size_t max_model_len, DType kv_cache_dtype, size_t threads,
                                    const vision::PixelBudget& budget) {
  PlanOptions o;
  o.max_pixels = budget.max_pixels;
  o.threads = threads;
  o.max_batch_size = max_batch_size;
  o.max_model_len = max_model_len;
  o.kv_cache_dtype = kv_cache_dtype;
  o.prefill_chunk = GenerationParams{}.prefill_chunk;
  return o;
}

std::unique_ptr<PlacedRun> place_model(const fs::path& model_dir, const DeviceMapArgs& args, PlanOptions options) {
  if (!args.enabled()) {
    if (args.memory_report)
      throw UsageError("--memory_report reports the devices of a --device_map run; add --device_map auto");
    return nullptr;
  }
  if (options.threads == 0) options.threads = std::max(1u, std::thread::hardware_concurrency());
  auto run = std::make_unique<PlacedRun>();
  const DeviceRegistry registry = DeviceRegistry::builtin();
  run->plan = plan_from_flags(ModelShape::from_checkpoint(model_dir), args.placement, options, registry,
                              process_environment());
  for (const auto& w : run->plan.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::vector<DeviceTarget> targets;
  for (const auto& d : run->plan.devices) targets.push_back(d.target);
  run->devices = registry.open(targets, options.threads);
  const auto& modules = run->plan.shape.modules;
  for (size_t i = 0; i < modules.size(); ++i) {
    Device* device = run->devices[run->plan.module_device[i]].get();
    switch (modules[i].kind) {
      case ModuleKind::kEmbed: run->placement.embed = device; break;
      case ModuleKind::kLayer: run->placement.layers.push_back(device); break;
      case ModuleKind::kNorm: run->placement.norm = device; break;
      case ModuleKind::kHead: run->placement.head = device; break;
      case ModuleKind::kVision:
        throw Error(model_dir.string() + ": --device_map does not place the vision tower on devices yet; run this "
                    "Qwen2.5-VL model without --device_map (planning it with `vlmforge plan` works)");
    }
  }
  run->print_plan();
  return run;
}

void PlacedRun::print_plan() const {
  std::string line;
  for (size_t d = 0; d < plan.devices.size(); ++d) {
    const DeviceUse& u = plan.devices[d];
    if (u.modules.empty()) continue;
    line += (line.empty() ? "" : " | ") + u.target.spec.name() + ": " + plan.to_json()["devices"][d]["summary"].get<std::string>() +
            " (" + format_bytes(u.estimate()) + ")";
  }
  std::fprintf(stderr, "[device_map] %s\n", line.c_str());
}

void PlacedRun::print_memory_report() const {
  for (size_t d = 0; d < plan.devices.size(); ++d) {
    const uint64_t peak = devices[d]->peak_allocated(), estimate = plan.devices[d].estimate();
    std::fprintf(stderr, "[memory] %s: peak %s (%llu bytes), plan %s (%llu bytes), ratio %.3f\n",
                 devices[d]->name().c_str(), format_bytes(peak).c_str(), static_cast<unsigned long long>(peak),
                 format_bytes(estimate).c_str(), static_cast<unsigned long long>(estimate),
                 estimate ? static_cast<double>(peak) / static_cast<double>(estimate) : 0.0);
  }
}

InferSession::InferSession(const fs::path& model_dir, size_t threads, const std::vector<fs::path>& adapter_dirs,
                           const VisionOptions& vision_options, const ModelPlacement* placement)
    : model(std::make_unique<Qwen2Model>(model_dir, threads, adapter_dirs, placement)),
      tokenizer([&] {
        if (!fs::exists(model_dir / "tokenizer.json"))
          throw Error(model_dir.string() + ": no tokenizer.json (copy the base model's tokenizer files next to the weights)");
        return tokenizer::Tokenizer::load(model_dir / "tokenizer.json");
      }()),
      chat_kind(model->config().is_vision_language() ? tokenizer::ChatTemplateKind::kQwen2_5Vl
                                                     : tokenizer::ChatTemplateKind::kQwen2_5) {
  defaults.stop_ids.push_back(model->config().eos_token_id);
  // transformers' GenerationConfig defaults: greedy unless do_sample.
  if (fs::exists(model_dir / "generation_config.json")) {
    const json g = read_json_file(model_dir / "generation_config.json");
    if (g.value("do_sample", false)) {
      defaults.sampling.temperature = g.value("temperature", 1.0f);
      defaults.sampling.top_k = g.value("top_k", 50);
      defaults.sampling.top_p = g.value("top_p", 1.0f);
    }
    defaults.sampling.repetition_penalty = g.value("repetition_penalty", 1.0f);
    if (g.contains("eos_token_id")) add_ids(g["eos_token_id"], defaults.stop_ids);
  }
  for (const char* special : {"<|im_end|>", "<|endoftext|>"})
    if (const auto id = tokenizer.token_id(special)) defaults.stop_ids.push_back(*id);
  if (model->config().is_vision_language()) {
    if (model->config().vision->out_hidden_size != model->config().hidden_size)
      throw Error(model_dir.string() + "/config.json: vision_config.out_hidden_size " +
                  std::to_string(model->config().vision->out_hidden_size) + " differs from hidden_size " +
                  std::to_string(model->config().hidden_size));
    vision_tower = std::make_unique<vision::VisionTower>(model->checkpoint(), model->config(), model->embedding_device(), model->lora());
    images = std::make_unique<vision::ImageEncoder>(*vision_tower, vision_options.budget, vision_options.cache_bytes,
                                                    vision_options.decode);
  }
}

std::vector<int32_t> InferSession::encode_chat(const nlohmann::ordered_json& request) const {
  tokenizer::ChatOptions options;
  options.add_generation_prompt = true;
  const std::string prompt = tokenizer::render_chat(chat_kind, tokenizer::parse_chat_request(request), options);
  return tokenizer.encode(prompt);
}

namespace {

// The image parts of a parsed request, in the order the Qwen2.5-VL template emits <|image_pad|>:
// parts with type "image", or an "image" / "image_url" field.
std::vector<const nlohmann::ordered_json*> image_parts(const tokenizer::ChatRequest& chat) {
  std::vector<const nlohmann::ordered_json*> out;
  for (const auto& message : chat.messages) {
    if (!message.is_object() || !message.contains("content") || !message["content"].is_array()) continue;
    for (const auto& part : message["content"]) {
      if (!part.is_object()) continue;
      const bool typed = part.contains("type") && part["type"] == "image";
      if (typed || part.contains("image") || part.contains("image_url")) out.push_back(&part);
    }
  }
  return out;
}

std::vector<std::string> image_references(const tokenizer::ChatRequest& chat) {
  std::vector<std::string> out;
  for (const nlohmann::ordered_json* part_ptr : image_parts(chat)) {
    const nlohmann::ordered_json& part = *part_ptr;
    const nlohmann::ordered_json& ref = part.contains("image") ? part["image"] : part.contains("image_url") ? part["image_url"] : part;
    std::string path;
    if (ref.is_string()) path = ref.get<std::string>();
    else if (ref.is_object() && ref.contains("url") && ref["url"].is_string()) path = ref["url"].get<std::string>();
    else if (ref.is_object() && ref.contains("path") && ref["path"].is_string()) path = ref["path"].get<std::string>();
    else throw Error("an image in the request has no path (expected a string, {\"path\": ...} or {\"url\": ...})");
    out.push_back(path);
  }
  return out;
}

fs::path image_path(std::string reference, const fs::path& base_dir) {
  if (reference.starts_with("file://")) reference.erase(0, 7);
  if (data::is_remote(reference))
    throw Error(reference + ": remote images are not downloaded; save the image and give its local path");
  if (reference.starts_with("data:")) throw Error("inline (data: URL) images are not supported; give a file path");
  const fs::path given(reference);
  if (given.is_absolute() || base_dir.empty() || fs::exists(given)) return given;
  return data::resolve_media_path(reference, base_dir);
}

// The prompt of a parsed request with its `image_count` images, the i-th encoded by encode(i):
// each <|image_pad|> expanded to its image's token count, the embeddings and M-RoPE positions.
PromptInput prepare_chat(const InferSession& session, const tokenizer::ChatRequest& chat, size_t image_count,
                         const std::function<vision::EncodedImage(size_t)>& encode) {
  if (image_count > 0 && !session.images)
    throw Error("the request has " + std::to_string(image_count) +
                " image(s) but this is a text-only model; images need a Qwen2.5-VL model");
  tokenizer::ChatOptions options;
  options.add_generation_prompt = true;
  PromptInput input;
  input.tokens = session.tokenizer.encode(tokenizer::render_chat(session.chat_kind, chat, options));
  if (image_count == 0) return input;
  const ModelConfig& config = session.model->config();
  std::vector<ImageGrid> grids;
  std::vector<int32_t> expanded;
  size_t next_image = 0;
  for (const int32_t token : input.tokens) {
    if (token != config.image_token_id) {
      expanded.push_back(token);
      continue;
    }
    if (next_image >= image_count) throw Error("the prompt has more <|image_pad|> tokens than images");
    const vision::EncodedImage image = encode(next_image++);
    grids.push_back({image.grid_t, image.grid_h, image.grid_w});
    expanded.insert(expanded.end(), image.tokens, token);
    input.image_embeds.insert(input.image_embeds.end(), image.embeds->begin(), image.embeds->end());
  }
  if (next_image != image_count)
    throw Error("the tokenizer does not map <|image_pad|> to the model's image_token_id " +
                std::to_string(config.image_token_id) + " (" + std::to_string(next_image) + " of " +
                std::to_string(image_count) + " images placed)");
  MropePositions positions = mrope_positions(expanded, grids, config);
  input.tokens = std::move(expanded);
  input.positions = std::move(positions.positions);
  input.position_delta = positions.delta;
  return input;
}

}  // namespace

PromptInput InferSession::prepare(const nlohmann::ordered_json& request, const fs::path& base_dir) const {
  const tokenizer::ChatRequest chat = tokenizer::parse_chat_request(request);
  const std::vector<std::string> references = image_references(chat);
  return prepare_chat(*this, chat, references.size(),
                      [&](size_t i) { return images->encode(image_path(references[i], base_dir)); });
}

PromptInput InferSession::prepare_in_memory(const nlohmann::ordered_json& request,
                                            std::span<const ImageData> image_data) const {
  const tokenizer::ChatRequest chat = tokenizer::parse_chat_request(request);
  const size_t parts = image_parts(chat).size();
  if (parts != image_data.size())
    throw Error("the request has " + std::to_string(parts) + " image part(s) but " + std::to_string(image_data.size()) +
                " image(s)");
  return prepare_chat(*this, chat, parts,
                      [&](size_t i) { return images->encode(image_data[i].bytes, image_data[i].name); });
}

std::pair<nlohmann::ordered_json, std::optional<std::string>> dataset_row(const nlohmann::ordered_json& row,
                                                                     const std::string& where) {
  if (!row.is_object()) throw Error(where + ": row is not a JSON object");
  nlohmann::ordered_json request = row;
  std::optional<std::string> labels;
  if (row.contains("messages")) {
    auto& messages = request["messages"];
    if (!messages.is_array() || messages.empty()) throw Error(where + ": \"messages\" must be a non-empty array");
    if (messages.back().value("role", "") == "assistant") {
      if (messages.back()["content"].is_string()) labels = messages.back()["content"].get<std::string>();
      messages.erase(messages.end() - 1);
    }
    return {request, labels};
  }
  if (row.contains("query")) {
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    if (row.contains("system")) messages.push_back({{"role", "system"}, {"content", row["system"]}});
    if (row.contains("history") && row["history"].is_array())
      for (const auto& turn : row["history"]) {
        messages.push_back({{"role", "user"}, {"content", turn.at(0)}});
        messages.push_back({{"role", "assistant"}, {"content", turn.at(1)}});
      }
    messages.push_back({{"role", "user"}, {"content", row["query"]}});
    if (row.contains("response") && row["response"].is_string()) labels = row["response"].get<std::string>();
    nlohmann::ordered_json out = {{"messages", messages}};
    for (const char* key : {"images", "videos"})
      if (row.contains(key)) out[key] = row[key];
    return {out, labels};
  }
  throw Error(where + ": row has neither \"messages\" nor \"query\"");
}


json openai_logprobs(const tokenizer::Tokenizer& tokenizer, const std::vector<TokenLogprob>& logprobs,
                     bool with_token_ids) {
  auto entry = [&](int32_t id, double logprob) {
    // As OpenAI: the token's text (a partial UTF-8 character shows as U+FFFD) and its exact bytes.
    const std::string_view raw = generated_token_bytes(tokenizer, id);
    json bytes = json::array();
    for (unsigned char c : raw) bytes.push_back(c);
    json out{{"token", display_text(raw)}, {"logprob", logprob}, {"bytes", bytes}};
    if (with_token_ids) out["id"] = id;
    return out;
  };
  json content = json::array();
  for (const auto& lp : logprobs) {
    json item = entry(lp.id, lp.logprob);
    json top = json::array();
    for (const auto& [id, logprob] : lp.top) top.push_back(entry(id, logprob));
    item["top_logprobs"] = top;
    content.push_back(item);
  }
  return {{"content", content}};
}

std::string display_text(std::string_view bytes) {
  std::string out;
  tokenizer::append_replacing_invalid_utf8(bytes, out, false);
  return out;
}

uint64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace vlmforge::cli
