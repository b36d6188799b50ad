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
#include "cli/infer_session.h"
#include "server/api_server.h"
#include "server/scheduler.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;

namespace {

struct DeployArgs {
  std::string model;
  std::vector<std::string> adapters;
  std::string host = "127.0.0.1";
  int port = 8000;
  size_t max_batch_size = 8;
  std::string served_model_name;
  std::string api_key;
  size_t max_queue = 64;
  size_t max_connections = 256;
  double max_body_mb = 100;
  std::string allowed_local_media_path;
  size_t max_model_len = 0;
  size_t threads = 0;
  std::string kv_cache_dtype = "float32";
  std::optional<uint64_t> min_pixels, max_pixels;
  size_t image_cache_mb = 512;
  bool exif_transpose = false;
  DeviceMapArgs device_map;
};

// Each of these becomes OS threads (a worker per batch slot and queued request, the model's
// pool) or file descriptors (connections): a typo must be a usage error, not an exhausted machine.
constexpr size_t kMaxBatchSize = 256, kMaxQueue = 1024, kMaxThreads = 256, kMaxConnections = 4096;

void check_server_limits(const DeployArgs& a) {
  if (a.max_batch_size == 0 || a.max_batch_size > kMaxBatchSize)
    throw UsageError("--max_batch_size must be 1.." + std::to_string(kMaxBatchSize) + ", got " + std::to_string(a.max_batch_size));
  if (a.max_queue > kMaxQueue)
    throw UsageError("--max_queue must be at most " + std::to_string(kMaxQueue) + ", got " + std::to_string(a.max_queue));
  if (a.threads > kMaxThreads)
    throw UsageError("--threads must be at most " + std::to_string(kMaxThreads) + " (0: all cores), got " +
                     std::to_string(a.threads));
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
  a.model = resolve_base_model(a.model, a.adapters);
  // Before --device_map planned placements, "cpu" was how to ask for one host device; it still is.
  if (a.device_map.placement.device_map == "cpu") a.device_map.placement.device_map.clear();
  check_server_limits(a);
  if (a.port < 0 || a.port > 65535) throw UsageError("--port must be 0..65535 (0: any free port)");
  if (!(a.max_body_mb > 0 && a.max_body_mb <= 4096)) throw UsageError("--max_body_mb must be in (0, 4096]");
  server::ServerOptions options;
  if (!a.allowed_local_media_path.empty()) {
    if (!fs::is_directory(a.allowed_local_media_path))
      throw UsageError("--allowed_local_media_path " + a.allowed_local_media_path + " is not a directory");
    options.media.allowed_local_media_path = a.allowed_local_media_path;
  }

  const auto vision_options = VisionOptions::from_flags(a.min_pixels, a.max_pixels, a.image_cache_mb, a.exif_transpose);
  const DType kv_dtype = a.kv_cache_dtype == "bfloat16" ? DType::BF16 : DType::F32;
  // Planned for the server's batch: max_batch_size sequences of max_model_len each.
  const PlanOptions plan_options =
      generation_plan_options(a.max_batch_size, a.max_model_len, kv_dtype, a.threads, vision_options.budget);
  // Outlives the session: the model's memory lives on its devices.
  const std::unique_ptr<PlacedRun> placed = place_model(a.model, a.device_map, plan_options);
  if (placed)
    for (const auto& device : placed->devices) options.devices.push_back(device.get());
  InferSession session(a.model, a.threads, {a.adapters.begin(), a.adapters.end()}, vision_options,
                       placed ? &placed->placement : nullptr);
  // Caught here rather than as a failed generation on every request.
  if (session.tokenizer.vocab_size() > session.model->vocab_size())
    throw Error(a.model + ": tokenizer.json has " + std::to_string(session.tokenizer.vocab_size()) +
                " tokens but the model's vocab_size is " + std::to_string(session.model->vocab_size()) +
                "; use the tokenizer the model was trained with");
  session.model->set_kv_cache_dtype(kv_dtype);
  const size_t max_model_len = a.max_model_len ? a.max_model_len : session.model->config().max_position_embeddings;

  options.host = a.host;
  options.port = a.port;
  options.api_key = a.api_key;
  options.max_body_bytes = static_cast<size_t>(a.max_body_mb * 1024 * 1024);
  options.max_connections = a.max_connections;
  options.max_model_len = max_model_len;
  options.served_model_name = a.served_model_name;
  if (options.served_model_name.empty()) {
    // As vLLM: the --model argument as given (without a trailing slash).
    options.served_model_name = a.model;
    while (options.served_model_name.size() > 1 && options.served_model_name.back() == '/')
      options.served_model_name.pop_back();
  }

  server::Scheduler scheduler(*session.model, session.tokenizer, {a.max_batch_size, a.max_queue, max_model_len});
  server::ApiServer api(session, scheduler, options);
  if (session.images) {
    // Images are decoded and encoded on the request's HTTP thread (ImageEncoder serializes them
    // and caches by content); the scheduler thread only ever runs the language model, so a
    // request's images do not stall the decode steps of the sequences already running.
    api.set_vision_prompt_hook(
        [&session](const nlohmann::ordered_json& messages, std::span<const server::ImageInput> images) {
          std::vector<InferSession::ImageData> data;
          for (size_t i = 0; i < images.size(); ++i)
            data.push_back({images[i].bytes, "image " + std::to_string(i + 1) + " (" + images[i].source + ")"});
          return session.prepare_in_memory(messages, data);
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
  if (placed && a.device_map.memory_report) placed->print_memory_report();
  return kExitOk;
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
      "Qwen2.5-VL checkpoints take image_url parts (sized by --max_pixels/--min_pixels or MAX_PIXELS/MIN_PIXELS, as infer).\n"
      "Hostile clients are bounded (docs/security.md): request heads 64 KiB / 128 lines within 10 s (431/408),\n"
      "bodies --max_body_mb chunked or not (413), --max_connections open at once, idle keep-alive 5 s.\n"
      "SIGTERM or Ctrl-C stops accepting, finishes the requests in flight and exits 0.");
  cmd->add_option("--model", a->model,
                  "Model directory (config.json, *.safetensors, tokenizer.json); with --adapters CKPT, default: the base "
                  "model its args.json / adapter_config.json names");
  cmd->add_option("--adapters,--lora", a->adapters, "PEFT LoRA adapters applied unmerged");
  cmd->add_option("--host", a->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", a->port, "Port to listen on (0: any free port, printed at start)")->capture_default_str();
  cmd->add_option("--max_batch_size", a->max_batch_size, "Most sequences decoded together (1..256)")->capture_default_str();
  cmd->add_option("--served_model_name", a->served_model_name, "The model name clients send (default: --model as given)");
  cmd->add_option("--api_key", a->api_key, "Require 'Authorization: Bearer KEY' on /v1/ routes");
  cmd->add_option("--max_queue", a->max_queue, "Most requests waiting to join the batch (0..1024); more get 429 + Retry-After")
      ->capture_default_str();
  cmd->add_option("--max_connections", a->max_connections,
                  "Most client connections open at once (1..4096); beyond it the longest-idle one is closed, "
                  "or the new one gets 503")
      ->capture_default_str();
  cmd->add_option("--max_body_mb", a->max_body_mb, "Largest request body in MiB; larger ones get 413")->capture_default_str();
  cmd->add_option("--allowed_local_media_path", a->allowed_local_media_path,
                  "Directory that file:// image URLs may read from (default: none allowed)");
  cmd->add_option("--max_model_len", a->max_model_len, "Longest sequence (prompt + answer); default from config.json");
  cmd->add_option("--threads", a->threads, "Worker threads for the model (at most 256; default: all cores)");
  cmd->add_option("--kv_cache_dtype", a->kv_cache_dtype, "KV cache storage: bfloat16 halves its memory")
      ->check(CLI::IsMember({"float32", "bfloat16"}))
      ->capture_default_str();
  cmd->add_option("--max_pixels", a->max_pixels, "Image pixel budget upper bound (default: MAX_PIXELS env or 12845056)");
  cmd->add_option("--min_pixels", a->min_pixels, "Image pixel budget lower bound (default: MIN_PIXELS env or 3136)");
  cmd->add_option("--image_cache_mb", a->image_cache_mb, "Memory for cached vision embeddings (LRU by image content)")
      ->capture_default_str();
  cmd->add_flag("--exif_transpose", a->exif_transpose, "Turn EXIF-rotated photos upright before resizing (off, as swift)");
  add_device_map_options(cmd, a->device_map);
  cmd->callback([a, &exit_code] { exit_code = run(*a); });
}

}  // namespace vlmforge::cli
