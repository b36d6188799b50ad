// `vlmforge deploy` under hostile clients, against a running server on 127.0.0.1 (never another
// address): header floods, oversized chunked bodies, slow and idle connections, half-closed
// clients, FIFOs in the media directory, oversized prompts. Every attack is bounded in bytes and
// time, and each test checks both that the attack is refused and that the server still serves.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "vision/encoded_images.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

fs::path tiny_model() { return shared_dir() / "golden" / "qwen2-tiny-f32"; }

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// A `vlmforge deploy --port 0` child; the destructor stops it (SIGTERM, then SIGKILL).
class DeployProcess {
 public:
  explicit DeployProcess(const std::vector<std::string>& extra, const fs::path& model = tiny_model()) {
    std::vector<std::string> args{vlmforge_binary().string(), "deploy", "--model", model.string(),
                                  "--served_model_name", "m", "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::dup2(out[1], 1);
      const int err = ::open((log_.path() / "stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(err, 2);
      ::close(out[0]);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    // The first stdout line names the port ("serving ... on http://127.0.0.1:PORT").
    std::string line;
    const auto start = Clock::now();
    while (line.find('\n') == std::string::npos && seconds_since(start) < 60) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) continue;
      char c[256];
      const ssize_t n = ::read(out[0], c, sizeof c);
      if (n <= 0) break;
      line.append(c, static_cast<size_t>(n));
    }
    ::close(out[0]);
    std::smatch m;
    if (std::regex_search(line, m, std::regex(R"(http://127\.0\.0\.1:(\d+))"))) port_ = std::stoi(m[1]);
  }
  ~DeployProcess() { stop(20s); }
  DeployProcess(const DeployProcess&) = delete;
  DeployProcess& operator=(const DeployProcess&) = delete;

  int port() const { return port_; }
  // Resident memory of the server now.
  uint64_t rss_bytes() const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
    return 0;
  }
  // SIGTERM, then the seconds until the server exited (SIGKILL once `limit` has passed).
  double stop(std::chrono::seconds limit) {
    if (pid_ <= 0) return 0;
    ::kill(pid_, SIGTERM);
    const auto start = Clock::now();
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (seconds_since(start) > static_cast<double>(limit.count())) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    pid_ = -1;
    return seconds_since(start);
  }
  std::string log() const {
    std::ifstream in(log_.path() / "stderr");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  TempDir log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

struct Reply {
  int status = 0;  // 0: no complete response in time, or the connection failed
  std::string head, body;
};

// One raw TCP connection to the server on loopback.
class Connection {
 public:
  explicit Connection(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Connection() { ::close(fd_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool connected() const { return connected_; }
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // The next final response (1xx interim responses are skipped), read within `timeout`.
  Reply read_reply(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      Reply r;
      size_t head_end;
      while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos)
        if (!fill(deadline)) return {};
      r.head = buffer_.substr(0, head_end + 4);
      buffer_.erase(0, head_end + 4);
      r.status = std::stoi(r.head.substr(9, 3));
      if (r.status < 200) continue;
      std::smatch m;
      if (std::regex_search(r.head, m, std::regex("Content-Length: (\\d+)", std::regex::icase))) {
        const size_t length = std::stoul(m[1]);
        while (buffer_.size() < length)
          if (!fill(deadline)) return {};
        r.body = buffer_.substr(0, length);
        buffer_.erase(0, length);
      } else if (r.head.find("chunked") != std::string::npos) {
        while (buffer_.find("\r\n0\r\n\r\n") == std::string::npos && buffer_.rfind("0\r\n\r\n", 0) != 0)
          if (!fill(deadline)) return {};
        r.body = std::move(buffer_);
        buffer_.clear();
      }
      return r;
    }
  }
  // Whether the server closes (or resets) the connection within `timeout`.
  bool closed_within(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      pollfd p{fd_, POLLIN, 0};
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left) + 1) <= 0) return false;
      char chunk[4096];
      if (::recv(fd_, chunk, sizeof chunk, 0) <= 0) return true;
    }
  }

 private:
  // Reads more; false on close, error or the deadline.
  bool fill(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd_, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  int fd_;
  bool connected_ = false;
  std::string buffer_;
};

std::string request(const std::string& method, const std::string& path, const std::string& body = {},
                    const std::string& headers = {}) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers;
  if (!body.empty() || method == "POST") r += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

Reply roundtrip(int port, const std::string& bytes, std::chrono::milliseconds timeout = 30s) {
  Connection c(port);
  if (!c.connected() || !c.send(bytes)) return {};
  return c.read_reply(timeout);
}

std::string completion(const std::string& prompt, int max_tokens = 2, bool stream = false) {
  return json{{"model", "m"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"stream", stream}}.dump();
}

double metric(int port, const std::string& series) {
  const Reply r = roundtrip(port, request("GET", "/metrics"));
  const size_t at = r.body.find("\n" + series + " ");  // the sample, not its # HELP line
  return at == std::string::npos ? -1 : std::stod(r.body.substr(at + series.size() + 2));
}

// Starts a server, or skips (fails under CI) without the shared tiny model.
#define START_DEPLOY(name, ...)                                                     \
  if (!fs::exists(tiny_model() / "config.json")) {                                  \
    if (std::getenv("CI")) FAIL() << "shared golden data missing: " << tiny_model(); \
    GTEST_SKIP() << "shared golden data missing";                                    \
  }                                                                                 \
  DeployProcess name(__VA_ARGS__);                                                  \
  ASSERT_GT(name.port(), 0) << name.log()

TEST(DeployLimits, HeaderFloodIsRefusedBeforeTheApiKeyCheck) {
  START_DEPLOY(server, {"--api_key", "secret"});
  const uint64_t rss_before = server.rss_bytes();
  // 16 MiB of header lines; the sender stops once the server hangs up.
  Connection flood(server.port());
  ASSERT_TRUE(flood.connected());
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    flood.send("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    const std::string lines = [] {
      std::string s;
      for (int i = 0; i < 4096; ++i) s += "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
      return s;
    }();
    for (int i = 0; i < 64 && !stop && flood.send(lines); ++i) {
    }
  });
  const Reply r = flood.read_reply(10s);
  stop = true;
  sender.join();
  EXPECT_EQ(r.status, 431) << r.head << r.body;
  EXPECT_LT(server.rss_bytes(), rss_before + (32u << 20));
  // Many short headers within the byte limit: the line limit.
  std::string many = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (int i = 0; i < 200; ++i) many += "X-" + std::to_string(i) + ": 1\r\n";
  EXPECT_EQ(roundtrip(server.port(), many + "\r\n", 10s).status, 431);
  // The server still answers, and authentication still applies.
  EXPECT_EQ(roundtrip(server.port(), request("GET", "/v1/models")).status, 401);
  EXPECT_EQ(roundtrip(server.port(), request("GET", "/v1/models", "", "Authorization: Bearer secret\r\n")).status, 200);
}

TEST(DeployLimits, ChunkedBodyOverMaxBodyIs413) {
  START_DEPLOY(server, {"--max_body_mb", "1"});
  const uint64_t rss_before = server.rss_bytes();
  Connection c(server.port());
  ASSERT_TRUE(c.connected());
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    c.send("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           "Transfer-Encoding: chunked\r\n\r\n");
    const std::string chunk = "10000\r\n" + std::string(0x10000, 'a') + "\r\n";
    for (int i = 0; i < 256 && !stop && c.send(chunk); ++i) {  // 16 MiB
    }
  });
  const Reply r = c.read_reply(20s);
  stop = true;
  sender.join();
  EXPECT_EQ(r.status, 413) << r.head << r.body;
  EXPECT_NE(r.body.find("--max_body_mb"), std::string::npos) << r.body;
  EXPECT_LT(server.rss_bytes(), rss_before + (64u << 20));
  // A declared length over the limit is refused before any of the body is read.
  EXPECT_EQ(roundtrip(server.port(), "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 5s).status,
            413);
  // A chunked body within the limit is served.
  const std::string body = completion("hello");
  char size[16];
  std::snprintf(size, sizeof size, "%zx", body.size());
  const Reply ok = roundtrip(server.port(), "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                           "Transfer-Encoding: chunked\r\n\r\n" +
                                               std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n");
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST(DeployLimits, SlowAndIdleClientsDoNotLockOthersOut) {
  // 10 workers (max_batch_size + max_queue + 8); before the connection layer, 10 slow clients
  // were enough to lock every other client out.
  START_DEPLOY(server, {"--max_batch_size", "1", "--max_queue", "1"});
  std::vector<std::unique_ptr<Connection>> slow, idle;
  for (int i = 0; i < 60; ++i) {
    slow.push_back(std::make_unique<Connection>(server.port()));
    ASSERT_TRUE(slow.back()->send("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
  }
  for (int i = 0; i < 40; ++i) {
    idle.push_back(std::make_unique<Connection>(server.port()));
    ASSERT_TRUE(idle.back()->send(request("GET", "/health")));
    ASSERT_EQ(idle.back()->read_reply(10s).status, 200);  // and now they keep the connection open
  }
  // The slow clients send a header line every 300 ms, well within any per-read timeout.
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    for (int round = 0; !stop; ++round) {
      for (auto& c : slow) c->send("X-Slow-" + std::to_string(round) + ": 1\r\n");
      std::this_thread::sleep_for(300ms);
    }
  });
  auto start = Clock::now();
  EXPECT_EQ(roundtrip(server.port(), request("GET", "/health"), 5s).status, 200);
  const double health_seconds = seconds_since(start);
  start = Clock::now();
  const Reply r = roundtrip(server.port(), request("POST", "/v1/completions", completion("hello")), 30s);
  EXPECT_EQ(r.status, 200) << r.body;
  std::printf("with 60 slow + 40 idle connections: /health in %.3f s, a completion in %.3f s\n", health_seconds,
              seconds_since(start));
  EXPECT_LT(health_seconds, 2.0);
  // The header deadline (10 s from the first byte) closes the slow clients with a 408.
  start = Clock::now();
  const Reply timed_out = slow.front()->read_reply(15s);
  EXPECT_EQ(timed_out.status, 408) << timed_out.head;
  EXPECT_EQ(slow.back()->read_reply(5s).status, 408);  // it started last
  stop = true;
  trickle.join();
  EXPECT_GE(metric(server.port(), "vlmforge_connections_refused_total{reason=\"header_timeout\"}"), 60);
}

TEST(DeployLimits, ConnectionCapClosesAnIdleConnection) {
  START_DEPLOY(server, {"--max_connections", "8"});
  std::vector<std::unique_ptr<Connection>> idle;
  for (int i = 0; i < 8; ++i) {
    idle.push_back(std::make_unique<Connection>(server.port()));
    ASSERT_TRUE(idle.back()->send(request("GET", "/health")));
    ASSERT_EQ(idle.back()->read_reply(10s).status, 200);
  }
  // A ninth client is served: the longest-idle connection makes room.
  EXPECT_EQ(roundtrip(server.port(), request("GET", "/health"), 5s).status, 200);
  size_t closed = 0;
  for (auto& c : idle) closed += c->closed_within(200ms);
  EXPECT_EQ(closed, 1u);
  EXPECT_LE(metric(server.port(), "vlmforge_open_connections"), 8);
  EXPECT_GE(metric(server.port(), "vlmforge_connections_refused_total{reason=\"evicted_idle\"}"), 1);
}

TEST(DeployLimits, SigtermDoesNotWaitForSlowClients) {
  START_DEPLOY(server, {});
  std::vector<std::unique_ptr<Connection>> slow;
  for (int i = 0; i < 20; ++i) {
    slow.push_back(std::make_unique<Connection>(server.port()));
    ASSERT_TRUE(slow.back()->send("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n"));
  }
  // One more sends its head and trickles its body.
  Connection body(server.port());
  ASSERT_TRUE(body.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"));
  std::this_thread::sleep_for(300ms);
  const double seconds = server.stop(20s);
  std::printf("SIGTERM with 21 slow clients: exited in %.3f s\n", seconds);
  EXPECT_LT(seconds, 3.0);
}

TEST(DeployLimits, HalfClosedClientStillGetsItsAnswer) {
  START_DEPLOY(server, {});
  for (const bool stream : {false, true}) {
    Connection c(server.port());
    ASSERT_TRUE(c.send(request("POST", "/v1/completions", completion("hello", 8, stream))));
    c.shutdown_write();  // as `nc -N` does after sending
    const Reply r = c.read_reply(30s);
    EXPECT_EQ(r.status, 200) << "stream " << stream << ": " << r.head;
    EXPECT_NE(r.body.find(stream ? "[DONE]" : "\"choices\""), std::string::npos) << r.body;
  }
}

TEST(DeployLimits, ClientThatClosesIsCancelled) {
  START_DEPLOY(server, {});
  {
    Connection c(server.port());
    ASSERT_TRUE(c.send(request("POST", "/v1/completions", completion("hello", 20000))));
    std::this_thread::sleep_for(300ms);
  }  // closed long before 20000 tokens
  double cancelled = 0;
  for (int i = 0; i < 100 && cancelled < 1; ++i) {
    std::this_thread::sleep_for(100ms);
    cancelled = metric(server.port(), "vlmforge_sequences_total{outcome=\"cancelled\"}");
  }
  EXPECT_EQ(cancelled, 1);
}

TEST(DeployLimits, FifoInTheMediaDirectoryIsRefusedAtOnce) {
  TempDir media;
  ASSERT_EQ(::mkfifo((media / "pipe.png").c_str(), 0600), 0);
  START_DEPLOY(server, {"--allowed_local_media_path", media.path().string()});
  const json body = {{"model", "m"},
                     {"messages", {{{"role", "user"},
                                    {"content", {{{"type", "image_url"},
                                                  {"image_url", {{"url", "file://" + (media / "pipe.png").string()}}}}}}}}}};
  const Reply r = roundtrip(server.port(), request("POST", "/v1/chat/completions", body.dump()), 5s);
  if (r.status == 0) {
    // Release the thread a blocking open() pinned, so the server can stop.
    const int w = ::open((media / "pipe.png").c_str(), O_WRONLY | O_NONBLOCK);
    if (w >= 0) ::close(w);
  }
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("not a regular file"), std::string::npos) << r.body;
}

TEST(DeployLimits, PromptsOverTheContextStopTokenizingAndAre400) {
  START_DEPLOY(server, {"--max_model_len", "64"});
  // Within the byte bound (64 tokens of the longest vocabulary entry each), far over 64 tokens:
  // tokenizing stops once the count passes 64.
  std::string words;
  while (words.size() < 20000) words += " word";
  for (const auto& [path, body] :
       {std::pair{"/v1/completions", completion(words)},
        std::pair{"/v1/chat/completions",
                  json{{"model", "m"}, {"messages", {{{"role", "user"}, {"content", words}}}}}.dump()}}) {
    const Reply r = roundtrip(server.port(), request("POST", path, body));
    EXPECT_EQ(r.status, 400) << path << ": " << r.body;
    const json error = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(error.contains("error")) << r.body;
    EXPECT_EQ(error["error"]["code"], "context_length_exceeded") << r.body;
    EXPECT_EQ(error["error"]["type"], "invalid_request_error") << r.body;
    EXPECT_NE(r.body.find("a prompt of more than 64 tokens"), std::string::npos) << r.body;
  }
  // A prompt that fits is still answered.
  EXPECT_EQ(roundtrip(server.port(), request("POST", "/v1/completions", completion("hello"))).status, 200);
}

// A Qwen2.5-VL checkpoint with random weights and the real tokenizer, and images in `media`.
class DeployImages : public ::testing::Test {
 protected:
  void SetUp() override {
    VLMFORGE_REQUIRE_SHARED(shared_dir() / "tokenizer" / "tokenizer.json");
    const auto r = run_vlmforge({"generate", "checkpoint", "--preset", "tiny-vl", "--output_dir", model().string(),
                                 "--dtype", "float32", "--vocab_size", "151936", "--tokenizer",
                                 (shared_dir() / "tokenizer" / "tokenizer.json").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  fs::path model() const { return dir_ / "vl"; }
  fs::path media() const { return dir_.path(); }
  // Writes a PNG (its first `keep` bytes) into the media directory; returns a chat request for it
  // with `text` after the image.
  std::string image_request(const std::string& name, int width, int height, const std::string& text = "",
                            size_t keep = SIZE_MAX) const {
    std::ofstream(dir_ / name, std::ios::binary) << encoded_png(width, height).substr(0, keep);
    json content = {{{"type", "image_url"}, {"image_url", {{"url", "file://" + (dir_ / name).string()}}}}};
    if (!text.empty()) content.push_back({{"type", "text"}, {"text", text}});
    return json{{"model", "m"}, {"max_tokens", 1}, {"messages", {{{"role", "user"}, {"content", content}}}}}.dump();
  }

 private:
  TempDir dir_;
};

TEST_F(DeployImages, ALeavingClientStopsItsEncodeAndTheLineIsBoundedAndFair) {
  // --max_queue 1: one request may wait for the encoder while it is busy.
  DeployProcess server({"--max_model_len", "8192", "--max_batch_size", "2", "--max_queue", "1",
                        "--allowed_local_media_path", media().string()},
                       model());
  ASSERT_GT(server.port(), 0) << server.log();
  const int port = server.port();
  // 1120 x 1120: 1600 image tokens of 4 patches each, 6400 patches, whose two full-attention
  // blocks make a slow encode. A whole one first, to know how slow.
  const std::string big = image_request("big.png", 1120, 1120);
  auto start = Clock::now();
  const Reply whole = roundtrip(port, request("POST", "/v1/chat/completions", big), 300s);
  const double whole_seconds = seconds_since(start);
  ASSERT_EQ(whole.status, 200) << whole.body;

  // Another big image (no cache hit) whose client leaves once its encode has started, while a
  // small image waits behind it.
  const std::string other_big = image_request("big2.png", 1092, 1120);
  Connection waiting(port);
  double served_seconds = 0;
  {
    Connection leaving(port);
    ASSERT_TRUE(leaving.send(request("POST", "/v1/chat/completions", other_big)));
    start = Clock::now();
    while (metric(port, "vlmforge_image_encoder_busy") != 1) {
      ASSERT_LT(seconds_since(start), 60) << "the encode never started";
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_TRUE(waiting.send(request("POST", "/v1/chat/completions", image_request("small.png", 56, 56))));
    while (metric(port, "vlmforge_image_encoder_waiting") != 1) {
      ASSERT_LT(seconds_since(start), 60) << "the small image never queued";
      std::this_thread::sleep_for(5ms);
    }
    // The line (of one) is full: a third image request is refused at once, not made to wait.
    const Reply refused =
        roundtrip(port, request("POST", "/v1/chat/completions", image_request("small2.png", 84, 56)), 10s);
    EXPECT_EQ(refused.status, 429) << refused.body;
    EXPECT_NE(refused.body.find("image_queue_full"), std::string::npos) << refused.body;
    EXPECT_NE(refused.body.find("waiting for the image encoder"), std::string::npos) << refused.body;
    EXPECT_NE(refused.head.find("Retry-After"), std::string::npos) << refused.head;
    start = Clock::now();
  }  // the big image's client leaves
  const Reply served = waiting.read_reply(std::chrono::milliseconds(static_cast<int>(whole_seconds * 1000) + 60000));
  served_seconds = seconds_since(start);
  EXPECT_EQ(served.status, 200) << served.body;
  EXPECT_EQ(metric(port, "vlmforge_image_encodes_cancelled_total"), 1);
  EXPECT_EQ(metric(port, "vlmforge_image_encoder_busy"), 0);
  std::printf("a whole 6400-patch encode took %.2f s; once its client left, the waiting image was answered in %.2f s\n",
              whole_seconds, served_seconds);
  // The big encode stopped between blocks, long before it would have ended.
  EXPECT_LT(served_seconds, whole_seconds / 2);
}

TEST_F(DeployImages, TextThatCannotFitWithItsImagesIsRefusedBeforeDecoding) {
  DeployProcess server({"--max_model_len", "1700", "--allowed_local_media_path", media().string()}, model());
  ASSERT_GT(server.port(), 0) << server.log();
  // 1600 image tokens by its header, and pixel data cut short: decoding it would fail.
  std::string words;
  while (words.size() < 1000) words += " word";  // some 200 tokens: 1600 + 200 > 1700
  Reply r = roundtrip(server.port(), request("POST", "/v1/chat/completions", image_request("cut.png", 1120, 1120, words, 200)));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("context_length_exceeded"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("1600 image tokens"), std::string::npos) << r.body;
  // With a short text it fits, so it is decoded, and only then found broken.
  r = roundtrip(server.port(), request("POST", "/v1/chat/completions", image_request("cut.png", 1120, 1120, "hi", 200)));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("cannot use the request's images"), std::string::npos) << r.body;
}

TEST(DeployLimits, OversizedPromptsAreRefusedBeforeTokenizing) {
  START_DEPLOY(server, {"--max_model_len", "64", "--max_body_mb", "32"});
  // One 16 MiB word: tokenizing it took seconds and gigabytes.
  auto start = Clock::now();
  Reply r = roundtrip(server.port(), request("POST", "/v1/completions", completion(std::string(16u << 20, 'a'))));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("context_length_exceeded"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("bytes"), std::string::npos) << r.body;
  const double word_seconds = seconds_since(start);
  // 100000 empty messages: each costs tokens of the chat template.
  json messages = json::array();
  for (int i = 0; i < 100000; ++i) messages.push_back({{"role", "user"}, {"content", ""}});
  start = Clock::now();
  r = roundtrip(server.port(), request("POST", "/v1/chat/completions", json{{"model", "m"}, {"messages", messages}}.dump()));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("messages"), std::string::npos) << r.body;
  std::printf("16 MiB one-word prompt refused in %.3f s, 100000 empty messages in %.3f s\n", word_seconds,
              seconds_since(start));
  EXPECT_LT(word_seconds, 5.0);
}

}  // namespace
}  // namespace vlmforge::test
