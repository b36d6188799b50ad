// Executing a merge plan: stream every output tensor block by block into a temporary directory,
// then rename it into place.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "io/json_file.h"
#include "kernels/convert.h"
#include "kernels/low_rank.h"
#include "lora/merge.h"
#include "util/error.h"
#include "util/interrupt.h"
#include "util/progress.h"
#include "util/thread_pool.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

// How many tensors the kernel reads ahead of the merge (page cache, not this process's memory).
constexpr size_t kReadAheadTensors = 2;

// Each block's fp32 working copy is at most this large; memory does not grow with the model.
constexpr uint64_t kBlockFloats = (16u << 20) / sizeof(float);
// Rows are converted, updated and rounded in groups of about this many floats per thread: with
// the low-rank kernel's panel of `right` (128 KiB at rank 64) they fit a 512 KiB L2 cache. A group
// has at least kMinGroupRows rows (two of the kernel's 6-row tiles, three of its 4-row ones):
// fewer, on wide rows (a 7B down_proj has 18944 columns), leave each load of `right` feeding
// only a row or two, and the update kernel then waits on the cache instead of computing.
constexpr size_t kMinGroupRows = 12;
constexpr size_t kGroupFloats = (256u << 10) / sizeof(float);

// An adapter tensor as fp32; its pages are dropped afterwards (it is read only this once).
std::vector<float> adapter_to_f32(const TensorRef& t) {
  std::vector<float> out = kernels::tensor_to_f32(t);
  t.release();
  return out;
}

std::vector<float> transpose(const std::vector<float>& m, size_t rows, size_t cols) {
  std::vector<float> out(m.size());
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) out[c * rows + r] = m[r * cols + c];
  return out;
}

// One step applied to the fp32 rows of a tensor, in plan order.
struct Step {
  enum class Kind { kLowRank, kAddRowVector } kind;
  std::vector<float> left;   // [rows, rank]   (kLowRank)
  std::vector<float> right;  // [rank, cols]   (kLowRank); the vector to add (kAddRowVector)
  size_t rank = 0;
  float scale = 1;
  // DoRA: after the low-rank add, scale by magnitude / norm along rows or along columns.
  std::vector<float> magnitude;
  bool dora = false;
  bool column_norm = false;
  std::vector<float> column_factor;  // magnitude / column norm, filled by a pre-pass
};

Step make_step(const TensorUpdate& u, size_t rows, size_t cols) {
  Step s;
  const LoraModule& m = *u.module;
  s.scale = static_cast<float>(m.scaling);
  if (u.kind == TensorUpdate::Kind::kLoraBias) {
    s.kind = Step::Kind::kAddRowVector;
    s.right = adapter_to_f32(*m.b_bias);
    return s;
  }
  s.kind = Step::Kind::kLowRank;
  s.rank = static_cast<size_t>(m.rank);
  std::vector<float> a = adapter_to_f32(*m.a);  // [rank, a_cols]
  std::vector<float> b = adapter_to_f32(*m.b);  // [b_rows, rank]
  if (u.transposed) {
    // stored delta = (B·A)ᵀ = Aᵀ·Bᵀ: left = Aᵀ [rows, rank], right = Bᵀ [rank, cols].
    s.left = transpose(a, s.rank, rows);
    s.right = transpose(b, cols, s.rank);
  } else {
    s.left = std::move(b);
    s.right = std::move(a);
  }
  if (u.kind == TensorUpdate::Kind::kDora) {
    s.dora = true;
    s.column_norm = u.transposed;
    s.magnitude = adapter_to_f32(*m.magnitude);
  }
  return s;
}

// Applies steps [0, count) to rows [row0, row0+n) held in `buf` ([n, cols]); the last step only
// up to its low-rank add when `stop_before_norm`.
void apply_steps(std::vector<Step>& steps, size_t count, bool stop_before_norm, float* buf, size_t row0, size_t n,
                 size_t cols) {
  for (size_t si = 0; si < count; ++si) {
    Step& s = steps[si];
    if (s.kind == Step::Kind::kAddRowVector) {
      for (size_t r = 0; r < n; ++r)
        for (size_t c = 0; c < cols; ++c) buf[r * cols + c] += s.scale * s.right[c];
      continue;
    }
    kernels::add_low_rank(buf, n, cols, s.left.data() + row0 * s.rank, s.right.data(), s.rank, s.scale);
    if (!s.dora || (stop_before_norm && si + 1 == count)) continue;
    if (s.column_norm) {
      for (size_t r = 0; r < n; ++r)
        for (size_t c = 0; c < cols; ++c) buf[r * cols + c] *= s.column_factor[c];
    } else {
      for (size_t r = 0; r < n; ++r) {
        double sum = 0;
        for (size_t c = 0; c < cols; ++c) sum += static_cast<double>(buf[r * cols + c]) * buf[r * cols + c];
        const float factor = static_cast<float>(s.magnitude[row0 + r] / std::sqrt(sum));
        for (size_t c = 0; c < cols; ++c) buf[r * cols + c] *= factor;
      }
    }
  }
}

// Writes blocks on a background thread, so the next block is computed while this one is copied
// into the page cache. At most one write is in flight; its bytes must stay untouched until the
// next submit() or wait() returns.
class BackgroundWriter {
 public:
  BackgroundWriter() : thread_([this] { loop(); }) {}
  ~BackgroundWriter() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  BackgroundWriter(const BackgroundWriter&) = delete;
  BackgroundWriter& operator=(const BackgroundWriter&) = delete;

  void submit(SafetensorsWriter& writer, std::span<const std::byte> bytes) {
    wait();
    std::lock_guard lock(mutex_);
    writer_ = &writer;
    bytes_ = bytes;
    pending_ = true;
    changed_.notify_all();
  }

  // Waits for the write in flight without reporting its error (when unwinding from another one).
  void drain() noexcept {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return !pending_; });
    error_ = nullptr;
  }

  // Waits for the write in flight; rethrows its error.
  void wait() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return !pending_; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      changed_.wait(lock, [this] { return pending_ || stopping_; });
      if (!pending_) return;
      lock.unlock();
      std::exception_ptr error;
      try {
        writer_->write(bytes_);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      error_ = error;
      pending_ = false;
      changed_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  SafetensorsWriter* writer_ = nullptr;
  std::span<const std::byte> bytes_;
  bool pending_ = false;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: started after the state above exists
};

// A growable buffer that does not zero what it hands out (every byte is overwritten before use).
template <typename T>
class ScratchBuffer {
 public:
  T* get(size_t count) {
    if (count > capacity_) {
      data_ = std::make_unique_for_overwrite<T[]>(count);
      capacity_ = count;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<T[]> data_;
  size_t capacity_ = 0;
};

// Asks the kernel to read tensors ahead (MADV_WILLNEED) on its own thread: the call submits the
// reads synchronously, which would otherwise stall the merge for as long as it takes.
class Prefetcher {
 public:
  Prefetcher() : thread_([this] { loop(); }) {}
  ~Prefetcher() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  void request(const TensorRef* tensor) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(tensor);
    }
    changed_.notify_all();
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      changed_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      const TensorRef* next = queue_.front();
      queue_.pop_front();
      lock.unlock();
      next->prefetch();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<const TensorRef*> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: started after the state above exists
};

class TensorMerger {
 public:
  TensorMerger(ThreadPool& pool, ProgressBar& progress) : pool_(pool), progress_(progress) {}

  void write(const PlannedTensor& t, SafetensorsWriter& writer) {
    const auto [source, first_update] = source_of(t);
    if (first_update == t.updates.size() && source->info->dtype == t.output.dtype) {
      background_.wait();
      writer.copy_from(source->file->mapped(), source->file->file_offset(*source->info), source->info->nbytes());
    } else {
      const auto [rows, cols] = matrix_shape(t);
      std::vector<Step> steps = steps_of(t, *source, first_update, rows, cols);
      stream_blocks(steps, *source, t.output.dtype, rows, cols, writer);
    }
    source->release();
    progress_.advance(t.output.nbytes());
  }

  void merged_rows(const PlannedTensor& t, size_t row_multiple, const MergedRowsConsumer& consume) {
    const auto [source, first_update] = source_of(t);
    const auto [rows, cols] = matrix_shape(t);
    std::vector<Step> steps = steps_of(t, *source, first_update, rows, cols);
    for_blocks(
        *source, rows, cols, row_multiple,
        [&](float* buf, size_t row, size_t n, size_t row0) {
          apply_steps(steps, steps.size(), false, buf, row0 + row, n, cols);
          consume(buf, row0 + row, n);
        },
        [](size_t) {});
    source->release();
  }

 private:
  // The tensor the output starts from (the base, or the last replacement of it) and the index
  // of the first update applied after it.
  // Matrices are [shape[0], rest]; vectors and scalars are one row.
  static std::pair<size_t, size_t> matrix_shape(const PlannedTensor& t) {
    const auto& shape = t.output.shape;
    const size_t rows = shape.size() < 2 ? 1 : shape[0];
    return {rows, rows ? t.output.num_elements() / rows : 0};
  }

  // The updates from `first_update` on, ready to apply to rows of `source`.
  std::vector<Step> steps_of(const PlannedTensor& t, const TensorRef& source, size_t first_update, size_t rows,
                             size_t cols) {
    std::vector<Step> steps;
    for (size_t i = first_update; i < t.updates.size(); ++i) steps.push_back(make_step(t.updates[i], rows, cols));
    compute_column_factors(steps, source, rows, cols);
    return steps;
  }

  static std::pair<const TensorRef*, size_t> source_of(const PlannedTensor& t) {
    const TensorRef* source = t.base;
    size_t first_update = 0;
    for (size_t i = 0; i < t.updates.size(); ++i)
      if (t.updates[i].kind == TensorUpdate::Kind::kReplace) {
        source = t.updates[i].replacement;
        first_update = i + 1;
      }
    return {source, first_update};
  }

  // Walks the source in blocks of rows (the unit of output hand-off, page release and interrupt
  // checks), each shared out over the pool. A thread works through its rows in groups that stay
  // in the L2 cache: converts a group to fp32, then per_group(buf, row_in_block, n, block_row0).
  // after_block(n) follows each block. A whole block in fp32 would cross DRAM three more times.
  // Blocks, groups and each thread's share of a block start at multiples of `row_multiple`.
  template <typename PerGroup, typename AfterBlock>
  void for_blocks(const TensorRef& source, size_t rows, size_t cols, size_t row_multiple, PerGroup&& per_group,
                  AfterBlock&& after_block) {
    auto round_up = [&](size_t n) { return (n + row_multiple - 1) / row_multiple * row_multiple; };
    const size_t block_rows =
        std::max(row_multiple, kBlockFloats / std::max<size_t>(cols, 1) / row_multiple * row_multiple);
    const size_t group_rows = round_up(std::max<size_t>(kMinGroupRows, kGroupFloats / std::max<size_t>(cols, 1)));
    const size_t element_bytes = dtype_info(source.info->dtype).bits / 8;
    const std::byte* src = source.data().data();
    for (size_t row0 = 0; row0 < rows; row0 += block_rows) {
      if (interrupted()) throw Error("interrupted: the partial output was removed");
      const size_t n = std::min(block_rows, rows - row0);
      pool_.parallel_for((n + row_multiple - 1) / row_multiple, [&](size_t first_unit, size_t end_unit) {
        const size_t begin = first_unit * row_multiple, end = std::min(n, end_unit * row_multiple);
        const auto buf = std::make_unique_for_overwrite<float[]>(std::min(group_rows, end - begin) * cols);
        for (size_t row = begin; row < end; row += group_rows) {
          const size_t m = std::min(group_rows, end - row);
          kernels::to_f32(source.info->dtype, src + (row0 + row) * cols * element_bytes, buf.get(), m * cols);
          per_group(buf.get(), row, m, row0);
        }
      });
      after_block(n);
      // Drop this block's source pages now: RSS stays at a few blocks even for huge tensors.
      source.file->mapped().release(source.file->file_offset(*source.info) + row0 * cols * element_bytes,
                                    n * cols * element_bytes);
    }
  }

  // DoRA on fan_in_fan_out layers and embeddings normalises columns: each column's norm needs
  // every row, so a pre-pass computes it (once per such step, in order).
  void compute_column_factors(std::vector<Step>& steps, const TensorRef& source, size_t rows, size_t cols) {
    for (size_t si = 0; si < steps.size(); ++si) {
      if (!steps[si].dora || !steps[si].column_norm) continue;
      std::vector<double> sums(cols, 0.0);
      std::mutex sums_mutex;
      for_blocks(
          source, rows, cols, 1,
          [&](float* buf, size_t row, size_t n, size_t row0) {
            apply_steps(steps, si + 1, true, buf, row0 + row, n, cols);
            std::vector<double> local(cols, 0.0);
            for (size_t r = 0; r < n; ++r)
              for (size_t c = 0; c < cols; ++c) local[c] += static_cast<double>(buf[r * cols + c]) * buf[r * cols + c];
            std::lock_guard lock(sums_mutex);
            for (size_t c = 0; c < cols; ++c) sums[c] += local[c];
          },
          [](size_t) {});
      steps[si].column_factor.resize(cols);
      for (size_t c = 0; c < cols; ++c)
        steps[si].column_factor[c] = static_cast<float>(steps[si].magnitude[c] / std::sqrt(sums[c]));
    }
  }

  void stream_blocks(std::vector<Step>& steps, const TensorRef& source, DType out_dtype, size_t rows, size_t cols,
                     SafetensorsWriter& writer) {
    const size_t out_element = dtype_info(out_dtype).bits / 8;
    const size_t block_bytes = std::min(rows, std::max<size_t>(1, kBlockFloats / std::max<size_t>(cols, 1))) * cols * out_element;
    // Alternate output buffers: one is being written while the other is filled (the one handed
    // to the writer last is never the one taken here).
    std::byte* out = out_bytes_[next_out_].get(block_bytes);
    for_blocks(
        source, rows, cols, 1,
        [&](float* buf, size_t row, size_t n, size_t row0) {
          apply_steps(steps, steps.size(), false, buf, row0 + row, n, cols);
          kernels::from_f32(out_dtype, buf, out + row * cols * out_element, n * cols);
        },
        [&](size_t n) {
          background_.submit(writer, std::span(out, n * cols * out_element));
          next_out_ ^= 1;
          out = out_bytes_[next_out_].get(block_bytes);
        });
  }

 public:
  // Every block handed to the background writer is written before a shard is finished.
  void flush() { background_.wait(); }
  // Called before the shard's writer goes away after an error, so no write still uses it.
  void drain() noexcept { background_.drain(); }

 private:
  ThreadPool& pool_;
  ProgressBar& progress_;
  ScratchBuffer<float> floats_;
  ScratchBuffer<std::byte> out_bytes_[2];
  size_t next_out_ = 0;
  BackgroundWriter background_;  // after the buffers: joins before they are freed
};

bool is_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin(), o = outer.begin();
  for (; o != outer.end(); ++o, ++i)
    if (i == inner.end() || *i != *o) return false;
  return true;
}

void check_output_location(const fs::path& output, const std::vector<fs::path>& inputs, bool overwrite) {
  const fs::path out = fs::weakly_canonical(fs::absolute(output));
  for (const auto& input : inputs) {
    const fs::path in = fs::weakly_canonical(fs::absolute(input));
    if (is_within(out, in))
      throw UsageError("output directory " + output.string() + " is inside input directory " + input.string() +
                       "; choose another --output_dir (inputs are never modified)");
    if (is_within(in, out))
      throw UsageError("output directory " + output.string() + " contains input directory " + input.string() +
                       "; choose another --output_dir (inputs are never modified)");
  }
  if (fs::exists(output)) {
    if (!fs::is_directory(output)) throw UsageError("output path " + output.string() + " exists and is not a directory");
    if (!fs::is_empty(output) && !overwrite)
      throw UsageError("output directory " + output.string() + " exists and is not empty; pass --overwrite to replace it");
  }
}

// Temporary (".NAME.tmp-PID") and set-aside (".NAME.old-PID") directories of merges into the same
// output whose process no longer exists: a killed merge (SIGKILL, power loss) leaves them behind.
void remove_stale_temporaries(const fs::path& output) {
  const std::string prefix = std::string(".").append(output.filename().string()).append(".");
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(output.parent_path(), ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(prefix)) continue;
    const std::string rest = name.substr(prefix.size());
    // A set-aside directory is the previous output when the merge died between its two renames.
    if (!rest.starts_with("tmp-") && !(rest.starts_with("old-") && fs::exists(output, ec))) continue;
    const std::string pid_text = rest.substr(4);
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos || pid_text.size() > 9)
      continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    // ESRCH: no such process. A live one (ours or another user's, EPERM) keeps its directory.
    if (pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH) continue;
    if (entry.is_directory(ec) && !entry.is_symlink(ec)) fs::remove_all(entry.path(), ec);
  }
}

void fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw Error(path.string() + ": cannot open to sync: " + errno_message(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw Error(path.string() + ": fsync failed: " + errno_message(err));
}

// Every file and directory below `dir` is on disk before the rename makes the output visible.
void fsync_tree(const fs::path& dir) {
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file() || entry.is_directory()) fsync_path(entry.path(), entry.is_directory());
  fsync_path(dir, true);
}

std::string torch_dtype_name(DType d) {
  return d == DType::BF16 ? "bfloat16" : d == DType::F16 ? "float16" : "float32";
}

}  // namespace

struct MergeStream::Impl {
  Impl(size_t threads, ProgressBar& progress) : pool(threads), merger(pool, progress) {}
  ThreadPool pool;
  Prefetcher prefetcher;
  TensorMerger merger;  // last: its background writer joins before the pool goes
};

MergeStream::MergeStream(size_t threads, ProgressBar& progress) : impl_(std::make_unique<Impl>(threads, progress)) {}
MergeStream::~MergeStream() = default;
void MergeStream::read_ahead(const TensorRef& t) { impl_->prefetcher.request(&t); }
void MergeStream::write(const PlannedTensor& t, SafetensorsWriter& writer) { impl_->merger.write(t, writer); }
void MergeStream::merged_rows(const PlannedTensor& t, size_t row_multiple, const MergedRowsConsumer& consume) {
  impl_->merger.merged_rows(t, row_multiple, consume);
}
void MergeStream::flush() { impl_->merger.flush(); }
void MergeStream::drain() noexcept { impl_->merger.drain(); }

StagedOutputDir::StagedOutputDir(const fs::path& output, const std::vector<fs::path>& inputs, bool overwrite)
    : output_(directory_path(output)) {
  check_output_location(output_, inputs, overwrite);
  remove_stale_temporaries(output_);
  temp_ = output_.parent_path() / ("." + output_.filename().string() + ".tmp-" + std::to_string(getpid()));
  fs::remove_all(temp_);
  fs::create_directories(temp_);
}

StagedOutputDir::~StagedOutputDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(temp_, ec);
  }
}

void StagedOutputDir::commit() {
  fsync_tree(temp_);
  // Swap into place: the output directory only ever holds a complete result.
  if (fs::exists(output_)) {
    const fs::path old = output_.parent_path() / ("." + output_.filename().string() + ".old-" + std::to_string(getpid()));
    fs::rename(output_, old);
    fs::rename(temp_, output_);
    committed_ = true;
    fs::remove_all(old);
  } else {
    fs::rename(temp_, output_);
    committed_ = true;
  }
  fsync_path(output_.parent_path(), true);
}

void copy_non_weight_files(const fs::path& model_dir, const fs::path& out_dir,
                           const std::function<void(nlohmann::ordered_json&)>& edit_config) {
  for (const auto& file : non_weight_files(model_dir)) {
    const fs::path target = out_dir / file.filename();
    if (file.filename() == "config.json" && edit_config) {
      nlohmann::ordered_json config = nlohmann::ordered_json::parse(read_text_file(file));
      edit_config(config);
      write_text_file(target, config.dump(2) + "\n");
    } else if (fs::is_directory(file)) {
      fs::copy(file, target, fs::copy_options::recursive);
    } else {
      fs::copy_file(file, target);
    }
  }
}

void set_torch_dtype(nlohmann::ordered_json& config, DType dtype) {
  config["torch_dtype"] = torch_dtype_name(dtype);
  if (config.contains("text_config") && config["text_config"].is_object())
    config["text_config"]["torch_dtype"] = torch_dtype_name(dtype);
}

void write_shards(const fs::path& dir, const std::vector<TensorSpec>& outputs,
                  const std::vector<std::vector<size_t>>& shards, uint64_t total_bytes, MergeStream& stream,
                  const std::function<void(size_t index, SafetensorsWriter& writer)>& write_tensor) {
  std::map<std::string, std::string> weight_map;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = shard_file_name(s, shards.size());
    std::vector<TensorSpec> specs;
    for (size_t i : shards[s]) {
      specs.push_back(outputs[i]);
      weight_map[outputs[i].name] = name;
    }
    SafetensorsWriter writer(dir / name, std::move(specs));
    try {
      for (size_t i : shards[s]) {
        if (interrupted()) throw Error("interrupted: the partial output was removed");
        write_tensor(i, writer);
      }
      stream.flush();
    } catch (...) {
      stream.drain();
      throw;
    }
    writer.finish();
  }
  if (shards.size() > 1)
    write_text_file(dir / "model.safetensors.index.json", make_shard_index(total_bytes, weight_map).dump(2) + "\n");
}

MergeStats execute_merge(const Checkpoint& base, const MergePlan& plan, const MergeOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<fs::path> inputs{options.model_dir};
  inputs.insert(inputs.end(), options.adapter_dirs.begin(), options.adapter_dirs.end());
  StagedOutputDir staged(plan.output_dir, inputs, options.overwrite);

  ProgressBar progress("merge", plan.total_bytes, options.progress);
  MergeStream stream(options.threads, progress);
  for (size_t i = 0; i < std::min(kReadAheadTensors, plan.tensors.size()); ++i) stream.read_ahead(*plan.tensors[i].base);
  std::vector<TensorSpec> outputs;
  for (const PlannedTensor& t : plan.tensors) outputs.push_back(t.output);
  write_shards(staged.path(), outputs, plan.shards, plan.total_bytes, stream, [&](size_t i, SafetensorsWriter& writer) {
    // Start reading the next tensor from disk while this one is computed.
    if (i + kReadAheadTensors < plan.tensors.size()) stream.read_ahead(*plan.tensors[i + kReadAheadTensors].base);
    stream.write(plan.tensors[i], writer);
  });
  std::function<void(nlohmann::ordered_json&)> edit_config;
  // The weights' dtype changed: say so in the config, as transformers would on save.
  if (options.dtype) edit_config = [&](nlohmann::ordered_json& config) { set_torch_dtype(config, *options.dtype); };
  copy_non_weight_files(base.root(), staged.path(), edit_config);
  progress.finish();
  staged.commit();
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), plan.total_bytes};
}

}  // namespace vlmforge
