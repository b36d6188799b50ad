#pragma once
// Output files that never destroy what is at their path by accident and never look complete when
// they are not: the text goes to a temporary file next to the output, which is flushed to disk
// (fsync) and renamed over the output only by commit(). "-" is standard output, written as it goes.
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace vlmforge {

// UsageError unless `output` ("-" is always fine) is missing or a writable regular file that is
// none of `inputs` ("-" entries are stdin and skipped): renaming over a device, FIFO, directory,
// symbolic link or read-only file would replace it, and overwriting an input destroys the data.
// `flag` names the option in the message ("--fix").
void check_output_path(const std::filesystem::path& output, std::span<const std::string> inputs, std::string_view flag);

class AtomicOutput {
 public:
  // check_output_path, then creates the temporary file; Error when it cannot.
  AtomicOutput(std::filesystem::path output, std::span<const std::string> inputs, std::string flag);
  ~AtomicOutput();  // removes the temporary file unless commit() succeeded
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  bool is_stdout() const { return temp_.empty(); }
  const std::filesystem::path& path() const { return output_; }
  void write(std::string_view text);
  void write_line(std::string_view text);  // text and '\n'
  // Flushes and syncs the file, checks the output path again, renames the file into place.
  void commit();

 private:
  [[noreturn]] void fail(const std::string& what, int err) const;

  std::filesystem::path output_, temp_;
  std::string flag_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

}  // namespace vlmforge
