// Bad input: ill-formed UTF-8, broken or unsupported tokenizer.json files, and seeded random
// fuzzing of both the tokenizer.json reader and the encoder.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "support/test_support.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace vlmforge::tokenizer {
namespace {

using nlohmann::json;

const Tokenizer& qwen() {
  static const Tokenizer kTokenizer = Tokenizer::load(test::shared_dir() / "tokenizer");
  return kTokenizer;
}

std::string replaced(std::string_view bytes) {
  std::string out;
  append_replacing_invalid_utf8(bytes, out, false);
  return out;
}

TEST(TokenizerUtf8, ReplacesMaximalSubpartsLikePython) {
  // Expectations are bytes.decode("utf-8", "replace") in Python 3.
  const std::string r(kReplacementCharacter);
  EXPECT_EQ(replaced("a\xFF" "b"), "a" + r + "b");
  EXPECT_EQ(replaced("\xE4\xBD"), r);                          // truncated 3-byte sequence: one U+FFFD
  EXPECT_EQ(replaced("\xE4\xBD" "a"), r + "a");
  EXPECT_EQ(replaced("\xC0\xAF"), r + r);                      // overlong: each byte
  EXPECT_EQ(replaced("\xED\xA0\x80"), r + r + r);              // surrogate
  EXPECT_EQ(replaced("\xF4\x90\x80\x80"), r + r + r + r);      // above U+10FFFF
  EXPECT_EQ(replaced("\xF0\x9F\x98"), r);                      // truncated emoji
  EXPECT_EQ(replaced("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");  // valid emoji
  EXPECT_EQ(find_invalid_utf8("ok \xE4\xBD\xA0"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("ok \xE4\xBD"), 3u);
}

TEST(TokenizerEncode, InvalidUtf8PolicyAndEmptyInput) {
  EXPECT_EQ(qwen().encode("ab\xFF" "cd"), qwen().encode("ab\xEF\xBF\xBD" "cd"));
  EXPECT_THROW(qwen().encode("ab\xFF" "cd", InvalidUtf8::kError), Error);
  EXPECT_TRUE(qwen().encode("").empty());
}

TEST(TokenizerEncode, ALimitedEncodeTakenInChunksIsTheWholeEncodeAndReportsTheSameOffset) {
  // Past 64 KiB a limited encode takes the text in pieces cut after "\n" + ASCII: special tokens,
  // CJK, combining marks (NFC), numbers and ill-formed bytes on lines of every length must come
  // out as one encode of the whole gives them.
  const std::vector<std::string> lines{"<|im_start|>user", "Hello, world! 12345", "  indented\tcode();",
                                       "\xE4\xB8\xAD\xE6\x96\x87 text", "cafe\xCC\x81 au lait", "bad \xFF byte",
                                       "", "<|im_end|>", "x"};
  std::string text;
  for (size_t i = 0; text.size() < (300u << 10); ++i) text += lines[i % lines.size()] + std::string(i % 7, ' ') + "\n";
  const std::vector<TokenId> whole = qwen().encode(text);
  EXPECT_EQ(qwen().encode(text, whole.size()), whole);
  EXPECT_EQ(qwen().encode(text, whole.size() + 1), whole);
  // Ill-formed input under --strict: the offset is the whole text's, whichever piece finds it.
  std::string strict_text = text;
  for (char& c : strict_text)
    if (c == '\xFF') c = '?';
  size_t at = 200u << 10;  // an ASCII byte, so the bytes before it stay well-formed
  while (static_cast<unsigned char>(strict_text[at]) >= 0x80) ++at;
  strict_text[at] = '\xFF';
  const std::string want = test::error_of([&] { qwen().encode(strict_text, InvalidUtf8::kError); });
  EXPECT_NE(want.find("byte offset " + std::to_string(at) + " "), std::string::npos) << want;
  EXPECT_EQ(test::error_of([&] { qwen().encode(strict_text, 10'000'000, InvalidUtf8::kError); }), want);
}

TEST(TokenizerEncode, HugeWhitespaceAndLetterRunsStayCorrect) {
  // A 1 MB space run exercises the regex lookahead far beyond the JIT stack; a long letter run the
  // BPE heap. Both must round-trip.
  const std::string spaces(1 << 20, ' ');
  EXPECT_EQ(qwen().decode(qwen().encode(spaces + "x")), spaces + "x");
  std::string letters;
  for (int i = 0; i < 50000; ++i) letters += "中文";
  EXPECT_EQ(qwen().decode(qwen().encode(letters)), letters);
}

TEST(TokenizerDecode, SkipSpecialTokensAndUnknownIds) {
  const auto ids = qwen().encode("<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(qwen().decode(ids, true), "user\nhi");
  EXPECT_EQ(qwen().decode(ids, false), "<|im_start|>user\nhi<|im_end|>");
  const std::vector<TokenId> bad{-1};
  EXPECT_THROW(qwen().decode(bad), Error);
  EXPECT_EQ(qwen().token_text(*qwen().token_id("Ġworld")), "Ġworld");
  EXPECT_TRUE(qwen().is_special(*qwen().token_id("<|endoftext|>")));
}

TEST(TokenizerDetokenizer, HoldsBackSplitCharactersAndSkipsSpecials) {
  // "😀" is 4 bytes; byte-level tokens split it across ids.
  const std::string text = "<|im_start|>a😀b😀😀";
  const auto ids = qwen().encode(text);
  IncrementalDetokenizer stream(qwen(), /*skip_special_tokens=*/true);
  std::string joined;
  for (const TokenId id : ids) {
    const std::string chunk = stream.push(id);
    EXPECT_EQ(find_invalid_utf8(chunk), std::string::npos);
    joined += chunk;
  }
  joined += stream.finish();
  EXPECT_EQ(joined, "a😀b😀😀");
  // An unfinished character is flushed as U+FFFD by finish().
  const std::vector<TokenId> half = qwen().encode("\xF0\x93\x80\x80");  // U+13000: byte tokens
  ASSERT_GT(half.size(), 1u);
  IncrementalDetokenizer cut(qwen());
  EXPECT_EQ(cut.push(half[0]), "");
  EXPECT_GT(cut.pending_bytes(), 0u);
  EXPECT_EQ(cut.finish(), std::string(kReplacementCharacter));
}

// A tiny valid byte-level tokenizer.json to mutate.
json tiny_tokenizer() {
  json vocab = json::object();
  char32_t next_unprintable = 0x100;
  for (int b = 0; b < 256; ++b) {
    // byte-level spelling of byte b (GPT-2's bytes_to_unicode)
    std::string spelling;
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    append_utf8(printable ? static_cast<char32_t>(b) : next_unprintable++, spelling);
    vocab[spelling] = b;
  }
  vocab["ab"] = 256;
  return json{{"version", "1.0"},
              {"added_tokens", json::array({{{"id", 257}, {"content", "<s>"}, {"special", true}}})},
              {"normalizer", {{"type", "NFC"}}},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b"})}}}};
}

TEST(TokenizerJson, TinyTokenizerWorksWithStringMerges) {
  const Tokenizer tok = Tokenizer::from_json(tiny_tokenizer().dump(), "tiny.json");
  EXPECT_EQ(tok.encode("ab<s>b"), (std::vector<TokenId>{256, 257, 'b'}));
  EXPECT_EQ(tok.decode(tok.encode("xab é")), "xab é");
}

TEST(TokenizerJson, ClearErrorsForMissingAndUnsupportedFields) {
  const auto expect_error = [](const json& doc, const std::string& fragment) {
    try {
      Tokenizer::from_json(doc.dump(), "t.json");
      ADD_FAILURE() << "no error; wanted " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("t.json"), std::string::npos) << e.what();
    }
  };
  json doc = tiny_tokenizer();
  doc.erase("model");
  expect_error(doc, "missing field \"model\"");
  doc = tiny_tokenizer();
  doc["model"].erase("merges");
  expect_error(doc, "model.merges");
  doc = tiny_tokenizer();
  doc["model"]["type"] = "Unigram";
  expect_error(doc, "unsupported tokenizer: model type Unigram");
  doc = tiny_tokenizer();
  doc["normalizer"] = {{"type", "Lowercase"}};
  expect_error(doc, "unsupported tokenizer: normalizer Lowercase");
  doc = tiny_tokenizer();
  doc["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_error(doc, "unsupported tokenizer");
  doc = tiny_tokenizer();
  doc["model"]["merges"] = json::array({"a b c"});
  expect_error(doc, "model.merges[0]");
  doc = tiny_tokenizer();
  doc["model"]["merges"] = json::array({json::array({"a", "zz"})});
  expect_error(doc, "not in model.vocab");
  doc = tiny_tokenizer();
  doc["added_tokens"][0].erase("content");
  expect_error(doc, "added_tokens[0].content");
  try {
    Tokenizer::from_json("{\n  \"model\": [1,\n", "broken.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("broken.json:"), std::string::npos) << e.what();
  }
}

TEST(TokenizerFuzz, RandomTokenizerJsonMutationsNeverCrash) {
  const std::string base = tiny_tokenizer().dump();
  std::mt19937 rng(1234);
  for (int round = 0; round < 300; ++round) {
    std::string doc = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % doc.size();
      switch (rng() % 3) {
        case 0: doc[pos] = static_cast<char>(rng() % 256); break;
        case 1: doc.erase(pos, 1 + rng() % 8); break;
        default: doc.insert(pos, 1, "{}[]\",:0a"[rng() % 9]); break;
      }
    }
    try {
      const Tokenizer tok = Tokenizer::from_json(doc, "fuzz.json");
      const auto ids = tok.encode("fuzz ab <s> é");
      (void)tok.decode(ids);
    } catch (const Error&) {
      // Rejecting with a message is fine; crashing or another exception type is not.
    }
  }
}

TEST(TokenizerFuzz, RandomBytesEncodeAndRoundTrip) {
  std::mt19937 rng(42);
  const std::vector<std::string> fragments{"<|im_start|>", "<|im_end|>", " ", "\n", "é", "e\xCC\x81", "中", "😀", "'s", "123"};
  for (int round = 0; round < 2000; ++round) {
    std::string text;
    const size_t length = rng() % 64;
    for (size_t i = 0; i < length; ++i) {
      if (rng() % 3 == 0) {
        text += fragments[rng() % fragments.size()];
      } else {
        text.push_back(static_cast<char>(rng() % 256));
      }
    }
    const std::vector<TokenId> ids = qwen().encode(text);
    const std::string repaired = replaced(text);
    ASSERT_EQ(qwen().decode(ids), nfc(repaired)) << json(repaired).dump();
    if (find_invalid_utf8(text) != std::string_view::npos) {
      EXPECT_THROW(qwen().encode(text, InvalidUtf8::kError), Error);
    } else {
      EXPECT_EQ(qwen().encode(text, InvalidUtf8::kError), ids);
    }
  }
}

TEST(TokenizerFuzz, HandMatchedQwen2SplitEqualsPcre2) {
  // Wrapped in a group the regex means the same but is not recognised, so PCRE2 does every match.
  const RegexSplitter fast(kQwen2SplitPattern, "fast");
  const RegexSplitter reference("(?:" + std::string(kQwen2SplitPattern) + ")", "reference");
  // Every class the hand matcher knows, the characters it leaves to PCRE2, and contractions.
  const std::vector<std::string> fragments{
      "a", "Zq", "7", " ", "  ", "\t", "\n", "\r\n", "\v", "\f", "\x1c", "\x7f", "'", "'s", "'S", "'ll", "'Re",
      "'ve", "'x", "'\xC5\xBF", "\xC5\xBF", "(", ".", "!?", "\xE4\xB8\xAD", "\xE9\xBE\xA5", "\xEF\xBC\x8C",
      "\xE3\x80\x82", "\xE3\x80\x80", "\xC3\xA9", "\xF0\x9F\x98\x80", "\xC2\xA0", "\xE2\x80\xA8",
      "\xD9\xA3", "\xE2\x85\xAB", "\xEF\xBC\x91", "\xE3\x81\x82"};
  std::mt19937 rng(7);
  for (int round = 0; round < 20000; ++round) {
    std::string text;
    for (size_t i = 0, n = 1 + rng() % 12; i < n; ++i) text += fragments[rng() % fragments.size()];
    std::vector<std::string_view> got, want;
    fast.split(text, got);
    reference.split(text, want);
    ASSERT_EQ(got, want) << json(text).dump();
    // Split a few pieces at a time, each call resuming where the last stopped: the same pieces.
    for (const RegexSplitter* splitter : {&fast, &reference}) {
      std::vector<std::string_view> resumed;
      const size_t step = 1 + round % 3;
      for (size_t from = 0, calls = 0; from < text.size(); ++calls) {
        const size_t before = resumed.size();
        from = splitter->split(text, resumed, from, step);
        ASSERT_LE(resumed.size() - before, step + 1) << json(text).dump();  // a trailing gap may follow
        ASSERT_LE(calls, text.size()) << "no progress: " << json(text).dump();
      }
      ASSERT_EQ(resumed, want) << json(text).dump() << " " << step << " pieces at a time";
    }
  }
}

}  // namespace
}  // namespace vlmforge::tokenizer
