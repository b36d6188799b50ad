#pragma once
// The engine that `infer`, `score`, `verify-merge` and `deploy` share (as vLLM's offline LLM and
// its server share one engine): the model and tokenizer of a directory, the vision tower and
// image encoder of a Qwen2.5-VL model, the generation defaults from generation_config.json with
// the stop ids, and prompts rendered with the model's chat template, their images encoded. Built
// from plain options: the command-line flags that fill them live in src/cli/.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/sequence.h"
#include "kernels/quantize.h"
#include "io/dtype.h"
#include "model/qwen2.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "vision/image_encoder.h"

namespace vlmforge {

// Qwen2.5-VL image handling: the pixel budget (swift's MIN_PIXELS / MAX_PIXELS), the image cache,
// whether EXIF orientations are applied (swift does not apply them) and how many callers may wait
// for the vision tower at once (a server's bound; more get TurnQueueFull).
struct VisionOptions {
  vision::PixelBudget budget;
  uint64_t cache_bytes = uint64_t{512} << 20;
  vision::DecodeOptions decode;
  size_t max_waiting_encodes = SIZE_MAX;
};

// A prompt that needs more tokens than the caller allowed; found without tokenizing all of it.
class PromptTooLong : public Error {
 public:
  using Error::Error;
};

struct EngineOptions {
  std::filesystem::path model_dir;               // config.json, *.safetensors, tokenizer.json
  std::vector<std::filesystem::path> adapter_dirs;  // PEFT LoRA adapters applied unmerged
  size_t threads = 0;                            // 0: all hardware threads
  VisionOptions vision;                          // Qwen2.5-VL models only
  DType kv_cache_dtype = DType::F32;
  size_t max_model_len = 0;                      // 0: config.json's max_position_embeddings
  std::optional<kernels::QuantScheme> quantize_on_load;  // --quant_method q8_0 / q4_0
  // Which device runs each part of the model (see engine/placement.h); null: one host device.
  // It must outlive the engine: the model's memory lives on its devices.
  const ModelPlacement* placement = nullptr;
};

class Engine {
 public:
  explicit Engine(const EngineOptions& options);

  std::unique_ptr<Qwen2Model> model;
  std::unique_ptr<vision::VisionTower> vision_tower;  // Qwen2.5-VL models only
  std::unique_ptr<vision::ImageEncoder> images;
  tokenizer::Tokenizer tokenizer;
  tokenizer::ChatTemplateKind chat_kind;
  GenerationParams defaults;  // from generation_config.json, with eos / <|im_end|> stop ids
  size_t max_model_len;       // the options' (or the config's) longest sequence, prompt + answer

  // Renders messages (HF or swift form) with the generation prompt and encodes them. Throws
  // PromptTooLong once they need more than `max_tokens` tokens.
  std::vector<int32_t> encode_chat(const nlohmann::ordered_json& request, size_t max_tokens = SIZE_MAX) const;
  // encode_chat plus the request's images (Qwen2.5-VL): each <|image_pad|> expanded to the image's
  // token count, the vision embeddings and the M-RoPE positions. Relative image paths that do not
  // exist as given are looked up under `base_dir`. Safe to call while another thread generates.
  PromptInput prepare(const nlohmann::ordered_json& request, const std::filesystem::path& base_dir = {}) const;
  // Raw text (no chat template) with images: each <image> tag becomes the image (none: all images
  // before the text, as swift places them), as `score` takes it.
  PromptInput prepare_text(const std::string& text, const std::vector<std::filesystem::path>& image_files) const;
  // prepare() for a request whose image parts carry no path (a server's {"type": "image"} parts):
  // their bytes are `images`, in order of appearance, decoded and encoded exactly as files are
  // (same preprocessing, same cache). Safe to call while another thread generates. Throws
  // PromptTooLong, before any image is decoded, when the text alone needs more than `max_tokens`
  // tokens; Cancelled once `stop` (may be empty) is true while images wait for the tower or encode.
  struct ImageData {
    std::span<const uint8_t> bytes;
    std::string name;  // for error messages
  };
  PromptInput prepare_in_memory(const nlohmann::ordered_json& request, std::span<const ImageData> images,
                                size_t max_tokens = SIZE_MAX, const std::function<bool()>& stop = {}) const;
};

}  // namespace vlmforge
