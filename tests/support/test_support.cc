#include "support/test_support.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <hwy/targets.h>

#include "util/simd_targets.h"

namespace vlmforge::test {
namespace fs = std::filesystem;

fs::path shared_dir() {
  if (const char* env = std::getenv("VLMFORGE_SHARED_DIR")) return env;
  return VLMFORGE_SHARED_DIR;
}

fs::path vlmforge_binary() { return VLMFORGE_BINARY; }

TempDir::TempDir() {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fs::path candidate = fs::temp_directory_path() / ("vlmforge-test-" + std::to_string(rd()));
    if (fs::create_directory(candidate)) {
      path_ = candidate;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

namespace {
std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// ASan and TSan reserve terabytes of shadow address space at start, which RLIMIT_AS forbids; in
// their builds (the vlmforge binary is built with the tests' flags) the cap becomes the
// sanitizer's own resident-memory limit, which aborts the child the same way.
#if defined(__SANITIZE_ADDRESS__)
constexpr const char* kSanitizerOptions = "ASAN_OPTIONS";
#elif defined(__SANITIZE_THREAD__)
constexpr const char* kSanitizerOptions = "TSAN_OPTIONS";
#else
constexpr const char* kSanitizerOptions = nullptr;
#endif

// The child's environment: ours, with the memory cap added to the sanitizer's options when RLIMIT_AS cannot be used.
std::vector<std::string> child_environment(const RunOptions& options) {
  std::vector<std::string> env;
  std::string sanitizer_options;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    if (kSanitizerOptions != nullptr && entry.starts_with(std::string(kSanitizerOptions) + "=")) {
      sanitizer_options = entry;
    } else {
      env.push_back(entry);
    }
  }
  if (kSanitizerOptions != nullptr && options.address_space_limit) {
    if (sanitizer_options.empty()) sanitizer_options = std::string(kSanitizerOptions) + "=";
    sanitizer_options += ":hard_rss_limit_mb=" + std::to_string(options.address_space_limit >> 20);
  }
  if (!sanitizer_options.empty()) env.push_back(sanitizer_options);
  return env;
}
}  // namespace

CommandResult run_vlmforge(const std::vector<std::string>& args, const RunOptions& options) {
  TempDir capture;
  const std::string in_path = (capture / "stdin").string();
  const std::string out_path = (capture / "stdout").string(), err_path = (capture / "stderr").string();
  {
    std::ofstream in(in_path, std::ios::binary);
    in << options.stdin_text;
  }
  std::vector<std::string> argv_strings{vlmforge_binary().string()};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = child_environment(options);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int in = open(in_path.c_str(), O_RDONLY);
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0) _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    if (options.file_size_limit) {
      // Limit only files written from now on; the capture files above are already open.
      const rlimit limit{options.file_size_limit, options.file_size_limit};
      setrlimit(RLIMIT_FSIZE, &limit);
    }
    if (options.address_space_limit && kSanitizerOptions == nullptr) {
      const rlimit limit{options.address_space_limit, options.address_space_limit};
      setrlimit(RLIMIT_AS, &limit);
    }
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  int status = 0;
  if (options.timeout_seconds == 0) {
    waitpid(pid, &status, 0);
  } else {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.timeout_seconds);
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() >= deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, slurp(out_path), slurp(err_path)};
}

void for_each_simd_target(const std::function<void(const std::string& target)>& body) {
  struct RestoreDispatch {
    ~RestoreDispatch() { hwy::SetSupportedTargetsForTest(0); }
  } restore;
  for (const SimdTarget& target : usable_simd_targets()) {
    hwy::SetSupportedTargetsForTest(target.bit);
    body(target.name);
  }
}

std::map<std::string, std::pair<double, double>> memory_report(const std::string& err) {
  std::map<std::string, std::pair<double, double>> out;
  const std::regex line(R"(\[memory\] (\S+): peak .*?\((\d+) bytes\), plan .*?\((\d+) bytes\))");
  for (std::sregex_iterator it(err.begin(), err.end(), line), end; it != end; ++it)
    out[(*it)[1]] = {std::stod((*it)[2]), std::stod((*it)[3])};
  return out;
}

}  // namespace vlmforge::test
