// libFuzzer target for `deploy`'s request parsing: any request body must either parse into a
// request whose fields respect their documented ranges, or be rejected with an ApiError (a 4xx
// for the client) — never crash, hang or escape as another exception.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "io/json_file.h"
#include "server/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the endpoint; the rest is the body, as the server receives it.
  const auto endpoint = data[0] & 1 ? vlmforge::server::Endpoint::kCompletions : vlmforge::server::Endpoint::kChatCompletions;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  if (vlmforge::json_nesting_exceeds(body, 64)) return 0;  // the server answers 400 before parsing
  const nlohmann::json parsed = nlohmann::json::parse(body, nullptr, false);
  if (parsed.is_discarded()) return 0;
  vlmforge::server::MediaPolicy policy;
  policy.max_image_bytes = 1 << 16;
  try {
    const auto r = vlmforge::server::parse_request(endpoint, parsed, policy);
    if (r.top_logprobs > 20 || r.stop.size() > 4 || (r.temperature && (*r.temperature < 0 || *r.temperature > 2)) ||
        (r.top_p && !(*r.top_p > 0 && *r.top_p <= 1)) || (r.max_tokens && *r.max_tokens == 0) ||
        (r.include_usage && !r.stream))
      std::abort();
    for (const auto& image : r.images)
      if (!image.info.ok() || image.bytes.size() > policy.max_image_bytes) std::abort();
  } catch (const vlmforge::server::ApiError& e) {
    if (e.status() < 400 || e.status() >= 500) std::abort();
  }
  return 0;
}
