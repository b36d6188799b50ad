#include "data/record_reader.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <random>

#include "data/row_parser.h"

namespace vlmforge::data {
namespace {

// An anonymous temporary file holding `bytes` (embedded NULs included), rewound.
struct MemFile {
  explicit MemFile(const std::string& bytes) : file(std::tmpfile()) {
    std::fwrite(bytes.data(), 1, bytes.size(), file);
    std::rewind(file);
  }
  ~MemFile() { std::fclose(file); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  std::FILE* file;
};

struct Read {
  Record::Status status;
  std::string text;
  uint64_t line, column, bytes;
};

std::vector<Read> read_all(const std::string& bytes, size_t limit = 1 << 20) {
  MemFile mem(bytes);
  RecordReader reader(mem.file, limit);
  std::vector<Read> out;
  Record r;
  while (reader.next(r)) out.push_back({r.status, std::string(r.text), r.line, r.column, r.bytes});
  return out;
}

TEST(DataRecordReader, JsonlLinesSkipBlanksAndCrlf) {
  const auto rows = read_all("\xEF\xBB\xBF{\"a\":1}\r\n\n  \n{\"b\":2}");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].text, "{\"a\":1}");
  EXPECT_EQ(rows[0].line, 1u);
  EXPECT_EQ(rows[1].text, "{\"b\":2}");
  EXPECT_EQ(rows[1].line, 4u);
}

TEST(DataRecordReader, JsonArrayElementsWithTheirLines) {
  const auto rows = read_all("\n[\n  {\"a\": \"x,]}\\\"\"},\n  {\"b\": [1,\n 2]}, 3\n]\n");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].text, "{\"a\": \"x,]}\\\"\"}");
  EXPECT_EQ(rows[0].line, 3u);
  EXPECT_EQ(rows[0].column, 3u);
  EXPECT_EQ(rows[1].text, "{\"b\": [1,\n 2]}");
  EXPECT_EQ(rows[1].line, 4u);
  EXPECT_EQ(rows[2].text, "3");
  EXPECT_EQ(rows[2].line, 5u);
}

TEST(DataRecordReader, BrokenArrays) {
  auto rows = read_all("[{\"a\":1}");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].status, Record::Status::kBroken);
  rows = read_all("[{\"a\":1}] trailing");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].status, Record::Status::kBroken);
  EXPECT_TRUE(read_all("[]").empty());
  EXPECT_TRUE(read_all("").empty());
}

TEST(DataRecordReader, LongLinesAreSkippedInBoundedMemory) {
  // 5 MB line with a 64 KiB limit: reported with its full length, the next line still read.
  const std::string big(5 << 20, 'x');
  const auto rows = read_all("{\"a\":1}\n" + big + "\n{\"c\":3}\n", 64 << 10);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1].status, Record::Status::kTooLong);
  EXPECT_EQ(rows[1].bytes, big.size());
  EXPECT_EQ(rows[1].line, 2u);
  EXPECT_EQ(rows[2].text, "{\"c\":3}");
  EXPECT_EQ(rows[2].line, 3u);
}

TEST(DataRecordReader, LongArrayElementIsSkipped) {
  const std::string big = "\"" + std::string(3 << 20, 'y') + "\"";
  const auto rows = read_all("[" + big + ", {\"z\":1}]", 64 << 10);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].status, Record::Status::kTooLong);
  EXPECT_EQ(rows[1].text, "{\"z\":1}");
}

// The element scanner (strings skipped a word at a time) against the line splitter: the same
// random rows, as JSONL and as a JSON array one element per line, give the same texts and lines.
// 3 MB of rows, so elements straddle the reader's 1 MiB chunks.
TEST(DataRecordReader, ArrayElementsMatchJsonlLines) {
  std::mt19937_64 rng(11);
  const std::string pieces[] = {"a", "bc", "\"", "\\", "\n", "\u00e9", "模型", "[", "]", "{", "}", ",", " ", "x.png"};
  std::vector<std::string> rows;
  size_t total = 0;
  while (total < (3u << 20)) {
    nlohmann::ordered_json row = nlohmann::ordered_json::object();
    for (int k = 0, keys = 1 + static_cast<int>(rng() % 4); k < keys; ++k) {
      std::string text;
      for (size_t n = rng() % 400; n > 0; --n) text += pieces[rng() % std::size(pieces)];
      if (rng() % 3 == 0) row["k" + std::to_string(k)] = nlohmann::ordered_json::array({text, {{"t", text}}, k});
      else row["k" + std::to_string(k)] = text;
    }
    rows.push_back(row.dump());
    total += rows.back().size();
  }
  std::string jsonl, array = "[\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    jsonl += rows[i] + "\n";
    array += rows[i] + (i + 1 < rows.size() ? ",\n" : "\n]\n");
  }
  const auto lines = read_all(jsonl);
  const auto elements = read_all(array);
  ASSERT_EQ(lines.size(), rows.size());
  ASSERT_EQ(elements.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(lines[i].text, rows[i]);
    ASSERT_EQ(lines[i].line, i + 1);
    ASSERT_EQ(elements[i].status, Record::Status::kOk);
    ASSERT_EQ(elements[i].text, rows[i]) << i;
    ASSERT_EQ(elements[i].line, i + 2) << i;
    ASSERT_EQ(elements[i].column, 1u) << i;
  }
}

// A raw newline inside a string (invalid JSON) still counts as a line for the next element.
TEST(DataRecordReader, RawNewlineInArrayStringKeepsLines) {
  const auto rows = read_all("[{\"a\":\"x\ny\\\"z\"},\n {\"b\":1}]");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].text, "{\"a\":\"x\ny\\\"z\"}");
  EXPECT_EQ(rows[1].line, 3u);
  EXPECT_EQ(rows[1].column, 2u);
}

// Seeded fuzz: random bytes and mutated rows through the reader, the row parser and the row
// checks. Nothing may crash or throw; output stays bounded; simdjson and nlohmann agree on which
// rows are JSON.
TEST(DataRowParserFuzz, RandomBytesAndMutationsNeverCrash) {
  std::mt19937_64 rng(20261125);
  const std::string seed_row =
      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"<image>see a.png"},)"
      R"({"role":"assistant","content":"x</s>"}],"images":["a.png",{"path":"b.jpg"}],"image":"c.gif","videos":[1]})";
  const std::string alphabet = "{}[]\",:\\ \n<>abc0123456789.-truefalsnul\xff\x00";
  for (int iteration = 0; iteration < 3000; ++iteration) {
    std::string bytes;
    if (iteration % 2 == 0) {
      bytes.resize(rng() % 300);
      for (char& c : bytes) c = alphabet[rng() % alphabet.size()];
    } else {
      bytes = seed_row;
      for (int m = 0, n = 1 + static_cast<int>(rng() % 6); m < n; ++m) {
        const size_t at = rng() % bytes.size();
        switch (rng() % 3) {
          case 0: bytes[at] = alphabet[rng() % alphabet.size()]; break;
          case 1: bytes.erase(at, 1 + rng() % 8); break;
          default: bytes.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
        }
        if (bytes.empty()) bytes = "{";
      }
    }
    MemFile mem(bytes);
    RecordReader reader(mem.file, 4096);
    RowParser parser;
    Record record;
    size_t records = 0;
    while (reader.next(record)) {
      ASSERT_LE(record.text.size(), 4096u + 1);
      ASSERT_LT(++records, 10000u);
      if (record.status != Record::Status::kOk) continue;
      const ParsedRow row = parser.parse(record.text, record.line, record.column);
      if (row.syntax && row.syntax->code == FindingCode::kNestingTooDeep) continue;
      ASSERT_EQ(!row.syntax, nlohmann::json::accept(record.text)) << record.text;
      ASSERT_LT(row.problems.size(), 1000u);
    }
  }
}

}  // namespace
}  // namespace vlmforge::data
