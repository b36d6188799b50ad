#include "server/http_connections.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "server/protocol.h"
#include "util/error.h"

namespace vlmforge::server {

using Clock = std::chrono::steady_clock;

struct ConnectionLayer::Connection {
  Connection(int socket, std::atomic<size_t>& open_count) : fd(socket), open(open_count) { ++open; }
  ~Connection() {
    ::close(fd);
    --open;
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Ready for the next request: what is buffered already belongs to it (pipelining).
  void next_request(Clock::time_point now, const ConnectionLimits& limits) {
    head_bytes = scanned = line_start = lines = 0;
    content_length.reset();
    chunked = false;
    receiving = !buffer.empty();
    since = now;
    deadline = now + (receiving ? limits.header_timeout : limits.idle_timeout);
  }

  const int fd;
  std::atomic<size_t>& open;
  std::string remote_ip, local_ip;
  int remote_port = 0, local_port = 0;
  size_t requests = 0;

  std::string buffer;  // received, not yet given to httplib
  // Scanning the head: how far, where the current line starts, lines so far; the head's length
  // once its blank line has arrived.
  size_t scanned = 0, line_start = 0, lines = 0, head_bytes = 0;
  std::optional<uint64_t> content_length;
  bool chunked = false;

  bool receiving = false;  // some of a request has arrived (its head deadline runs)
  bool closing = false;    // refused: input is discarded until the deadline, so the client reads the answer
  uint64_t discarded = 0;
  Clock::time_point since, deadline;
};

namespace {

constexpr auto kLinger = std::chrono::seconds(2);   // a refused connection's time to read its answer
constexpr uint64_t kMaxDiscard = 1u << 20;          // bytes read and dropped while it does
constexpr size_t kReadChunk = 16u << 10;
constexpr std::chrono::milliseconds kDrainCheck{100};  // how often a worker waiting for a body checks for shutdown

std::string address_text(const sockaddr_storage& a, int& port) {
  char ip[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
    inet_ntop(AF_INET, &v4.sin_addr, ip, sizeof ip);
    port = ntohs(v4.sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
    inet_ntop(AF_INET6, &v6.sin6_addr, ip, sizeof ip);
    port = ntohs(v6.sin6_port);
  }
  return ip;
}

// Waits up to `timeout` for `events` on the socket; false on timeout or a socket error.
bool wait_for(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  int r;
  do r = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(timeout.count(), 0)));
  while (r < 0 && errno == EINTR);
  if (r <= 0) return false;
  if (events == POLLOUT) return (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP));
  return true;  // readable, or the peer closed / failed: the read reports which
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    default: return "Service Unavailable";
  }
}

std::string error_response(int status, const std::string& message, const std::string& code) {
  const std::string body = error_body(ApiError(status, message, "", code)).dump(-1, ' ', false,
                                                                                nlohmann::json::error_handler_t::replace);
  return "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

void send_best_effort(int fd, const std::string& bytes) {
  // Small enough for an empty socket buffer; a client that leaves it full loses the answer.
  (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

// httplib reads a request through this: first the head the poll thread buffered, then the body
// from the socket, within the body deadline and never once the server is draining.
class RequestStream final : public httplib::Stream {
 public:
  RequestStream(ConnectionLayer::Connection& c, const ConnectionLimits& limits, const std::atomic<bool>& draining)
      : c_(c), limits_(limits), draining_(draining), body_deadline_(Clock::now() + limits.body_timeout) {}

  bool is_readable() const override { return pos_ < c_.buffer.size() || wait_for(c_.fd, POLLIN, limits_.io_timeout); }
  bool is_writable() const override { return wait_for(c_.fd, POLLOUT, limits_.io_timeout); }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ == c_.buffer.size() && !fill()) return -1;
    const size_t n = std::min(size, c_.buffer.size() - pos_);
    std::memcpy(ptr, c_.buffer.data() + pos_, n);
    pos_ += n;
    delivered_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::send(c_.fd, ptr + done, size - done, MSG_NOSIGNAL);
      if (n > 0) {
        done += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_for(c_.fd, POLLOUT, limits_.io_timeout)) {
        continue;
      } else {
        failed_ = true;
        return -1;
      }
    }
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.remote_ip;
    port = c_.remote_port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.local_ip;
    port = c_.local_port;
  }
  socket_t socket() const override { return c_.fd; }

  bool failed() const { return failed_; }
  // Body bytes httplib has read.
  size_t body_bytes() const { return delivered_ > c_.head_bytes ? delivered_ - c_.head_bytes : 0; }
  // Keeps only what httplib did not read (the next pipelined request).
  void finish() { c_.buffer.erase(0, pos_); }

 private:
  bool fill() {
    c_.buffer.clear();
    pos_ = 0;
    const auto stalled = Clock::now() + limits_.io_timeout;
    // Short waits, so that shutting down never waits on a client's input.
    while (!draining_.load()) {
      const auto now = Clock::now();
      const auto until = std::min(body_deadline_, stalled);
      if (now >= until) break;
      if (!wait_for(c_.fd, POLLIN, std::min<std::chrono::milliseconds>(
                                       kDrainCheck, std::chrono::duration_cast<std::chrono::milliseconds>(until - now) + std::chrono::milliseconds(1))))
        continue;
      char chunk[kReadChunk];
      const ssize_t n = ::recv(c_.fd, chunk, sizeof chunk, 0);
      if (n > 0) {
        c_.buffer.append(chunk, static_cast<size_t>(n));
        return true;
      }
      if (n == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) break;
    }
    failed_ = true;
    return false;
  }

  ConnectionLayer::Connection& c_;
  const ConnectionLimits& limits_;
  const std::atomic<bool>& draining_;
  const Clock::time_point body_deadline_;
  size_t pos_ = 0, delivered_ = 0;
  bool failed_ = false;
};

}  // namespace

ConnectionLayer::ConnectionLayer(ConnectionLimits limits, RequestProcessor process)
    : limits_(limits), process_(std::move(process)) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw Error("cannot create the server's wake-up pipe: " + errno_message(errno));
  wake_read_ = fds[0];
  wake_write_ = fds[1];
  poller_ = std::thread([this] { poll_loop(); });
  for (size_t i = 0; i < limits_.workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ConnectionLayer::~ConnectionLayer() {
  shutdown();
  ::close(wake_read_);
  ::close(wake_write_);
}

void ConnectionLayer::wake() {
  const char byte = 1;
  (void)::write(wake_write_, &byte, 1);  // a full pipe already wakes the poll thread
}

void ConnectionLayer::adopt(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  auto c = std::make_unique<Connection>(fd, open_);
  sockaddr_storage peer{}, local{};
  socklen_t peer_len = sizeof peer, local_len = sizeof local;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0) c->remote_ip = address_text(peer, c->remote_port);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) == 0) c->local_ip = address_text(local, c->local_port);
  c->next_request(Clock::now(), limits_);
  std::lock_guard lock(mutex_);
  if (stopping_) return;
  inbox_.push_back(std::move(c));
  wake();
}

void ConnectionLayer::shutdown() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  draining_.store(true);
  wake();
  ready_changed_.notify_all();
  if (poller_.joinable()) poller_.join();
  for (auto& w : workers_)
    if (w.joinable()) w.join();
  std::lock_guard lock(mutex_);
  inbox_.clear();
  ready_.clear();
}

ConnectionStats ConnectionLayer::stats() const {
  std::lock_guard lock(mutex_);
  ConnectionStats s = stats_;
  s.open = open_.load();
  return s;
}

void ConnectionLayer::refuse(Connection& c, int status, const std::string& message, uint64_t ConnectionStats::*counter) {
  send_best_effort(c.fd, error_response(status, message, status == 503 ? "too_many_connections" : ""));
  ::shutdown(c.fd, SHUT_WR);
  c.closing = true;
  c.deadline = Clock::now() + kLinger;
  std::lock_guard lock(mutex_);
  ++(stats_.*counter);
}

bool ConnectionLayer::accept_head(Connection& c) {
  const std::string_view head(c.buffer.data(), c.head_bytes);
  size_t pos = head.find("\r\n") + 2;  // past the request line
  bool transfer_encoding = false;
  while (pos + 2 < head.size()) {
    const size_t end = head.find("\r\n", pos);
    const std::string_view line = head.substr(pos, end - pos);
    pos = end + 2;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;  // httplib skips it too
    const std::string_view name = line.substr(0, colon), value = trim(line.substr(colon + 1));
    if (iequals(name, "Content-Length")) {
      uint64_t n = 0;
      const bool digits = !value.empty() && value.size() <= 18 &&
                          std::all_of(value.begin(), value.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
      if (digits)
        for (char ch : value) n = n * 10 + static_cast<uint64_t>(ch - '0');
      if (!digits || (c.content_length && *c.content_length != n)) {
        refuse(c, 400, "invalid Content-Length header", &ConnectionStats::bad_head);
        return false;
      }
      c.content_length = n;
    } else if (iequals(name, "Transfer-Encoding")) {
      transfer_encoding = true;
      c.chunked = iequals(value, "chunked");
    }
  }
  if (transfer_encoding && (!c.chunked || c.content_length)) {
    // Either a coding httplib cannot decode, or both framings at once (the request-smuggling shape).
    refuse(c, 400, "only 'Transfer-Encoding: chunked' is supported, and not together with Content-Length",
           &ConnectionStats::bad_head);
    return false;
  }
  const std::string_view method = head.substr(0, head.find(' '));
  if (!c.content_length && !c.chunked && (method == "POST" || method == "PUT" || method == "PATCH")) {
    // httplib would read such a body until the client closes.
    refuse(c, 411, method == "POST" ? "a POST needs a Content-Length header or Transfer-Encoding: chunked"
                                    : "the request needs a Content-Length header or Transfer-Encoding: chunked",
           &ConnectionStats::bad_head);
    return false;
  }
  if (c.content_length && *c.content_length > limits_.max_body_bytes) {
    refuse(c, 413, "request body is larger than the server's limit (--max_body_mb)", &ConnectionStats::body_too_large);
    return false;
  }
  return true;
}

bool ConnectionLayer::scan_head(Connection& c) {
  for (size_t i = std::max<size_t>(c.scanned, 1); i < c.buffer.size(); ++i) {
    if (c.buffer[i] != '\n' || c.buffer[i - 1] != '\r') continue;
    if (i - 1 == c.line_start && c.lines > 0) {
      c.head_bytes = i + 1;
      break;
    }
    c.line_start = i + 1;
    if (++c.lines > limits_.max_header_lines) {
      refuse(c, 431, "request has more than " + std::to_string(limits_.max_header_lines) + " header lines",
             &ConnectionStats::header_too_large);
      return false;
    }
  }
  c.scanned = c.head_bytes ? c.head_bytes : c.buffer.size();
  if ((c.head_bytes ? c.head_bytes : c.buffer.size()) > limits_.max_header_bytes) {
    refuse(c, 431, "request head (request line and headers) is over " + std::to_string(limits_.max_header_bytes) + " bytes",
           &ConnectionStats::header_too_large);
    return false;
  }
  return c.head_bytes > 0 && accept_head(c);
}

bool ConnectionLayer::receive(Connection& c) {
  for (;;) {
    char chunk[kReadChunk];
    const ssize_t n = ::recv(c.fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n <= 0) return false;  // closed or failed: nothing left to answer
    if (c.closing) {
      c.discarded += static_cast<uint64_t>(n);
      if (c.discarded > kMaxDiscard) return false;
      continue;
    }
    if (!c.receiving) {
      c.receiving = true;
      c.since = Clock::now();
      c.deadline = c.since + limits_.header_timeout;
    }
    c.buffer.append(chunk, static_cast<size_t>(n));
    if (scan_head(c) || c.closing) return true;  // the rest is the body's, read by the worker
  }
}

void ConnectionLayer::admit(std::unique_ptr<Connection> c) {
  if (open_.load() > limits_.max_connections) {
    // Make room: a refused connection first, then the longest idle, then the slowest head.
    auto rank = [](const Connection& x) { return x.closing ? 0 : x.receiving ? 2 : 1; };
    const auto victim = std::min_element(waiting_.begin(), waiting_.end(), [&](const auto& a, const auto& b) {
      return std::pair(rank(*a), a->since) < std::pair(rank(*b), b->since);
    });
    if (victim == waiting_.end()) {
      // Every other connection has a request in progress.
      send_best_effort(c->fd, error_response(503, "the server has --max_connections connections open; retry later",
                                             "too_many_connections"));
      std::lock_guard lock(mutex_);
      ++stats_.over_capacity;
      return;
    }
    if (!(*victim)->closing) {
      std::lock_guard lock(mutex_);
      ++stats_.evicted_idle;
    }
    waiting_.erase(victim);
  }
  if (!c->closing && c->receiving && scan_head(*c)) {
    std::lock_guard lock(mutex_);
    ready_.push_back(std::move(c));
    ready_changed_.notify_one();
    return;
  }
  waiting_.push_back(std::move(c));
}

void ConnectionLayer::poll_loop() {
  std::vector<pollfd> fds;
  std::deque<std::unique_ptr<Connection>> arrived;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) break;
      arrived.swap(inbox_);
    }
    while (!arrived.empty()) {
      admit(std::move(arrived.front()));
      arrived.pop_front();
    }
    fds.assign(1, pollfd{wake_read_, POLLIN, 0});
    auto next = Clock::time_point::max();
    for (const auto& c : waiting_) {
      fds.push_back({c->fd, POLLIN, 0});
      next = std::min(next, c->deadline);
    }
    int timeout_ms = -1;
    if (next != Clock::time_point::max())
      timeout_ms = static_cast<int>(std::clamp<int64_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count() + 1, 0, 60'000));
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
      // EINTR, or a transient lack of memory: look again (nothing was reported ready).
      std::this_thread::sleep_for(std::chrono::milliseconds(errno == EINTR ? 0 : 10));
      continue;
    }
    if (fds[0].revents) {
      char drain[256];
      while (::read(wake_read_, drain, sizeof drain) > 0) {
      }
    }
    const auto now = Clock::now();
    std::vector<std::unique_ptr<Connection>> still;
    still.reserve(waiting_.size());
    for (size_t i = 0; i < waiting_.size(); ++i) {
      std::unique_ptr<Connection>& c = waiting_[i];
      if (fds[i + 1].revents && !receive(*c)) continue;
      if (c->head_bytes && !c->closing) {
        std::lock_guard lock(mutex_);
        ready_.push_back(std::move(c));
        ready_changed_.notify_one();
        continue;
      }
      if (now >= c->deadline) {
        if (c->closing || !c->receiving) continue;  // lingered long enough, or idle keep-alive over
        refuse(*c, 408, "request head not received within " + std::to_string(limits_.header_timeout.count() / 1000) + " s",
               &ConnectionStats::header_timeout);
      }
      still.push_back(std::move(c));
    }
    waiting_ = std::move(still);
  }
  waiting_.clear();
}

void ConnectionLayer::worker_loop() {
  for (;;) {
    std::unique_ptr<Connection> c;
    {
      std::unique_lock lock(mutex_);
      ready_changed_.wait(lock, [&] { return !ready_.empty() || stopping_; });
      if (ready_.empty()) return;  // stopping, and every complete request has been served
      c = std::move(ready_.front());
      ready_.pop_front();
      ++stats_.busy_workers;
    }
    serve(std::move(c));
    std::lock_guard lock(mutex_);
    --stats_.busy_workers;
  }
}

void ConnectionLayer::serve(std::unique_ptr<Connection> c) {
  const bool last = ++c->requests >= limits_.max_requests_per_connection || draining_.load();
  bool client_closed = false;
  bool reusable;
  {
    RequestStream stream(*c, limits_, draining_);
    const bool ok = process_(stream, last, client_closed);
    // A body httplib did not read to its end (a refused request, a chunked one) would be taken
    // for the next request: such connections close.
    reusable = ok && !client_closed && !last && !stream.failed() && !c->chunked &&
               stream.body_bytes() == c->content_length.value_or(0);
    stream.finish();
  }
  if (client_closed) return;
  if (reusable) {
    c->next_request(Clock::now(), limits_);
  } else {
    // Close as refuse() does, lingering: the client may still be sending a body nobody read, and
    // closing a socket with unread input resets it, which can discard the answer before the
    // client has read it (a chunked body over --max_body_mb lost its 413 that way).
    ::shutdown(c->fd, SHUT_WR);
    c->closing = true;
    c->deadline = Clock::now() + kLinger;
    c->buffer.clear();
  }
  std::lock_guard lock(mutex_);
  if (stopping_) return;
  inbox_.push_back(std::move(c));
  wake();
}

}  // namespace vlmforge::server
