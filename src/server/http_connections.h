#pragma once
// deploy's connection layer under cpp-httplib. httplib 0.11 gives every connection a thread for its
// whole life and reads request heads without a size, line or time limit, so slow or idle clients
// can hold every thread. Here one poll() thread holds each open connection while it is idle or
// still sending its request head, within byte, line and time limits; only a connection whose head
// is complete is handed to a worker, and it comes back to the poll thread between keep-alive
// requests. So a slow or idle client costs a slot and a buffer, never a worker, and the number of
// open connections is capped.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Stream;
}

namespace vlmforge::server {

struct ConnectionLimits {
  size_t max_connections = 256;          // open at once; beyond it the longest-idle one is closed, else 503
  size_t workers = 16;                   // requests processed at once
  size_t max_header_bytes = 64u << 10;   // request line + headers; more: 431
  size_t max_header_lines = 128;         // request line + header lines; more: 431
  uint64_t max_body_bytes = 100u << 20;  // a larger Content-Length: 413 before any worker
  std::chrono::milliseconds header_timeout{10'000};  // first byte of a request to the end of its head: 408
  std::chrono::milliseconds idle_timeout{5'000};     // keep-alive wait for the next request's first byte
  std::chrono::milliseconds body_timeout{60'000};    // end of the head to the end of the body
  std::chrono::milliseconds io_timeout{5'000};       // one read or write that makes no progress
  size_t max_requests_per_connection = 1000;
};

struct ConnectionStats {
  size_t open = 0;          // connections now
  size_t busy_workers = 0;  // requests being processed now
  // Connections closed by the layer, by reason, since the start.
  uint64_t header_too_large = 0, header_timeout = 0, body_too_large = 0, bad_head = 0, over_capacity = 0,
           evicted_idle = 0;
};

// Runs one request whose head is buffered in `stream` (httplib's Server::process_request):
// returns false when the connection must close; sets connection_closed when the client asked to.
using RequestProcessor = std::function<bool(httplib::Stream& stream, bool close_connection, bool& connection_closed)>;

class ConnectionLayer {
 public:
  ConnectionLayer(ConnectionLimits limits, RequestProcessor process);
  ~ConnectionLayer();
  ConnectionLayer(const ConnectionLayer&) = delete;
  ConnectionLayer& operator=(const ConnectionLayer&) = delete;

  // Takes ownership of an accepted socket (called on the accept thread; never blocks).
  void adopt(int fd);
  // Closes idle and half-received connections at once, lets the requests whose head is complete
  // finish (without reading more from their clients than is buffered), then joins the threads.
  void shutdown();
  ConnectionStats stats() const;

  struct Connection;

 private:
  void poll_loop();
  void worker_loop();
  void serve(std::unique_ptr<Connection> connection);
  // Reads what the socket has (up to the end of a head); false when the connection is gone.
  bool receive(Connection& c);
  // Scans the buffered head within the limits; true once it is complete and may go to a worker.
  bool scan_head(Connection& c);
  // Checks a complete head's framing headers; false when it was refused.
  bool accept_head(Connection& c);
  void refuse(Connection& c, int status, const std::string& message, uint64_t ConnectionStats::*counter);
  void admit(std::unique_ptr<Connection> c);
  void wake();

  const ConnectionLimits limits_;
  const RequestProcessor process_;
  int wake_read_ = -1, wake_write_ = -1;  // a pipe that interrupts poll()
  std::atomic<size_t> open_{0};
  std::atomic<bool> draining_{false};  // shutting down: no more reads from clients

  mutable std::mutex mutex_;
  std::condition_variable ready_changed_;
  std::deque<std::unique_ptr<Connection>> inbox_;  // new, or back from a worker; for the poll thread
  std::deque<std::unique_ptr<Connection>> ready_;  // head complete; for a worker
  bool stopping_ = false;
  ConnectionStats stats_;  // guarded by mutex_

  // Owned by the poll thread.
  std::vector<std::unique_ptr<Connection>> waiting_;

  std::thread poller_;
  std::vector<std::thread> workers_;
};

}  // namespace vlmforge::server
