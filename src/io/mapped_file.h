#pragma once
// A read-only memory map of a whole file. Views into it are zero-copy; pages are read on demand
// and can be released again after use so that streaming over a large checkpoint keeps RSS flat.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace vlmforge {

class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(data_), size_}; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_; }
  const std::filesystem::path& path() const { return path_; }

  // Hints for streaming: read ahead [offset, offset+length), or drop those pages from this
  // process (they stay in the page cache; a later access reads them back).
  void prefetch(uint64_t offset, uint64_t length) const;
  void release(uint64_t offset, uint64_t length) const;

 private:
  void reset() noexcept;

  std::filesystem::path path_;
  int fd_ = -1;
  void* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace vlmforge
