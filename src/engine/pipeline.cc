#include "engine/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "io/safetensors.h"
#include "plan/pipeline_stages.h"
#include "util/error.h"
#include "util/sha256.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {

// Little-endian fixed-width fields (every rank of a job shares one architecture's byte order).
class Writer {
 public:
  explicit Writer(StageMessage kind) { bytes_.push_back(static_cast<uint8_t>(kind)); }
  void u64(uint64_t v) { raw(&v, sizeof v); }
  void raw(const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    bytes_.insert(bytes_.end(), p, p + size);
  }
  std::vector<uint8_t> take() { return std::move(bytes_); }

 private:
  std::vector<uint8_t> bytes_;
};

class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& bytes) : bytes_(bytes), at_(1) {
    if (bytes.empty()) throw Error("internal error: empty pipeline message");
  }
  uint64_t u64() {
    uint64_t v;
    raw(&v, sizeof v);
    return v;
  }
  // A count of `element` byte items that must fit in what is left (a corrupt count cannot allocate).
  size_t count(size_t element) {
    const uint64_t n = u64();
    if (element && n > (bytes_.size() - at_) / element) throw Error("internal error: truncated pipeline message");
    return static_cast<size_t>(n);
  }
  void raw(void* out, size_t size) {
    if (size > bytes_.size() - at_) throw Error("internal error: truncated pipeline message");
    std::memcpy(out, bytes_.data() + at_, size);
    at_ += size;
  }
  void finish() const {
    if (at_ != bytes_.size()) throw Error("internal error: pipeline message with trailing bytes");
  }

 private:
  const std::vector<uint8_t>& bytes_;
  size_t at_;
};

}  // namespace

std::vector<uint8_t> encode_batch(const StageBatch& b) {
  Writer w(StageMessage::kBatch);
  w.u64(b.released_caches.size());
  w.raw(b.released_caches.data(), b.released_caches.size() * sizeof(uint64_t));
  w.u64(b.chunks.size());
  for (const StageChunk& c : b.chunks) {
    for (uint64_t v : {c.cache_id, c.max_tokens, c.start, c.tokens, uint64_t{c.all_logits}}) w.u64(v);
  }
  w.u64(b.rope.size());
  w.raw(b.rope.data(), b.rope.size() * sizeof(b.rope[0]));
  w.u64(b.hidden.size());
  w.raw(b.hidden.data(), b.hidden.size() * sizeof(float));
  return w.take();
}

StageBatch decode_batch(const std::vector<uint8_t>& message) {
  if (message_kind(message) != StageMessage::kBatch) throw Error("internal error: not a pipeline batch");
  Reader r(message);
  StageBatch b;
  b.released_caches.resize(r.count(sizeof(uint64_t)));
  r.raw(b.released_caches.data(), b.released_caches.size() * sizeof(uint64_t));
  b.chunks.resize(r.count(5 * sizeof(uint64_t)));
  for (StageChunk& c : b.chunks) {
    c.cache_id = r.u64();
    c.max_tokens = r.u64();
    c.start = r.u64();
    c.tokens = r.u64();
    c.all_logits = r.u64() != 0;
  }
  b.rope.resize(r.count(sizeof(b.rope[0])));
  r.raw(b.rope.data(), b.rope.size() * sizeof(b.rope[0]));
  b.hidden.resize(r.count(sizeof(float)));
  r.raw(b.hidden.data(), b.hidden.size() * sizeof(float));
  r.finish();
  return b;
}

std::vector<uint8_t> encode_floats(StageMessage kind, const std::vector<float>& values) {
  Writer w(kind);
  w.u64(values.size());
  w.raw(values.data(), values.size() * sizeof(float));
  return w.take();
}

std::vector<float> decode_floats(const std::vector<uint8_t>& message) {
  Reader r(message);
  std::vector<float> values(r.count(sizeof(float)));
  r.raw(values.data(), values.size() * sizeof(float));
  r.finish();
  return values;
}

std::vector<uint8_t> encode_text(StageMessage kind, const std::string& text) {
  Writer w(kind);
  w.u64(text.size());
  w.raw(text.data(), text.size());
  return w.take();
}

std::string decode_text(const std::vector<uint8_t>& message) {
  Reader r(message);
  std::string text(r.count(1), '\0');
  r.raw(text.data(), text.size());
  r.finish();
  return text;
}

StageMessage message_kind(const std::vector<uint8_t>& message) {
  if (message.empty() || message[0] < 1 || message[0] > 5) throw Error("internal error: unknown pipeline message");
  return static_cast<StageMessage>(message[0]);
}

namespace {

std::string rank_name(const PipelineTransport& t, int rank) {
  return "rank " + std::to_string(rank) + " (host " + t.host(rank) + ")";
}

std::string seconds_text(double s) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", s);
  return text;
}

}  // namespace

void PipelineStageLink::fail(const std::string& what) {
  failed_ = true;
  // Printed now: the job is aborted once this reaches the command (a stopped rank cannot join a
  // clean shutdown), possibly before main prints the error.
  std::fprintf(stderr, "error: %s\n", what.c_str());
  throw PipelineFailure(what);
}

std::vector<float> PipelineStageLink::forward(const StageBatch& batch) {
  if (failed_) throw PipelineFailure("the pipeline failed earlier");
  const int last = transport_.size() - 1;
  if (!transport_.send(1, encode_batch(batch), timeout_))
    fail(rank_name(transport_, 1) + " stopped responding: it took no step within " + seconds_text(timeout_) + " s");
  // Every rank between reports each step passed on, so a silent rank is found by name. It may
  // itself wait up to the timeout for the next rank before it reports that one as the silent
  // one, so its own report gets twice the timeout.
  std::vector<uint8_t> message;
  for (int r = 1; r < last; ++r) {
    if (!transport_.receive(r, message, 2 * timeout_))
      fail(rank_name(transport_, r) + " stopped responding: no step done within " + seconds_text(2 * timeout_) + " s");
    if (message_kind(message) == StageMessage::kError) fail(decode_text(message));
    if (message_kind(message) != StageMessage::kDone) fail("internal error: unexpected message from " + rank_name(transport_, r));
  }
  if (!transport_.receive(last, message, timeout_))
    fail(rank_name(transport_, last) + " stopped responding: no logits within " + seconds_text(timeout_) + " s");
  if (message_kind(message) == StageMessage::kError) fail(decode_text(message));
  if (message_kind(message) != StageMessage::kLogits)
    fail("internal error: unexpected message from " + rank_name(transport_, last));
  return decode_floats(message);
}

PipelineStageLink::~PipelineStageLink() {
  if (!failed_) transport_.send(1, encode_text(StageMessage::kShutdown, ""), timeout_);
}

void serve_pipeline_stage(PipelineTransport& t, Qwen2Model& model, double timeout_seconds) {
  const int rank = t.rank(), last = t.size() - 1;
  std::vector<uint8_t> message;
  for (;;) {
    t.receive(rank - 1, message, -1);  // idle between requests as long as rank 0 is
    const StageMessage kind = message_kind(message);
    if (kind == StageMessage::kShutdown) {
      if (rank != last) t.send(rank + 1, message, timeout_seconds);
      return;
    }
    std::vector<uint8_t> out;
    if (kind == StageMessage::kError) {
      out = std::move(message);  // an earlier rank failed: passed on to rank 0
    } else {
      try {
        const std::vector<float> result = model.forward_stage(decode_batch(message));
        out = encode_floats(rank == last ? StageMessage::kLogits : StageMessage::kBatch, result);
      } catch (const std::exception& e) {
        out = encode_text(StageMessage::kError, rank_name(t, rank) + ": " + e.what());
      }
      if (rank != last && message_kind(out) == StageMessage::kBatch) {
        // The next rank gets the same batch description with this stage's hidden states.
        StageBatch next = decode_batch(message);
        next.hidden = decode_floats(out);
        out = encode_batch(next);
      }
    }
    const int next = rank == last ? 0 : rank + 1;
    const bool sent = t.send(next, out, timeout_seconds);
    if (rank != last && sent) t.send(0, encode_text(StageMessage::kDone, ""), timeout_seconds);
    if (!sent) {
      // The rank that took nothing is the one at fault, not this one: name it to rank 0 (which
      // reports and ends the job), and end the job from here only if rank 0 cannot hear it.
      const std::string what = rank_name(t, next) + " stopped responding: it took no step from " +
                               rank_name(t, rank) + " within " + seconds_text(timeout_seconds) + " s";
      if (next != 0 && t.send(0, encode_text(StageMessage::kError, what), timeout_seconds))
        std::this_thread::sleep_for(std::chrono::duration<double>(timeout_seconds));
      std::fprintf(stderr, "error: %s\n", what.c_str());
      t.abort(1);
    }
  }
}

namespace {

void add_file(std::vector<uint8_t>& into, const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot be read");
  into.insert(into.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// config.json, the index, and each safetensors file's name and header (the 8-byte length and the
// JSON): what decides which tensors are where.
void add_checkpoint(std::vector<uint8_t>& into, const fs::path& dir) {
  for (const char* name : {"config.json", "adapter_config.json", "model.safetensors.index.json"})
    if (fs::exists(dir / name)) add_file(into, dir / name);
  std::set<fs::path> files;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") files.insert(e.path());
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    uint64_t length = 0;
    if (!in.read(reinterpret_cast<char*>(&length), sizeof length) || length > (uint64_t{100} << 20))
      throw Error(f.string() + ": not a safetensors file");
    std::vector<char> header(length);
    if (!in.read(header.data(), static_cast<std::streamsize>(length))) throw Error(f.string() + ": truncated header");
    // And the first 64 KiB of tensor data: checkpoints of one shape (another seed, another
    // fine-tune) differ there, and reading it costs nothing next to loading.
    std::vector<char> data(64 << 10);
    in.read(data.data(), static_cast<std::streamsize>(data.size()));
    data.resize(static_cast<size_t>(in.gcount()));
    const std::string name = f.filename().string();
    into.insert(into.end(), name.begin(), name.end());
    into.insert(into.end(), header.begin(), header.end());
    into.insert(into.end(), data.begin(), data.end());
  }
}

std::string hex(const Sha256Digest& d) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (uint8_t b : d) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

}  // namespace

std::string checkpoint_digest(const fs::path& model_dir, const std::vector<fs::path>& adapters) {
  std::vector<uint8_t> bytes;
  add_checkpoint(bytes, model_dir);
  for (const fs::path& a : adapters) add_checkpoint(bytes, a);
  return hex(sha256({bytes}));
}

std::string shared_flags(const EngineOptions& o, size_t max_batch_size) {
  std::string adapters;
  for (const auto& a : o.adapter_dirs) adapters += a.filename().string() + ",";
  return "max_model_len=" + std::to_string(o.max_model_len) + " kv_cache_dtype=" +
         std::string(dtype_name(o.kv_cache_dtype)) + " quant_method=" +
         (o.quantize_on_load ? std::to_string(o.quantize_on_load->bits) + "-bit" : std::string("none")) + " adapters=" + adapters +
         " max_batch_size=" + std::to_string(max_batch_size);
}

void check_same_run(PipelineTransport& t, const std::string& checkpoint, const std::string& flags) {
  const std::vector<std::string> all = t.all_gather(checkpoint + "\n" + flags);
  for (int r = 1; r < t.size(); ++r) {
    const std::string& theirs = all[static_cast<size_t>(r)];
    const size_t split = theirs.find('\n');
    const std::string their_checkpoint = theirs.substr(0, split), their_flags = theirs.substr(split + 1);
    const std::string& first = all[0];
    const std::string first_checkpoint = first.substr(0, first.find('\n')), first_flags = first.substr(first.find('\n') + 1);
    if (their_checkpoint != first_checkpoint)
      throw PipelineMismatch(rank_name(t, r) + " sees a different checkpoint than " + rank_name(t, 0) +
                       " (config.json, index, safetensors headers or data differ: sha256 " + their_checkpoint.substr(0, 12) +
                       " vs " + first_checkpoint.substr(0, 12) + "); give every rank the same model files");
    if (their_flags != first_flags)
      throw PipelineMismatch(rank_name(t, r) + " runs with other flags than " + rank_name(t, 0) + ": '" + their_flags +
                       "' vs '" + first_flags + "'");
  }
}

PipelineRank load_pipeline_rank(PipelineTransport& t, EngineOptions options, const DeviceMapOptions& device_map,
                                const PlanOptions& plan_options, double timeout_seconds) {
  check_same_run(t, checkpoint_digest(options.model_dir, options.adapter_dirs),
                 shared_flags(options, plan_options.max_batch_size));
  PlanOptions plan = plan_options;
  plan.quantize_on_load = options.quantize_on_load;
  const ModelShape shape = ModelShape::from_checkpoint(options.model_dir, plan.quantize_on_load ? &*plan.quantize_on_load : nullptr);
  const std::vector<PipelineStage> stages = split_stages(shape, static_cast<size_t>(t.size()));
  const size_t rank = static_cast<size_t>(t.rank());
  PipelineRank out;
  std::unique_ptr<PlacedRun> placed = place_stage(stage_shape(shape, stages, rank), stages[rank].first_layer, device_map, plan);
  // Rank 0 prints every rank's part: each sends its line, rank 0 prints them in rank order.
  const std::vector<std::string> lines = t.all_gather(placed->plan_line());
  if (rank == 0)
    for (size_t r = 0; r < lines.size(); ++r)
      std::fprintf(stderr, "[pipeline] rank %zu (host %s): layers %zu-%zu on %s\n", r, t.host(static_cast<int>(r)).c_str(),
                   stages[r].first_layer, stages[r].end_layer - 1, lines[r].c_str());
  if (rank == 0) {
    out.link = std::make_unique<PipelineStageLink>(t, timeout_seconds);
    placed->placement.next_stage = t.size() > 1 ? out.link.get() : nullptr;
    options.placement = &placed->placement;
    out.engine.placed = std::move(placed);
    out.engine.memory_report = device_map.memory_report;
    out.engine.engine = std::make_unique<Engine>(options);
    return out;
  }
  out.worker_placed = std::move(placed);
  out.model = std::make_unique<Qwen2Model>(options.model_dir, options.threads, options.adapter_dirs,
                                           &out.worker_placed->placement, options.quantize_on_load);
  out.model->set_kv_cache_dtype(options.kv_cache_dtype);
  return out;
}

int run_pipeline_rank(PipelineTransport& t, const EngineOptions& options, const DeviceMapOptions& device_map,
                      const PlanOptions& plan_options, double timeout_seconds,
                      const std::function<int(PlacedEngine&)>& first_rank) {
  const bool first = t.rank() == 0;
  try {
    PipelineRank rank = load_pipeline_rank(t, options, device_map, plan_options, timeout_seconds);
    if (!first) {
      serve_pipeline_stage(t, *rank.model, timeout_seconds);
      return 0;
    }
    const int code = first_rank(rank.engine);
    if (rank.link->failed()) t.abort(1);
    return code;
  } catch (const PipelineMismatch& e) {
    if (first) {
      std::fprintf(stderr, "error: %s\n", e.what());
      t.abort(2);
    }
    // Rank 0 found the same and ends the job; a rank that outlives it by far ends it itself.
    std::this_thread::sleep_for(std::chrono::seconds(10));
    t.abort(2);
  } catch (const PipelineFailure&) {
    t.abort(1);  // printed where it was found
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s%s\n", first ? "" : (rank_name(t, t.rank()) + ": ").c_str(), e.what());
    t.abort(dynamic_cast<const UsageError*>(&e) ? 2 : 1);
  }
}

}  // namespace vlmforge
