// vlmforge verify-merge: is a merged checkpoint its base model with the adapters? The logits of
// base + adapters (applied unmerged, as `infer --adapters` runs them) against the merged
// checkpoint's, position by position, on sample prompts or a dataset's rows; and both against the
// base alone, which shows how much the adapters change and whether the merge left them out.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>

#include "cli/base_model.h"
#include "cli/commands.h"
#include "engine/dataset_row.h"
#include "engine/engine.h"
#include "util/error.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

struct VerifyMergeArgs {
  std::string model;
  std::vector<std::string> adapters;
  std::string merged;
  std::string val_dataset;
  size_t max_rows = 16;
  double atol = -1;  // < 0: by the merged checkpoint's dtype
  size_t threads = 0;
  bool json = false;
};

// Prompts when no --val_dataset is given: short chats of the kinds fine-tunes are asked.
constexpr const char* kSamplePrompts[] = {
    "Give me a short introduction to large language models.",
    "What is 17 times 23? Explain the steps.",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Translate into French: The weather is lovely today.",
};

struct Prompt {
  ordered_json request;
  std::string where;  // "sample 1" or "file:line"
};

std::vector<Prompt> load_prompts(const VerifyMergeArgs& a) {
  std::vector<Prompt> prompts;
  if (a.val_dataset.empty()) {
    for (size_t i = 0; i < std::size(kSamplePrompts); ++i) {
      ordered_json messages = ordered_json::array();
      messages.push_back({{"role", "user"}, {"content", kSamplePrompts[i]}});
      prompts.push_back({{{"messages", messages}}, "sample " + std::to_string(i + 1)});
    }
    return prompts;
  }
  std::ifstream in(a.val_dataset);
  if (!in) throw Error(a.val_dataset + ": cannot open");
  size_t line_number = 0;
  for (std::string line; prompts.size() < a.max_rows && std::getline(in, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = a.val_dataset + ":" + std::to_string(line_number);
    ordered_json row;
    try {
      row = ordered_json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": invalid JSON: " + e.what());
    }
    auto [request, answer] = dataset_row(row, where);
    // The answer is compared too: adapters change most the text they were trained to produce.
    if (answer) request["messages"].push_back({{"role", "assistant"}, {"content", *answer}});
    prompts.push_back({std::move(request), where});
  }
  if (prompts.empty()) throw UsageError("--val_dataset " + a.val_dataset + " has no rows");
  return prompts;
}

// A prompt run through a model a chunk of positions at a time, so that the logits held at once stay
// at kChunk × vocabulary floats whatever the prompt's length.
class ChunkedLogits {
 public:
  static constexpr size_t kChunk = 64;

  ChunkedLogits(Qwen2Model& model, const PromptInput& input)
      : model_(model), input_(input), cache_(model.make_cache(input.tokens.size())) {}

  // Logits of the next positions (up to kChunk), [positions, vocab].
  std::vector<float> next() {
    const size_t n = std::min(kChunk, input_.tokens.size() - done_);
    SequenceChunk chunk{&cache_, std::span<const int32_t>(input_.tokens).subspan(done_, n), true};
    if (!input_.image_embeds.empty()) {
      const size_t hidden = static_cast<size_t>(model_.config().hidden_size);
      const size_t rows = static_cast<size_t>(std::count(chunk.tokens.begin(), chunk.tokens.end(), model_.config().image_token_id));
      chunk.image_embeds = std::span<const float>(input_.image_embeds).subspan(image_rows_ * hidden, rows * hidden);
      image_rows_ += rows;
    }
    if (!input_.positions.empty()) chunk.positions = std::span(input_.positions).subspan(done_, n);
    chunk.position_delta = input_.position_delta;
    done_ += n;
    return model_.forward(std::span(&chunk, 1));
  }

 private:
  Qwen2Model& model_;
  const PromptInput& input_;
  KvCache cache_;
  size_t done_ = 0, image_rows_ = 0;
};

// Absolute logit differences of two models over a prompt.
struct Difference {
  std::vector<double> max_per_position, mean_per_position;
  size_t top1_disagreements = 0;

  double max() const { return max_per_position.empty() ? 0 : *std::max_element(max_per_position.begin(), max_per_position.end()); }
  size_t worst_position() const {
    return static_cast<size_t>(std::max_element(max_per_position.begin(), max_per_position.end()) - max_per_position.begin());
  }
  double mean() const {
    double sum = 0;
    for (double m : mean_per_position) sum += m;
    return mean_per_position.empty() ? 0 : sum / static_cast<double>(mean_per_position.size());
  }

  void add(std::span<const float> a, std::span<const float> b, size_t vocab) {
    for (size_t p = 0; p < a.size() / vocab; ++p) {
      const float* x = a.data() + p * vocab;
      const float* y = b.data() + p * vocab;
      double worst = 0, sum = 0;
      for (size_t i = 0; i < vocab; ++i) {
        const double d = std::fabs(static_cast<double>(x[i]) - y[i]);
        worst = std::max(worst, d);
        sum += d;
      }
      max_per_position.push_back(worst);
      mean_per_position.push_back(sum / static_cast<double>(vocab));
      if (std::max_element(x, x + vocab) - x != std::max_element(y, y + vocab) - y) ++top1_disagreements;
    }
  }
};

struct PromptResult {
  std::string where;
  size_t tokens = 0;
  Difference merge;    // merged vs base + adapters
  Difference adapter;  // base + adapters vs base: what the adapters change
};

PromptResult compare(const Prompt& prompt, const Engine& runtime, const Engine& merged,
                     const Engine& base, const fs::path& base_dir) {
  const PromptInput input = runtime.prepare(prompt.request, base_dir);
  const PromptInput merged_input = merged.prepare(prompt.request, base_dir);
  if (merged_input.tokens != input.tokens)
    throw Error(prompt.where + ": the merged checkpoint's tokenizer encodes the prompt differently from the base model's");
  const PromptInput base_input = base.prepare(prompt.request, base_dir);
  ChunkedLogits with_adapters(*runtime.model, input), with_merge(*merged.model, merged_input), alone(*base.model, base_input);
  PromptResult result{prompt.where, input.tokens.size(), {}, {}};
  const size_t vocab = runtime.model->vocab_size();
  for (size_t done = 0; done < input.tokens.size(); done += ChunkedLogits::kChunk) {
    const std::vector<float> reference = with_adapters.next();
    result.merge.add(reference, with_merge.next(), vocab);
    result.adapter.add(reference, alone.next(), vocab);
  }
  return result;
}

// Float tensors stored in bf16 / f16 put rounding of ~2^-8 relative on every merged weight; fp32
// merges keep the runtime's arithmetic differences only.
double default_atol(const Checkpoint& merged) {
  for (const TensorRef& t : merged.tensors())
    if (t.info->dtype == DType::BF16 || t.info->dtype == DType::F16) return 0.1;
  return 1e-3;
}

int run(VerifyMergeArgs a) {
  if (a.adapters.empty()) throw UsageError("--adapters is required: the adapters the merged checkpoint should hold");
  if (a.merged.empty()) throw UsageError("--merged is required: the merged checkpoint to verify");
  if (a.max_rows == 0) throw UsageError("--max_rows must be at least 1");
  a.model = resolve_base_model(a.model, a.adapters);
  const std::vector<Prompt> prompts = load_prompts(a);
  const Engine runtime({.model_dir = a.model, .adapter_dirs = {a.adapters.begin(), a.adapters.end()}, .threads = a.threads});
  const Engine merged({.model_dir = a.merged, .threads = a.threads});
  const Engine base({.model_dir = a.model, .threads = a.threads});
  if (merged.model->vocab_size() != runtime.model->vocab_size())
    throw Error(a.merged + ": vocab_size " + std::to_string(merged.model->vocab_size()) + " differs from the base model's " +
                std::to_string(runtime.model->vocab_size()));
  const double atol = a.atol >= 0 ? a.atol : default_atol(merged.model->checkpoint());
  // Relative image paths resolve against the dataset's directory, as infer resolves them.
  const fs::path base_dir = a.val_dataset.empty() ? fs::path() : fs::absolute(a.val_dataset).parent_path();

  std::vector<PromptResult> results;
  double worst = 0, adapter_effect = 0;
  size_t disagreements = 0, positions = 0;
  for (const Prompt& prompt : prompts) {
    results.push_back(compare(prompt, runtime, merged, base, base_dir));
    const PromptResult& r = results.back();
    worst = std::max(worst, r.merge.max());
    adapter_effect = std::max(adapter_effect, r.adapter.max());
    disagreements += r.merge.top1_disagreements;
    positions += r.tokens;
  }
  // A merge that left the adapters out reproduces the base model: its difference from the runtime
  // adapters is the adapters' whole effect, whatever --atol says. Below kNoise the adapters change
  // nothing measurable and there is nothing to leave out.
  constexpr double kNoise = 1e-3;
  const bool adapters_missing = adapter_effect > kNoise && worst >= 0.5 * adapter_effect;
  const bool faithful = worst <= atol && !adapters_missing;
  std::string verdict = faithful ? "faithful: the merged checkpoint gives the logits of the base model with its adapters"
                        : adapters_missing
                            ? "NOT faithful: the merged checkpoint differs from base + adapters as much as the adapters change "
                              "the base; the merge seems to have left them out"
                            : "NOT faithful: the merged checkpoint's logits differ from base + adapters by more than --atol";

  if (a.json) {
    json rows = json::array();
    for (const PromptResult& r : results)
      rows.push_back({{"prompt", r.where},
                      {"tokens", r.tokens},
                      {"max_abs_diff", r.merge.max()},
                      {"mean_abs_diff", r.merge.mean()},
                      {"worst_position", r.merge.worst_position()},
                      {"top1_disagreements", r.merge.top1_disagreements},
                      {"adapter_max_abs_effect", r.adapter.max()},
                      {"max_abs_diff_per_position", r.merge.max_per_position},
                      {"mean_abs_diff_per_position", r.merge.mean_per_position}});
    std::printf("%s\n", json{{"faithful", faithful},
                             {"verdict", verdict},
                             {"atol", atol},
                             {"max_abs_diff", worst},
                             {"adapter_max_abs_effect", adapter_effect},
                             {"top1_disagreements", disagreements},
                             {"positions", positions},
                             {"prompts", rows}}
                            .dump()
                            .c_str());
  } else {
    std::printf("%-28s %7s %14s %14s %9s %10s %16s\n", "prompt", "tokens", "max |dlogit|", "mean |dlogit|", "at pos", "top-1 diff",
                "adapter effect");
    for (const PromptResult& r : results)
      std::printf("%-28s %7zu %14.6g %14.6g %9zu %10zu %16.6g\n", r.where.c_str(), r.tokens, r.merge.max(), r.merge.mean(),
                  r.merge.worst_position(), r.merge.top1_disagreements, r.adapter.max());
    std::printf("max |dlogit| %.6g over %zu positions (--atol %.6g), top-1 differs at %zu; the adapters change logits by up to %.6g\n",
                worst, positions, atol, disagreements, adapter_effect);
    std::printf("%s\n", verdict.c_str());
  }
  return faithful ? kExitOk : kExitFailure;
}

}  // namespace

void add_verify_merge_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<VerifyMergeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "verify-merge",
      "Check that a merged checkpoint is its base model with the adapters: runs sample prompts (or the rows of\n"
      "--val_dataset, answers included) through base + adapters (applied unmerged, as infer --adapters), the\n"
      "merged checkpoint and the base alone, and compares the logits position by position: the largest and mean\n"
      "absolute difference per prompt, where the top-1 token differs, and how much the adapters change the logits.\n"
      "Exit 0 when every difference is within --atol (faithful), 1 when not, or when the difference is at least half\n"
      "of the adapters' own effect (a merge that left them out).\n"
      "  vlmforge verify-merge --model BASE --adapters output/checkpoint-100 --merged output/checkpoint-100-merged");
  cmd->add_option("--model", a->model, "Base model directory (default: the one the adapter's args.json / adapter_config.json names)");
  cmd->add_option("--adapters,--lora", a->adapters, "The adapters that were merged, in merge order")->delimiter(',');
  cmd->add_option("--merged", a->merged, "The merged checkpoint directory (with its tokenizer.json)");
  cmd->add_option("--val_dataset", a->val_dataset, "swift-format JSONL rows to compare on (default: built-in sample prompts)");
  cmd->add_option("--max_rows", a->max_rows, "Rows of --val_dataset to compare")->capture_default_str();
  cmd->add_option("--atol", a->atol,
                  "Largest absolute logit difference accepted (default 0.1 for a bf16/f16 merged checkpoint, 1e-3 for fp32)");
  cmd->add_option("--threads", a->threads, "Worker threads per model (default: all cores)");
  cmd->add_flag("--json", a->json, "JSON output, with the per-position differences");
  cmd->callback([a, &exit_code] { exit_code = run(*a); });
}

}  // namespace vlmforge::cli
