#include "data/checker.h"

#include <algorithm>
#include <atomic>
#include <future>

#include "data/fix_writer.h"
#include "data/record_reader.h"
#include "util/error.h"

namespace vlmforge::data {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

constexpr size_t kBatchRows = 2048;
constexpr size_t kBatchBytes = 32 << 20;
constexpr size_t kGrainRows = 32;  // rows a lane takes at a time: rows vary in length

}  // namespace

struct DatasetChecker::Row {
  Record::Status status = Record::Status::kOk;
  std::string text;
  uint64_t line = 0, column = 1, bytes = 0;
  std::string framing_error;
  // Filled by analyze():
  ParsedRow parsed;
  ordered_json value;  // --fix only: the row to correct and write
  std::optional<size_t> text_tokens;
};

DatasetChecker::DatasetChecker(CheckOptions options, const TokenCounter* tokens, AtomicOutput* fix, FindingSink sink)
    : options_(std::move(options)), tokens_(tokens), fix_(fix), sink_(std::move(sink)), pool_(options_.threads), parsers_(pool_.size()) {}

void DatasetChecker::emit(FindingCode code, const std::string& file, uint64_t line, uint64_t column, std::string message) {
  const FindingInfo& info = finding_info(code);
  ++summary_.findings_per_code[static_cast<int>(code)];
  ++(info.severity == Severity::kError ? summary_.errors : summary_.warnings);
  sink_(Finding{code, line, column, std::move(message), file});
}

void DatasetChecker::check(std::FILE* file, const std::string& name, const fs::path& dataset_dir) {
  if (files_.size() >= DuplicateIndex::kMaxFiles)
    throw UsageError("check-data takes at most " + std::to_string(DuplicateIndex::kMaxFiles) + " files in one run");
  files_.push_back(name);
  const fs::path base_dir = options_.base_dir.value_or(dataset_dir);
  RecordReader reader(file, options_.max_record_bytes);
  // Appends the next rows to `batch`; false once the input is done.
  auto read_batch = [&reader](std::vector<Row>& batch) {
    size_t bytes = 0;
    Record record;
    while (batch.size() < kBatchRows && bytes < kBatchBytes) {
      if (!reader.next(record)) return false;
      Row& row = batch.emplace_back();
      row.status = record.status;
      row.text.assign(record.text);
      row.line = record.line;
      row.column = record.column;
      row.bytes = record.bytes;
      row.framing_error = record.error;
      bytes += row.text.size();
      if (record.status == Record::Status::kBroken) return false;
    }
    return true;
  };
  std::vector<Row> batch, ahead;
  bool more = read_batch(batch);
  while (!batch.empty()) {
    // With more than one thread, the next batch is read while this one is checked; findings
    // still come out in row order, as batches are reported one after the other.
    std::future<bool> reading;
    if (more && pool_.size() > 1) reading = std::async(std::launch::async, read_batch, std::ref(ahead));
    process_batch(batch, name, base_dir);
    batch.clear();
    if (more) more = reading.valid() ? reading.get() : read_batch(ahead);
    std::swap(batch, ahead);
  }
  summary_.bytes += reader.bytes_read();
}

void DatasetChecker::process_batch(std::vector<Row>& batch, const std::string& name, const fs::path& base_dir) {
  // One lane per pool thread, each with its own parser, taking rows from a shared counter.
  std::atomic<size_t> next{0};
  pool_.parallel_for(parsers_.size(), [&](size_t lane, size_t) {
    for (size_t begin; (begin = next.fetch_add(kGrainRows)) < batch.size();)
      for (size_t i = begin; i < std::min(begin + kGrainRows, batch.size()); ++i) analyze(batch[i], parsers_[lane]);
  });
  probe_images(batch, base_dir);
  for (Row& row : batch) report(row, name, base_dir);
  // Free the parsed rows on the pool too: releasing millions of small nodes is a good part of
  // the cost of a DOM parse, and one thread doing it serializes the batch.
  pool_.parallel_for(batch.size(), [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) batch[i] = Row{};
  });
}

// Everything that depends on the row alone; runs on the pool's threads.
void DatasetChecker::analyze(Row& row, RowParser& parser) const {
  if (row.status != Record::Status::kOk) return;
  row.parsed = parser.parse(row.text, row.line, row.column);
  const ParsedRow& parsed = row.parsed;
  if (parsed.syntax || parsed.type_name != "object") return;
  if (fix_ != nullptr) row.value = ordered_json::parse(row.text);
  if (tokens_ != nullptr && parsed.normalized.format != RowFormat::kUnknown) row.text_tokens = tokens_->text_tokens(parsed.normalized);
}

// Reads each local image of the batch not seen before, in parallel.
void DatasetChecker::probe_images(std::vector<Row>& batch, const fs::path& base_dir) {
  struct Pending {
    std::string key;
    fs::path path;
    bool image;
    MediaCheck result;
  };
  std::vector<Pending> pending;
  auto want = [&](const std::string& written, bool image) {
    if (is_remote(written)) return;
    fs::path path = resolve_media_path(written, base_dir);
    std::string key = path.string();
    if (media_cache_.contains(key)) return;
    media_cache_.emplace(key, MediaCheck{});  // placeholder, filled below
    pending.push_back({std::move(key), std::move(path), image, {}});
  };
  for (const Row& row : batch) {
    for (const MediaRef& m : row.parsed.normalized.media)
      if (!m.inline_data) want(m.path, m.kind == MediaKind::kImage);
    if (fix_ != nullptr)  // --fix drops rows whose moved paths do not exist
      for (const PathInText& p : row.parsed.facts.paths_in_text) want(p.path, true);
  }
  pool_.parallel_for(pending.size(), [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i)
      pending[i].result = pending[i].image ? check_image_file(pending[i].path, options_.deep) : check_media_file(pending[i].path);
  });
  for (Pending& p : pending) {
    if (p.image) {
      ++summary_.images_checked;
      if (!p.result.problem) ++summary_.images_ok;
    }
    media_cache_[p.key] = std::move(p.result);
  }
}

void DatasetChecker::report(Row& row, const std::string& name, const fs::path& base_dir) {
  // Rows that cannot be parsed have no unambiguous fix: the corrected copy leaves them out.
  if (fix_ != nullptr && (row.status == Record::Status::kTooLong || (row.status == Record::Status::kOk && (row.parsed.syntax || row.parsed.type_name != "object")))) ++summary_.dropped_rows;
  if (row.status == Record::Status::kTooLong) {
    emit(FindingCode::kLineTooLong, name, row.line, 0,
         "the row is " + std::to_string(row.bytes) + " bytes, over the limit of " + std::to_string(options_.max_record_bytes));
    return;
  }
  if (row.status == Record::Status::kBroken) {
    emit(FindingCode::kInvalidJson, name, row.line, row.column, row.framing_error);
    return;
  }
  ++summary_.rows;
  ParsedRow& parsed = row.parsed;
  if (parsed.syntax) {
    emit(parsed.syntax->code, name, parsed.syntax->line, parsed.syntax->column, parsed.syntax->message);
    return;
  }
  if (parsed.type_name != "object") {
    emit(FindingCode::kNotObject, name, row.line, 0, "the row is a JSON " + std::string(parsed.type_name));
    return;
  }
  ++summary_.rows_per_format[static_cast<int>(parsed.normalized.format)];
  for (RowProblem& p : parsed.problems) emit(p.code, name, row.line, 0, std::move(p.message));

  if (const auto first = row_hashes_.insert(parsed.hash, static_cast<uint32_t>(files_.size() - 1), row.line))
    emit(FindingCode::kDuplicateRow, name, row.line, 0,
         "likely the same row as " + files_[first->file] + ":" + std::to_string(first->line) + " (equal 64-bit content hash)");

  if (parsed.facts.assistant_turns > parsed.facts.marked_turns) saw_unmarked_turn_ = true;
  if (parsed.facts.marked_turns > 0) marked_rows_.emplace_back(name, row.line);

  bool media_missing = false;
  uint64_t image_tokens = 0;
  for (const MediaRef& m : parsed.normalized.media) {
    if (m.inline_data) {
      ++summary_.inline_media;
      continue;
    }
    if (is_remote(m.path)) {
      ++summary_.remote_media;
      emit(FindingCode::kRemoteMedia, name, row.line, 0, m.path + " is remote: not fetched, not checked");
      continue;
    }
    const fs::path path = resolve_media_path(m.path, base_dir);
    const MediaCheck& check = media_cache_.at(path.string());
    if (check.problem) {
      media_missing = media_missing || *check.problem == FindingCode::kImageMissing || *check.problem == FindingCode::kMediaMissing;
      emit(*check.problem, name, row.line, 0, check.detail);
      continue;
    }
    for (const MediaWarning& w : check.warnings) emit(w.code, name, row.line, 0, w.detail);
    if (m.kind != MediaKind::kImage) continue;
    const auto& info = check.image;
    const auto resized = vision::smart_resize(info.height, info.width, options_.budget);
    if (!resized) {
      emit(FindingCode::kImageAspectRatio, name, row.line, 0,
           path.string() + " is " + std::to_string(info.width) + "x" + std::to_string(info.height));
      continue;
    }
    image_tokens += resized->tokens();
    if (uint64_t{info.width} * info.height > uint64_t{summary_.largest_width} * summary_.largest_height) {
      summary_.largest_image = path.string();
      summary_.largest_width = info.width;
      summary_.largest_height = info.height;
      summary_.largest_tokens = resized->tokens();
    }
  }

  if (row.text_tokens) {
    const uint64_t total = *row.text_tokens + image_tokens;
    summary_.text_tokens.add(*row.text_tokens);
    summary_.image_tokens.add(image_tokens);
    summary_.total_tokens.add(total);
    if (options_.max_length > 0 && total > options_.max_length)
      emit(FindingCode::kTooLong, name, row.line, 0,
           std::to_string(total) + " tokens (" + std::to_string(*row.text_tokens) + " text + " + std::to_string(image_tokens) +
               " image) > --max_length " + std::to_string(options_.max_length));
  }

  if (fix_ == nullptr) return;
  for (const PathInText& p : row.parsed.facts.paths_in_text) {
    if (parsed.facts.image_tags > 0) break;
    const auto it = media_cache_.find(resolve_media_path(p.path, base_dir).string());
    if (!is_remote(p.path) && it != media_cache_.end() && it->second.problem == FindingCode::kImageMissing) media_missing = true;
  }
  if (media_missing) {
    ++summary_.dropped_rows;
    return;
  }
  if (fix_row(row.value, parsed.normalized, parsed.facts)) {
    ++summary_.fixed_rows;
    fix_->write_line(row.value.dump());
  } else {
    fix_->write_line(row.text.find('\n') == std::string::npos ? std::string_view(row.text) : std::string_view(row.value.dump()));
  }
  ++summary_.written_rows;
}

void DatasetChecker::finish() {
  if (!saw_unmarked_turn_) return;
  for (const auto& [file, line] : marked_rows_)
    emit(FindingCode::kInconsistentEndMarker, file, line, 0,
         "an assistant turn ends with an end marker (</s>, <|im_end|>) while other turns in the data do not");
}

}  // namespace vlmforge::data
