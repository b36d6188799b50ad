// vlmforge infer: chat with a Qwen2 / Qwen2.5 model on the CPU, one-shot (--query), one prompt
// per stdin line, interactive, or over a swift-format dataset (--val_dataset), batched.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <iostream>
#include <optional>
#include <thread>
#include <tuple>

#include "cli/base_model.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "engine/dataset_row.h"
#include "engine/generator.h"
#include "server/protocol.h"
#include "io/atomic_output.h"
#include "io/json_file.h"
#include "util/bytes.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

struct InferArgs {
  EngineFlags engine;
  std::string infer_backend = "native";
  std::string query;
  std::string system;
  int max_new_tokens = -1;
  float temperature = -1, top_p = -1, repetition_penalty = -1;
  int top_k = -1;
  uint64_t seed = 0;
  std::string stream = "true";
  size_t max_batch_size = 1;
  std::string val_dataset;
  std::string result_path;
  bool logprobs = false;
  size_t top_logprobs = 0;
  std::vector<std::string> stop_words;
  bool json = false;
  std::vector<std::string> images;
  std::string overlap_images = "true";
};

bool truthy(const std::string& s) { return s == "true" || s == "True" || s == "1"; }

GenerationParams make_params(const Engine& engine, const InferArgs& a) {
  GenerationParams p = engine.defaults;
  if (a.max_new_tokens >= 0) p.max_new_tokens = static_cast<size_t>(a.max_new_tokens);
  if (a.temperature >= 0) p.sampling.temperature = a.temperature;
  if (a.top_k >= 0) p.sampling.top_k = a.top_k;
  if (a.top_p >= 0) p.sampling.top_p = a.top_p;
  if (a.repetition_penalty >= 0) p.sampling.repetition_penalty = a.repetition_penalty;
  p.sampling.seed = a.seed;
  p.logprobs = a.logprobs || a.top_logprobs > 0;
  p.top_logprobs = a.top_logprobs;
  p.stop_words = a.stop_words;
  return p;
}

ordered_json user_request(const std::string& system, const std::string& query) {
  ordered_json messages = ordered_json::array();
  if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
  messages.push_back({{"role", "user"}, {"content", query}});
  return messages;
}

void print_stats(const Engine& engine, const Generator& generator) {
  const auto& t = generator.total_timings();
  if (engine.images) {
    const vision::ImageTimings i = engine.images->timings();
    std::fprintf(stderr,
                 "[stats] images %zu encoded, %zu from the cache: read %.3f s, decode %.3f s, preprocess %.3f s, "
                 "vision encode %.3f s, cache lookups %.6f s\n",
                 i.misses, i.hits, i.read_seconds, i.decode_seconds, i.preprocess_seconds, i.encode_seconds,
                 i.lookup_seconds);
  }
  std::fprintf(stderr, "[stats] prefill %zu tokens %.1f tok/s (%.3f s), decode %zu tokens %.1f tok/s (%.3f s), first token %.3f s, peak memory %s\n",
               t.prefill_tokens, t.prefill_tokens / std::max(t.prefill_seconds, 1e-9), t.prefill_seconds, t.decode_tokens,
               t.decode_tokens / std::max(t.decode_seconds, 1e-9), t.decode_seconds, t.first_token_seconds,
               format_bytes(peak_rss_bytes()).c_str());
}

json result_json(const Engine& engine, const GenerationResult& r, const GenerationParams& params) {
  json j = {{"response", r.text},
            {"finish_reason", r.finish_reason},
            {"prompt_tokens", r.prompt_tokens},
            {"completion_tokens", r.tokens.size()}};
  if (params.logprobs) j["logprobs"] = server::chat_logprobs(engine.tokenizer, r.logprobs, /*with_token_ids=*/true);
  return j;
}

using Clock = std::chrono::steady_clock;

// One --val_dataset row: the request and its reference answer, or why the row cannot be answered.
struct DatasetRow {
  size_t line = 0;
  ordered_json request;
  std::optional<std::string> labels;
  std::string error;  // set: the row gets a result line with this "error" and no answer
};

// The rows of one batch, their prompts with images decoded, preprocessed and encoded (`inputs[i]`
// for rows[i], unused where the row failed), and how long preparing took.
struct DatasetBatch {
  std::vector<DatasetRow> rows;
  std::vector<PromptInput> inputs;
  double prepare_seconds = 0;
};

DatasetBatch prepare_batch(const Engine& engine, DatasetBatch batch, const fs::path& base_dir,
                           const std::string& dataset) {
  const auto start = Clock::now();
  batch.inputs.resize(batch.rows.size());
  for (size_t i = 0; i < batch.rows.size(); ++i) {
    DatasetRow& row = batch.rows[i];
    if (!row.error.empty()) continue;
    try {
      batch.inputs[i] = engine.prepare(row.request, base_dir);
    } catch (const Error& e) {
      row.error = dataset + ":" + std::to_string(row.line) + ": " + e.what();
    }
  }
  batch.prepare_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return batch;
}

// Answers the batch's prepared rows. When the generator refuses the batch (one prompt over
// --max_model_len, say), its rows are generated one at a time so that only the bad one fails.
// Returns the answers by row (none where the row failed) and the generation timings.
std::pair<std::vector<std::optional<GenerationResult>>, GenerationTimings> answer_batch(
    Generator& generator, DatasetBatch& batch, const GenerationParams& params, const std::string& dataset) {
  std::vector<size_t> good;
  std::vector<PromptInput> inputs;
  for (size_t i = 0; i < batch.rows.size(); ++i)
    if (batch.rows[i].error.empty()) {
      good.push_back(i);
      inputs.push_back(std::move(batch.inputs[i]));
    }
  std::vector<std::optional<GenerationResult>> answers(batch.rows.size());
  if (good.empty()) return {std::move(answers), {}};
  try {
    std::vector<GenerationResult> results = generator.generate(inputs, params);
    for (size_t k = 0; k < good.size(); ++k) answers[good[k]] = std::move(results[k]);
    return {std::move(answers), generator.timings()};
  } catch (const Error&) {
    // Which row was refused is found below, each alone.
  }
  GenerationTimings sum;
  for (size_t k = 0; k < good.size(); ++k) {
    DatasetRow& row = batch.rows[good[k]];
    try {
      answers[good[k]] = std::move(generator.generate({inputs[k]}, params)[0]);
    } catch (const Error& e) {
      row.error = dataset + ":" + std::to_string(row.line) + ": " + e.what();
      continue;
    }
    const GenerationTimings& t = generator.timings();
    if (sum.prefill_tokens == 0) sum.first_token_seconds = t.first_token_seconds;
    sum.prefill_seconds += t.prefill_seconds;
    sum.decode_seconds += t.decode_seconds;
    sum.prefill_tokens += t.prefill_tokens;
    sum.decode_tokens += t.decode_tokens;
  }
  return {std::move(answers), sum};
}

// --val_dataset: one result line per row, in order. A row that cannot be answered (invalid JSON,
// a missing image, a prompt too long) gets a line with an "error" field and the run goes on; the
// exit code is then 1. The results appear at `out`'s path only when the whole dataset is done.
int run_dataset(Engine& engine, Generator& generator, const GenerationParams& params, const InferArgs& a,
                AtomicOutput& out) {
  std::ifstream in(a.val_dataset);
  if (!in) throw Error(a.val_dataset + ": cannot open");
  // Relative image paths resolve against the dataset's directory, as check-data resolves them.
  const fs::path base_dir = fs::absolute(a.val_dataset).parent_path();
  size_t line_number = 0, rows = 0, failed = 0;
  auto read_batch = [&] {
    DatasetBatch batch;
    for (std::string line; batch.rows.size() < a.max_batch_size && std::getline(in, line);) {
      ++line_number;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      DatasetRow& row = batch.rows.emplace_back();
      row.line = line_number;
      const std::string where = a.val_dataset + ":" + std::to_string(line_number);
      try {
        ordered_json value;
        try {
          value = ordered_json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          throw Error(where + ": invalid JSON: " + e.what());
        }
        std::tie(row.request, row.labels) = dataset_row(value, where);
      } catch (const Error& e) {
        row.error = e.what();
      }
    }
    return batch;
  };
  // With --overlap_images the next batch's images are decoded, preprocessed and encoded on a
  // background thread while the current batch generates.
  const bool overlap = truthy(a.overlap_images) && engine.images != nullptr;
  auto start_prepare = [&](DatasetBatch batch) {
    return std::async(overlap ? std::launch::async : std::launch::deferred,
                      [&engine, batch = std::move(batch), &base_dir, &a]() mutable {
                        return prepare_batch(engine, std::move(batch), base_dir, a.val_dataset);
                      });
  };
  std::future<DatasetBatch> current = start_prepare(read_batch());
  for (;;) {
    const auto wait_start = Clock::now();
    DatasetBatch batch = current.get();
    const double waited = std::chrono::duration<double>(Clock::now() - wait_start).count();
    if (batch.rows.empty()) break;
    current = start_prepare(read_batch());
    const auto [answers, t] = answer_batch(generator, batch, params, a.val_dataset);
    const json timings = {{"batch_rows", batch.rows.size()},
                          {"batch_prepare_seconds", batch.prepare_seconds},
                          {"batch_prepare_wait_seconds", waited},
                          {"batch_prefill_seconds", t.prefill_seconds},
                          {"batch_decode_seconds", t.decode_seconds},
                          {"batch_first_token_seconds", t.first_token_seconds}};
    for (size_t i = 0; i < batch.rows.size(); ++i) {
      const DatasetRow& row = batch.rows[i];
      json j;
      if (answers[i]) {
        j = result_json(engine, *answers[i], params);
      } else {
        j["error"] = row.error;
        std::fprintf(stderr, "\rerror: %s\n", row.error.c_str());
        ++failed;
      }
      j["line"] = row.line;
      j["timings"] = timings;
      j["labels"] = row.labels ? json(*row.labels) : json(nullptr);
      out.write_line(j.dump(-1, ' ', false, json::error_handler_t::replace));
    }
    rows += batch.rows.size();
    std::fprintf(stderr, "\r%zu rows done", rows);
  }
  out.commit();
  std::fprintf(stderr, "\nwrote %zu results to %s", rows, out.is_stdout() ? "standard output" : out.path().c_str());
  if (failed > 0) std::fprintf(stderr, "; %zu of them failed (their \"error\" field says why)", failed);
  std::fprintf(stderr, "\n");
  return failed > 0 ? kExitFailure : kExitOk;
}

int run_interactive(Engine& engine, Generator& generator, GenerationParams params, const InferArgs& a) {
  catch_interrupts();
  ordered_json messages = ordered_json::array(), images = ordered_json::array();
  if (!a.system.empty()) messages.push_back({{"role", "system"}, {"content", a.system}});
  std::fprintf(stderr, "vlmforge chat: /clear starts over, /exit (or Ctrl-D) quits, Ctrl-C stops an answer.%s\n",
               engine.images ? " Put <image> in a message to be asked for an image path." : "");
  params.should_stop = [] { return interrupted(); };
  for (;;) {
    std::fprintf(stdout, "<<< ");
    std::fflush(stdout);
    std::string line;
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/clear") {
      messages.erase(messages.begin() + (a.system.empty() ? 0 : 1), messages.end());
      images = ordered_json::array();
      continue;
    }
    if (line.empty()) continue;
    // As swift's chat: each <image> tag asks for the image's path.
    const size_t first_new_image = images.size();
    for (size_t pos = line.find("<image>"); engine.images && pos != std::string::npos; pos = line.find("<image>", pos + 7)) {
      std::fprintf(stdout, "Input an image path <<< ");
      std::fflush(stdout);
      std::string path;
      if (!std::getline(std::cin, path)) return kExitOk;
      images.push_back(path);
    }
    messages.push_back({{"role", "user"}, {"content", line}});
    clear_interrupt();
    std::vector<GenerationResult> results;
    try {
      results = generator.generate({engine.prepare({{"messages", messages}, {"images", images}})}, params,
                                   [](size_t, std::string_view text) {
                                     std::fwrite(text.data(), 1, text.size(), stdout);
                                     std::fflush(stdout);
                                   });
    } catch (const Error& e) {
      // A bad image or an over-long prompt ends the turn, not the chat.
      std::fprintf(stderr, "error: %s\n", e.what());
      messages.erase(messages.end() - 1);
      images.erase(images.begin() + static_cast<std::ptrdiff_t>(first_new_image), images.end());
      continue;
    }
    std::fputc('\n', stdout);
    messages.push_back({{"role", "assistant"}, {"content", results[0].text}});
  }
  return kExitOk;
}

// `results`: where --val_dataset answers go (null without --val_dataset).
int run_session(Engine& engine, const InferArgs& a, AtomicOutput* results) {
  Generator generator(*engine.model, engine.tokenizer, engine.max_model_len);
  const GenerationParams params = make_params(engine, a);

  if (results != nullptr) {
    const int code = run_dataset(engine, generator, params, a, *results);
    print_stats(engine, generator);
    return code;
  }
  const bool stream = truthy(a.stream) && !a.json;
  auto stream_out = [](size_t, std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  };
  if (!a.query.empty()) {
    ordered_json request = {{"messages", user_request(a.system, a.query)}};
    if (!a.images.empty()) request["images"] = a.images;
    const auto results = generator.generate({engine.prepare(request)}, params,
                                            stream ? TextCallback(stream_out) : TextCallback());
    if (a.json) std::printf("%s\n", result_json(engine, results[0], params).dump().c_str());
    else std::printf(stream ? "\n" : "%s\n", results[0].text.c_str());
    print_stats(engine, generator);
    return kExitOk;
  }
  if (isatty(STDIN_FILENO)) return run_interactive(engine, generator, params, a);

  // One prompt per stdin line, batched; one answer per line (JSON lines with --json).
  std::vector<std::string> lines;
  auto flush = [&] {
    if (lines.empty()) return;
    std::vector<PromptInput> prompts;
    for (const auto& l : lines) prompts.push_back(engine.prepare(user_request(a.system, l)));
    for (const auto& r : generator.generate(prompts, params)) {
      if (a.json) std::printf("%s\n", result_json(engine, r, params).dump().c_str());
      else std::printf("%s\n", json(r.text).dump().c_str());
    }
    std::fflush(stdout);
    lines.clear();
  };
  for (std::string line; std::getline(std::cin, line);) {
    if (line.empty()) continue;
    lines.push_back(line);
    if (lines.size() >= a.max_batch_size) flush();
  }
  flush();
  print_stats(engine, generator);
  return kExitOk;
}

int run(InferArgs a) {
  a.engine.model = resolve_base_model(a.engine.model, a.engine.adapters);
  if (a.infer_backend != "native" && a.infer_backend != "pt")
    throw UsageError("--infer_backend: vlmforge runs its own native engine ('native'); got '" + a.infer_backend + "'");
  if (a.max_batch_size == 0) throw UsageError("--max_batch_size must be at least 1");
  if (!a.images.empty() && a.query.empty()) throw UsageError("--images goes with --query (or use <image> tags in --val_dataset rows or the chat)");
  const std::unique_ptr<PipelineTransport> pipeline = join_pipeline();
  // Checked (and the temporary file created) before the model loads, so a bad path fails at once;
  // by rank 0 only in a pipeline.
  std::optional<AtomicOutput> results;
  if (!a.val_dataset.empty() && (!pipeline || pipeline->rank() == 0)) {
    const std::string path = !a.result_path.empty() ? a.result_path
                                                    : fs::path(a.val_dataset).replace_extension("").string() + "-result.jsonl";
    results.emplace(path, std::vector<std::string>{a.val_dataset}, "--result_path");
  }
  const EngineOptions options = engine_options(a.engine);
  return run_with_engine(pipeline.get(), a.engine, options, generation_plan_options(options, a.max_batch_size),
                         [&](const PlacedEngine& placed) {
                           const int code = run_session(*placed.engine, a, results ? &*results : nullptr);
                           placed.print_memory_report();
                           return code;
                         });
}

}  // namespace

void add_infer_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<InferArgs>();
  CLI::App* cmd = app.add_subcommand(
      "infer", "Generate with a Qwen2 / Qwen2.5 / Qwen2.5-VL model on the CPU (flags as `swift infer`).\n"
               "--query: one answer. No --query: interactive chat on a terminal, or one prompt per stdin line.\n"
               "--val_dataset: swift-format JSONL rows in, one JSON line per row out (--result_path); a row that\n"
               "cannot be answered (invalid JSON, missing image, too long) gets an \"error\" field instead and the run\n"
               "goes on. Exit codes: 0 success, 1 failure (with --val_dataset: some rows failed), 2 usage error.\n"
               "Images (Qwen2.5-VL): --images with --query, <image> tags + \"images\" in dataset rows, <image> in the chat;\n"
               "sized by --max_pixels/--min_pixels or the MAX_PIXELS/MIN_PIXELS environment, as swift.\n"
               "Sampling defaults come from generation_config.json; --temperature 0 is greedy.");
  add_generation_flags(cmd, a->engine);
  cmd->add_option("--infer_backend", a->infer_backend, "Accepted for swift compatibility: native")->capture_default_str();
  cmd->add_option("--query", a->query, "The user message");
  cmd->add_option("--system", a->system, "System prompt (default: the chat template's)");
  cmd->add_option("--max_new_tokens", a->max_new_tokens, "Most tokens to generate (default 512)");
  cmd->add_option("--temperature", a->temperature, "Sampling temperature; 0 = greedy");
  cmd->add_option("--top_k", a->top_k, "Keep the k most likely tokens (0 = off)");
  cmd->add_option("--top_p", a->top_p, "Nucleus sampling threshold (1 = off)");
  cmd->add_option("--repetition_penalty", a->repetition_penalty, "Penalty for tokens already seen (1 = off)");
  cmd->add_option("--seed", a->seed, "Random seed for sampling")->capture_default_str();
  cmd->add_option("--stream", a->stream, "Print tokens as they are generated (true/false)")->capture_default_str();
  cmd->add_option("--max_batch_size", a->max_batch_size, "Sequences decoded together")->capture_default_str();
  cmd->add_option("--val_dataset", a->val_dataset, "swift-format JSONL dataset to answer");
  cmd->add_option("--result_path", a->result_path,
                  "Where --val_dataset results go (default: <dataset>-result.jsonl; - for stdout); written to a\n"
                  "temporary file and renamed when done. Refuses the dataset itself and paths that are not\n"
                  "regular files (device, FIFO, directory, symbolic link) or are read-only.");
  cmd->add_flag("--logprobs", a->logprobs,
                "Include the chosen tokens' logprobs (OpenAI logprobs.content shape, plus each token's \"id\")");
  cmd->add_option("--top_logprobs", a->top_logprobs, "Alternatives per token with --logprobs");
  cmd->add_option("--stop_words", a->stop_words, "Text that ends an answer (not included)");
  cmd->add_flag("--json", a->json, "JSON output");
  cmd->add_option("--images", a->images, "Image files for --query (Qwen2.5-VL), comma-separated; <image> tags in the "
                                        "query place them, else they go before the text")
      ->delimiter(',');
  cmd->add_option("--overlap_images", a->overlap_images,
                  "--val_dataset: encode the next batch's images while the current batch generates (true/false)")
      ->capture_default_str();
  cmd->callback([a, &exit_code] { exit_code = run(*a); });
}

}  // namespace vlmforge::cli
