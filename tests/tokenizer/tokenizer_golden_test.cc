// The golden corpus: ../shared/golden/tokenizer/strings.json encoded with the real Qwen2 tokenizer
// must give ids.json exactly (ids from @lenml/tokenizers, a Hugging Face-compatible
// implementation; special tokens in the text recognised, none added), and decoding must give back
// the NFC form of every string.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "support/test_support.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace vlmforge::tokenizer {
namespace {

const Tokenizer& qwen_tokenizer() {
  static const Tokenizer kTokenizer = Tokenizer::load(test::shared_dir() / "tokenizer" / "tokenizer.json");
  return kTokenizer;
}

struct GoldenCase {
  std::string text;
  std::vector<TokenId> ids;
};

std::vector<GoldenCase> golden_cases() {
  const auto dir = test::shared_dir() / "golden" / "tokenizer";
  const nlohmann::json strings = read_json_file(dir / "strings.json");
  const nlohmann::json ids = read_json_file(dir / "ids.json");
  EXPECT_EQ(strings.size(), ids.size());
  std::vector<GoldenCase> cases;
  for (size_t i = 0; i < std::min(strings.size(), ids.size()); ++i) {
    cases.push_back({strings[i].get<std::string>(), ids[i].get<std::vector<TokenId>>()});
  }
  return cases;
}

TEST(TokenizerGolden, EncodesEveryGoldenStringExactly) {
  const auto cases = golden_cases();
  ASSERT_GE(cases.size(), 100u);
  size_t matched = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto ids = qwen_tokenizer().encode(cases[i].text);
    EXPECT_EQ(ids, cases[i].ids) << "golden string #" << i << ": " << nlohmann::json(cases[i].text).dump();
    matched += ids == cases[i].ids;
  }
  EXPECT_EQ(matched, cases.size());
}

TEST(TokenizerGolden, DecodeOfEncodeIsTheNfcText) {
  for (const auto& c : golden_cases()) {
    EXPECT_EQ(qwen_tokenizer().decode(qwen_tokenizer().encode(c.text)), nfc(c.text))
        << nlohmann::json(c.text).dump();
    EXPECT_EQ(qwen_tokenizer().decode(c.ids), nfc(c.text)) << nlohmann::json(c.text).dump();
  }
}

TEST(TokenizerGolden, WholeCorpusInOneTextEncodesAsThePiecesJoined) {
  // Each string wrapped as "X" + s + "\n", so that "\n" + an ASCII letter joins them, a place
  // safe_split_point allows cutting at: encoding the whole, or chunk by chunk at those cuts, must
  // both equal the pieces encoded one by one.
  std::string whole;
  std::vector<TokenId> expected;
  for (const auto& c : golden_cases()) {
    const std::string piece = "X" + c.text + "\n";
    whole += piece;
    auto ids = qwen_tokenizer().encode(piece);
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(qwen_tokenizer().encode(whole), expected);

  std::vector<TokenId> chunked;
  std::string_view rest = whole;
  while (!rest.empty()) {
    const size_t cut = qwen_tokenizer().safe_split_point(rest.substr(0, std::min<size_t>(rest.size(), 700)));
    const size_t take = cut == 0 ? rest.size() : cut;
    qwen_tokenizer().encode_append(rest.substr(0, take), chunked);
    rest.remove_prefix(take);
  }
  EXPECT_EQ(chunked, expected);
}

TEST(TokenizerGolden, EncodeWithALimitIsTheFullEncodeOrAPrefixLongerThanTheLimit) {
  VLMFORGE_REQUIRE_SHARED(test::shared_dir() / "tokenizer" / "tokenizer.json");
  std::string whole;
  for (const auto& c : golden_cases()) {
    ASSERT_EQ(qwen_tokenizer().encode(c.text, c.ids.size()), c.ids) << nlohmann::json(c.text).dump();
    whole += c.text;
  }
  const std::vector<TokenId> full = qwen_tokenizer().encode(whole);
  ASSERT_GT(full.size(), 2000u);
  for (const size_t limit : {size_t{0}, size_t{1}, size_t{7}, size_t{500}, full.size() - 1}) {
    const std::vector<TokenId> cut = qwen_tokenizer().encode(whole, limit);
    ASSERT_GT(cut.size(), limit);
    ASSERT_LE(cut.size(), full.size());
    EXPECT_TRUE(std::equal(cut.begin(), cut.end(), full.begin())) << "limit " << limit;
  }
  EXPECT_EQ(qwen_tokenizer().encode(whole, full.size()), full);
  EXPECT_EQ(qwen_tokenizer().encode(whole, full.size() + 1000), full);
}

TEST(TokenizerGolden, EncodeWithALimitStopsEarlyOnAHugeText) {
  VLMFORGE_REQUIRE_SHARED(test::shared_dir() / "tokenizer" / "tokenizer.json");
  // 50 MB of prose, some 15 M tokens: under a limit of 1000 only the first 64 KiB is looked at,
  // and only a chunk of pieces past the limit split and BPE-encoded.
  const std::string line = "The quick brown fox, 42 times, jumps over the lazy dog's kennel.\n";
  std::string huge;
  huge.reserve(50'000'000 + line.size());
  while (huge.size() < 50'000'000) huge += line;
  auto seconds_of = [](auto&& work) {
    const auto start = std::chrono::steady_clock::now();
    work();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::vector<TokenId> cut, full;
  const Tokenizer& tokenizer = qwen_tokenizer();  // loaded before the clocks start (ctest runs each test alone)
  const double limited_seconds = seconds_of([&] { cut = tokenizer.encode(huge, 1000); });
  const double full_seconds = seconds_of([&] { full = tokenizer.encode(huge); });
  EXPECT_GT(cut.size(), 1000u);
  EXPECT_LT(cut.size(), 1000u + 4 * 1024) << "more than one chunk of pieces was encoded past the limit";
  ASSERT_LE(cut.size(), full.size());
  EXPECT_TRUE(std::equal(cut.begin(), cut.end(), full.begin()));
  std::printf("50 MB: limited encode %.2f ms, full encode %.0f ms (%zu ids)\n", limited_seconds * 1e3, full_seconds * 1e3,
              full.size());
  EXPECT_LT(limited_seconds, full_seconds / 4);
}

TEST(TokenizerGolden, StreamingDetokenizerMatchesDecodeAndNeverEmitsBrokenUtf8) {
  for (const auto& c : golden_cases()) {
    IncrementalDetokenizer stream(qwen_tokenizer());
    std::string joined;
    for (const TokenId id : c.ids) {
      const std::string chunk = stream.push(id);
      // Every chunk is complete UTF-8 on its own.
      EXPECT_EQ(find_invalid_utf8(chunk), std::string::npos) << nlohmann::json(c.text).dump();
      joined += chunk;
    }
    joined += stream.finish();
    EXPECT_EQ(joined, qwen_tokenizer().decode(c.ids));
  }
}

}  // namespace
}  // namespace vlmforge::tokenizer
