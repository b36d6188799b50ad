#pragma once
// Helpers shared by the test binaries: temporary directories, the shared golden data, and running
// the vlmforge executable.
#include <cstdint>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

namespace vlmforge::test {

// ../shared next to the project root (golden data, the real Qwen tokenizer).
std::filesystem::path shared_dir();
std::filesystem::path vlmforge_binary();

// A fresh directory removed (with its contents) when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code;
  std::string out;  // stdout
  std::string err;  // stderr
};

struct RunOptions {
  uint64_t file_size_limit = 0;  // RLIMIT_FSIZE for the child (0: none): injects "disk full" write errors
  std::string stdin_text = {};   // fed to the child's standard input
  // Bounds for tests of hangs and unbounded reads, so a regression fails instead of stalling the
  // suite or exhausting the machine (0: none). A child past its timeout is killed (exit code 137).
  unsigned timeout_seconds = 0;
  uint64_t address_space_limit = 0;  // RLIMIT_AS bytes
};

// Runs vlmforge with `args` (no shell), capturing stdout and stderr.
CommandResult run_vlmforge(const std::vector<std::string>& args, const RunOptions& options = {});

// The message of the exception f() throws, or "" when it throws none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace vlmforge::test
