#pragma once
// Pipeline parallelism across processes (`mpirun -np N vlmforge infer|score|deploy ...`): rank r
// runs stage r, a contiguous run of decoder layers (plan/pipeline_stages.h) on its own devices.
// Rank 0 is the whole engine (tokenizer, vision tower, embeddings, sampling, the server) with a
// StageLink at the end of its layers; the other ranks only run serve_pipeline_stage. The
// transport is behind PipelineTransport (MPI in pipeline_mpi.cc); everything else is testable
// without it. The protocol and its costs: docs/multi-node.md.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/placement.h"
#include "model/qwen2.h"
#include "model/stage_link.h"

namespace vlmforge {

// Point-to-point messages between ranks, and the start-up exchange.
class PipelineTransport {
 public:
  virtual ~PipelineTransport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const std::string& host(int rank) const = 0;
  // Both wait at most `timeout_seconds` (negative: without limit) and return false when it passed.
  virtual bool send(int to, const std::vector<uint8_t>& message, double timeout_seconds) = 0;
  virtual bool receive(int from, std::vector<uint8_t>& message, double timeout_seconds) = 0;
  // Every rank's `mine`, by rank (a collective: every rank calls it).
  virtual std::vector<std::string> all_gather(const std::string& mine) = 0;
  // Ends every rank of the job with `code` (a rank that stopped responding cannot be waited for).
  [[noreturn]] virtual void abort(int code) = 0;
};

// The MPI transport when this process is one of several ranks of an mpirun job; null when it runs
// alone (no mpirun, or -np 1). Throws when launched with several ranks by a build without MPI.
std::unique_ptr<PipelineTransport> join_pipeline();

// A rank that failed or stopped responding: the message names the rank and its host.
class PipelineFailure : public Error {
 public:
  using Error::Error;
};

// The messages of the protocol, encoded for the transport (docs/multi-node.md).
enum class StageMessage : uint8_t { kBatch = 1, kShutdown = 2, kLogits = 3, kError = 4, kDone = 5 };
std::vector<uint8_t> encode_batch(const StageBatch& batch);
std::vector<uint8_t> encode_floats(StageMessage kind, const std::vector<float>& values);
std::vector<uint8_t> encode_text(StageMessage kind, const std::string& text);
StageMessage message_kind(const std::vector<uint8_t>& message);
StageBatch decode_batch(const std::vector<uint8_t>& message);
std::vector<float> decode_floats(const std::vector<uint8_t>& message);
std::string decode_text(const std::vector<uint8_t>& message);

// Rank 0's end of its layers: sends each step to rank 1 and waits for the last rank's logits,
// at most `timeout_seconds` for each rank's part. A failure on a later rank is a PipelineFailure
// naming it; after one, the job can only be aborted.
class PipelineStageLink : public StageLink {
 public:
  PipelineStageLink(PipelineTransport& transport, double timeout_seconds)
      : transport_(transport), timeout_(timeout_seconds) {}
  // Tells the later ranks to finish (unless a rank failed).
  ~PipelineStageLink() override;
  std::vector<float> forward(const StageBatch& batch) override;
  bool failed() const { return failed_; }

 private:
  [[noreturn]] void fail(const std::string& what);
  PipelineTransport& transport_;
  double timeout_;
  bool failed_ = false;
};

// Ranks that do not run the same checkpoint or flags (every rank finds it; rank 0 reports it).
class PipelineMismatch : public UsageError {
 public:
  using UsageError::UsageError;
};

// What every rank must agree on before it reads a weight: a digest of the checkpoint (config.json,
// the index, every safetensors header and the first 64 KiB of its data, the adapters' the same) and of the flags that
// change the numbers or the memory. Throws a PipelineMismatch naming the ranks, hosts and what differs.
std::string checkpoint_digest(const std::filesystem::path& model_dir, const std::vector<std::filesystem::path>& adapters);
void check_same_run(PipelineTransport& transport, const std::string& checkpoint, const std::string& flags);
// The flags of `options` (and the batch size) that every rank must share, as text.
std::string shared_flags(const EngineOptions& options, size_t max_batch_size);

// This rank's stage of the model, placed on its devices (`device_map`, as without a pipeline) and
// loaded. Rank 0 gets an engine whose model ends in a PipelineStageLink; the other ranks only
// the model of their layers.
// Declared so that the link outlives rank 0's engine and each model its placement.
struct PipelineRank {
  std::unique_ptr<PipelineStageLink> link;   // rank 0
  PlacedEngine engine;                       // rank 0
  std::unique_ptr<PlacedRun> worker_placed;  // ranks after the first
  std::unique_ptr<Qwen2Model> model;         // ranks after the first
};
PipelineRank load_pipeline_rank(PipelineTransport& transport, EngineOptions options, const DeviceMapOptions& device_map,
                                const PlanOptions& plan_options, double timeout_seconds);

// A rank after the first: receives each step from the previous rank, runs its layers and passes
// the hidden states on (the last rank sends the logits to rank 0), until rank 0 shuts the
// pipeline down. A step that fails here reaches rank 0 as an error naming this rank.
void serve_pipeline_stage(PipelineTransport& transport, Qwen2Model& model, double timeout_seconds);

// A command's run on this rank: loads its stage, then rank 0 runs `first_rank` on its engine
// (the command as without a pipeline) and the other ranks serve their stage. Returns the exit
// code; a failure on any rank ends the whole job through the transport with exit code 1 (2 for
// usage errors and mismatched ranks), rank 0 (or the failing rank) printing the error first.
int run_pipeline_rank(PipelineTransport& transport, const EngineOptions& options, const DeviceMapOptions& device_map,
                      const PlanOptions& plan_options, double timeout_seconds,
                      const std::function<int(PlacedEngine&)>& first_rank);

}  // namespace vlmforge
