#include "io/regular_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "util/bytes.h"
#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

fs::file_type type_of(mode_t mode) {
  if (S_ISREG(mode)) return fs::file_type::regular;
  if (S_ISDIR(mode)) return fs::file_type::directory;
  if (S_ISFIFO(mode)) return fs::file_type::fifo;
  if (S_ISCHR(mode)) return fs::file_type::character;
  if (S_ISBLK(mode)) return fs::file_type::block;
  if (S_ISSOCK(mode)) return fs::file_type::socket;
  if (S_ISLNK(mode)) return fs::file_type::symlink;
  return fs::file_type::unknown;
}

}  // namespace

std::string_view file_type_name(fs::file_type type) {
  switch (type) {
    case fs::file_type::regular: return "a regular file";
    case fs::file_type::directory: return "a directory";
    case fs::file_type::fifo: return "a FIFO (named pipe)";
    case fs::file_type::character: return "a character device";
    case fs::file_type::block: return "a block device";
    case fs::file_type::socket: return "a socket";
    case fs::file_type::symlink: return "a symbolic link";
    default: return "not a regular file";
  }
}

RegularFile::RegularFile(const fs::path& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO that has no writer returns at once instead of waiting for one.
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) throw Error(path.string() + ": cannot open: " + errno_message(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    throw Error(path.string() + ": cannot stat: " + errno_message(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    throw Error(path.string() + " is " + std::string(file_type_name(type_of(st.st_mode))) + ", not a regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
}

RegularFile::~RegularFile() { ::close(fd_); }

std::vector<uint8_t> RegularFile::read_all(uint64_t max_bytes) const {
  if (size_ > max_bytes)
    throw Error(path_.string() + " is " + format_bytes(size_) + ", over the " + format_bytes(max_bytes) + " limit");
  std::vector<uint8_t> bytes(static_cast<size_t>(size_));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pread(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(path_.string() + ": read failed: " + errno_message(errno));
    if (n == 0) throw Error(path_.string() + ": the file shrank while being read");
    done += static_cast<size_t>(n);
  }
  return bytes;
}

}  // namespace vlmforge
