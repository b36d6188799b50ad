#pragma once
// check-data's engine: streams one or more dataset files, runs the row checks in parallel over
// batches of rows, reads each distinct image header once, and reports findings in row order.
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/duplicate_index.h"
#include "data/finding.h"
#include "data/media_check.h"
#include "data/row_format.h"
#include "data/row_parser.h"
#include "data/token_counter.h"
#include "io/atomic_output.h"
#include "util/thread_pool.h"
#include "vision/smart_resize.h"

namespace vlmforge::data {

struct CheckOptions {
  std::optional<std::filesystem::path> base_dir;  // else each dataset's own directory
  vision::PixelBudget budget;
  uint64_t max_length = 0;  // 0: no length check (needs a TokenCounter)
  size_t max_record_bytes = 64 << 20;
  size_t threads = 0;       // 0: all hardware threads
  bool deep = false;        // decode every image fully (vision/image_decode.h)
};

struct TokenStats {
  std::vector<uint32_t> values;  // one per counted row
  void add(uint64_t v) { values.push_back(static_cast<uint32_t>(std::min<uint64_t>(v, UINT32_MAX))); }
};

struct CheckSummary {
  uint64_t rows = 0;
  uint64_t bytes = 0;
  uint64_t rows_per_format[kRowFormatCount] = {};
  uint64_t findings_per_code[kFindingCodeCount] = {};
  uint64_t errors = 0, warnings = 0;
  uint64_t images_checked = 0;  // distinct local image files whose header was read
  uint64_t images_ok = 0;
  uint64_t remote_media = 0, inline_media = 0;
  TokenStats text_tokens, image_tokens, total_tokens;
  std::string largest_image;  // by pixel count
  uint32_t largest_width = 0, largest_height = 0;
  uint64_t largest_tokens = 0;
  uint64_t fixed_rows = 0, dropped_rows = 0, written_rows = 0;
};

class DatasetChecker {
 public:
  using FindingSink = std::function<void(const Finding&)>;

  // `tokens` and `fix` may be null. The sink receives findings in row order per file.
  DatasetChecker(CheckOptions options, const TokenCounter* tokens, AtomicOutput* fix, FindingSink sink);

  // Checks one dataset; `name` is how findings name it, `dataset_dir` resolves relative paths.
  void check(std::FILE* file, const std::string& name, const std::filesystem::path& dataset_dir);
  // Emits the dataset-wide findings (end markers). Call once after the last check().
  void finish();

  const CheckSummary& summary() const { return summary_; }

 private:
  struct Row;
  void process_batch(std::vector<Row>& batch, const std::string& name, const std::filesystem::path& base_dir);
  void analyze(Row& row, RowParser& parser) const;
  void probe_images(std::vector<Row>& batch, const std::filesystem::path& base_dir);
  void report(Row& row, const std::string& name, const std::filesystem::path& base_dir);
  void emit(FindingCode code, const std::string& file, uint64_t line, uint64_t column, std::string message);

  CheckOptions options_;
  const TokenCounter* tokens_;
  AtomicOutput* fix_;
  FindingSink sink_;
  ThreadPool pool_;
  std::vector<RowParser> parsers_;  // one per pool thread
  CheckSummary summary_;
  std::unordered_map<std::string, MediaCheck> media_cache_;  // by resolved path
  std::vector<std::string> files_;                            // names of the files checked so far
  DuplicateIndex row_hashes_;  // first occurrence of each row, across all files
  // Rows whose assistant turns end with a marker; reported at finish() if others do not.
  std::vector<std::pair<std::string, uint64_t>> marked_rows_;
  bool saw_unmarked_turn_ = false;
};

}  // namespace vlmforge::data
