#include "data/record_reader.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "util/error.h"

namespace vlmforge::data {

namespace {
constexpr size_t kReadChunk = 1 << 20;

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Length of the prefix of `text` free of '"', '\\' and '\n'. Eight bytes per step (SWAR: a byte
// of x ^ (c * 0x01...01) is zero where x holds c), then byte by byte in the word that has one.
size_t plain_string_bytes(std::string_view text) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL, kHighs = 0x8080808080808080ULL;
  auto has_zero_byte = [](uint64_t v) { return ((v - kOnes) & ~v & kHighs) != 0; };
  size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, text.data() + i, 8);
    if (has_zero_byte(word ^ ('"' * kOnes)) || has_zero_byte(word ^ ('\\' * kOnes)) || has_zero_byte(word ^ ('\n' * kOnes))) break;
  }
  while (i < text.size() && text[i] != '"' && text[i] != '\\' && text[i] != '\n') ++i;
  return i;
}
}  // namespace

RecordReader::RecordReader(std::FILE* file, size_t max_record_bytes) : file_(file), max_bytes_(max_record_bytes) {}

bool RecordReader::fill() {
  if (eof_) return false;
  // Drop consumed bytes first so the buffer stays near one row plus one chunk.
  if (pos_ > 0) {
    consumed_total_ += pos_;
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  const size_t old = buf_.size();
  buf_.resize(old + kReadChunk);
  const size_t n = std::fread(buf_.data() + old, 1, kReadChunk, file_);
  buf_.resize(old + n);
  if (n == 0) {
    if (std::ferror(file_)) throw Error("read error: " + errno_message(errno));
    eof_ = true;
    return false;
  }
  return true;
}

void RecordReader::detect_format() {
  detected_ = true;
  while (buf_.size() - pos_ < 3 && fill()) {
  }
  if (buf_.compare(pos_, 3, "\xEF\xBB\xBF") == 0) pos_ += 3;
  // Look past leading blanks for '[' without consuming them (JSONL line numbers must stay right).
  size_t i = pos_;
  for (;;) {
    while (i < buf_.size() && is_blank(buf_[i])) ++i;
    if (i < buf_.size() || eof_) break;
    const size_t offset = i - pos_;
    if (!fill()) break;
    i = pos_ + offset;
  }
  array_ = i < buf_.size() && buf_[i] == '[';
  if (array_) {
    skip_blanks();
    ++pos_;  // the '['
    ++column_;
  }
}

bool RecordReader::next(Record& record) {
  if (!detected_) detect_format();
  record = Record{};
  return array_ ? next_element(record) : next_line(record);
}

bool RecordReader::next_line(Record& record) {
  for (;;) {
    size_t scanned = pos_;
    const char* newline = nullptr;
    bool too_long = false;
    for (;;) {
      newline = static_cast<const char*>(std::memchr(buf_.data() + scanned, '\n', buf_.size() - scanned));
      if (newline != nullptr) break;
      if (buf_.size() - pos_ > max_bytes_) {
        too_long = true;
        break;
      }
      const size_t offset = buf_.size() - pos_;
      if (!fill()) break;
      scanned = pos_ + offset;
    }
    if (too_long) {
      // Discard the rest of the line chunk by chunk.
      uint64_t length = buf_.size() - pos_;
      pos_ = buf_.size();
      for (;;) {
        if (!fill()) break;
        if (const void* nl = std::memchr(buf_.data(), '\n', buf_.size())) {
          const size_t upto = static_cast<const char*>(nl) - buf_.data();
          length += upto;
          pos_ = upto + 1;
          break;
        }
        length += buf_.size();
        pos_ = buf_.size();
      }
      record.status = Record::Status::kTooLong;
      record.line = line_++;
      record.bytes = length;
      return true;
    }
    const size_t end = newline != nullptr ? static_cast<size_t>(newline - buf_.data()) : buf_.size();
    if (end == pos_ && newline == nullptr) return false;  // EOF
    if (end - pos_ > max_bytes_) {  // the whole line fit in the read-ahead: still refused
      record.status = Record::Status::kTooLong;
      record.line = line_++;
      record.bytes = end - pos_;
      pos_ = newline != nullptr ? end + 1 : end;
      return true;
    }
    std::string_view text(buf_.data() + pos_, end - pos_);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    const uint64_t line = line_++;
    pos_ = newline != nullptr ? end + 1 : end;
    if (std::find_if_not(text.begin(), text.end(), is_blank) == text.end()) continue;  // stops at the first byte of a row
    record.text = text;
    record.line = line;
    record.bytes = text.size();
    return true;
  }
}

void RecordReader::skip_blanks() {
  for (;;) {
    while (pos_ < buf_.size() && is_blank(buf_[pos_])) {
      if (buf_[pos_] == '\n') {
        ++line_;
        column_ = 1;
      } else {
        ++column_;
      }
      ++pos_;
    }
    if (pos_ < buf_.size() || !fill()) return;
  }
}

// Finds the end of one array element by tracking strings and bracket depth; the element itself is
// parsed later, so a malformed element becomes one invalid-json finding, not a stop.
bool RecordReader::next_element(Record& record) {
  if (array_done_) return false;
  skip_blanks();
  if (pos_ >= buf_.size()) {
    record.status = Record::Status::kBroken;
    record.error = "the JSON array is not closed (missing ']')";
    record.line = line_;
    record.column = column_;
    array_done_ = true;
    return true;
  }
  if (buf_[pos_] == ']') {
    ++pos_;
    ++column_;
    array_done_ = true;
    skip_blanks();
    if (pos_ < buf_.size()) {
      record.status = Record::Status::kBroken;
      record.error = "content after the closing ']'";
      record.line = line_;
      record.column = column_;
      return true;
    }
    return false;
  }
  record.line = line_;
  record.column = column_;
  bool in_string = false, escape = false;
  int64_t depth = 0;
  uint64_t line = line_, column = column_;
  size_t i = pos_;
  for (;;) {
    if (i >= buf_.size()) {
      const size_t offset = i - pos_;
      if (offset > max_bytes_) {
        // Too long: keep scanning but drop what was read, holding one chunk at a time.
        record.status = Record::Status::kTooLong;
        record.bytes += offset;
        pos_ = buf_.size();
        if (!fill()) break;
        i = 0;
        continue;
      }
      if (!fill()) break;
      i = pos_ + offset;
      continue;
    }
    if (in_string && !escape) {
      // Most of a chat row is string content: skip it a word at a time up to the next quote,
      // backslash or newline (each of which the byte loop below handles).
      const size_t skip = plain_string_bytes(std::string_view(buf_).substr(i));
      column += skip;
      i += skip;
      if (i >= buf_.size()) continue;
    }
    const char c = buf_[i];
    if (c == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
    if (in_string) {
      if (escape) escape = false;
      else if (c == '\\') escape = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (depth == 0 && c == ']') break;  // the array's closing ']': left for the next call
      if (depth > 0) --depth;             // a stray '}' stays part of the (invalid) element
    } else if (c == ',' && depth == 0) {
      break;
    }
    ++i;
  }
  if (record.status != Record::Status::kTooLong && i - pos_ > max_bytes_) record.status = Record::Status::kTooLong;
  if (record.status == Record::Status::kTooLong) {
    record.bytes += i - pos_;
  } else {
    std::string_view text(buf_.data() + pos_, i - pos_);
    while (!text.empty() && is_blank(text.back())) text.remove_suffix(1);
    record.text = text;
    record.bytes = text.size();
  }
  // Consume the ',' separator; a ']' is left for the next call to end the array.
  const bool comma = i < buf_.size() && buf_[i] == ',';
  pos_ = comma ? i + 1 : i;
  line_ = line;
  column_ = comma ? column : column - 1;
  if (i >= buf_.size() && record.status == Record::Status::kOk && record.text.empty()) {
    record.status = Record::Status::kBroken;
    record.error = "the JSON array is not closed (missing ']')";
    array_done_ = true;
  }
  return true;
}

}  // namespace vlmforge::data
