// vlmforge infer: chat with a Qwen2 / Qwen2.5 model on the CPU, one-shot (--query), one prompt
// per stdin line, interactive, or over a swift-format dataset (--val_dataset), batched.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/infer_session.h"
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
  std::string model;
  std::vector<std::string> adapters;
  std::string infer_backend = "native";
  std::string query;
  std::string system;
  int max_new_tokens = -1;
  float temperature = -1, top_p = -1, repetition_penalty = -1;
  int top_k = -1;
  uint64_t seed = 0;
  std::string stream = "true";
  size_t max_batch_size = 1;
  size_t max_model_len = 0;
  std::string val_dataset;
  std::string result_path;
  bool logprobs = false;
  size_t top_logprobs = 0;
  std::vector<std::string> stop_words;
  size_t threads = 0;
  std::string kv_cache_dtype = "float32";
  bool json = false;
  DeviceMapArgs device_map;
};

bool truthy(const std::string& s) { return s == "true" || s == "True" || s == "1"; }

GenerationParams make_params(const InferSession& session, const InferArgs& a) {
  GenerationParams p = session.defaults;
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

// A swift dataset row: the prompt request and, if present, the reference answer.
std::pair<ordered_json, std::optional<std::string>> dataset_row(const ordered_json& row, const std::string& where) {
  if (!row.is_object()) throw Error(where + ": row is not a JSON object");
  ordered_json request = row;
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
    ordered_json messages = ordered_json::array();
    if (row.contains("system")) messages.push_back({{"role", "system"}, {"content", row["system"]}});
    if (row.contains("history") && row["history"].is_array())
      for (const auto& turn : row["history"]) {
        messages.push_back({{"role", "user"}, {"content", turn.at(0)}});
        messages.push_back({{"role", "assistant"}, {"content", turn.at(1)}});
      }
    messages.push_back({{"role", "user"}, {"content", row["query"]}});
    if (row.contains("response") && row["response"].is_string()) labels = row["response"].get<std::string>();
    ordered_json out = {{"messages", messages}};
    for (const char* key : {"images", "videos"})
      if (row.contains(key)) out[key] = row[key];
    return {out, labels};
  }
  throw Error(where + ": row has neither \"messages\" nor \"query\"");
}

void print_stats(const Generator& generator) {
  const auto& t = generator.total_timings();
  std::fprintf(stderr, "[stats] prefill %zu tokens %.1f tok/s, decode %zu tokens %.1f tok/s, first token %.3f s, peak memory %s\n",
               t.prefill_tokens, t.prefill_tokens / std::max(t.prefill_seconds, 1e-9), t.decode_tokens,
               t.decode_tokens / std::max(t.decode_seconds, 1e-9), t.first_token_seconds,
               format_bytes(peak_rss_bytes()).c_str());
}

json result_json(const InferSession& session, const GenerationResult& r, const GenerationParams& params) {
  json j = {{"response", r.text},
            {"finish_reason", r.finish_reason},
            {"prompt_tokens", r.prompt_tokens},
            {"completion_tokens", r.tokens.size()}};
  if (params.logprobs) j["logprobs"] = openai_logprobs(session.tokenizer, r.logprobs);
  return j;
}

int run_dataset(InferSession& session, Generator& generator, const GenerationParams& params, const InferArgs& a) {
  std::ifstream in(a.val_dataset);
  if (!in) throw Error(a.val_dataset + ": cannot open");
  std::string result_path = a.result_path;
  if (result_path.empty()) result_path = fs::path(a.val_dataset).replace_extension("").string() + "-result.jsonl";
  const std::string temp = result_path + ".tmp";
  std::ofstream out(temp);
  if (!out) throw Error(result_path + ": cannot create");
  std::vector<std::pair<ordered_json, std::optional<std::string>>> batch;
  std::vector<size_t> batch_lines;
  size_t line_number = 0, rows = 0;
  auto flush = [&] {
    if (batch.empty()) return;
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& [request, labels] : batch) prompts.push_back(session.encode_chat(request));
    const auto results = generator.generate(prompts, params);
    const auto& t = generator.timings();
    const json timings = {{"batch_rows", batch.size()},
                          {"batch_prefill_seconds", t.prefill_seconds},
                          {"batch_decode_seconds", t.decode_seconds},
                          {"batch_first_token_seconds", t.first_token_seconds}};
    for (size_t i = 0; i < batch.size(); ++i) {
      json j = result_json(session, results[i], params);
      j["line"] = batch_lines[i];
      j["timings"] = timings;
      j["labels"] = batch[i].second ? json(*batch[i].second) : json(nullptr);
      out << j.dump() << "\n";
    }
    rows += batch.size();
    std::fprintf(stderr, "\r%zu rows done", rows);
    batch.clear();
    batch_lines.clear();
  };
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = a.val_dataset + ":" + std::to_string(line_number);
    ordered_json row;
    try {
      row = ordered_json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": invalid JSON: " + e.what());
    }
    batch.push_back(dataset_row(row, where));
    batch_lines.push_back(line_number);
    if (batch.size() >= a.max_batch_size) flush();
  }
  flush();
  out.close();
  if (!out) throw Error(result_path + ": write failed");
  fs::rename(temp, result_path);
  std::fprintf(stderr, "\nwrote %zu results to %s\n", rows, result_path.c_str());
  return kExitOk;
}

int run_interactive(InferSession& session, Generator& generator, GenerationParams params, const InferArgs& a) {
  catch_interrupts();
  ordered_json messages = ordered_json::array();
  if (!a.system.empty()) messages.push_back({{"role", "system"}, {"content", a.system}});
  std::fprintf(stderr, "vlmforge chat: /clear starts over, /exit (or Ctrl-D) quits, Ctrl-C stops an answer.\n");
  params.should_stop = [] { return interrupted(); };
  for (;;) {
    std::fprintf(stdout, "<<< ");
    std::fflush(stdout);
    std::string line;
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/clear") {
      messages.erase(messages.begin() + (a.system.empty() ? 0 : 1), messages.end());
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    clear_interrupt();
    const auto results = generator.generate({session.encode_chat(messages)}, params, [](size_t, std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    messages.push_back({{"role", "assistant"}, {"content", results[0].text}});
  }
  return kExitOk;
}

int run_session(InferSession& session, const InferArgs& a) {
  const size_t max_model_len = a.max_model_len ? a.max_model_len : session.model->config().max_position_embeddings;
  Generator generator(*session.model, session.tokenizer, max_model_len);
  const GenerationParams params = make_params(session, a);

  if (!a.val_dataset.empty()) {
    const int code = run_dataset(session, generator, params, a);
    print_stats(generator);
    return code;
  }
  const bool stream = truthy(a.stream) && !a.json;
  auto stream_out = [](size_t, std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  };
  if (!a.query.empty()) {
    const auto results = generator.generate({session.encode_chat(user_request(a.system, a.query))}, params,
                                            stream ? TextCallback(stream_out) : TextCallback());
    if (a.json) std::printf("%s\n", result_json(session, results[0], params).dump().c_str());
    else std::printf(stream ? "\n" : "%s\n", results[0].text.c_str());
    print_stats(generator);
    return kExitOk;
  }
  if (isatty(STDIN_FILENO)) return run_interactive(session, generator, params, a);

  // One prompt per stdin line, batched; one answer per line (JSON lines with --json).
  std::vector<std::string> lines;
  auto flush = [&] {
    if (lines.empty()) return;
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& l : lines) prompts.push_back(session.encode_chat(user_request(a.system, l)));
    for (const auto& r : generator.generate(prompts, params)) {
      if (a.json) std::printf("%s\n", result_json(session, r, params).dump().c_str());
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
  print_stats(generator);
  return kExitOk;
}

int run(const InferArgs& a) {
  if (a.infer_backend != "native" && a.infer_backend != "pt")
    throw UsageError("--infer_backend: vlmforge runs its own native engine ('native'); got '" + a.infer_backend + "'");
  if (a.max_batch_size == 0) throw UsageError("--max_batch_size must be at least 1");
  const DType kv_dtype = a.kv_cache_dtype == "bfloat16" ? DType::BF16 : DType::F32;
  std::unique_ptr<PlacedRun> placed;  // outlives the session: the model's memory lives on its devices
  if (a.device_map.enabled()) {
    PlanOptions o;
    o.max_batch_size = a.max_batch_size;
    o.max_model_len = a.max_model_len;
    o.kv_cache_dtype = kv_dtype;
    o.threads = a.threads ? a.threads : std::max(1u, std::thread::hardware_concurrency());
    o.prefill_chunk = GenerationParams{}.prefill_chunk;
    placed = place_model(a.model, a.device_map, o);
    placed->print_plan();
  } else if (a.device_map.memory_report) {
    throw UsageError("--memory_report reports the devices of a --device_map run; add --device_map auto");
  }
  InferSession session(a.model, a.threads, {a.adapters.begin(), a.adapters.end()},
                       placed ? &placed->placement : nullptr);
  session.model->set_kv_cache_dtype(kv_dtype);
  const int code = run_session(session, a);
  if (placed && a.device_map.memory_report) placed->print_memory_report();
  return code;
}

}  // namespace

void add_infer_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<InferArgs>();
  CLI::App* cmd = app.add_subcommand(
      "infer", "Generate with a Qwen2 / Qwen2.5 model on the CPU (flags as `swift infer`).\n"
               "--query: one answer. No --query: interactive chat on a terminal, or one prompt per stdin line.\n"
               "--val_dataset: swift-format JSONL rows in, one JSON line per row out (--result_path).\n"
               "Sampling defaults come from generation_config.json; --temperature 0 is greedy.");
  cmd->add_option("--model", a->model, "Model directory (config.json, *.safetensors, tokenizer.json)")->required();
  cmd->add_option("--adapters,--lora", a->adapters, "PEFT LoRA adapters applied unmerged (same outputs as the merged model)");
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
  cmd->add_option("--max_model_len", a->max_model_len, "Longest sequence (prompt + answer); default from config.json");
  cmd->add_option("--val_dataset", a->val_dataset, "swift-format JSONL dataset to answer");
  cmd->add_option("--result_path", a->result_path, "Where --val_dataset results go (default: <dataset>-result.jsonl)");
  cmd->add_flag("--logprobs", a->logprobs, "Include the chosen tokens' logprobs (OpenAI logprobs.content shape)");
  cmd->add_option("--top_logprobs", a->top_logprobs, "Alternatives per token with --logprobs");
  cmd->add_option("--stop_words", a->stop_words, "Text that ends an answer (not included)");
  cmd->add_option("--threads", a->threads, "Worker threads (default: all cores)");
  cmd->add_option("--kv_cache_dtype", a->kv_cache_dtype, "KV cache storage: bfloat16 halves its memory")
      ->check(CLI::IsMember({"float32", "bfloat16"}))
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "JSON output");
  add_device_map_options(cmd, a->device_map);
  cmd->callback([a, &exit_code] { exit_code = run(*a); });
}

}  // namespace vlmforge::cli
