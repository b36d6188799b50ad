#pragma once
// Streams the rows of a JSONL file or of a top-level JSON array without loading the file: the
// buffer holds one row at a time (plus read-ahead), and a row longer than the limit is skipped
// while being read, so a single 1 GB line costs no more memory than a short one.
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace vlmforge::data {

struct Record {
  enum class Status {
    kOk,       // text holds the row
    kTooLong,  // longer than the limit; text is empty, skipped
    kBroken,   // the JSON array framing is broken (error says how); reading stops
  };
  Status status = Status::kOk;
  std::string_view text;  // valid until the next call to next()
  uint64_t line = 0;      // 1-based line where the row starts
  uint64_t column = 1;    // 1-based column where the row starts
  uint64_t bytes = 0;     // length of the row
  std::string error;
};

class RecordReader {
 public:
  // Does not own `file`. Detects a JSON array by its first non-blank byte ('['), after a BOM.
  RecordReader(std::FILE* file, size_t max_record_bytes);

  // False at the end of input. Blank JSONL lines are skipped. Throws Error on a read error.
  bool next(Record& record);

  uint64_t bytes_read() const { return consumed_total_; }

 private:
  bool fill();  // appends to buf_; false at EOF
  void detect_format();
  bool next_line(Record& record);
  bool next_element(Record& record);
  void skip_blanks();  // array mode: whitespace between elements, counting lines

  std::FILE* file_;
  size_t max_bytes_;
  std::string buf_;
  size_t pos_ = 0;  // start of unconsumed data in buf_
  bool eof_ = false;
  bool detected_ = false;
  bool array_ = false;
  bool array_done_ = false;
  uint64_t line_ = 1;
  uint64_t column_ = 1;
  uint64_t consumed_total_ = 0;
};

}  // namespace vlmforge::data
