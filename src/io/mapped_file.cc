#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "util/error.h"

namespace vlmforge {
namespace {

// The pages covering [offset, offset+length), clipped to the file: {start, length}.
std::pair<uint64_t, uint64_t> page_range(uint64_t offset, uint64_t length, uint64_t size) {
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t end = std::min(offset + length, size);
  const uint64_t begin = offset / page * page;
  return {begin, end > begin ? end - begin : 0};
}

}  // namespace

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error(path.string() + ": cannot open: " + errno_message(errno));
  struct stat st {};
  if (fstat(fd_, &st) != 0) {
    const int err = errno;
    reset();
    throw Error(path.string() + ": cannot stat: " + errno_message(err));
  }
  if (!S_ISREG(st.st_mode)) {
    reset();
    throw Error(path.string() + ": not a regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    data_ = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
    if (data_ == MAP_FAILED) {
      const int err = errno;
      data_ = nullptr;
      reset();
      throw Error(path.string() + ": cannot map into memory: " + errno_message(err));
    }
  }
}

MappedFile::~MappedFile() { reset(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)),
      data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    reset();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MappedFile::reset() noexcept {
  if (data_) munmap(data_, size_);
  if (fd_ >= 0) ::close(fd_);
  data_ = nullptr;
  fd_ = -1;
  size_ = 0;
}

void MappedFile::prefetch(uint64_t offset, uint64_t length) const {
  if (!data_) return;
  const auto [begin, len] = page_range(offset, length, size_);
  if (len) madvise(static_cast<char*>(data_) + begin, len, MADV_WILLNEED);
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
  if (!data_) return;
  // Safe for a shared read-only file mapping: a dropped page that is touched again (say, it also
  // holds the start of the next tensor) is faulted back in from the page cache.
  const auto [begin, len] = page_range(offset, length, size_);
  if (len) madvise(static_cast<char*>(data_) + begin, len, MADV_DONTNEED);
}

}  // namespace vlmforge
