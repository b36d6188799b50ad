#pragma once
// Continuous batching: one thread owns the model. Between decode steps, waiting requests join the
// running batch (up to max_batch_size). Each step runs one prefill chunk of every prompt still in
// prefill, then one forward with the decode token of every sequence past its prompt, so each
// weight matrix is read once per step for all of them. Finished or cancelled sequences leave at
// once and their KV blocks go back to the pool, where full prompt blocks stay cached for later
// requests with the same prefix (automatic prefix caching) until the pool needs them.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "model/qwen2.h"
#include "engine/sequence.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace vlmforge::server {

// submit() when --max_queue requests are already waiting.
class QueueFull : public Error {
 public:
  using Error::Error;
};
// submit() after stop_accepting().
class ShuttingDown : public Error {
 public:
  using Error::Error;
};

// One request's generation, shared by the HTTP handler (reader) and the scheduler (writer).
class Job {
 public:
  Job(PromptInput prompt, GenerationParams params) : prompt_(std::move(prompt)), params_(std::move(params)) {}

  // What the handler has not seen yet: text and logprobs past the given counts.
  struct Update {
    std::string text;
    std::vector<TokenLogprob> logprobs;
    size_t tokens = 0;       // tokens generated so far
    bool finished = false;
    std::string finish_reason;
    std::string error;  // set when generation failed
  };
  // Waits until there is output past (text_bytes, logprob_count), the job ends, or `timeout`.
  Update wait(size_t text_bytes, size_t logprob_count, std::chrono::milliseconds timeout);
  // The whole result so far (complete once wait() reported finished).
  GenerationResult result() const;
  // Why generation failed (empty unless it did).
  std::string error() const;

  // Asks the scheduler to drop this sequence (client gone); its KV cache is freed at the next step.
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  friend class Scheduler;
  PromptInput prompt_;  // moved into the sequence when the job joins the batch (scheduler thread)
  const GenerationParams params_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  GenerationResult progress_;
  bool finished_ = false;
  std::string error_;
};

struct SchedulerOptions {
  size_t max_batch_size = 8;
  size_t max_queue = 64;
  size_t max_model_len = 4096;
  // Paged KV caches from one pool of this many blocks (kKvBlockSize positions each); 0: room for
  // max_batch_size sequences of max_model_len, the budget the plan counts, so no running sequence
  // can find the pool exhausted.
  size_t kv_cache_blocks = 0;
  // Reuse the cached blocks of a prompt's prefix. Off by default: the suffix's prefill then starts
  // at a block, not a chunk, boundary, which moves logprobs by ~1e-9 on the CPU (deploy_e2e_openai).
  bool enable_prefix_caching = false;
};

struct SchedulerStats {
  size_t queued = 0;   // waiting to join the batch
  size_t running = 0;  // in the batch now
  size_t peak_running = 0;
  uint64_t prompt_tokens = 0;      // prefilled, all time
  uint64_t generated_tokens = 0;   // sampled, all time
  uint64_t finished = 0, cancelled = 0, failed = 0;
  uint64_t kv_cache_bytes = 0;     // held by the running sequences
  uint64_t decode_steps = 0;
  KvBlockStats kv_blocks;               // the pool: total, used, cached, prefix lookups and hits
  uint64_t cached_prompt_tokens = 0;    // prompt tokens taken from the prefix cache, all time
};

class Scheduler {
 public:
  // `model` and `tokenizer` must outlive the scheduler; its thread starts at once.
  Scheduler(Qwen2Model& model, const tokenizer::Tokenizer& tokenizer, SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request (its images already encoded: the scheduler thread only runs the language
  // model); throws QueueFull or ShuttingDown.
  std::shared_ptr<Job> submit(PromptInput prompt, GenerationParams params);
  // Removes a job that has not joined the batch yet, or marks a running one for cancellation.
  void cancel(const std::shared_ptr<Job>& job);
  // New submits fail with ShuttingDown; queued and running jobs still complete.
  void stop_accepting();
  // stop_accepting(), then waits until every job has finished and the thread has exited.
  void drain();
  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Running;
  void loop();
  void step(std::vector<std::unique_ptr<Running>>& running, std::vector<std::shared_ptr<Job>> joiners);
  void publish(Running& r);
  void fail(const std::shared_ptr<Job>& job, const std::string& message);

  Qwen2Model& model_;
  const tokenizer::Tokenizer& tokenizer_;
  const SchedulerOptions options_;
  KvBlockPool pool_;  // every running sequence's KV cache (scheduler thread)
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> waiting_;
  bool accepting_ = true;
  bool stopping_ = false;
  SchedulerStats stats_;  // guarded by mutex_
  std::thread thread_;
};

}  // namespace vlmforge::server
