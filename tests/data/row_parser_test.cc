// check-data's row parser (simdjson with the nlohmann fallback for errors) and its duplicate index.
#include "data/row_parser.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <unordered_map>

#include "data/duplicate_index.h"
#include "util/error.h"

namespace vlmforge::data {
namespace {

const std::string kRow = R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]})";

uint64_t hash_of(RowParser& parser, const std::string& text) {
  const ParsedRow row = parser.parse(text, 1, 1);
  EXPECT_FALSE(row.syntax) << text;
  return row.hash;
}

TEST(DataRowParser, UsableRowIsNormalizedAndChecked) {
  RowParser parser;
  const ParsedRow row = parser.parse(R"({"conversations":[{"from":"human","value":"<image>q"},{"from":"gpt","value":"a</s>"}],"image":"x.png"})", 1, 1);
  ASSERT_FALSE(row.syntax);
  EXPECT_EQ(row.type_name, "object");
  EXPECT_EQ(row.normalized.format, RowFormat::kSharegpt);
  ASSERT_EQ(row.normalized.messages.size(), 2u);
  EXPECT_EQ(row.normalized.messages[0].role, "user");
  EXPECT_EQ(row.normalized.messages[1].text, "a</s>");
  ASSERT_EQ(row.normalized.media.size(), 1u);
  EXPECT_EQ(row.normalized.media[0].path, "x.png");
  EXPECT_EQ(row.facts.image_tags, 1u);
  EXPECT_EQ(row.facts.marked_turns, 1u);
  ASSERT_EQ(row.problems.size(), 1u);
  EXPECT_EQ(row.problems[0].code, FindingCode::kSingularImageKey);
}

TEST(DataRowParser, NonStringContentKeepsItsTypeAndJson) {
  RowParser parser;
  const ParsedRow row = parser.parse(
      R"({"messages":[{"role":"user","content":[{"type":"text","text":"q"}]},{"role":"assistant","content":null},{"role":"assistant"}]})", 1, 1);
  ASSERT_EQ(row.normalized.messages.size(), 3u);
  EXPECT_EQ(row.normalized.messages[0].content_type, "array");
  EXPECT_EQ(row.normalized.messages[0].content_json, R"([{"type":"text","text":"q"}])");
  EXPECT_EQ(row.normalized.messages[1].content_type, "missing");
  EXPECT_EQ(row.normalized.messages[2].content_type, "missing");
}

TEST(DataRowParser, SyntaxErrorsHaveNlohmannsPosition) {
  RowParser parser;
  // The row starts at line 7, column 3 of its file (a JSON-array element).
  const ParsedRow row = parser.parse("{\"a\": [1,\n  }", 7, 3);
  ASSERT_TRUE(row.syntax);
  EXPECT_EQ(row.syntax->code, FindingCode::kInvalidJson);
  EXPECT_EQ(row.syntax->line, 8u);
  EXPECT_EQ(row.syntax->column, 3u);
  EXPECT_NE(row.syntax->message.find("syntax error"), std::string::npos) << row.syntax->message;
}

TEST(DataRowParser, BadBytesAreInvalidJson) {
  RowParser parser;
  for (const std::string& text : {std::string("{\"a\":\"\xff\"}"), std::string("{\"a\":\"\xc3\"}"), std::string("{\"a\":\"x\0y\"}", 11),
                                 std::string("\0\0\0", 3), std::string(R"({"a":"\udc00"})"), std::string(R"({"a":"\ud800"})"),
                                 std::string("{\"a\":1e400}"), std::string("{\"a\":1} x"), std::string("{\"a\" 1}")}) {
    const ParsedRow row = parser.parse(text, 1, 1);
    ASSERT_TRUE(row.syntax) << text;
    EXPECT_EQ(row.syntax->code, FindingCode::kInvalidJson) << text;
    EXPECT_FALSE(row.syntax->message.empty());
  }
}

TEST(DataRowParser, IntegersBeyond64BitsAreJson) {
  // Python's json reads them; simdjson refuses them, so the row goes through nlohmann's serialization.
  RowParser parser;
  const ParsedRow row = parser.parse(R"({"id":123456789012345678901234567890,)" + kRow.substr(1), 1, 1);
  ASSERT_FALSE(row.syntax) << row.syntax->message;
  EXPECT_EQ(row.normalized.format, RowFormat::kMessages);
  EXPECT_TRUE(row.problems.empty());
}

TEST(DataRowParser, NestingLimitIsExact) {
  RowParser parser;
  auto nested = [](int levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  EXPECT_FALSE(parser.parse(nested(RowParser::kMaxDepth), 1, 1).syntax);
  const ParsedRow deep = parser.parse(nested(RowParser::kMaxDepth + 1), 1, 1);
  ASSERT_TRUE(deep.syntax);
  EXPECT_EQ(deep.syntax->code, FindingCode::kNestingTooDeep);
  auto around_one = [](int levels) { return std::string(levels, '[') + "1" + std::string(levels, ']'); };
  EXPECT_FALSE(parser.parse(around_one(RowParser::kMaxDepth), 1, 1).syntax);
  ASSERT_TRUE(parser.parse(around_one(RowParser::kMaxDepth + 1), 1, 1).syntax);
  EXPECT_EQ(parser.parse(around_one(RowParser::kMaxDepth + 1), 1, 1).syntax->code, FindingCode::kNestingTooDeep);
  // A million levels: refused without recursion.
  const ParsedRow very = parser.parse(nested(1 << 20), 1, 1);
  ASSERT_TRUE(very.syntax);
  EXPECT_EQ(very.syntax->code, FindingCode::kNestingTooDeep);
}

TEST(DataRowParser, RepeatedKeysLastCounts) {
  RowParser parser;
  const ParsedRow row = parser.parse(R"({"images":["a.png"],"messages":[],"images":[],"messages":)" + kRow.substr(12), 1, 1);
  ASSERT_FALSE(row.syntax);
  EXPECT_TRUE(row.normalized.media.empty());
  EXPECT_EQ(row.normalized.messages.size(), 2u);
}

TEST(DataRowParser, ParserServesHugeThenSmallRows) {
  RowParser parser;
  const std::string big = R"({"messages":[{"role":"user","content":")" + std::string(8 << 20, 'x') + R"("}]})";
  const ParsedRow huge = parser.parse(big, 1, 1);
  ASSERT_FALSE(huge.syntax);
  EXPECT_EQ(huge.normalized.messages[0].text->size(), size_t{8} << 20);
  const ParsedRow small = parser.parse(kRow, 2, 1);
  ASSERT_FALSE(small.syntax);
  EXPECT_EQ(small.normalized.messages[1].text, "hello");
}

TEST(DataRowHash, StructuralNotTextual) {
  RowParser parser;
  const uint64_t h = hash_of(parser, R"({"a":"A","b":[1,2.5,true,null]})");
  EXPECT_EQ(hash_of(parser, " { \"a\" : \"\\u0041\" ,\n \"b\" : [ 1 , 25e-1 , true , null ] } "), h);
  EXPECT_NE(hash_of(parser, R"({"b":[1,2.5,true,null],"a":"A"})"), h);  // key order is kept, as in the file
  EXPECT_NE(hash_of(parser, R"({"a":"A","b":[1.0,2.5,true,null]})"), h);  // integer vs float
  EXPECT_NE(hash_of(parser, R"({"a":"A","b":["1",2.5,true,null]})"), h);
  EXPECT_NE(hash_of(parser, R"({"a":"A","b":[[1],2.5,true,null]})"), h);
  EXPECT_NE(hash_of(parser, R"({"a":"A","b":[1,2.5,true]})"), h);
  EXPECT_NE(hash_of(parser, R"({"a":"AA","b":[1,2.5,true,null]})"), h);
  EXPECT_NE(hash_of(parser, R"({"a":"A","b":[[1,2.5],[true,null]]})"), hash_of(parser, R"({"a":"A","b":[[1],[2.5,true,null]]})"));
}

TEST(DataDuplicateIndex, MatchesAMapReference) {
  // Random hashes, many sharing low and high bits (so probes collide), against std::unordered_map.
  std::mt19937_64 rng(5);
  DuplicateIndex index;
  std::unordered_map<uint64_t, std::pair<uint32_t, uint64_t>> reference;
  for (uint64_t line = 1; line <= 200000; ++line) {
    const uint64_t hash = rng() % 3 == 0 ? (rng() % 150000) << 16 : rng() % 150000;
    const uint32_t file = static_cast<uint32_t>(line % 3);
    const auto first = index.insert(hash, file, line);
    const auto [it, inserted] = reference.try_emplace(hash, file, line);
    ASSERT_EQ(first.has_value(), !inserted) << line;
    if (first) {
      EXPECT_EQ(first->file, it->second.first);
      EXPECT_EQ(first->line, it->second.second);
    }
  }
  EXPECT_EQ(index.size(), reference.size());
  // The documented bound: 16-byte slots, doubled at 3/4 full.
  EXPECT_LE(index.memory_bytes(), index.size() * 16 * 8 / 3 + 16 * 1024);
}

TEST(DataDuplicateIndex, RefusesPositionsItCannotStore) {
  DuplicateIndex index;
  EXPECT_THROW(index.insert(1, DuplicateIndex::kMaxFiles, 1), Error);
  EXPECT_THROW(index.insert(1, 0, 0), Error);
  EXPECT_THROW(index.insert(1, 0, DuplicateIndex::kMaxLine + 1), Error);
  EXPECT_FALSE(index.insert(1, DuplicateIndex::kMaxFiles - 1, DuplicateIndex::kMaxLine));
  const auto first = index.insert(1, 0, 1);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->file, DuplicateIndex::kMaxFiles - 1);
  EXPECT_EQ(first->line, DuplicateIndex::kMaxLine);
}

}  // namespace
}  // namespace vlmforge::data
