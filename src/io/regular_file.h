#pragma once
// Input files that must be regular files (images, datasets' media). A FIFO with no writer would
// block open() forever and a device such as /dev/zero reads forever, so the file is opened without
// blocking, checked with fstat before any byte is read, and read whole only up to a size cap.
#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

namespace vlmforge {

// "a FIFO", "a character device", "a directory", ... for messages about non-regular paths.
std::string_view file_type_name(std::filesystem::file_type type);

class RegularFile {
 public:
  // Error naming the path when it cannot be opened or is not a regular file.
  explicit RegularFile(const std::filesystem::path& path);
  ~RegularFile();
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;

  int fd() const { return fd_; }
  const std::filesystem::path& path() const { return path_; }
  uint64_t size() const { return size_; }  // at open time
  // The whole file (its size at open time); Error when that is over `max_bytes` or it shrank.
  std::vector<uint8_t> read_all(uint64_t max_bytes) const;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

inline std::vector<uint8_t> read_regular_file(const std::filesystem::path& path, uint64_t max_bytes) {
  return RegularFile(path).read_all(max_bytes);
}

}  // namespace vlmforge
