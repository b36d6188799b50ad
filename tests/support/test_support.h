#pragma once
// Helpers shared by the test binaries: temporary directories, the shared golden data, and running
// the vlmforge executable.
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

// In a test body: skips the test when shared data at `path` is missing, and fails it instead when
// the CI environment variable is set (CI has the shared data; a skip there would hide a broken check).
#define VLMFORGE_REQUIRE_SHARED(path)                                              \
  do {                                                                             \
    if (!std::filesystem::exists(path)) {                                          \
      if (std::getenv("CI") != nullptr) FAIL() << "shared data missing: " << (path); \
      GTEST_SKIP() << "shared data missing: " << (path);                           \
    }                                                                              \
  } while (false)

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
  uint64_t address_space_limit = 0;  // RLIMIT_AS bytes (ASan/TSan builds: their hard_rss_limit_mb)
};

// Runs vlmforge with `args` (no shell), capturing stdout and stderr.
CommandResult run_vlmforge(const std::vector<std::string>& args, const RunOptions& options = {});

// Runs body(target name) once for every SIMD target compiled in and usable on this CPU, with
// run-time dispatch held to that target, then restores the normal choice: kernel tests check the
// AVX2 and the AVX-512 code (and SSE4, ...) wherever they run.
void for_each_simd_target(const std::function<void(const std::string& target)>& body);

// The `[memory] DEVICE: peak ... (N bytes), plan ... (M bytes)` lines of a --memory_report run:
// device -> (peak, plan estimate).
std::map<std::string, std::pair<double, double>> memory_report(const std::string& err);

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
