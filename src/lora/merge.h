#pragma once
// Streaming LoRA merge: each output tensor is computed from the memory-mapped base (and the
// adapters) in blocks of rows and written as soon as it is done, so memory stays bounded by a
// few block buffers whatever the model size. Math in fp32, one rounding to the output dtype.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "lora/adapter.h"

namespace vlmforge {

class ProgressBar;

struct MergeOptions {
  std::filesystem::path model_dir;
  std::vector<std::filesystem::path> adapter_dirs;  // applied in order
  std::filesystem::path output_dir;                 // empty: "<first adapter dir>-merged", as swift names it
  uint64_t max_shard_size = 5'000'000'000;
  std::optional<DType> dtype;  // nullopt ("auto"): every tensor keeps its dtype
  size_t threads = 0;          // 0: all cores
  bool overwrite = false;
  bool allow_nonfinite = false;  // non-finite adapter values are warnings, not errors
  bool progress = false;
};

// One change to one base tensor.
struct TensorUpdate {
  enum class Kind { kLora, kDora, kLoraBias, kReplace };
  Kind kind;
  size_t adapter_index;
  const LoraModule* module = nullptr;       // kLora, kDora, kLoraBias
  const TensorRef* replacement = nullptr;   // kReplace
  bool transposed = false;  // delta = (B·A)ᵀ: fan_in_fan_out layers and embeddings
};

struct PlannedTensor {
  TensorSpec output;
  const TensorRef* base;
  std::vector<TensorUpdate> updates;
};

struct MergePlan {
  std::filesystem::path output_dir;
  std::vector<PlannedTensor> tensors;
  std::vector<std::vector<size_t>> shards;  // indices into tensors
  std::vector<std::string> warnings;
  uint64_t total_bytes = 0;
  size_t changed_tensors() const;
  std::string shard_name(size_t shard) const { return shard_file_name(shard, shards.size()); }
};

// Checks inputs and builds the plan; nothing is written. Throws Error on any inconsistency.
MergePlan plan_merge(const Checkpoint& base, const std::vector<Adapter>& adapters, const MergeOptions& options);

struct MergeStats {
  double seconds = 0;
  uint64_t bytes_written = 0;
};

// Writes the merged checkpoint into a temporary directory next to plan.output_dir and renames it
// into place at the end; on any error the temporary directory is removed.
MergeStats execute_merge(const Checkpoint& base, const MergePlan& plan, const MergeOptions& options);

// fp32 rows [row, row + n) of a merged tensor ([n, cols], row-major), on one of the pool's threads.
using MergedRowsConsumer = std::function<void(const float* rows, size_t row, size_t n)>;

// The streaming core of execute_merge, for commands that write merged tensors their own way
// (export quantizes them): a tensor written as merge-lora writes it, or its merged fp32 rows
// handed over block by block (base or replacement converted, every update applied), with the
// kernel reading tensors ahead on a background thread.
class MergeStream {
 public:
  MergeStream(size_t threads, ProgressBar& progress);  // threads 0: all cores
  ~MergeStream();
  MergeStream(const MergeStream&) = delete;
  MergeStream& operator=(const MergeStream&) = delete;

  void read_ahead(const TensorRef& tensor);
  // merge-lora's output of `t`; advances the progress bar by its bytes.
  void write(const PlannedTensor& t, SafetensorsWriter& writer);
  // Every row of `t` once, in blocks; concurrent calls get disjoint runs of rows that start at
  // multiples of `row_multiple`. Does not advance the progress bar.
  void merged_rows(const PlannedTensor& t, size_t row_multiple, const MergedRowsConsumer& consume);
  void flush();           // waits until the blocks write() handed to its background writer are written
  void drain() noexcept;  // the same, dropping their error (when unwinding from another one)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes the shards of a planned output into `dir`: shard s holds the tensors `shards[s]` (indices
// into `outputs`), named shard_file_name(s, shards.size()), each tensor written by
// `write_tensor(index, writer)` through `stream`; stops with an error when interrupted; with more
// than one shard, writes the index too. merge-lora's and export's one way of writing shards.
void write_shards(const std::filesystem::path& dir, const std::vector<TensorSpec>& outputs,
                  const std::vector<std::vector<size_t>>& shards, uint64_t total_bytes, MergeStream& stream,
                  const std::function<void(size_t index, SafetensorsWriter& writer)>& write_tensor);

// An output directory that only ever holds a complete result: written in a hidden temporary
// directory beside it (".NAME.tmp-PID"), fsynced and renamed into place by commit() (a
// non-empty output moved aside first and removed after); removed when never committed.
class StagedOutputDir {
 public:
  // UsageError when `output` is inside, equal to or contains one of `inputs`, is not a
  // directory, or is not empty without `overwrite`. Removes the leftovers of dead processes.
  StagedOutputDir(const std::filesystem::path& output, const std::vector<std::filesystem::path>& inputs,
                  bool overwrite);
  ~StagedOutputDir();
  StagedOutputDir(const StagedOutputDir&) = delete;
  StagedOutputDir& operator=(const StagedOutputDir&) = delete;
  const std::filesystem::path& path() const { return temp_; }  // where to write
  const std::filesystem::path& output() const { return output_; }
  void commit();

 private:
  std::filesystem::path output_, temp_;
  bool committed_ = false;
};

// Copies the non-weight files of `model_dir` into `out_dir`; config.json through `edit_config`
// when it is set.
void copy_non_weight_files(const std::filesystem::path& model_dir, const std::filesystem::path& out_dir,
                           const std::function<void(nlohmann::ordered_json& config)>& edit_config);
// config.json's torch_dtype (and text_config's) for weights now stored as `dtype`.
void set_torch_dtype(nlohmann::ordered_json& config, DType dtype);

// `dir` as an absolute path without "." / ".." parts or a trailing separator ("out/" and
// "out/." are "/cwd/out"), so names derived from it (the "-merged" default, the temporary
// directory beside it) are siblings, not children.
std::filesystem::path directory_path(const std::filesystem::path& dir);

// The files of a model directory that are not weights (config, tokenizer, processor, templates).
std::vector<std::filesystem::path> non_weight_files(const std::filesystem::path& model_dir);

}  // namespace vlmforge
