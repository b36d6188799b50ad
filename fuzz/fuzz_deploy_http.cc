// libFuzzer target for `deploy`'s HTTP layer: any bytes a client sends, then a half-close, must
// end in well-formed responses and a closed connection within a few seconds: the bounded
// connection layer (head size, lines, framing, body limit) and httplib's request parsing under
// it, with a POST route that reads its body through the same bounded content reader path.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/http_connections.h"

namespace {

using vlmforge::server::ConnectionLayer;
using vlmforge::server::ConnectionLimits;

class FuzzServer : public httplib::Server {
 public:
  FuzzServer() {
    Get("/health", [](const httplib::Request&, httplib::Response& res) { res.status = 200; });
    Post("/v1/completions", [](const httplib::Request&, httplib::Response& res, const httplib::ContentReader& reader) {
      std::string body;
      const bool ok = reader([&](const char* data, size_t n) {
        if (n > kMaxBody - body.size()) return false;
        body.append(data, n);
        return true;
      });
      res.set_content(ok ? body : std::string("refused"), "text/plain");
    });
  }
  bool process(httplib::Stream& stream, bool close_connection, bool& connection_closed) {
    return process_request(stream, close_connection, connection_closed, nullptr);
  }
  static constexpr size_t kMaxBody = 1024;
};

ConnectionLimits limits() {
  ConnectionLimits l;
  l.max_connections = 4;
  l.workers = 2;
  l.max_header_bytes = 1024;
  l.max_header_lines = 16;
  l.max_body_bytes = FuzzServer::kMaxBody;
  l.header_timeout = l.idle_timeout = l.body_timeout = l.io_timeout = std::chrono::milliseconds(1000);
  return l;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static FuzzServer server;
  static ConnectionLayer layer(limits(), [](httplib::Stream& s, bool close, bool& closed) {
    return server.process(s, close, closed);
  });
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  layer.adopt(fds[0]);
  // Inputs are at most -max_len bytes, within an empty socket buffer.
  if (size && ::send(fds[1], data, size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) std::abort();
  ::shutdown(fds[1], SHUT_WR);
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    if (std::chrono::steady_clock::now() > deadline) std::abort();  // the server never closed
    pollfd p{fds[1], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char chunk[4096];
    const ssize_t n = ::recv(fds[1], chunk, sizeof chunk, 0);
    if (n <= 0) break;
    out.append(chunk, static_cast<size_t>(n));
  }
  ::close(fds[1]);
  // Whatever came back is HTTP responses, never a crash's silence mid-response.
  if (!out.empty() && out.rfind("HTTP/1.1 ", 0) != 0) std::abort();
  return 0;
}
