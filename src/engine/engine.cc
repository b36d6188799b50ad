#include "engine/engine.h"

#include <functional>

#include "data/media_check.h"
#include "io/json_file.h"
#include "model/mrope.h"
#include "util/error.h"

namespace vlmforge {
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

Engine::Engine(const EngineOptions& options)
    : model(std::make_unique<Qwen2Model>(options.model_dir, options.threads, options.adapter_dirs, options.placement,
                                         options.quantize_on_load)),
      tokenizer([&] {
        if (!fs::exists(options.model_dir / "tokenizer.json"))
          throw Error(options.model_dir.string() +
                      ": no tokenizer.json (copy the base model's tokenizer files next to the weights)");
        return tokenizer::Tokenizer::load(options.model_dir / "tokenizer.json");
      }()),
      chat_kind(model->config().is_vision_language() ? tokenizer::ChatTemplateKind::kQwen2_5Vl
                                                     : tokenizer::ChatTemplateKind::kQwen2_5),
      max_model_len(options.max_model_len ? options.max_model_len
                                          : static_cast<size_t>(model->config().max_position_embeddings)) {
  const fs::path& model_dir = options.model_dir;
  model->set_kv_cache_dtype(options.kv_cache_dtype);
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
    // The tower runs on its planned device, else beside the embeddings (sharing their threads).
    Device& device = options.placement && options.placement->vision ? *options.placement->vision
                                                                     : model->embedding_device();
    vision_tower = std::make_unique<vision::VisionTower>(model->checkpoint(), model->config(), device, model->lora());
    images = std::make_unique<vision::ImageEncoder>(*vision_tower, options.vision.budget, options.vision.cache_bytes,
                                                    options.vision.decode, options.vision.max_waiting_encodes);
  }
}

namespace {

std::vector<int32_t> encode_within(const tokenizer::Tokenizer& tokenizer, const std::string& text, size_t max_tokens) {
  std::vector<int32_t> ids = tokenizer.encode(text, max_tokens);
  if (ids.size() > max_tokens)
    throw PromptTooLong("the prompt needs more than " + std::to_string(max_tokens) + " tokens");
  return ids;
}

}  // namespace

std::vector<int32_t> Engine::encode_chat(const nlohmann::ordered_json& request, size_t max_tokens) const {
  tokenizer::ChatOptions options;
  options.add_generation_prompt = true;
  const std::string prompt = tokenizer::render_chat(chat_kind, tokenizer::parse_chat_request(request), options);
  return encode_within(tokenizer, prompt, max_tokens);
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

// The prompt `text` with its `image_count` images, the i-th encoded by encode(i): each
// <|image_pad|> expanded to its image's token count, the embeddings and M-RoPE positions.
void check_takes_images(const Engine& engine, size_t image_count) {
  if (image_count > 0 && !engine.images)
    throw Error("the request has " + std::to_string(image_count) +
                " image(s) but this is a text-only model; images need a Qwen2.5-VL model");
}

PromptInput prepare_prompt(const Engine& engine, const std::string& text, size_t image_count,
                           const std::function<vision::EncodedImage(size_t)>& encode, size_t max_tokens = SIZE_MAX) {
  check_takes_images(engine, image_count);
  PromptInput input;
  // Each image is one <|image_pad|> here and only grows when expanded: over the limit already is
  // refused before any image is decoded.
  input.tokens = encode_within(engine.tokenizer, text, max_tokens);
  if (image_count == 0) return input;
  const ModelConfig& config = engine.model->config();
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

PromptInput prepare_chat(const Engine& engine, const tokenizer::ChatRequest& chat, size_t image_count,
                         const std::function<vision::EncodedImage(size_t)>& encode, size_t max_tokens = SIZE_MAX) {
  check_takes_images(engine, image_count);  // before the text-only template refuses image parts
  tokenizer::ChatOptions options;
  options.add_generation_prompt = true;
  return prepare_prompt(engine, tokenizer::render_chat(engine.chat_kind, chat, options), image_count, encode, max_tokens);
}

}  // namespace

PromptInput Engine::prepare_text(const std::string& text, const std::vector<fs::path>& image_files) const {
  // Qwen2.5-VL's template writes an image as <|vision_start|><|image_pad|><|vision_end|>; untagged
  // images go before the text, as swift places them.
  constexpr std::string_view kTag = "<image>", kImage = "<|vision_start|><|image_pad|><|vision_end|>";
  std::string prompt;
  size_t tags = 0;
  for (size_t at = 0;;) {
    const size_t found = text.find(kTag, at);
    prompt += text.substr(at, found == std::string::npos ? std::string::npos : found - at);
    if (found == std::string::npos) break;
    prompt += kImage;
    ++tags;
    at = found + kTag.size();
  }
  if (tags == 0) {
    std::string images;
    for (size_t i = 0; i < image_files.size(); ++i) images += kImage;
    prompt = images + prompt;
  } else if (tags != image_files.size()) {
    throw Error("the text has " + std::to_string(tags) + " <image> tag(s) but " + std::to_string(image_files.size()) +
                " image(s) were given");
  }
  return prepare_prompt(*this, prompt, image_files.size(), [&](size_t i) { return images->encode(image_files[i]); });
}

PromptInput Engine::prepare(const nlohmann::ordered_json& request, const fs::path& base_dir) const {
  const tokenizer::ChatRequest chat = tokenizer::parse_chat_request(request);
  const std::vector<std::string> references = image_references(chat);
  return prepare_chat(*this, chat, references.size(),
                      [&](size_t i) { return images->encode(image_path(references[i], base_dir)); });
}

PromptInput Engine::prepare_in_memory(const nlohmann::ordered_json& request, std::span<const ImageData> image_data,
                                      size_t max_tokens, const std::function<bool()>& stop) const {
  const tokenizer::ChatRequest chat = tokenizer::parse_chat_request(request);
  const size_t parts = image_parts(chat).size();
  if (parts != image_data.size())
    throw Error("the request has " + std::to_string(parts) + " image part(s) but " + std::to_string(image_data.size()) +
                " image(s)");
  return prepare_chat(
      *this, chat, parts, [&](size_t i) { return images->encode(image_data[i].bytes, image_data[i].name, stop); },
      max_tokens);
}

}  // namespace vlmforge
