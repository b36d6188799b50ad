// `vlmforge tokenize` end to end with the real Qwen2 tokenizer.json.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace vlmforge::test {
namespace {

std::string tokenizer_dir() { return (shared_dir() / "tokenizer").string(); }

// Runs `vlmforge tokenize ARGS` through the shell with `input` on stdin.
CommandResult run_with_stdin(const std::string& args, const std::string& input) {
  TempDir dir;
  { std::ofstream(dir / "in", std::ios::binary) << input; }
  const std::string command = "'" + vlmforge_binary().string() + "' tokenize " + args + " < '" + (dir / "in").string() +
                              "' 2>'" + (dir / "err").string() + "'";
  CommandResult result{0, "", ""};
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return {-1, "", "popen failed"};
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(dir / "err");
  result.err.assign(std::istreambuf_iterator<char>(err), {});
  return result;
}

TEST(TokenizeCli, PrintsIdsTokensAndCount) {
  const auto r = run_vlmforge({"tokenize", "--model", tokenizer_dir(), "Hello, world!"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ids: 9707 11 1879 0\ntokens: \"Hello\" \",\" \"Ġworld\" \"!\"\ncount: 4\n");
}

TEST(TokenizeCli, JsonOutputAndTokenizerJsonPath) {
  const auto r = run_vlmforge({"tokenize", "--model", tokenizer_dir() + "/tokenizer.json", "--json", "<|im_end|>hi"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto out = nlohmann::json::parse(r.out);
  EXPECT_EQ(out["ids"], nlohmann::json({151645, 6023}));
  EXPECT_EQ(out["tokens"], nlohmann::json({"<|im_end|>", "hi"}));
  EXPECT_EQ(out["count"], 2);
}

TEST(TokenizeCli, DecodeAndSkipSpecialTokens) {
  auto r = run_vlmforge({"tokenize", "--model", tokenizer_dir(), "--decode", "151644, 9707 11 1879 0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>Hello, world!");
  r = run_vlmforge({"tokenize", "--model", tokenizer_dir(), "--decode", "--skip-special-tokens", "[151644, 9707]"});
  EXPECT_EQ(r.out, "Hello");
  r = run_vlmforge({"tokenize", "--model", tokenizer_dir(), "--decode", "999999999"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not in the vocabulary"), std::string::npos) << r.err;
}

// 4294967297 used to be cut to 32 bits (token 1, '"') and decoded without a word.
TEST(TokenizeCli, DecodeRefusesIdsOutOfRange) {
  for (const char* ids : {"[9707, 4294967297]", "9707 4294967297", "-1", "[2147483648]"}) {
    const auto r = run_vlmforge({"tokenize", "--model", tokenizer_dir(), "--decode", ids});
    EXPECT_EQ(r.exit_code, 1) << ids << ": " << r.out;
    EXPECT_NE(r.err.find("is not a token id"), std::string::npos) << ids << ": " << r.err;
  }
  const auto r = run_with_stdin("--model '" + tokenizer_dir() + "' --jsonl --decode", "[9707]\n[4294967297]\n");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.err.find("stdin:2: 4294967297 is not a token id"), std::string::npos) << r.err;
}

TEST(TokenizeCli, ChatRendersTheTemplateThenEncodes) {
  const auto r = run_vlmforge({"tokenize", "--model", tokenizer_dir(), "--chat", "--json", "--template", "qwen2.5-vl",
                               R"({"messages":[{"role":"user","content":"<image>Hi"}],"images":["a.png"]})"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto out = nlohmann::json::parse(r.out);
  EXPECT_EQ(out["text"],
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(out["ids"].size(), out["count"].get<size_t>());
}

TEST(TokenizeCli, JsonlEncodesAndDecodesLineByLine) {
  auto r = run_with_stdin("--model '" + tokenizer_dir() + "' --jsonl", "\"Hello, world!\"\n\"你好世界\"\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[9707,11,1879,0]\n[108386,99489]\n");
  r = run_with_stdin("--model '" + tokenizer_dir() + "' --jsonl --decode", "[9707,11,1879,0]\n[108386,99489]\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "\"Hello, world!\"\n\"你好世界\"\n");
  r = run_with_stdin("--model '" + tokenizer_dir() + "' --jsonl", "\"ok\"\nnot json\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("stdin:2"), std::string::npos) << r.err;
}

TEST(TokenizeCli, InvalidUtf8IsReplacedOrRejectedWithStrict) {
  // "ab\xFFcd" -> "ab\uFFFDcd"
  auto r = run_with_stdin("--model '" + tokenizer_dir() + "' --ids-only", std::string("ab\xFF" "cd"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto replaced = run_vlmforge({"tokenize", "--model", tokenizer_dir(), "--ids-only", "ab\xEF\xBF\xBD" "cd"});
  EXPECT_EQ(r.out, replaced.out);
  r = run_with_stdin("--model '" + tokenizer_dir() + "' --strict", std::string("ab\xFF" "cd"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not valid UTF-8 at byte offset 2"), std::string::npos) << r.err;
}

TEST(TokenizeCli, StreamedStdinEqualsWholeText) {
  std::string text;
  for (int i = 0; i < 40000; ++i) text += "line " + std::to_string(i) + ": 你好, world!\n";  // > 1 MiB chunks
  TempDir dir;
  const auto streamed = run_with_stdin("--model '" + tokenizer_dir() + "' --ids-only", text);
  const auto whole = run_with_stdin("--model '" + tokenizer_dir() + "' --jsonl", nlohmann::json(text).dump() + "\n");
  ASSERT_EQ(streamed.exit_code, 0) << streamed.err;
  std::string joined;
  for (const auto& id : nlohmann::json::parse(whole.out)) joined += (joined.empty() ? "" : " ") + id.dump();
  EXPECT_EQ(streamed.out, joined + "\n");
}

TEST(TokenizeCli, UsageAndModelErrors) {
  auto r = run_vlmforge({"tokenize", "--model", tokenizer_dir(), "--decode", "--chat", "1"});
  EXPECT_EQ(r.exit_code, 2);
  r = run_vlmforge({"tokenize", "--model", tokenizer_dir(), "--chat", "--template", "llama", "[]"});
  EXPECT_EQ(r.exit_code, 2);
  TempDir dir;
  r = run_vlmforge({"tokenize", "--model", dir.path().string(), "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no tokenizer.json"), std::string::npos) << r.err;
  { std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})"; }
  r = run_vlmforge({"tokenize", "--model", dir.path().string(), "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unsupported tokenizer"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vlmforge::test
