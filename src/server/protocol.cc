#include "server/protocol.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <random>
#include <set>

#include "tokenizer/token_ids.h"

namespace vlmforge::server {
namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

ApiError::ApiError(int status, std::string message, std::string param, std::string code)
    : Error(std::move(message)), status_(status), param_(std::move(param)), code_(std::move(code)) {}

std::string ApiError::type() const {
  switch (status_) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status_ >= 500 ? "server_error" : "invalid_request_error";
  }
}

json error_body(const ApiError& error) {
  return {{"error",
           {{"message", error.what()},
            {"type", error.type()},
            {"param", error.param().empty() ? json(nullptr) : json(error.param())},
            {"code", error.code().empty() ? json(nullptr) : json(error.code())}}}};
}

namespace {

ApiError bad(const std::string& param, const std::string& message, const std::string& code = {}) {
  return ApiError(400, message, param, code);
}

// A present, non-null field (OpenAI treats null as "not given").
const json* field(const json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

std::optional<double> number(const json& body, const char* key, double min, double max) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw bad(key, std::string("'") + key + "' must be a number");
  const double x = v->get<double>();
  if (!(x >= min && x <= max))
    throw bad(key, std::string("'") + key + "' must be between " + json(min).dump() + " and " + json(max).dump() +
                       ", got " + v->dump());
  return x;
}

std::optional<int64_t> integer(const json& body, const char* key, int64_t min, int64_t max) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) throw bad(key, std::string("'") + key + "' must be an integer");
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(max))
    throw bad(key, std::string("'") + key + "' must be at most " + std::to_string(max));
  const int64_t x = v->get<int64_t>();
  if (x < min || x > max)
    throw bad(key, std::string("'") + key + "' must be between " + std::to_string(min) + " and " +
                       std::to_string(max) + ", got " + std::to_string(x));
  return x;
}

std::optional<bool> boolean(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw bad(key, std::string("'") + key + "' must be a boolean");
  return v->get<bool>();
}

const std::string& string_of(const json& v, const std::string& param) {
  if (!v.is_string()) throw bad(param, "'" + param + "' must be a string");
  return v.get_ref<const std::string&>();
}

// Request fields that exist in the OpenAI API and are accepted only at their neutral value.
void require_neutral(const json& body) {
  for (const char* key : {"presence_penalty", "frequency_penalty"})
    if (const json* v = field(body, key); v && !(v->is_number() && v->get<double>() == 0))
      throw bad(key, std::string("'") + key + "' is not supported by this server (only 0)");
  if (const json* v = field(body, "logit_bias"); v && !(v->is_object() && v->empty()))
    throw bad("logit_bias", "'logit_bias' is not supported by this server");
  if (const auto n = integer(body, "n", 1, 128); n && *n != 1)
    throw bad("n", "only n=1 is supported (one choice per request)");
  if (const json* v = field(body, "response_format"); v && !(v->is_object() && v->value("type", "") == "text" && v->size() == 1))
    throw bad("response_format", "only response_format {\"type\": \"text\"} is supported");
}

void check_known_keys(const json& body, const std::set<std::string>& known) {
  for (const auto& [key, value] : body.items())
    if (!known.count(key)) {
      // Named so the client knows the feature exists but is not served here.
      static const std::set<std::string> unsupported = {
          "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "audio", "modalities",
          "prediction", "reasoning_effort", "service_tier", "store", "metadata", "web_search_options",
          "best_of", "echo", "suffix", "guided_json", "min_tokens", "ignore_eos"};
      // Their default values change nothing, and some clients always send them.
      static const json neutral = {{"echo", false}, {"best_of", 1}, {"suffix", ""}, {"min_tokens", 0},
                                   {"ignore_eos", false}, {"store", false}};
      if (unsupported.count(key) && !value.is_null() && !(neutral.contains(key) && neutral[key] == value))
        throw bad(key, "'" + key + "' is not supported by this server");
      if (!unsupported.count(key)) throw bad(key, "unrecognized request argument supplied: '" + key + "'");
    }
}

std::vector<std::string> stop_list(const json& body) {
  const json* v = field(body, "stop");
  if (!v) return {};
  std::vector<std::string> out;
  if (v->is_string()) out.push_back(v->get<std::string>());
  else if (v->is_array()) {
    if (v->size() > 4) throw bad("stop", "'stop' takes at most 4 sequences");
    for (const auto& s : *v) {
      if (!s.is_string()) throw bad("stop", "'stop' must be a string or an array of strings");
      out.push_back(s.get<std::string>());
    }
  } else {
    throw bad("stop", "'stop' must be a string or an array of strings");
  }
  for (const auto& s : out)
    if (s.empty()) throw bad("stop", "'stop' sequences must not be empty");
  return out;
}

std::vector<uint8_t> read_bounded_file(const fs::path& path, size_t max_bytes, const std::string& param) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer, pinning the request's thread
  // before the regular-file check below could refuse it. It changes nothing for regular files.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) throw bad(param, "cannot read " + path.string() + ": " + errno_message(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) throw bad(param, path.string() + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    throw bad(param, path.string() + " is " + std::to_string(st.st_size) + " bytes, over the " +
                         std::to_string(max_bytes) + "-byte image limit");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) throw bad(param, "cannot read " + path.string() + ": " + (n == 0 ? "file shrank" : errno_message(errno)));
    done += static_cast<size_t>(n);
  }
  return bytes;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

std::string percent_decode(std::string_view s, const std::string& param) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(s[i + 2])))
      throw bad(param, "malformed percent-escape in file URL");
    out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  if (out.find('\0') != std::string::npos) throw bad(param, "file URL contains a NUL byte");
  return out;
}

void check_image(ImageInput& image, const std::string& param) {
  image.info = vision::read_image_info(std::span<const uint8_t>(image.bytes));
  if (!image.info.ok())
    throw bad(param, image.source + " is not a readable image (JPEG, PNG, WebP, GIF or BMP): " +
                         (image.info.detail.empty() ? "unknown format" : image.info.detail));
}

ordered_json chat_messages(const json& body, const MediaPolicy& policy, std::vector<ImageInput>& images) {
  const json* messages = field(body, "messages");
  if (!messages) throw bad("messages", "'messages' is required");
  if (!messages->is_array() || messages->empty()) throw bad("messages", "'messages' must be a non-empty array");
  ordered_json out = ordered_json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad(where, where + " must be an object");
    for (const auto& [key, value] : m.items())
      if (key != "role" && key != "content")
        throw bad(where + "." + key, "'" + where + "." + key + "' is not supported by this server (only role and content)");
    const json* role = field(m, "role");
    if (!role) throw bad(where + ".role", where + " has no 'role'");
    const std::string& r = string_of(*role, where + ".role");
    if (r != "system" && r != "user" && r != "assistant")
      throw bad(where + ".role", where + ".role '" + r + "' is not supported (system, user or assistant)");
    const json* content = field(m, "content");
    if (!content) throw bad(where + ".content", where + " has no 'content'");
    ordered_json message = {{"role", r}};
    if (content->is_string()) {
      message["content"] = content->get<std::string>();
    } else if (content->is_array()) {
      ordered_json parts = ordered_json::array();
      for (size_t j = 0; j < content->size(); ++j) {
        const json& part = (*content)[j];
        const std::string pwhere = where + ".content[" + std::to_string(j) + "]";
        if (!part.is_object() || !field(part, "type")) throw bad(pwhere, pwhere + " must be an object with a 'type'");
        const std::string& type = string_of(part["type"], pwhere + ".type");
        if (type == "text") {
          const json* text = field(part, "text");
          if (!text) throw bad(pwhere + ".text", pwhere + " has no 'text'");
          parts.push_back({{"type", "text"}, {"text", string_of(*text, pwhere + ".text")}});
        } else if (type == "image_url") {
          if (r != "user") throw bad(pwhere, "image parts are only allowed in user messages");
          const json* image_url = field(part, "image_url");
          if (!image_url || !image_url->is_object() || !field(*image_url, "url"))
            throw bad(pwhere + ".image_url", pwhere + ".image_url must be an object with a 'url'");
          if (const json* detail = field(*image_url, "detail")) {
            const std::string& d = string_of(*detail, pwhere + ".image_url.detail");
            if (d != "auto" && d != "low" && d != "high")
              throw bad(pwhere + ".image_url.detail", "'detail' must be auto, low or high");
          }
          const std::string param = pwhere + ".image_url.url";
          images.push_back(load_image_url(string_of((*image_url)["url"], param), policy, param));
          parts.push_back({{"type", "image"}});
        } else {
          throw bad(pwhere + ".type", "content part type '" + type + "' is not supported (text or image_url)");
        }
      }
      message["content"] = parts;
    } else {
      throw bad(where + ".content", where + ".content must be a string or an array of content parts");
    }
    out.push_back(message);
  }
  return out;
}

}  // namespace

std::optional<std::vector<uint8_t>> decode_base64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<uint8_t> out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + static_cast<size_t>(k)];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad) return std::nullopt;  // data after padding
      v[k] = value(c);
      if (v[k] < 0) return std::nullopt;
    }
    const uint32_t triple = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out.push_back(static_cast<uint8_t>(triple >> 16));
    if (pad < 2) out.push_back(static_cast<uint8_t>(triple >> 8));
    if (pad < 1) out.push_back(static_cast<uint8_t>(triple));
  }
  return out;
}

ImageInput load_image_url(std::string_view url, const MediaPolicy& policy, const std::string& param) {
  ImageInput image;
  if (starts_with_ci(url, "data:")) {
    const size_t comma = url.find(',');
    if (comma == std::string_view::npos) throw bad(param, "data: URL has no ',' before its data");
    const std::string_view header = url.substr(5, comma - 5);
    if (!starts_with_ci(header, "image/") || header.size() < 7 || header.substr(header.size() - 7) != ";base64")
      throw bad(param, "data: URLs must be data:image/<type>;base64,<data>");
    const std::string_view data = url.substr(comma + 1);
    if (data.size() / 4 * 3 > policy.max_image_bytes + 2)
      throw bad(param, "image of about " + std::to_string(data.size() / 4 * 3) + " bytes is over the " +
                           std::to_string(policy.max_image_bytes) + "-byte limit");
    auto bytes = decode_base64(data);
    if (!bytes) throw bad(param, "data: URL is not valid base64 (RFC 4648, padded, no whitespace)");
    if (bytes->size() > policy.max_image_bytes)
      throw bad(param, "image of " + std::to_string(bytes->size()) + " bytes is over the " +
                           std::to_string(policy.max_image_bytes) + "-byte limit");
    image.bytes = std::move(*bytes);
    image.source = "data: URL image";
  } else if (starts_with_ci(url, "file://")) {
    if (policy.allowed_local_media_path.empty())
      throw bad(param, "file:// image URLs are disabled; start the server with --allowed_local_media_path DIR");
    std::string_view rest = url.substr(7);
    if (!rest.starts_with('/'))
      throw bad(param, "file URLs must be file:///absolute/path (no host)");
    const fs::path requested = percent_decode(rest, param);
    std::error_code ec;
    const fs::path real = fs::canonical(requested, ec);  // resolves symlinks and "..": no escape
    if (ec) throw bad(param, "cannot read " + requested.string() + ": " + ec.message());
    const fs::path root = fs::canonical(policy.allowed_local_media_path, ec);
    if (ec) throw ApiError(500, "--allowed_local_media_path " + policy.allowed_local_media_path.string() + ": " + ec.message());
    const auto [r, p] = std::mismatch(root.begin(), root.end(), real.begin(), real.end());
    if (r != root.end())
      throw bad(param, requested.string() + " is outside --allowed_local_media_path " + root.string());
    image.bytes = read_bounded_file(real, policy.max_image_bytes, param);
    image.source = real.string();
  } else if (starts_with_ci(url, "http://") || starts_with_ci(url, "https://")) {
    throw bad(param, "remote image URLs are not fetched by this server (it makes no outbound requests); "
                     "send the image inline as a data:image/...;base64 URL");
  } else {
    throw bad(param, "image URL must be a data:image/...;base64 URL or a file:/// URL");
  }
  check_image(image, param);
  return image;
}

CompletionRequest parse_request(Endpoint endpoint, const json& body, const MediaPolicy& policy) {
  if (!body.is_object()) throw bad("", "the request body must be a JSON object");
  CompletionRequest r;
  r.endpoint = endpoint;
  const bool chat = endpoint == Endpoint::kChatCompletions;
  std::set<std::string> known = {"model", "stream", "stream_options", "temperature", "top_p", "top_k", "max_tokens",
                                 "stop", "seed", "logprobs", "n", "repetition_penalty", "user", "presence_penalty",
                                 "frequency_penalty", "logit_bias"};
  if (chat) known.insert({"messages", "top_logprobs", "max_completion_tokens", "response_format"});
  else known.insert("prompt");
  check_known_keys(body, known);
  require_neutral(body);

  const json* model = field(body, "model");
  if (!model) throw bad("model", "'model' is required");
  r.model = string_of(*model, "model");
  if (const json* user = field(body, "user")) string_of(*user, "user");

  if (chat) {
    r.messages = chat_messages(body, policy, r.images);
  } else {
    const json* prompt = field(body, "prompt");
    if (!prompt) throw bad("prompt", "'prompt' is required");
    const json* p = prompt;
    if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) p = &(*p)[0];
    if (p->is_string()) {
      r.prompt = p->get<std::string>();
    } else if (p->is_array() && !p->empty() && std::all_of(p->begin(), p->end(), [](const json& x) { return x.is_number_integer(); })) {
      r.prompt_is_ids = true;
      for (const auto& x : *p) {
        // get<int32_t>() would wrap ids past 2^31 (2^32 + 5 becomes 5): refuse them instead.
        const auto id = tokenizer::token_id_from_json(x);
        if (!id) throw bad("prompt", tokenizer::not_a_token_id(x.dump()));
        r.prompt_ids.push_back(*id);
      }
    } else if (p->is_array() && p->size() > 1) {
      throw bad("prompt", "one prompt per request is supported (got " + std::to_string(p->size()) + ")");
    } else {
      throw bad("prompt", "'prompt' must be a string, a one-string array, or an array of token ids");
    }
  }

  if (auto t = number(body, "temperature", 0, 2)) r.temperature = static_cast<float>(*t);
  if (auto t = number(body, "top_p", 0, 1)) {
    if (*t <= 0) throw bad("top_p", "'top_p' must be in (0, 1]");
    r.top_p = static_cast<float>(*t);
  }
  if (auto k = integer(body, "top_k", -1, 1 << 30)) r.top_k = *k < 0 ? 0 : static_cast<int>(*k);
  if (auto p = number(body, "repetition_penalty", 0, 100)) {
    if (*p <= 0) throw bad("repetition_penalty", "'repetition_penalty' must be > 0");
    r.repetition_penalty = static_cast<float>(*p);
  }
  auto max_tokens = integer(body, "max_tokens", 1, int64_t{1} << 40);
  if (chat)
    if (auto m = integer(body, "max_completion_tokens", 1, int64_t{1} << 40)) max_tokens = m;
  if (max_tokens) r.max_tokens = static_cast<size_t>(*max_tokens);
  r.stop = stop_list(body);
  if (auto s = integer(body, "seed", INT64_MIN, INT64_MAX)) r.seed = static_cast<uint64_t>(*s);

  if (chat) {
    r.logprobs = boolean(body, "logprobs").value_or(false);
    if (auto t = integer(body, "top_logprobs", 0, 20)) {
      if (!r.logprobs && *t > 0) throw bad("top_logprobs", "'top_logprobs' requires 'logprobs': true");
      r.top_logprobs = static_cast<size_t>(*t);
    }
  } else if (auto lp = integer(body, "logprobs", 0, 5)) {
    r.logprobs = true;
    r.top_logprobs = static_cast<size_t>(*lp);
  }

  r.stream = boolean(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!r.stream) throw bad("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (!so->is_object()) throw bad("stream_options", "'stream_options' must be an object");
    for (const auto& [key, value] : so->items())
      if (key != "include_usage") throw bad("stream_options." + key, "'stream_options." + key + "' is not supported");
    r.include_usage = boolean(*so, "include_usage").value_or(false);
  }
  return r;
}

GenerationParams generation_params(const CompletionRequest& request, const GenerationParams& defaults,
                                   size_t prompt_tokens, size_t max_model_len) {
  if (prompt_tokens == 0) throw bad(request.endpoint == Endpoint::kCompletions ? "prompt" : "messages", "the prompt is empty");
  const size_t room = prompt_tokens < max_model_len ? max_model_len - prompt_tokens : 0;
  const size_t wanted = request.max_tokens.value_or(room);
  if (room == 0 || wanted > room)
    throw bad(request.endpoint == Endpoint::kCompletions ? "prompt" : "messages",
              "This model's maximum context length is " + std::to_string(max_model_len) + " tokens. However, you requested " +
                  std::to_string(prompt_tokens + std::max<size_t>(wanted, 1)) + " tokens (" + std::to_string(prompt_tokens) +
                  " in the prompt, " + std::to_string(std::max<size_t>(wanted, 1)) +
                  " for the completion). Shorten the prompt or lower max_tokens.",
              "context_length_exceeded");
  GenerationParams p = defaults;
  p.should_stop = {};
  p.max_new_tokens = wanted;
  if (request.temperature) p.sampling.temperature = *request.temperature;
  if (request.top_p) p.sampling.top_p = *request.top_p;
  if (request.top_k) p.sampling.top_k = *request.top_k;
  if (request.repetition_penalty) p.sampling.repetition_penalty = *request.repetition_penalty;
  p.sampling.seed = request.seed ? *request.seed : std::random_device{}();
  p.stop_words = request.stop;
  p.logprobs = request.logprobs;
  p.top_logprobs = request.top_logprobs;
  return p;
}

}  // namespace vlmforge::server
