#pragma once
// Streaming safetensors output: the header is written first (all names, dtypes and shapes are
// known up front), then tensor data in header order, as they are produced. Nothing is held in
// memory beyond a write buffer. Sharding follows transformers/huggingface_hub naming and
// splitting rules.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "io/dtype.h"
#include "io/mapped_file.h"

namespace vlmforge {

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;

  uint64_t num_elements() const;  // throws on overflow
  uint64_t nbytes() const;        // throws if shape × dtype does not fit in bytes
};

// The header JSON (tensors in the given order, contiguous offsets), padded with spaces to a
// multiple of 8 bytes as the reference implementation does. Does not include the length prefix.
std::string encode_safetensors_header(std::span<const TensorSpec> tensors,
                                      const std::map<std::string, std::string>& metadata);

// A sequential writer of one file; every error names the file. Data goes to the disk with direct
// I/O where the file system allows it (no copy into the page cache, no dirty pages piling up; on
// a virtual machine that copy into freshly allocated pages cost more than a merge's arithmetic),
// through an aligned buffer; elsewhere (tmpfs) it is an ordinary buffered write. close() fsyncs,
// so a file that was closed without an error is on disk.
class OutputFile {
 public:
  explicit OutputFile(std::filesystem::path path);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(std::span<const std::byte> bytes);
  // Appends `length` bytes of `source` at `offset`: read into the write buffer with direct I/O,
  // in the kernel (copy_file_range) otherwise.
  void copy_from(const MappedFile& source, uint64_t offset, uint64_t length);
  void close();  // flushes and fsyncs; throws on error
  uint64_t position() const { return position_; }
  const std::filesystem::path& path() const { return path_; }
  bool direct() const { return direct_; }

 private:
  struct FreeDeleter {
    void operator()(std::byte* p) const { std::free(p); }
  };

  void flush();
  void write_fully(const std::byte* data, size_t size);
  void leave_direct_mode();

  std::filesystem::path path_;
  int fd_ = -1;
  bool direct_ = false;
  std::unique_ptr<std::byte, FreeDeleter> buffer_;
  size_t buffered_ = 0;
  uint64_t position_ = 0;
};

class SafetensorsWriter {
 public:
  SafetensorsWriter(std::filesystem::path path, std::vector<TensorSpec> tensors,
                    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  // Appends data; the caller writes tensors in order. Writing past the declared size throws.
  void write(std::span<const std::byte> bytes);
  void copy_from(const MappedFile& source, uint64_t offset, uint64_t length);
  // Checks that every declared byte was written, then closes.
  void finish();

 private:
  void reserve(uint64_t length);

  std::vector<TensorSpec> tensors_;
  OutputFile out_;
  uint64_t data_total_ = 0;
  uint64_t data_written_ = 0;
};

// Splits tensors (in order) into shards of at most max_shard_size bytes, like huggingface_hub's
// split_state_dict_into_shards: a tensor larger than the limit gets a shard of its own.
std::vector<std::vector<size_t>> plan_shards(std::span<const TensorSpec> tensors, uint64_t max_shard_size);

// "model.safetensors" for a single shard, else "model-00001-of-00004.safetensors".
std::string shard_file_name(size_t index, size_t count);

// model.safetensors.index.json contents.
nlohmann::json make_shard_index(uint64_t total_size, const std::map<std::string, std::string>& weight_map);

// Writes a whole small file at once (tests, generators): tensors with their data, in order.
void save_safetensors(const std::filesystem::path& path, std::span<const TensorSpec> tensors,
                      std::span<const std::span<const std::byte>> data,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes text to path atomically enough for small files (write temp, rename).
void write_text_file(const std::filesystem::path& path, std::string_view text);

}  // namespace vlmforge
