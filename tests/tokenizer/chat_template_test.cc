// Chat templates against the hand-written expectations in chat_template_cases.json (each case says
// which branch of the Qwen2.5 / Qwen2.5-VL Jinja template it exercises), plus the ids of a
// rendered prompt through the real tokenizer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "support/test_support.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/python_json.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace vlmforge::tokenizer {
namespace {

using nlohmann::ordered_json;

ordered_json cases_file() {
  const auto path = std::filesystem::path(VLMFORGE_SOURCE_DIR) / "tests" / "tokenizer" / "chat_template_cases.json";
  return ordered_json::parse(read_text_file(path));
}

TEST(TokenizerChatTemplate, RendersEveryCaseByteForByte) {
  const ordered_json file = cases_file();
  ASSERT_GE(file["cases"].size(), 10u);
  for (const auto& c : file["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    ChatOptions options;
    options.add_generation_prompt = c.value("add_generation_prompt", false);
    options.add_vision_id = c.value("add_vision_id", false);
    const std::string rendered = render_chat(parse_chat_template_kind(c["template"].get<std::string>()),
                                             parse_chat_request(c["request"]), options);
    EXPECT_EQ(rendered, c["expected"].get<std::string>());
  }
}

TEST(TokenizerChatTemplate, RejectsWhatTheJinjaTemplateWouldRaiseOn) {
  // Held by name: a range-for over a member of a temporary reads the temporary after it is destroyed.
  const ordered_json file = cases_file();
  for (const auto& c : file["errors"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    try {
      render_chat(parse_chat_template_kind(c["template"].get<std::string>()), parse_chat_request(c["request"]), {});
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c["message"].get<std::string>()), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(parse_chat_template_kind("llama3"), UsageError);
}

TEST(TokenizerChatTemplate, RenderedPromptTokenizesWithSpecialTokens) {
  const Tokenizer tokenizer = Tokenizer::load(test::shared_dir() / "tokenizer");
  ChatOptions options;
  options.add_generation_prompt = true;
  const std::string prompt = render_chat(ChatTemplateKind::kQwen2_5Vl,
                                         parse_chat_request(ordered_json::parse(
                                             R"({"messages":[{"role":"user","content":"<image>Hi"}],"images":["a"]})")),
                                         options);
  const std::vector<TokenId> ids = tokenizer.encode(prompt);
  // <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>...
  ASSERT_GE(ids.size(), 12u);
  EXPECT_EQ(ids.front(), *tokenizer.token_id("<|im_start|>"));
  const auto count = [&](const char* token) { return std::count(ids.begin(), ids.end(), *tokenizer.token_id(token)); };
  EXPECT_EQ(count("<|im_start|>"), 3);
  EXPECT_EQ(count("<|im_end|>"), 2);
  EXPECT_EQ(count("<|vision_start|>"), 1);
  EXPECT_EQ(count("<|image_pad|>"), 1);
  EXPECT_EQ(count("<|vision_end|>"), 1);
  EXPECT_EQ(tokenizer.decode(ids), prompt);
}

TEST(TokenizerChatTemplate, PythonJsonDumpsMatchesJsonDumps) {
  // Values as Python's json.dumps(..., ensure_ascii=False) prints them.
  EXPECT_EQ(python_json_dumps(ordered_json::parse(R"({"b": 1, "a": [true, null, "x\ny\u0001\"\\é"]})")),
            "{\"b\": 1, \"a\": [true, null, \"x\\ny\\u0001\\\"\\\\é\"]}");
  EXPECT_EQ(python_json_dumps(ordered_json::parse("[1.0, 0.5, 1e-05, 1e16, 123456.789, -2.5e-7, 0.0001]")),
            "[1.0, 0.5, 1e-05, 1e+16, 123456.789, -2.5e-07, 0.0001]");
  EXPECT_EQ(python_json_dumps(ordered_json::parse("{}")), "{}");
  EXPECT_EQ(python_json_dumps(ordered_json::parse("[]")), "[]");
}

}  // namespace
}  // namespace vlmforge::tokenizer
