// vlmforge score: per-token prompt logprobs, the most likely next tokens, and perplexity.
#include <cmath>
#include <algorithm>
#include <cstdio>
#include <thread>

#include "cli/base_model.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "engine/token_text.h"
#include "vision/image_info.h"
#include "vision/smart_resize.h"
#include "io/json_file.h"
#include "tokenizer/token_ids.h"
#include "util/error.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct ScoreArgs {
  EngineFlags engine;
  std::string ids;
  std::string text;
  std::string file;
  std::vector<std::string> images;
  size_t top_logprobs = 5;
  bool json = false;
};

std::vector<int32_t> parse_ids(const std::string& list) {
  try {
    return tokenizer::parse_token_ids(list, "--ids");
  } catch (const Error& e) {
    throw UsageError(std::string(e.what()) + "; e.g. --ids 151644,8948,198");
  }
}

int run(ScoreArgs a) {
  a.engine.model = resolve_base_model(a.engine.model, a.engine.adapters);
  const int sources = !a.ids.empty() + !a.text.empty() + !a.file.empty();
  if (sources != 1) throw UsageError("give exactly one of --ids, --text, --file");
  auto encode = [&](const tokenizer::Tokenizer& t) {
    return !a.ids.empty() ? parse_ids(a.ids) : !a.text.empty() ? t.encode(a.text) : t.encode(read_text_file(a.file));
  };
  if (!a.images.empty() && !a.ids.empty()) throw UsageError("--images needs --text or --file (with <image> tags or none)");
  std::vector<int32_t> ids;
  PlanOptions plan_options;
  plan_options.threads = a.engine.threads;
  EngineOptions options = engine_options(a.engine);
  if (a.engine.device_map.enabled()) {
    // The plan needs the token count (one forward over all of them), so tokenize first; each
    // image counts as the largest the pixel budget allows.
    ids = !a.ids.empty() ? parse_ids(a.ids)
                         : encode(tokenizer::Tokenizer::load(fs::path(a.engine.model) / "tokenizer.json"));
    if (ids.empty()) throw UsageError("nothing to score: the input has no tokens");
    size_t tokens = ids.size();
    // Each image's tokens follow from its header (as check-data counts them); the tower's
    // workspace is planned for the largest.
    plan_options.max_pixels = 0;
    for (const std::string& path : a.images) {
      const vision::ImageInfo info = vision::read_image_info(fs::path(path));
      const auto resized = vision::smart_resize(info.height, info.width, options.vision.budget);
      if (!resized) throw Error(path + ": an aspect ratio over 200, which the Qwen2.5-VL image processor refuses");
      tokens += resized->tokens() + 2;  // with <|vision_start|> and <|vision_end|>
      plan_options.max_pixels = std::max<uint64_t>(plan_options.max_pixels, uint64_t{resized->height} * resized->width);
    }
    plan_options.max_model_len = plan_options.prefill_chunk = plan_options.logit_rows = tokens;
  }
  const std::unique_ptr<PipelineTransport> pipeline = join_pipeline();
  return run_with_engine(pipeline.get(), a.engine, options, plan_options, [&](const PlacedEngine& placed) {
  const Engine& engine = *placed.engine;
  PromptInput input;
  if (a.images.empty()) {
    input.tokens = a.engine.device_map.enabled() ? ids : encode(engine.tokenizer);
  } else {
    input = engine.prepare_text(!a.text.empty() ? a.text : read_text_file(a.file),
                                std::vector<fs::path>(a.images.begin(), a.images.end()));
  }
  ids = input.tokens;
  if (ids.empty()) throw UsageError("nothing to score: the input has no tokens");
  KvCache cache = engine.model->make_cache(ids.size());
  const SequenceChunk chunk{&cache, ids, true, input.image_embeds, input.positions, input.position_delta};
  const std::vector<float> logits = engine.model->forward(std::span(&chunk, 1));
  const size_t vocab = engine.model->vocab_size();
  json prompt = json::array();
  double total = 0;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    const double lp = log_softmax(std::span(logits).subspan(i * vocab, vocab))[static_cast<size_t>(ids[i + 1])];
    prompt.push_back(lp);
    total += lp;
  }
  const auto last = log_softmax(std::span(logits).subspan((ids.size() - 1) * vocab, vocab));
  json next = json::array();
  for (const auto& [id, lp] : top_k_entries(last, a.top_logprobs)) next.push_back({id, lp});
  const json perplexity = ids.size() > 1 ? json(std::exp(-total / static_cast<double>(ids.size() - 1))) : json(nullptr);
  const json out = {{"tokens", ids.size()}, {"prompt_logprobs", prompt}, {"next_top", next}, {"perplexity", perplexity}};
  placed.print_memory_report();
  if (a.json) {
    std::printf("%s\n", out.dump().c_str());
    return kExitOk;
  }
  std::printf("%zu tokens", ids.size());
  if (!perplexity.is_null()) std::printf(", perplexity %.4f", perplexity.get<double>());
  std::printf("\n%8s %-24s %s\n", "position", "token", "logprob");
  for (size_t i = 0; i + 1 < ids.size(); ++i)
    std::printf("%8zu %-24s %.6f\n", i + 1, json(display_text(engine.tokenizer.token_bytes(ids[i + 1]))).dump().c_str(), prompt[i].get<double>());
  std::printf("next token:\n");
  for (const auto& [id, lp] : top_k_entries(last, a.top_logprobs))
    std::printf("  %-8d %-24s %.6f\n", id, json(display_text(engine.tokenizer.token_bytes(id))).dump().c_str(), lp);
  return kExitOk;
  });
}

}  // namespace

void add_score_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<ScoreArgs>();
  CLI::App* cmd = app.add_subcommand(
      "score", "Score a text: the log-probability of each token given the ones before it, the most likely\n"
               "next tokens, and the perplexity (as llama-perplexity reports for llama.cpp).");
  add_model_flags(cmd, a->engine)->description(
      "Model directory (config.json, *.safetensors, tokenizer.json); with --adapters CKPT, default: the base "
      "model its args.json / adapter_config.json names, as swift's --load_args");
  add_adapter_flag(cmd, a->engine);
  add_image_flags(cmd, a->engine);
  cmd->add_option("--ids", a->ids, "Token ids, comma- or space-separated or a JSON array (0 to 2147483647)");
  cmd->add_option("--text", a->text, "Text to tokenize and score (special tokens in it are recognised)");
  cmd->add_option("--file", a->file, "File whose text to score");
  cmd->add_option("--images", a->images,
                  "Qwen2.5-VL: images in the text, one per <image> tag (no tags: all before the text), sized "
                  "by --max_pixels/--min_pixels or MAX_PIXELS/MIN_PIXELS, as infer");
  cmd->add_option("--top_logprobs", a->top_logprobs, "Next tokens to list")->capture_default_str();
  cmd->add_flag("--json", a->json, "{\"prompt_logprobs\": [...], \"next_top\": [[id, logprob], ...], \"perplexity\": x}");
  cmd->callback([a, &exit_code] { exit_code = run(*a); });
}

}  // namespace vlmforge::cli
