#pragma once
// Streaming LoRA merge: each output tensor is computed from the memory-mapped base (and the
// adapters) in blocks of rows and written as soon as it is done, so memory stays bounded by a
// few block buffers whatever the model size. Math in fp32, one rounding to the output dtype.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "lora/adapter.h"

namespace vlmforge {

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

// `dir` as an absolute path without "." / ".." parts or a trailing separator ("out/" and
// "out/." are "/cwd/out"), so names derived from it (the "-merged" default, the temporary
// directory beside it) are siblings, not children.
std::filesystem::path directory_path(const std::filesystem::path& dir);

// The files of a model directory that are not weights (config, tokenizer, processor, templates).
std::vector<std::filesystem::path> non_weight_files(const std::filesystem::path& model_dir);

}  // namespace vlmforge
