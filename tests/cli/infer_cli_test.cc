// infer and score end to end on the shared tiny Qwen2 checkpoints (which carry the real tokenizer).
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/json_file.h"
#include "support/test_support.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

fs::path tiny(const char* name) { return shared_dir() / "golden" / name; }

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

class InferCli : public ::testing::Test {
 protected:
  void SetUp() override {
    VLMFORGE_REQUIRE_SHARED(tiny("qwen2-tiny-f32") / "golden.json");
  }
};

TEST_F(InferCli, ScoreMatchesTheGoldenPromptLogprobs) {
  const json golden = read_json_file(tiny("qwen2-tiny-f32") / "golden.json");
  const json& c = golden["cases"][2];
  std::string ids;
  for (const auto& id : c["ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(id.get<int>());
  const auto r = run_vlmforge({"score", "--model", tiny("qwen2-tiny-f32").string(), "--ids", ids, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json out = json::parse(r.out);
  ASSERT_EQ(out["prompt_logprobs"].size(), c["prompt_logprobs"].size());
  double sum = 0;
  for (size_t i = 0; i < c["prompt_logprobs"].size(); ++i) {
    EXPECT_NEAR(out["prompt_logprobs"][i].get<double>(), c["prompt_logprobs"][i].get<double>(), 1e-4) << i;
    sum += c["prompt_logprobs"][i].get<double>();
  }
  EXPECT_EQ(out["next_top"][0][0], c["next_top5"][0][0]);
  EXPECT_NEAR(out["perplexity"].get<double>(), std::exp(-sum / c["prompt_logprobs"].size()), 1e-2);
}

TEST_F(InferCli, BatchedDecodingGivesTheSameAnswersAsOneAtATime) {
  const std::string prompts = "Hello, who are you?\n请描述这张图片\ndef f(x): return x\n";
  auto run_batch = [&](const std::string& batch) {
    const auto r = run_vlmforge({"infer", "--model", tiny("qwen2-tiny-bf16").string(), "--temperature", "0",
                                 "--max_new_tokens", "6", "--max_batch_size", batch, "--json"},
                                {.stdin_text = prompts});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("decode"), std::string::npos) << "stats line on stderr: " << r.err;
    return json_lines(r.out);
  };
  const auto one = run_batch("1"), three = run_batch("3");
  ASSERT_EQ(one.size(), 3u);
  ASSERT_EQ(three.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(one[i]["response"], three[i]["response"]) << i;
    EXPECT_EQ(one[i]["completion_tokens"], 6);
    EXPECT_EQ(one[i]["finish_reason"], "length");
  }
}

TEST_F(InferCli, StopWordsEndTheAnswerAndAreLeftOut) {
  const auto model = tiny("qwen2-tiny-f32").string();
  const auto full = run_vlmforge({"infer", "--model", model, "--query", "Hello", "--temperature", "0",
                                  "--max_new_tokens", "12", "--json"});
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const std::string text = json::parse(full.out)["response"];
  ASSERT_GE(text.size(), 4u);
  const std::string stop = text.substr(text.size() / 2, 2);
  const auto cut = run_vlmforge({"infer", "--model", model, "--query", "Hello", "--temperature", "0",
                                 "--max_new_tokens", "12", "--stop_words", stop, "--json"});
  ASSERT_EQ(cut.exit_code, 0) << cut.err;
  const json out = json::parse(cut.out);
  EXPECT_EQ(out["finish_reason"], "stop");
  EXPECT_EQ(out["response"].get<std::string>(), text.substr(0, text.find(stop)));
}

TEST_F(InferCli, ValDatasetWritesOneResultPerRowWithLabels) {
  TempDir dir;
  {
    std::ofstream rows(dir / "val.jsonl");
    rows << R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]})" << "\n";
    rows << R"({"query": "what is 2+2?", "response": "4"})" << "\n\n";
    rows << R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "name a color"}]})" << "\n";
  }
  const auto r = run_vlmforge({"infer", "--model", tiny("qwen2-tiny-f32").string(), "--val_dataset",
                               (dir / "val.jsonl").string(), "--result_path", (dir / "out.jsonl").string(),
                               "--max_new_tokens", "4", "--temperature", "0", "--max_batch_size", "2", "--logprobs",
                               "--top_logprobs", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(dir / "out.jsonl");
  std::stringstream text;
  text << in.rdbuf();
  const auto results = json_lines(text.str());
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0]["labels"], "hello!");
  EXPECT_EQ(results[1]["labels"], "4");
  EXPECT_TRUE(results[2]["labels"].is_null());
  EXPECT_EQ(results[2]["line"], 4);
  EXPECT_EQ(results[0]["timings"]["batch_rows"], 2);
  EXPECT_EQ(results[2]["timings"]["batch_rows"], 1);
  for (const auto& res : results) {
    EXPECT_GT(res["timings"]["batch_decode_seconds"].get<double>(), 0.0);
    EXPECT_EQ(res["logprobs"]["content"].size(), res["completion_tokens"].get<size_t>());
    EXPECT_EQ(res["logprobs"]["content"][0]["top_logprobs"].size(), 2u);
  }
  EXPECT_FALSE(fs::exists(dir / "out.jsonl.tmp"));

  std::ofstream(dir / "bad.jsonl") << "{\"messages\": []}\n";
  const auto bad = run_vlmforge({"infer", "--model", tiny("qwen2-tiny-f32").string(), "--val_dataset",
                                 (dir / "bad.jsonl").string()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("bad.jsonl:1"), std::string::npos) << bad.err;
}

TEST_F(InferCli, LogprobsCarryTokenIds) {
  const auto r = run_vlmforge({"infer", "--model", tiny("qwen2-tiny-f32").string(), "--query", "hello", "--max_new_tokens",
                               "3", "--temperature", "0", "--logprobs", "--top_logprobs", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json content = json::parse(r.out)["logprobs"]["content"];
  ASSERT_FALSE(content.empty()) << r.out;
  for (const auto& entry : content) {
    // Token bytes alone cannot tell ids apart that have no text (every id past the tokenizer shows as "").
    ASSERT_TRUE(entry.contains("id")) << entry;
    EXPECT_EQ(entry["id"], entry["top_logprobs"][0]["id"]) << entry;  // greedy: the most likely token
    EXPECT_NE(entry["top_logprobs"][0]["id"], entry["top_logprobs"][1]["id"]) << entry;
  }
}

TEST_F(InferCli, RejectsPromptsLongerThanMaxModelLen) {
  const auto r = run_vlmforge({"infer", "--model", tiny("qwen2-tiny-f32").string(), "--query", "a long question",
                               "--max_model_len", "8"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("max_model_len"), std::string::npos) << r.err;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// One bad row used to abort the run and discard every answer (left in a .tmp). Now each bad row
// gets a result line with an "error", the others are answered, and the exit code is 1.
TEST_F(InferCli, BadDatasetRowsGetErrorLinesAndTheRunGoesOn) {
  TempDir dir;
  std::string long_query;
  for (int i = 0; i < 80; ++i) long_query += "word ";
  std::ofstream(dir / "val.jsonl") << R"({"messages": [{"role": "user", "content": "hi"}]})" "\n"
                                   << "not json\n"
                                   << R"({"messages": []})" "\n"
                                   << R"({"query": ")" << long_query << R"("})" "\n"
                                   << R"({"query": "what is 2+2?", "response": "4"})" "\n";
  // Batches of 3: rows 4 and 5 share a batch, so the too-long row 4 must fail without taking 5 along.
  const auto r = run_vlmforge({"infer", "--model", tiny("qwen2-tiny-f32").string(), "--val_dataset",
                               (dir / "val.jsonl").string(), "--result_path", (dir / "out.jsonl").string(),
                               "--max_new_tokens", "4", "--temperature", "0", "--max_batch_size", "3",
                               "--max_model_len", "64"},
                              {.timeout_seconds = 300});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("3 of them failed"), std::string::npos) << r.err;
  const auto results = json_lines(read_text(dir / "out.jsonl"));
  ASSERT_EQ(results.size(), 5u) << r.err;
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(results[i]["line"], i + 1);
  for (size_t i : {0, 4}) {
    EXPECT_FALSE(results[i].contains("error")) << results[i];
    EXPECT_EQ(results[i]["completion_tokens"], 4) << results[i];
  }
  EXPECT_EQ(results[4]["labels"], "4");
  const std::pair<size_t, const char*> errors[] = {{1, "val.jsonl:2: invalid JSON"}, {2, "val.jsonl:3"}, {3, "max_model_len"}};
  for (const auto& [i, expected] : errors) {
    ASSERT_TRUE(results[i].contains("error")) << results[i];
    EXPECT_NE(results[i]["error"].get<std::string>().find(expected), std::string::npos) << results[i];
    EXPECT_FALSE(results[i].contains("response"));
  }
  EXPECT_FALSE(fs::exists(dir / ("out.jsonl.tmp")));
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
}

// --result_path equal to the dataset used to overwrite it (exit 0); a FIFO or a symbolic link
// would be replaced by the rename. All are refused before the model loads, the paths untouched.
TEST_F(InferCli, ResultPathMustNotReplaceTheDatasetOrANonRegularFile) {
  TempDir dir;
  const std::string dataset = R"({"query": "hi"})" "\n";
  std::ofstream(dir / "val.jsonl") << dataset;
  ASSERT_EQ(mkfifo((dir / "pipe").c_str(), 0644), 0);
  fs::create_symlink(dir / "val.jsonl", dir / "link.jsonl");
  for (const auto& [out, expected] : {std::pair{"val.jsonl", "is the input"}, std::pair{"pipe", "FIFO"},
                                      std::pair{"link.jsonl", "symbolic link"}}) {
    const auto r = run_vlmforge({"infer", "--model", tiny("qwen2-tiny-f32").string(), "--val_dataset",
                                 (dir / "val.jsonl").string(), "--result_path", (dir / out).string(),
                                 "--max_new_tokens", "2"},
                                {.timeout_seconds = 120});
    EXPECT_EQ(r.exit_code, 2) << out << ": " << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << out << ": " << r.err;
  }
  EXPECT_EQ(read_text(dir / "val.jsonl"), dataset);
  EXPECT_TRUE(fs::is_fifo(fs::symlink_status(dir / "pipe")));
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(dir / "link.jsonl")));
}

// Ids past 2^31 - 1 (and 2^32, which a 32-bit cast would turn into 0) are refused, not truncated.
TEST_F(InferCli, ScoreRefusesTokenIdsOutOfRange) {
  for (const char* ids : {"151644,4294967296", "4294967297", "-1", "[9707, 99999999999]"}) {
    const auto r = run_vlmforge({"score", "--model", tiny("qwen2-tiny-f32").string(), "--ids", ids});
    EXPECT_EQ(r.exit_code, 2) << ids << ": " << r.err;
    EXPECT_NE(r.err.find("is not a token id"), std::string::npos) << ids << ": " << r.err;
  }
}

}  // namespace
}  // namespace vlmforge::test
