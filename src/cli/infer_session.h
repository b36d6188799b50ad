#pragma once
// What `infer` and `score` share: the model and tokenizer of a directory, the generation defaults
// from generation_config.json, stop ids, and prompts rendered with the model's chat template.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cli/vision_flags.h"
#include "backends/device.h"
#include "model/generator.h"
#include "model/qwen2.h"
#include "plan/plan_flags.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "vision/image_encoder.h"

namespace vlmforge::cli {

// Qwen2.5-VL image handling: the pixel budget (swift's MIN_PIXELS / MAX_PIXELS), the image cache and
// whether EXIF orientations are applied (swift does not apply them).
struct VisionOptions {
  vision::PixelBudget budget;
  uint64_t cache_bytes = uint64_t{512} << 20;
  vision::DecodeOptions decode;

  // --min_pixels / --max_pixels (else MIN_PIXELS / MAX_PIXELS, as swift), --image_cache_mb, --exif_transpose.
  static VisionOptions from_flags(std::optional<uint64_t> min_pixels, std::optional<uint64_t> max_pixels,
                                  size_t image_cache_mb, bool exif_transpose = false) {
    return {pixel_budget_flags(min_pixels, max_pixels), uint64_t{image_cache_mb} << 20, {exif_transpose}};
  }
};

// --device_map and its companions, shared by infer and score.
struct DeviceMapArgs {
  DeviceMapArgs() { placement.device_map.clear(); }  // "": one host device, no placement
  PlacementFlags placement;
  bool memory_report = false;
  bool enabled() const { return !placement.device_map.empty(); }
};
void add_device_map_options(CLI::App* cmd, DeviceMapArgs& args);

// A run across devices: the plan (from the checkpoint's headers), the opened devices, and which
// device runs each part of the model.
struct PlacedRun {
  Plan plan;
  std::vector<std::unique_ptr<Device>> devices;
  ModelPlacement placement;

  // One line per device on stderr: the plan, and with --memory_report the peak accounted memory
  // next to the plan's estimate.
  void print_plan() const;
  void print_memory_report() const;
};
// With --device_map: plans with `options` (threads 0 = all hardware threads), opens the devices and
// prints the plan. Without it: nullptr (and --memory_report alone is a usage error).
std::unique_ptr<PlacedRun> place_model(const std::filesystem::path& model_dir, const DeviceMapArgs& args,
                                       PlanOptions options);
// Plan options for generating up to max_batch_size sequences of max_model_len tokens, with the vision
// workspace for the largest image the budget allows.
PlanOptions generation_plan_options(size_t max_batch_size, size_t max_model_len, DType kv_cache_dtype, size_t threads,
                                    const vision::PixelBudget& budget);

struct InferSession {
  InferSession(const std::filesystem::path& model_dir, size_t threads,
               const std::vector<std::filesystem::path>& adapter_dirs = {}, const VisionOptions& vision = {},
               const ModelPlacement* placement = nullptr);

  std::unique_ptr<Qwen2Model> model;
  std::unique_ptr<vision::VisionTower> vision_tower;  // Qwen2.5-VL models only
  std::unique_ptr<vision::ImageEncoder> images;
  tokenizer::Tokenizer tokenizer;
  tokenizer::ChatTemplateKind chat_kind;
  GenerationParams defaults;  // from generation_config.json, with eos / <|im_end|> stop ids

  // Renders messages (HF or swift form) with the generation prompt and encodes them.
  std::vector<int32_t> encode_chat(const nlohmann::ordered_json& request) const;
  // encode_chat plus the request's images (Qwen2.5-VL): each <|image_pad|> expanded to the image's
  // token count, the vision embeddings and the M-RoPE positions. Relative image paths that do not
  // exist as given are looked up under `base_dir`. Safe to call while another thread generates.
  PromptInput prepare(const nlohmann::ordered_json& request, const std::filesystem::path& base_dir = {}) const;
  // prepare() for a request whose image parts carry no path (a server's {"type": "image"} parts):
  // their bytes are `images`, in order of appearance, decoded and encoded exactly as files are
  // (same preprocessing, same cache). Safe to call while another thread generates.
  struct ImageData {
    std::span<const uint8_t> bytes;
    std::string name;  // for error messages
  };
  PromptInput prepare_in_memory(const nlohmann::ordered_json& request, std::span<const ImageData> images) const;
};

// A swift dataset row ("messages", or "query" / "response" / "history" / "system") as a chat request
// without its final assistant turn, and that turn's text when there is one. `where` ("file:line")
// prefixes errors.
std::pair<nlohmann::ordered_json, std::optional<std::string>> dataset_row(const nlohmann::ordered_json& row,
                                                                     const std::string& where);

// OpenAI's logprobs.content for generated tokens. `with_token_ids` adds each token's "id" (infer's
// output): ids the tokenizer has no text for (past its vocabulary) all show as token "".
nlohmann::json openai_logprobs(const tokenizer::Tokenizer& tokenizer, const std::vector<TokenLogprob>& logprobs,
                               bool with_token_ids = false);

// Token bytes as valid UTF-8 text (invalid sequences become U+FFFD).
std::string display_text(std::string_view bytes);

// Peak resident memory of this process so far.
uint64_t peak_rss_bytes();

}  // namespace vlmforge::cli
