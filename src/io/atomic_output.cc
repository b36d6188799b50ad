#include "io/atomic_output.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "io/regular_file.h"
#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

// The output path as it is now: Error text when something there must not be replaced.
std::string unsafe_target(const fs::path& output) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(output, ec);
  if (status.type() == fs::file_type::not_found) return "";
  if (ec) return output.string() + ": " + ec.message();
  if (status.type() != fs::file_type::regular)
    return output.string() + " is " + std::string(file_type_name(status.type())) +
           ", not a regular file; the output would replace it (give a regular file's path, or - for stdout)";
  struct stat st {};
  // No write bit at all also stops root, for whom access() always succeeds.
  if (::stat(output.c_str(), &st) != 0 || (st.st_mode & 0222) == 0 || ::access(output.c_str(), W_OK) != 0)
    return output.string() + " is read-only; make it writable or choose another output path";
  return "";
}

}  // namespace

void check_output_path(const fs::path& output, std::span<const std::string> inputs, std::string_view flag) {
  if (output == "-") return;
  if (const std::string problem = unsafe_target(output); !problem.empty())
    throw UsageError(std::string(flag) + ": " + problem);
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (input != "-" && fs::equivalent(input, output, ec))
      throw UsageError(std::string(flag) + ": " + output.string() + " is the input " + input +
                       "; writing it would destroy the data (choose another output path)");
  }
}

AtomicOutput::AtomicOutput(fs::path output, std::span<const std::string> inputs, std::string flag)
    : output_(std::move(output)), flag_(std::move(flag)) {
  check_output_path(output_, inputs, flag_);
  if (output_ == "-") {
    file_ = stdout;
    return;
  }
  temp_ = output_;
  temp_ += ".tmp." + std::to_string(::getpid());
  // O_EXCL: never write through a link or into a file someone else left at the temporary name.
  const int fd = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) throw Error(flag_ + ": cannot create " + temp_.string() + ": " + errno_message(errno));
  file_ = ::fdopen(fd, "wb");
  if (file_ == nullptr) {
    const int err = errno;
    ::close(fd);
    fs::remove(temp_);  // the destructor does not run for a throwing constructor
    throw Error(flag_ + ": cannot write " + temp_.string() + ": " + errno_message(err));
  }
}

AtomicOutput::~AtomicOutput() {
  if (is_stdout()) return;
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) {
    std::error_code ec;
    fs::remove(temp_, ec);
  }
}

void AtomicOutput::fail(const std::string& what, int err) const {
  throw Error(flag_ + ": " + what + " " + (is_stdout() ? std::string("standard output") : temp_.string()) + ": " +
              errno_message(err));
}

void AtomicOutput::write(std::string_view text) {
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size()) fail("writing", errno);
}

void AtomicOutput::write_line(std::string_view text) {
  write(text);
  if (std::fputc('\n', file_) == EOF) fail("writing", errno);
}

void AtomicOutput::commit() {
  if (std::fflush(file_) != 0) fail("writing", errno);
  if (is_stdout()) return;
  if (::fsync(::fileno(file_)) != 0) fail("syncing", errno);
  const int closed = std::fclose(file_);
  file_ = nullptr;
  if (closed != 0) fail("writing", errno);
  // The path may have changed since the constructor checked it (say, a FIFO put there meanwhile).
  if (const std::string problem = unsafe_target(output_); !problem.empty()) throw Error(flag_ + ": " + problem);
  std::error_code ec;
  fs::rename(temp_, output_, ec);
  if (ec) throw Error(flag_ + ": cannot rename " + temp_.string() + " to " + output_.string() + ": " + ec.message());
  committed_ = true;
  // The rename itself is durable once the directory is synced.
  const fs::path dir = output_.has_parent_path() ? output_.parent_path() : fs::path(".");
  if (const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace vlmforge
