// vlmforge deploy: an OpenAI-compatible HTTP server (chat completions, completions, models,
// health, metrics) with continuous batching; Qwen2.5-VL checkpoints take images, and --device_map
// runs the model across devices as infer does.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <span>
#include <thread>

#include <sys/resource.h>

#include "cli/base_model.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "server/api_server.h"
#include "server/scheduler.h"
#include "util/bytes.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;

namespace {

struct DeployArgs {
  EngineFlags engine;
  std::string host = "127.0.0.1";
  int port = 8000;
  size_t max_batch_size = 8;
  std::string served_model_name;
  std::string api_key;
  size_t max_queue = 64;
  size_t max_connections = 256;
  double max_body_mb = 100;
  std::string allowed_local_media_path;
  std::string kv_cache_memory;  // empty: max_batch_size sequences of max_model_len
  bool enable_prefix_caching = false;
};

// Each of these becomes OS threads (a worker per batch slot and queued request, the model's
// pool) or file descriptors (connections): a typo must be a usage error, not an exhausted machine.
constexpr size_t kMaxBatchSize = 256, kMaxQueue = 1024, kMaxThreads = 256, kMaxConnections = 4096;

void check_server_limits(const DeployArgs& a) {
  if (a.max_batch_size == 0 || a.max_batch_size > kMaxBatchSize)
    throw UsageError("--max_batch_size must be 1.." + std::to_string(kMaxBatchSize) + ", got " + std::to_string(a.max_batch_size));
  if (a.max_queue > kMaxQueue)
    throw UsageError("--max_queue must be at most " + std::to_string(kMaxQueue) + ", got " + std::to_string(a.max_queue));
  if (a.engine.threads > kMaxThreads)
    throw UsageError("--threads must be at most " + std::to_string(kMaxThreads) + " (0: all cores), got " +
                     std::to_string(a.engine.threads));
  if (a.max_connections == 0 || a.max_connections > kMaxConnections)
    throw UsageError("--max_connections must be 1.." + std::to_string(kMaxConnections) + ", got " +
                     std::to_string(a.max_connections));
  rlimit files{};
  // Connections, the model's files and the workers' pipes share the descriptor limit.
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY && a.max_connections + 64 > files.rlim_cur)
    throw UsageError("--max_connections " + std::to_string(a.max_connections) + " does not fit the open-file limit of " +
                     std::to_string(files.rlim_cur) + " (ulimit -n): raise the limit or lower --max_connections");
}

int run(DeployArgs a) {
  a.engine.model = resolve_base_model(a.engine.model, a.engine.adapters);
  // Before --device_map planned placements, "cpu" was how to ask for one host device; it still is.
  if (a.engine.device_map.placement.device_map == "cpu") a.engine.device_map.placement.device_map.clear();
  check_server_limits(a);
  if (a.port < 0 || a.port > 65535) throw UsageError("--port must be 0..65535 (0: any free port)");
  if (!(a.max_body_mb > 0 && a.max_body_mb <= 4096)) throw UsageError("--max_body_mb must be in (0, 4096]");
  server::ServerOptions options;
  if (!a.allowed_local_media_path.empty()) {
    if (!fs::is_directory(a.allowed_local_media_path))
      throw UsageError("--allowed_local_media_path " + a.allowed_local_media_path + " is not a directory");
    options.media.allowed_local_media_path = a.allowed_local_media_path;
  }

  // Planned for the server's batch: max_batch_size sequences of max_model_len each.
  EngineOptions engine_setup = engine_options(a.engine);
  // Requests waiting for the image encoder are bounded as those waiting for the batch.
  engine_setup.vision.max_waiting_encodes = a.max_queue;
  const std::unique_ptr<PipelineTransport> pipeline = join_pipeline();
  return run_with_engine(pipeline.get(), a.engine, engine_setup, generation_plan_options(engine_setup, a.max_batch_size),
                         [&](const PlacedEngine& placed) {
  for (const auto& device : placed.placed->devices) options.devices.push_back(device.get());
  const Engine& engine = *placed.engine;
  // Caught here rather than as a failed generation on every request.
  if (engine.tokenizer.vocab_size() > engine.model->vocab_size())
    throw Error(a.engine.model + ": tokenizer.json has " + std::to_string(engine.tokenizer.vocab_size()) +
                " tokens but the model's vocab_size is " + std::to_string(engine.model->vocab_size()) +
                "; use the tokenizer the model was trained with");
  const size_t max_model_len = engine.max_model_len;

  options.host = a.host;
  options.port = a.port;
  options.api_key = a.api_key;
  options.max_body_bytes = static_cast<size_t>(a.max_body_mb * 1024 * 1024);
  options.max_connections = a.max_connections;
  options.max_model_len = max_model_len;
  options.served_model_name = a.served_model_name;
  if (options.served_model_name.empty()) {
    // As vLLM: the --model argument as given (without a trailing slash).
    options.served_model_name = a.engine.model;
    while (options.served_model_name.size() > 1 && options.served_model_name.back() == '/')
      options.served_model_name.pop_back();
  }

  server::SchedulerOptions scheduling{a.max_batch_size, a.max_queue, max_model_len};
  scheduling.enable_prefix_caching = a.enable_prefix_caching;
  if (!a.kv_cache_memory.empty()) {
    const ModelConfig& c = engine.model->config();
    const uint64_t block_bytes = 2ull * static_cast<uint64_t>(c.num_hidden_layers) * kKvBlockSize *
                                 static_cast<uint64_t>(c.num_key_value_heads * c.head_dim()) *
                                 (a.engine.kv_cache_dtype == "bfloat16" ? 2 : 4);
    scheduling.kv_cache_blocks = parse_byte_size(a.kv_cache_memory, "--kv_cache_memory") / block_bytes;
    if (scheduling.kv_cache_blocks * kKvBlockSize < max_model_len)
      throw UsageError("--kv_cache_memory " + a.kv_cache_memory + " holds " +
                       std::to_string(scheduling.kv_cache_blocks * kKvBlockSize) +
                       " KV positions, less than one sequence of --max_model_len " + std::to_string(max_model_len) +
                       " (one position takes " + format_bytes(block_bytes / kKvBlockSize) + ")");
  }
  server::Scheduler scheduler(*engine.model, engine.tokenizer, scheduling);
  server::ApiServer api(engine, scheduler, options);
  if (engine.images) {
    // Images are decoded and encoded on the request's HTTP thread (ImageEncoder takes them in
    // arrival order, one image per turn, and caches by content); the scheduler thread only ever
    // runs the language model, so a request's images do not stall the decode steps of the
    // sequences already running.
    api.set_vision_prompt_hook([&engine](const nlohmann::ordered_json& messages, std::span<const server::ImageInput> images,
                                         size_t max_tokens, const std::function<bool()>& stop) {
      std::vector<Engine::ImageData> data;
      for (size_t i = 0; i < images.size(); ++i)
        data.push_back({images[i].bytes, "image " + std::to_string(i + 1) + " (" + images[i].source + ")"});
      return engine.prepare_in_memory(messages, data, max_tokens, stop);
    });
  }
  const int port = api.bind();
  catch_interrupts();
  std::printf("vlmforge deploy: serving '%s' on http://%s:%d (max_batch_size %zu, max_queue %zu, max_model_len %zu)\n",
              options.served_model_name.c_str(), a.host.c_str(), port, a.max_batch_size, a.max_queue, max_model_len);
  std::fflush(stdout);

  // SIGTERM / Ctrl-C: stop accepting, let the requests in flight finish, then exit 0.
  std::atomic<bool> served{false};
  std::thread watcher([&] {
    while (!served.load() && !interrupted()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    scheduler.stop_accepting();
    api.stop();
  });
  api.serve();
  served.store(true);
  watcher.join();
  scheduler.drain();
  const auto stats = scheduler.stats();
  std::fprintf(stderr, "vlmforge deploy: stopped after %llu finished, %llu cancelled, %llu failed requests\n",
               static_cast<unsigned long long>(stats.finished), static_cast<unsigned long long>(stats.cancelled),
               static_cast<unsigned long long>(stats.failed));
  placed.print_memory_report();
  return kExitOk;
  });
}

}  // namespace

void add_deploy_command(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<DeployArgs>();
  CLI::App* cmd = app.add_subcommand(
      "deploy",
      "Serve a model over an OpenAI-compatible HTTP API (flags as `swift deploy` / vLLM):\n"
      "POST /v1/chat/completions, POST /v1/completions (stream as server-sent events), GET /v1/models,\n"
      "GET /health, GET /metrics (Prometheus). Requests join the running batch between decode steps\n"
      "(continuous batching) up to --max_batch_size; beyond --max_queue waiting requests the answer is 429.\n"
      "Qwen2.5-VL checkpoints take image_url parts (sized by --max_pixels/--min_pixels or MAX_PIXELS/MIN_PIXELS, as infer);\n"
      "they take turns on the vision encoder in arrival order (beyond --max_queue waiting: 429), and a client\n"
      "that disconnects stops its image encoding. A prompt past --max_model_len is refused while tokenizing (400).\n"
      "Hostile clients are bounded (docs/security.md): request heads 64 KiB / 128 lines within 10 s (431/408),\n"
      "bodies --max_body_mb chunked or not (413), --max_connections open at once, idle keep-alive 5 s.\n"
      "SIGTERM or Ctrl-C stops accepting, finishes the requests in flight and exits 0.");
  add_generation_flags(cmd, a->engine);
  cmd->get_option("--threads")->description("Worker threads for the model (at most 256; default: all cores)");
  cmd->add_option("--host", a->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", a->port, "Port to listen on (0: any free port, printed at start)")->capture_default_str();
  cmd->add_option("--max_batch_size", a->max_batch_size, "Most sequences decoded together (1..256)")->capture_default_str();
  cmd->add_option("--served_model_name", a->served_model_name, "The model name clients send (default: --model as given)");
  cmd->add_option("--api_key", a->api_key, "Require 'Authorization: Bearer KEY' on /v1/ routes");
  cmd->add_option("--max_queue", a->max_queue, "Most requests waiting to join the batch, and most waiting for the image encoder (0..1024); more get 429 + Retry-After")
      ->capture_default_str();
  cmd->add_option("--max_connections", a->max_connections,
                  "Most client connections open at once (1..4096); beyond it the longest-idle one is closed, "
                  "or the new one gets 503")
      ->capture_default_str();
  cmd->add_option("--max_body_mb", a->max_body_mb, "Largest request body in MiB; larger ones get 413")->capture_default_str();
  cmd->add_option("--kv_cache_memory", a->kv_cache_memory,
                  "Memory of the paged KV cache pool, e.g. 2GiB (default: --max_batch_size sequences of "
                  "--max_model_len, as planned)");
  cmd->add_option("--enable_prefix_caching", a->enable_prefix_caching,
                  "Reuse the KV blocks of a prompt prefix seen before (true|false; off by default: the uncached rest is then "
                  "prefilled from a block boundary, which moves logprobs in the last digits)")
      ->capture_default_str();
  cmd->add_option("--allowed_local_media_path", a->allowed_local_media_path,
                  "Directory that file:// image URLs may read from (default: none allowed)");
  cmd->callback([a, &exit_code] { exit_code = run(*a); });
}

}  // namespace vlmforge::cli
