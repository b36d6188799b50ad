// Request parsing and validation of `deploy`: every rejection is an ApiError with the status and
// the parameter a client needs to fix it; image URLs obey the media policy; base64 is checked
// against an independent encoder; response objects have OpenAI's shapes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "server/protocol.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using server::ApiError;
using server::Endpoint;

// A 1x1 RGB PNG.
const std::string kPng("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
                       "\x00\x00\x00\x0cIDATx\x9c" "c\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
                       "\x00\x00\x00\x00IEND\xae" "B`\x82", 69);

// Textbook base64, written independently of the decoder under test.
std::string encode_base64(const std::string& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const unsigned a = static_cast<unsigned char>(bytes[i]), b = static_cast<unsigned char>(bytes[i + 1]),
                   c = static_cast<unsigned char>(bytes[i + 2]);
    out += {table[a >> 2], table[((a & 3) << 4) | (b >> 4)], table[((b & 15) << 2) | (c >> 6)], table[c & 63]};
  }
  if (bytes.size() - i == 1) {
    const unsigned a = static_cast<unsigned char>(bytes[i]);
    out += {table[a >> 2], table[(a & 3) << 4], '=', '='};
  } else if (bytes.size() - i == 2) {
    const unsigned a = static_cast<unsigned char>(bytes[i]), b = static_cast<unsigned char>(bytes[i + 1]);
    out += {table[a >> 2], table[((a & 3) << 4) | (b >> 4)], table[(b & 15) << 2], '='};
  }
  return out;
}

json chat(json extra = json::object()) {
  json body = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  body.update(extra);
  return body;
}

// The ApiError a body raises (fails the test when it parses).
ApiError rejection(const json& body, Endpoint endpoint = Endpoint::kChatCompletions, const server::MediaPolicy& policy = {}) {
  try {
    server::parse_request(endpoint, body, policy);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body.dump();
  return ApiError(0, "");
}

TEST(DeployProtocol, Base64RoundTripsEveryLengthAndRejectsMalformedText) {
  std::mt19937 rng(3);
  for (size_t n = 0; n < 70; ++n) {
    std::string bytes(n, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    const auto decoded = server::decode_base64(encode_base64(bytes));
    ASSERT_TRUE(decoded) << n;
    EXPECT_EQ(std::string(decoded->begin(), decoded->end()), bytes) << n;
  }
  for (const char* bad : {"abc", "ab=c", "a===", "ab\ncd==", "ab-_", "=abc", "YQ==YQ==", "Y Q=="})
    EXPECT_FALSE(server::decode_base64(bad)) << bad;
}

TEST(DeployProtocol, ParsesAChatRequestWithEverySupportedField) {
  const auto r = server::parse_request(
      Endpoint::kChatCompletions,
      chat({{"temperature", 0.5}, {"top_p", 0.9}, {"top_k", -1}, {"max_tokens", 7}, {"max_completion_tokens", 9},
            {"stop", "END"}, {"seed", -3}, {"logprobs", true}, {"top_logprobs", 4}, {"n", 1}, {"stream", true},
            {"stream_options", {{"include_usage", true}}}, {"user", "u"}, {"presence_penalty", 0},
            {"frequency_penalty", nullptr}, {"repetition_penalty", 1.1}}),
      {});
  EXPECT_EQ(r.model, "m");
  EXPECT_FLOAT_EQ(*r.temperature, 0.5f);
  EXPECT_FLOAT_EQ(*r.top_p, 0.9f);
  EXPECT_EQ(*r.top_k, 0);           // -1 is vLLM's "off"
  EXPECT_EQ(*r.max_tokens, 9u);     // max_completion_tokens wins, as in OpenAI's API
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(*r.seed, static_cast<uint64_t>(-3));
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 4u);
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_EQ(r.messages.dump(), R"([{"role":"user","content":"hi"}])");
  // Parts become the chat template's text parts.
  const auto parts = server::parse_request(
      Endpoint::kChatCompletions,
      chat({{"messages", {{{"role", "system"}, {"content", "s"}},
                          {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}}}}}}),
      {});
  EXPECT_EQ(parts.messages[1]["content"].dump(), R"([{"type":"text","text":"a"},{"type":"text","text":"b"}])");
}

TEST(DeployProtocol, RejectsWrongTypesRangesAndUnsupportedFieldsNamingTheParameter) {
  const std::vector<std::pair<json, std::string>> cases = {
      {chat({{"temperature", "hot"}}), "temperature"},
      {chat({{"temperature", 2.5}}), "temperature"},
      {chat({{"top_p", 0}}), "top_p"},
      {chat({{"top_k", 1.5}}), "top_k"},
      {chat({{"max_tokens", 0}}), "max_tokens"},
      {chat({{"max_tokens", "10"}}), "max_tokens"},
      {chat({{"seed", 1.5}}), "seed"},
      {chat({{"stop", {"a", "b", "c", "d", "e"}}}), "stop"},
      {chat({{"stop", {1}}}), "stop"},
      {chat({{"stop", ""}}), "stop"},
      {chat({{"n", 2}}), "n"},
      {chat({{"logprobs", 1}}), "logprobs"},
      {chat({{"top_logprobs", 3}}), "top_logprobs"},
      {chat({{"logprobs", true}, {"top_logprobs", 21}}), "top_logprobs"},
      {chat({{"stream_options", {{"include_usage", true}}}}), "stream_options"},
      {chat({{"stream", true}, {"stream_options", {{"other", 1}}}}), "stream_options.other"},
      {chat({{"stream", "yes"}}), "stream"},
      {chat({{"tools", json::array({{{"type", "function"}}})}}), "tools"},
      {chat({{"presence_penalty", 0.5}}), "presence_penalty"},
      {chat({{"logit_bias", {{"1", 2}}}}), "logit_bias"},
      {chat({{"response_format", {{"type", "json_object"}}}}), "response_format"},
      {chat({{"frobnicate", true}}), "frobnicate"},
      {chat({{"model", 3}}), "model"},
      {json{{"messages", chat()["messages"]}}, "model"},
      {chat({{"messages", json::array()}}), "messages"},
      {chat({{"messages", "hi"}}), "messages"},
      {chat({{"messages", {{{"role", "tool"}, {"content", "x"}}}}}), "messages[0].role"},
      {chat({{"messages", {{{"role", "user"}}}}}), "messages[0].content"},
      {chat({{"messages", {{{"role", "user"}, {"content", "x"}, {"name", "bob"}}}}}), "messages[0].name"},
      {chat({{"messages", {{{"role", "user"}, {"content", {{{"type", "input_audio"}}}}}}}}), "messages[0].content[0].type"},
      {chat({{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", 5}}}}}}}}), "messages[0].content[0].text"},
      {chat({{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", "x"}}}}}}}}),
       "messages[0].content[0].image_url"},
  };
  for (const auto& [body, param] : cases) {
    const ApiError e = rejection(body);
    EXPECT_EQ(e.status(), 400) << body.dump();
    EXPECT_EQ(e.param(), param) << body.dump() << ": " << e.what();
  }
  EXPECT_EQ(rejection(json::array()).status(), 400);
}

TEST(DeployProtocol, CompletionPromptForms) {
  auto parse = [](json prompt) {
    return server::parse_request(Endpoint::kCompletions, {{"model", "m"}, {"prompt", prompt}, {"logprobs", 2}}, {});
  };
  EXPECT_EQ(parse("abc").prompt, "abc");
  EXPECT_EQ(parse({"abc"}).prompt, "abc");
  EXPECT_EQ(parse({1, 2, 3}).prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(parse({{4, 5}}).prompt_ids, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(parse("x").top_logprobs, 2u);
  // Ids past int32 were wrapped (2^32 + 5 became 5) and silently accepted.
  for (const json& id : {json(uint64_t{1} << 32) , json((uint64_t{1} << 32) + 5), json(uint64_t{1} << 63), json(INT64_MIN),
                         json(int64_t{INT32_MAX} + 1)}) {
    const ApiError e = rejection({{"model", "m"}, {"prompt", {1, id}}}, Endpoint::kCompletions);
    EXPECT_EQ(e.param(), "prompt") << id.dump();
    EXPECT_NE(std::string(e.what()).find(id.dump()), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse({int64_t{INT32_MAX}}).prompt_ids, (std::vector<int32_t>{INT32_MAX}));
  for (const json& bad : {json{"a", "b"}, json(5), json::array(), json{{{"a", 1}}}}) {
    const ApiError e = rejection({{"model", "m"}, {"prompt", bad}}, Endpoint::kCompletions);
    EXPECT_EQ(e.param(), "prompt") << bad.dump();
  }
  EXPECT_EQ(rejection({{"model", "m"}, {"prompt", "x"}, {"echo", true}}, Endpoint::kCompletions).param(), "echo");
  EXPECT_EQ(rejection({{"model", "m"}, {"prompt", "x"}, {"best_of", 2}}, Endpoint::kCompletions).param(), "best_of");
  // Unsupported features at their neutral values are accepted (some clients always send them).
  EXPECT_NO_THROW(server::parse_request(
      Endpoint::kCompletions, {{"model", "m"}, {"prompt", "x"}, {"echo", false}, {"best_of", 1}, {"suffix", nullptr}}, {}));
  EXPECT_EQ(rejection({{"model", "m"}, {"prompt", "x"}, {"logprobs", 6}}, Endpoint::kCompletions).param(), "logprobs");
  // Chat-only fields are unknown to completions.
  EXPECT_EQ(rejection({{"model", "m"}, {"prompt", "x"}, {"top_logprobs", 1}}, Endpoint::kCompletions).param(), "top_logprobs");
}

TEST(DeployProtocol, ImageUrlsFollowTheMediaPolicy) {
  TempDir dir;
  fs::create_directories(dir / "media");
  std::ofstream(dir / "media" / "a.png", std::ios::binary) << kPng;
  std::ofstream(dir / "secret.png", std::ios::binary) << kPng;
  fs::create_symlink(dir / "secret.png", dir / "media" / "link.png");
  server::MediaPolicy policy;
  const std::string param = "p";

  const auto image = server::load_image_url("data:image/png;base64," + encode_base64(kPng), policy, param);
  EXPECT_EQ(image.bytes.size(), kPng.size());
  EXPECT_EQ(image.info.width, 1u);
  EXPECT_EQ(image.info.format, vision::ImageFormat::kPng);

  auto rejected = [&](const std::string& url, const server::MediaPolicy& p, const std::string& expect) {
    try {
      server::load_image_url(url, p, param);
      ADD_FAILURE() << "accepted " << url;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_EQ(e.param(), param);
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << url << ": " << e.what();
    }
  };
  rejected("https://example.com/a.png", policy, "remote image URLs are not fetched");
  rejected("http://127.0.0.1/a.png", policy, "remote image URLs are not fetched");
  rejected("ftp://x/a.png", policy, "must be a data:image");
  rejected("data:text/plain;base64,aGk=", policy, "data:image/<type>;base64");
  rejected("data:image/png,rawbytes", policy, "data:image/<type>;base64");
  rejected("data:image/png;base64,aGk", policy, "not valid base64");
  rejected("data:image/png;base64," + encode_base64("not an image at all"), policy, "not a readable image");
  server::MediaPolicy small = policy;
  small.max_image_bytes = 10;
  rejected("data:image/png;base64," + encode_base64(kPng), small, "-byte limit");
  rejected("file://" + (dir / "media" / "a.png").string(), policy, "--allowed_local_media_path");

  server::MediaPolicy local = policy;
  local.allowed_local_media_path = dir / "media";
  EXPECT_EQ(server::load_image_url("file://" + (dir / "media" / "a.png").string(), local, param).info.height, 1u);
  // Percent-escapes are decoded ("a.png" as "%61.png").
  EXPECT_EQ(server::load_image_url("file://" + (dir / "media" / "%61.png").string(), local, param).bytes.size(), kPng.size());
  rejected("file://" + (dir / "secret.png").string(), local, "outside --allowed_local_media_path");
  rejected("file://" + (dir / "media" / ".." / "secret.png").string(), local, "outside --allowed_local_media_path");
  rejected("file://" + (dir / "media" / "link.png").string(), local, "outside --allowed_local_media_path");
  rejected("file://" + (dir / "media" / "missing.png").string(), local, "cannot read");
  rejected("file://" + (dir / "media").string(), local, "not a regular file");
  rejected("file://host/etc/passwd", local, "file:///absolute/path");
  local.max_image_bytes = 10;
  rejected("file://" + (dir / "media" / "a.png").string(), local, "-byte image limit");

  // In a request: images in order, a placeholder part in the message; only user messages.
  const json part = {{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64," + encode_base64(kPng)}, {"detail", "low"}}}};
  const auto r = server::parse_request(
      Endpoint::kChatCompletions, chat({{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "see"}}, part, part}}}}}}),
      policy);
  EXPECT_EQ(r.images.size(), 2u);
  EXPECT_EQ(r.messages[0]["content"][1].dump(), R"({"type":"image"})");
  EXPECT_EQ(rejection(chat({{"messages", {{{"role", "assistant"}, {"content", {part}}}}}})).param(), "messages[0].content[0]");
}

TEST(DeployProtocol, GenerationParamsFillDefaultsAndRefuseOverlongContexts) {
  GenerationParams defaults;
  defaults.sampling = {0.7f, 20, 0.8f, 1.05f, 0};
  defaults.stop_ids = {5};
  const auto request = server::parse_request(Endpoint::kChatCompletions, chat({{"top_k", 3}, {"seed", 9}, {"stop", {"x"}}}), {});
  const auto p = server::generation_params(request, defaults, 10, 100);
  EXPECT_EQ(p.max_new_tokens, 90u);  // all that fits, as vLLM
  EXPECT_FLOAT_EQ(p.sampling.temperature, 0.7f);
  EXPECT_EQ(p.sampling.top_k, 3);
  EXPECT_FLOAT_EQ(p.sampling.repetition_penalty, 1.05f);
  EXPECT_EQ(p.sampling.seed, 9u);
  EXPECT_EQ(p.stop_ids, std::vector<int32_t>{5});
  EXPECT_EQ(p.stop_words, std::vector<std::string>{"x"});
  EXPECT_EQ(server::generation_params(
                server::parse_request(Endpoint::kChatCompletions, chat({{"max_tokens", 90}}), {}), defaults, 10, 100)
                .max_new_tokens,
            90u);
  for (auto [prompt, max_tokens] : {std::pair<size_t, int>{10, 91}, {100, 1}, {150, 1}}) {
    try {
      server::generation_params(server::parse_request(Endpoint::kChatCompletions, chat({{"max_tokens", max_tokens}}), {}),
                                defaults, prompt, 100);
      ADD_FAILURE() << prompt << " + " << max_tokens;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_EQ(e.code(), "context_length_exceeded");
      EXPECT_NE(std::string(e.what()).find("maximum context length is 100 tokens"), std::string::npos) << e.what();
    }
  }
}

TEST(DeployProtocol, ErrorAndResponseShapesAreOpenAIs) {
  const json e = server::error_body(ApiError(404, "no such model", "model", "model_not_found"));
  EXPECT_EQ(e.dump(), R"({"error":{"code":"model_not_found","message":"no such model","param":"model","type":"not_found_error"}})");
  EXPECT_EQ(server::error_body(ApiError(400, "bad"))["error"]["param"], nullptr);
  EXPECT_EQ(ApiError(401, "").type(), "authentication_error");
  EXPECT_EQ(ApiError(429, "").type(), "rate_limit_error");
  EXPECT_EQ(ApiError(503, "").type(), "server_error");

  const auto tok = tokenizer::Tokenizer::load(shared_dir() / "tokenizer" / "tokenizer.json");
  auto request = server::parse_request(Endpoint::kChatCompletions, chat({{"stream", true}, {"stream_options", {{"include_usage", true}}}}), {});
  const server::ResponseMeta meta{"chatcmpl-1", 42, "m"};
  const json first = server::stream_chunk(request, meta, tok, true, "", {}, 0, "");
  EXPECT_EQ(first.dump(),
            R"({"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],)"
            R"("created":42,"id":"chatcmpl-1","model":"m","object":"chat.completion.chunk","usage":null})");
  EXPECT_EQ(server::stream_chunk(request, meta, tok, false, "", {}, 0, "stop")["choices"][0]["delta"], json::object());
  EXPECT_EQ(server::usage_chunk(request, meta, 3, 4).dump(),
            R"({"choices":[],"created":42,"id":"chatcmpl-1","model":"m","object":"chat.completion.chunk",)"
            R"("usage":{"completion_tokens":4,"prompt_tokens":3,"total_tokens":7}})");
  EXPECT_EQ(server::sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");

  GenerationResult result;
  result.text = "Hi";
  result.tokens = {13048};
  result.prompt_tokens = 3;
  result.finish_reason = "stop";
  result.logprobs = {{13048, -0.5, {{13048, -0.5}, {9707, -1.5}}}};
  request = server::parse_request(Endpoint::kChatCompletions, chat({{"logprobs", true}, {"top_logprobs", 2}}), {});
  const json whole = server::final_response(request, meta, tok, result);
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"].dump(), R"({"content":"Hi","role":"assistant"})");
  EXPECT_EQ(whole["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(whole["choices"][0]["logprobs"]["content"][0]["token"], tok.token_bytes(13048));
  EXPECT_EQ(whole["usage"]["total_tokens"], 4);

  request = server::parse_request(Endpoint::kCompletions, {{"model", "m"}, {"prompt", "x"}, {"logprobs", 1}}, {});
  const json legacy = server::final_response(request, meta, tok, result)["choices"][0]["logprobs"];
  EXPECT_EQ(legacy["tokens"][0], tok.token_bytes(13048));
  EXPECT_EQ(legacy["token_logprobs"][0], -0.5);
  EXPECT_EQ(legacy["top_logprobs"][0].size(), 2u);
  EXPECT_EQ(legacy["text_offset"][0], 0);
}

}  // namespace
}  // namespace vlmforge::test
