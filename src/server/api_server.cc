#include "server/api_server.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>

#include "io/json_file.h"
#include "tokenizer/chat_template.h"
#include "vision/image_encoder.h"
#include "vision/smart_resize.h"

namespace vlmforge::server {
namespace fs = std::filesystem;
using nlohmann::json;

uint64_t current_rss_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

namespace {

constexpr int kMaxJsonDepth = 64;  // a chat request needs ~6 levels
constexpr auto kPollInterval = std::chrono::milliseconds(50);
constexpr int kListenBacklog = 512;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_id(const char* prefix) {
  std::random_device rd;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s%08x%08x%08x", prefix, rd(), rd(), rd());
  return buf;
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(error_body(e).dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// httplib 0.11 hands handlers no socket, and only notices a vanished client when a write fails.
// A request's connection is found by its address pair (the socket stays open while the handler
// runs), so a waiting handler can see the client hang up and cancel its sequence.
int connection_fd(const httplib::Request& req) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd", ec)) {
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (const std::exception&) {
      continue;
    }
    sockaddr_storage peer{}, local{};
    socklen_t peer_len = sizeof peer, local_len = sizeof local;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) continue;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    auto port_of = [](const sockaddr_storage& a) {
      if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
      if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
      return uint16_t{0};
    };
    if (port_of(peer) != req.remote_port || port_of(local) != req.local_port) continue;
    char ip[INET6_ADDRSTRLEN] = {};
    if (peer.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(peer).sin_addr, ip, sizeof ip);
    else inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr, ip, sizeof ip);
    if (req.remote_addr == ip) return fd;
  }
  return -1;
}

// Whether the client is gone. A client that half-closed after sending (shutdown(SHUT_WR), nc -N)
// still waits for its answer, so a FIN alone proves nothing; only a reset or a socket error does.
// Before the response has started, the first FIN is answered with an interim "100 Continue"
// (HTTP/1.1 clients must accept 1xx responses before the final one): a client that has really
// closed answers it with a reset, which the next look sees.
class PeerWatch {
 public:
  PeerWatch(int fd, bool may_probe) : fd_(fd), may_probe_(may_probe) {}
  int fd() const { return fd_; }
  bool gone() {
    if (fd_ < 0) return false;
    pollfd p{fd_, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLHUP | POLLERR)) return true;
    if ((p.revents & POLLRDHUP) && may_probe_) {
      may_probe_ = false;
      static constexpr std::string_view kProbe = "HTTP/1.1 100 Continue\r\n\r\n";
      if (::send(fd_, kProbe.data(), kProbe.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN) return true;
    }
    return false;
  }

 private:
  int fd_;
  bool may_probe_;
};

// The request body, read through httplib's content reader so that --max_body_mb bounds chunked
// bodies too (httplib 0.11 applies its payload limit to Content-Length only). nullopt: the error
// response is set.
std::optional<std::string> read_body(const httplib::Request& req, httplib::Response& res,
                                     const httplib::ContentReader& reader, size_t max_bytes) {
  if (req.is_multipart_form_data()) {
    send_error(res, ApiError(415, "the request body must be JSON (Content-Type: application/json), not multipart"));
    return std::nullopt;
  }
  std::string body;
  bool too_large = false;
  const bool ok = reader([&](const char* data, size_t n) {
    if (n > max_bytes - body.size()) {
      too_large = true;
      return false;
    }
    body.append(data, n);
    return true;
  });
  if (too_large || res.status == 413) {
    send_error(res, ApiError(413, "request body is larger than the server's limit (--max_body_mb)", "", "request_too_large"));
    return std::nullopt;
  }
  if (!ok) {
    send_error(res, ApiError(400, "cannot read the request body: the client sent it too slowly, stopped, or broke its "
                                  "chunked encoding"));
    return std::nullopt;
  }
  return body;
}

}  // namespace

// httplib's accept loop under the bounded connection layer: each accepted socket goes to the
// layer (httplib hands it to process_and_close_socket through the task queue, which here runs it
// at once on the accept thread), and the layer runs httplib's request processing on its workers.
class BoundedHttpServer : public httplib::Server {
 public:
  explicit BoundedHttpServer(const ConnectionLimits& limits)
      : connections_(limits, [this](httplib::Stream& stream, bool close_connection, bool& connection_closed) {
          return process_request(stream, close_connection, connection_closed, nullptr);
        }) {
    // httplib's interface: it takes ownership of the queue and deletes it when listening ends.
    new_task_queue = [this] { return new AdoptingQueue(connections_); };
  }

  // httplib's stop() also cuts every streaming response short (its chunked writer ends once the
  // listening socket is invalidated). Shutting the socket down instead makes accept() fail, so the
  // listen loop ends and shuts the task queue down: the layer closes idle and half-received
  // connections and waits for the requests in progress, whose streams run to completion.
  void stop_listening() { ::shutdown(svr_sock_, SHUT_RDWR); }
  // httplib listens with a backlog of 5, so a burst of connections had SYNs dropped and retried
  // a second or more later; listen() again on the bound socket (Linux) widens the queue.
  void widen_backlog(int backlog) { ::listen(svr_sock_, backlog); }
  ConnectionStats connection_stats() const { return connections_.stats(); }

 private:
  class AdoptingQueue : public httplib::TaskQueue {
   public:
    explicit AdoptingQueue(ConnectionLayer& layer) : layer_(layer) {}
    void enqueue(std::function<void()> fn) override { fn(); }
    void shutdown() override { layer_.shutdown(); }

   private:
    ConnectionLayer& layer_;
  };

  bool process_and_close_socket(socket_t sock) override {
    connections_.adopt(sock);
    return true;
  }

  ConnectionLayer connections_;
};

namespace {

// One streamed response: what has been sent so far.
struct StreamState {
  std::shared_ptr<Job> job;
  CompletionRequest request;
  ResponseMeta meta;
  PeerWatch peer;
  size_t text_bytes = 0, logprob_count = 0;
  bool started = false, done = false;
};

}  // namespace

ApiServer::ApiServer(const Engine& engine, Scheduler& scheduler, ServerOptions options)
    : session_(engine), scheduler_(scheduler), options_(std::move(options)), started_(unix_now()) {
  for (size_t id = 0; id < session_.tokenizer.vocab_size(); ++id) {
    try {
      max_token_bytes_ = std::max(max_token_bytes_, session_.tokenizer.token_bytes(static_cast<int32_t>(id)).size());
    } catch (const Error&) {
      // an id the vocabulary leaves unused
    }
  }
  ConnectionLimits limits;
  limits.max_connections = options_.max_connections;
  // A request holds a worker while it waits for its answer: room for the whole batch, the queue,
  // and a few more to answer 429s and metrics under load.
  limits.workers = scheduler_.options().max_batch_size + scheduler_.options().max_queue + 8;
  limits.max_body_bytes = options_.max_body_bytes;
  http_ = std::make_unique<BoundedHttpServer>(limits);
  // httplib's default also sets SO_REUSEPORT, which lets a second server bind the same port and
  // silently share its traffic; a port in use must be an error instead.
  http_->set_socket_options([](socket_t sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  http_->set_payload_max_length(options_.max_body_bytes);
  http_->set_keep_alive_max_count(1000);

  http_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + options_.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, req.has_header("Authorization") ? "Incorrect API key provided."
                                                                  : "Missing API key: send 'Authorization: Bearer <key>'.",
                             "", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    switch (res.status) {
      case 404: send_error(res, ApiError(404, "no route " + req.method + " " + req.path, "", "not_found")); break;
      case 413:
        send_error(res, ApiError(413, "request body is larger than the server's limit (--max_body_mb)", "", "request_too_large"));
        break;
      default: send_error(res, ApiError(res.status, "HTTP error " + std::to_string(res.status)));
    }
  });
  http_->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string message = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      message += std::string(": ") + e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, message));
  });
  http_->set_logger([this](const httplib::Request& req, const httplib::Response& res) { record(req.path, res.status); });

  for (const auto& [path, endpoint] : {std::pair{"/v1/chat/completions", Endpoint::kChatCompletions},
                                       std::pair{"/v1/completions", Endpoint::kCompletions}}) {
    http_->Post(path, [this, endpoint](const httplib::Request& req, httplib::Response& res,
                                       const httplib::ContentReader& reader) {
      if (const auto body = read_body(req, res, reader, options_.max_body_bytes))
        handle_completion(endpoint, req, *body, res);
    });
  }
  http_->Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const json model = {{"id", options_.served_model_name},
                        {"object", "model"},
                        {"created", started_},
                        {"owned_by", "vlmforge"},
                        {"max_model_len", options_.max_model_len}};
    res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(), "application/json");
  });
  http_->Get("/health", [](const httplib::Request&, httplib::Response& res) { res.status = 200; });
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
}

ApiServer::~ApiServer() = default;

int ApiServer::bind() {
  if (options_.port == 0) {
    const int port = http_->bind_to_any_port(options_.host);
    if (port <= 0) throw Error("cannot listen on " + options_.host + ": " + errno_message(errno));
    http_->widen_backlog(kListenBacklog);
    return port;
  }
  if (!http_->bind_to_port(options_.host, options_.port))
    throw Error("cannot listen on " + options_.host + ":" + std::to_string(options_.port) + ": " + errno_message(errno) +
                " (is another server using the port?)");
  http_->widen_backlog(kListenBacklog);
  return options_.port;
}

void ApiServer::serve() { http_->listen_after_bind(); }

void ApiServer::stop() { http_->stop_listening(); }

void ApiServer::record(const std::string& path, int status) {
  // Unknown paths are folded together so clients cannot grow the metric set.
  static const std::set<std::string> known = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"};
  std::lock_guard lock(metrics_mutex_);
  ++requests_[{known.count(path) ? path : "other", status}];
}

namespace {

// OpenAI's answer to a prompt longer than the context; `what` names what does not fit.
ApiError context_too_long(const CompletionRequest& request, size_t max_len, const std::string& what) {
  return ApiError(400, "This model's maximum context length is " + std::to_string(max_len) + " tokens, and " + what +
                           " cannot fit in it. Shorten the prompt.",
                  request.endpoint == Endpoint::kCompletions ? "prompt" : "messages", "context_length_exceeded");
}

}  // namespace

size_t ApiServer::check_prompt_size(const CompletionRequest& request) const {
  const size_t max_len = options_.max_model_len;
  auto too_long = [&](const std::string& what) { return context_too_long(request, max_len, what); };
  if (request.prompt_ids.size() > max_len) throw too_long(std::to_string(request.prompt_ids.size()) + " prompt token ids");
  // Every message costs at least one token of the chat template.
  if (request.messages.size() > max_len) throw too_long(std::to_string(request.messages.size()) + " messages");
  size_t text_bytes = request.prompt.size();
  for (const auto& m : request.messages) {
    const auto& content = m["content"];
    if (content.is_string()) text_bytes += content.get_ref<const std::string&>().size();
    else
      for (const auto& part : content)
        if (part.contains("text")) text_bytes += part["text"].get_ref<const std::string&>().size();
  }
  // A token stands for at most max_token_bytes_ bytes; NFC normalization can shorten text by at
  // most 3x (three-jamo Hangul syllables): so more bytes than this never fit.
  const uint64_t byte_limit = uint64_t{max_len} * max_token_bytes_ * 3;
  if (text_bytes > byte_limit)
    throw too_long("a prompt of " + std::to_string(text_bytes) + " bytes (more than " + std::to_string(byte_limit) +
                   " bytes: tokens of at most " + std::to_string(max_token_bytes_) + " bytes each)");
  if (!session_.images) return 0;
  // Image tokens follow from the header's dimensions (as check-data counts them): an image that
  // cannot fit is refused before it is decoded.
  uint64_t image_tokens = 0;
  for (size_t i = 0; i < request.images.size(); ++i) {
    const ImageInput& image = request.images[i];
    const auto resized = vision::smart_resize(image.info.height, image.info.width, session_.images->budget());
    if (!resized)
      throw ApiError(400, "image " + std::to_string(i + 1) + " (" + image.source + ", " + std::to_string(image.info.width) +
                              "x" + std::to_string(image.info.height) + ") has an aspect ratio over 200, which the Qwen2.5-VL "
                              "image processor refuses", "messages");
    image_tokens += resized->tokens();
  }
  if (image_tokens >= max_len) throw too_long("the request's images, " + std::to_string(image_tokens) + " image tokens,");
  return static_cast<size_t>(image_tokens);
}

PromptInput ApiServer::prompt_input(const CompletionRequest& request, size_t image_tokens,
                                    const std::function<bool()>& client_gone) const {
  // Tokenizing stops once the prompt is known not to fit (the byte bound of check_prompt_size
  // leaves room for prompts of many times max_model_len tokens).
  const size_t max_len = options_.max_model_len;
  auto too_long = [&] {
    return context_too_long(request, max_len,
                            image_tokens == 0 ? "a prompt of more than " + std::to_string(max_len) + " tokens"
                                              : "the prompt's text with its images' " + std::to_string(image_tokens) +
                                                    " image tokens");
  };
  if (request.endpoint == Endpoint::kCompletions) {
    if (!request.prompt_is_ids) {
      std::vector<int32_t> ids = session_.tokenizer.encode(request.prompt, max_len);
      if (ids.size() > max_len) throw too_long();
      return text_prompt(std::move(ids));
    }
    for (int32_t id : request.prompt_ids)
      if (id < 0 || static_cast<size_t>(id) >= session_.model->vocab_size())
        throw ApiError(400, "token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                                std::to_string(session_.model->vocab_size() - 1) + ")", "prompt");
    return text_prompt(request.prompt_ids);
  }
  if (!request.images.empty()) {
    if (vision_hook_) {
      try {
        // The text is tokenized with one <|image_pad|> per image, each later expanded to its
        // image's tokens (check_prompt_size counted them from the headers, fewer than max_len):
        // a text longer than this cannot fit with its images, and is refused before any decoding.
        const size_t text_limit = max_len - image_tokens + request.images.size();
        return vision_hook_(request.messages, request.images, text_limit, client_gone);
      } catch (const ApiError&) {
        throw;
      } catch (const PromptTooLong&) {
        throw too_long();
      } catch (const TurnQueueFull& e) {
        throw ApiError(429, std::string("too many requests are waiting for the image encoder: ") + e.what() +
                                ", as --max_queue allows; retry shortly",
                       "", "image_queue_full");
      } catch (const Cancelled&) {
        throw;
      } catch (const Error& e) {
        // Undecodable pixels, an aspect ratio the processor refuses, a chat template error.
        throw ApiError(400, std::string("cannot use the request's images: ") + e.what(), "messages");
      }
    }
    throw ApiError(400,
                   session_.model->config().is_vision_language()
                       ? "model '" + options_.served_model_name +
                             "' is a vision-language checkpoint, but this server was started without its vision "
                             "encoder: image_url parts cannot be used"
                       : "model '" + options_.served_model_name +
                             "' is a text-only model (Qwen2ForCausalLM) and cannot take image_url parts",
                   "messages", "image_input_not_supported");
  }
  try {
    return text_prompt(session_.encode_chat(request.messages, max_len));
  } catch (const PromptTooLong&) {
    throw too_long();
  } catch (const Error& e) {
    throw ApiError(400, std::string("cannot apply the chat template: ") + e.what(), "messages");
  }
}

void ApiServer::handle_completion(Endpoint endpoint, const httplib::Request& req, const std::string& raw_body,
                                  httplib::Response& res) {
  std::shared_ptr<Job> job;
  CompletionRequest request;
  // The client's socket, found when first needed (a scan of /proc/self/fd): while the request's
  // images wait or encode, then while its answer is generated.
  std::optional<PeerWatch> peer;
  auto watch = [&]() -> PeerWatch& {
    if (!peer) peer.emplace(connection_fd(req), req.version == "HTTP/1.1");
    return *peer;
  };
  try {
    if (json_nesting_exceeds(raw_body, kMaxJsonDepth))
      throw ApiError(400, "request JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    json body;
    try {
      body = json::parse(raw_body);
    } catch (const json::exception& e) {
      throw ApiError(400, std::string("request body is not valid JSON: ") + e.what());
    }
    request = parse_request(endpoint, body, options_.media);
    if (request.model != options_.served_model_name)
      throw ApiError(404, "The model '" + request.model + "' does not exist; this server serves '" +
                              options_.served_model_name + "'",
                     "model", "model_not_found");
    const size_t image_tokens = check_prompt_size(request);
    PromptInput prompt = prompt_input(request, image_tokens, [&watch] { return watch().gone(); });
    GenerationParams params = generation_params(request, session_.defaults, prompt.tokens.size(), options_.max_model_len);
    try {
      job = scheduler_.submit(std::move(prompt), std::move(params));
    } catch (const QueueFull& e) {
      throw ApiError(429, e.what(), "", "queue_full");
    } catch (const ShuttingDown& e) {
      throw ApiError(503, e.what(), "", "shutting_down");
    }
  } catch (const ApiError& e) {
    if (e.status() == 429) res.set_header("Retry-After", "1");
    send_error(res, e);
    return;
  } catch (const Cancelled&) {
    res.status = 499;  // the client left while its images waited or encoded; nobody reads an answer
    return;
  }

  ResponseMeta meta{random_id(endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-"), unix_now(),
                    options_.served_model_name};

  if (!request.stream) {
    for (;;) {
      const Job::Update u = job->wait(SIZE_MAX, SIZE_MAX, kPollInterval);
      if (u.finished) break;
      if (watch().gone()) {
        scheduler_.cancel(job);
        res.status = 499;  // nginx's "client closed request", for the request metrics only
        return;
      }
    }
    const GenerationResult result = job->result();
    if (const std::string error = job->error(); !error.empty()) {
      send_error(res, ApiError(500, error));
      return;
    }
    res.set_content(final_response(request, meta, session_.tokenizer, result).dump(-1, ' ', false, json::error_handler_t::replace),
                    "application/json");
    return;
  }

  // The response head goes out with the first chunk, so no probe: the chunk writes find a gone client.
  auto state = std::make_shared<StreamState>(
      StreamState{job, std::move(request), std::move(meta), PeerWatch(watch().fd(), false)});
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, state](size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
        StreamState& st = *state;
        const auto& tok = session_.tokenizer;
        if (!st.started && st.request.endpoint == Endpoint::kChatCompletions) {
          // The role comes first, as OpenAI streams it, before any token is ready.
          st.started = true;
          return write(sse_event(stream_chunk(st.request, st.meta, tok, true, "", {}, 0, "")));
        }
        st.started = true;
        const Job::Update u = st.job->wait(st.text_bytes, st.logprob_count, kPollInterval);
        if (!u.text.empty() || !u.logprobs.empty()) {
          const bool ok = write(sse_event(stream_chunk(st.request, st.meta, tok, false, u.text, u.logprobs, st.text_bytes, "")));
          st.text_bytes += u.text.size();
          st.logprob_count += u.logprobs.size();
          if (!ok) return false;
        }
        if (u.finished) {
          // Text published after this update's snapshot is impossible: finished is set last.
          if (!u.error.empty()) {
            write(sse_event(error_body(ApiError(500, u.error))));
          } else {
            write(sse_event(stream_chunk(st.request, st.meta, tok, false, "", {}, st.text_bytes, u.finish_reason)));
            if (st.request.include_usage)
              write(sse_event(usage_chunk(st.request, st.meta, st.job->result().prompt_tokens, u.tokens)));
          }
          write(std::string(kSseDone));
          st.done = true;
          sink.done();
          return true;
        }
        return !st.peer.gone();
      },
      [this, state](bool) {
        // Any end other than a finished stream (client gone, write failed) frees the sequence.
        if (!state->done) scheduler_.cancel(state->job);
      });
}

std::string ApiServer::metrics_text() const {
  const SchedulerStats s = scheduler_.stats();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto value = [&](const std::string& series, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " %.17g\n", v);
    out += series + buf;
  };
  metric("vlmforge_requests_total", "counter", "HTTP requests answered, by path and status code.");
  {
    std::lock_guard lock(metrics_mutex_);
    for (const auto& [key, count] : requests_)
      value("vlmforge_requests_total{path=\"" + key.first + "\",code=\"" + std::to_string(key.second) + "\"}",
            static_cast<double>(count));
  }
  metric("vlmforge_sequences_total", "counter", "Generation requests by outcome.");
  value("vlmforge_sequences_total{outcome=\"finished\"}", static_cast<double>(s.finished));
  value("vlmforge_sequences_total{outcome=\"cancelled\"}", static_cast<double>(s.cancelled));
  value("vlmforge_sequences_total{outcome=\"failed\"}", static_cast<double>(s.failed));
  metric("vlmforge_prompt_tokens_total", "counter", "Prompt tokens prefilled.");
  value("vlmforge_prompt_tokens_total", static_cast<double>(s.prompt_tokens));
  metric("vlmforge_generation_tokens_total", "counter", "Tokens generated.");
  value("vlmforge_generation_tokens_total", static_cast<double>(s.generated_tokens));
  metric("vlmforge_decode_steps_total", "counter", "Batched decode forwards run.");
  value("vlmforge_decode_steps_total", static_cast<double>(s.decode_steps));
  metric("vlmforge_queue_depth", "gauge", "Requests waiting to join the running batch.");
  value("vlmforge_queue_depth", static_cast<double>(s.queued));
  metric("vlmforge_running_batch_size", "gauge", "Sequences in the running batch.");
  value("vlmforge_running_batch_size", static_cast<double>(s.running));
  metric("vlmforge_max_batch_size", "gauge", "The --max_batch_size limit.");
  value("vlmforge_max_batch_size", static_cast<double>(scheduler_.options().max_batch_size));
  const ConnectionStats c = http_->connection_stats();
  metric("vlmforge_open_connections", "gauge", "Client connections open now (at most --max_connections).");
  value("vlmforge_open_connections", static_cast<double>(c.open));
  metric("vlmforge_busy_workers", "gauge", "Requests being read, checked or answered now.");
  value("vlmforge_busy_workers", static_cast<double>(c.busy_workers));
  metric("vlmforge_connections_refused_total", "counter",
         "Connections the server closed before a handler saw their request, by reason.");
  for (const auto& [reason, count] :
       {std::pair{"header_too_large", c.header_too_large}, std::pair{"header_timeout", c.header_timeout},
        std::pair{"body_too_large", c.body_too_large}, std::pair{"bad_head", c.bad_head},
        std::pair{"over_capacity", c.over_capacity}, std::pair{"evicted_idle", c.evicted_idle}})
    value(std::string("vlmforge_connections_refused_total{reason=\"") + reason + "\"}", static_cast<double>(count));
  if (session_.images) {
    metric("vlmforge_image_encoder_waiting", "gauge", "Requests waiting for the image encoder (at most --max_queue).");
    value("vlmforge_image_encoder_waiting", static_cast<double>(session_.images->waiting()));
    metric("vlmforge_image_encoder_busy", "gauge", "1 while a request's image is decoded and encoded.");
    value("vlmforge_image_encoder_busy", session_.images->busy() ? 1.0 : 0.0);
    metric("vlmforge_image_encodes_cancelled_total", "counter", "Image encodes stopped because their client left.");
    value("vlmforge_image_encodes_cancelled_total", static_cast<double>(session_.images->timings().cancelled));
  }
  metric("vlmforge_memory_bytes", "gauge", "Memory by device: resident set of the process and the KV caches in it.");
  value("vlmforge_memory_bytes{device=\"cpu\",kind=\"resident\"}", static_cast<double>(current_rss_bytes()));
  value("vlmforge_memory_bytes{device=\"cpu\",kind=\"kv_cache\"}", static_cast<double>(s.kv_cache_bytes));
  metric("vlmforge_kv_blocks", "gauge",
         "Paged KV cache blocks: in the pool, referenced by running sequences, and cached (unreferenced, kept for "
         "prefix reuse until needed).");
  value("vlmforge_kv_blocks{kind=\"total\"}", static_cast<double>(s.kv_blocks.total));
  value("vlmforge_kv_blocks{kind=\"used\"}", static_cast<double>(s.kv_blocks.used));
  value("vlmforge_kv_blocks{kind=\"cached\"}", static_cast<double>(s.kv_blocks.cached));
  metric("vlmforge_prefix_cache_queries_total", "counter", "Prompt blocks looked up in the prefix cache.");
  value("vlmforge_prefix_cache_queries_total", static_cast<double>(s.kv_blocks.prefix_queries));
  metric("vlmforge_prefix_cache_hits_total", "counter", "Prompt blocks found in the prefix cache.");
  value("vlmforge_prefix_cache_hits_total", static_cast<double>(s.kv_blocks.prefix_hits));
  metric("vlmforge_prefix_cache_tokens_total", "counter", "Prompt tokens taken from the prefix cache, not computed.");
  value("vlmforge_prefix_cache_tokens_total", static_cast<double>(s.cached_prompt_tokens));
  if (!options_.devices.empty()) {
    metric("vlmforge_device_memory_bytes", "gauge",
           "Per --device_map device: accounted memory now, its peak, and the device's free and total (a capped "
           "device: its --max_memory).");
    for (const Device* d : options_.devices) {
      const MemoryInfo m = d->memory();
      const std::string device = "vlmforge_device_memory_bytes{device=\"" + d->name() + "\",kind=\"";
      value(device + "allocated\"}", static_cast<double>(d->allocated()));
      value(device + "peak\"}", static_cast<double>(d->peak_allocated()));
      value(device + "free\"}", static_cast<double>(m.free));
      value(device + "total\"}", static_cast<double>(m.total));
    }
  }
  return out;
}

}  // namespace vlmforge::server
