#pragma once
// Reading safetensors files and Hugging Face checkpoints (one file, or shards listed by
// model.safetensors.index.json). Headers are validated completely before any data is used;
// tensor data are zero-copy views into a memory map.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/dtype.h"
#include "io/mapped_file.h"

namespace vlmforge {

// Refuse headers larger than this (safetensors itself uses the same bound).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;

  uint64_t num_elements() const;
  uint64_t nbytes() const { return end - begin; }
  std::string shape_string() const;  // "[896, 151936]"
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data order (ascending offsets)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
};

// Validates a whole safetensors file image: header length, JSON, dtypes, shapes, offsets (in
// range, contiguous, no overlap, matching shape × dtype size). Errors name `source` and tensor.
SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file, std::string_view source);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return mapped_.path(); }
  const SafetensorsHeader& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const TensorInfo* find(std::string_view name) const;

  std::span<const std::byte> data(const TensorInfo& t) const {
    return mapped_.bytes().subspan(header_.data_start + t.begin, t.nbytes());
  }
  uint64_t file_offset(const TensorInfo& t) const { return header_.data_start + t.begin; }
  const MappedFile& mapped() const { return mapped_; }

 private:
  MappedFile mapped_;
  SafetensorsHeader header_;
  std::unordered_map<std::string_view, size_t> by_name_;
};

// A tensor of a checkpoint: its header entry and the file it lives in.
struct TensorRef {
  const SafetensorsFile* file;
  const TensorInfo* info;

  std::span<const std::byte> data() const { return file->data(*info); }
  const std::string& name() const { return info->name; }
  // Streaming hints for this tensor's bytes (see MappedFile).
  void prefetch() const { file->mapped().prefetch(file->file_offset(*info), info->nbytes()); }
  void release() const { file->mapped().release(file->file_offset(*info), info->nbytes()); }
};

class Checkpoint {
 public:
  // `path`: a directory (model.safetensors, or model.safetensors.index.json and its shards, or
  // any *.safetensors files) or a single .safetensors file. `adapter_model.safetensors` is
  // excluded from directory scans unless it is the only candidate.
  explicit Checkpoint(const std::filesystem::path& path);

  const std::filesystem::path& root() const { return root_; }
  const std::vector<TensorRef>& tensors() const { return tensors_; }  // file order, then data order
  const TensorRef* find(std::string_view name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  bool sharded() const { return sharded_; }
  uint64_t total_bytes() const;

 private:
  std::filesystem::path root_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<TensorRef> tensors_;
  std::unordered_map<std::string_view, size_t> by_name_;
  bool sharded_ = false;
};

}  // namespace vlmforge
