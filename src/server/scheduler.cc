#include "server/scheduler.h"

#include <algorithm>

#include "engine/generation_step.h"

namespace vlmforge::server {

Job::Update Job::wait(size_t text_bytes, size_t logprob_count, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] {
    return finished_ || progress_.text.size() > text_bytes || progress_.logprobs.size() > logprob_count;
  });
  Update u;
  if (progress_.text.size() > text_bytes) u.text = progress_.text.substr(text_bytes);
  if (progress_.logprobs.size() > logprob_count)
    u.logprobs.assign(progress_.logprobs.begin() + static_cast<std::ptrdiff_t>(logprob_count), progress_.logprobs.end());
  u.tokens = progress_.tokens.size();
  u.finished = finished_;
  u.finish_reason = progress_.finish_reason;
  u.error = error_;
  return u;
}

GenerationResult Job::result() const {
  std::lock_guard lock(mutex_);
  return progress_;
}

std::string Job::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

struct Scheduler::Running {
  std::shared_ptr<Job> job;
  std::unique_ptr<SequenceState> state;
  size_t published_text = 0, published_tokens = 0;
};

namespace {

size_t pool_blocks(const SchedulerOptions& o) {
  if (o.max_batch_size == 0) throw UsageError("--max_batch_size must be at least 1");
  return o.kv_cache_blocks ? o.kv_cache_blocks : o.max_batch_size * ((o.max_model_len + kKvBlockSize - 1) / kKvBlockSize);
}

}  // namespace

Scheduler::Scheduler(Qwen2Model& model, const tokenizer::Tokenizer& tokenizer, SchedulerOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      options_(options),
      pool_(model.make_block_pool(pool_blocks(options), options.enable_prefix_caching)) {
  stats_.kv_blocks = pool_.table().stats();
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { drain(); }

std::shared_ptr<Job> Scheduler::submit(PromptInput prompt, GenerationParams params) {
  auto job = std::make_shared<Job>(std::move(prompt), std::move(params));
  {
    std::lock_guard lock(mutex_);
    if (!accepting_) throw ShuttingDown("the server is shutting down and accepts no new requests");
    if (waiting_.size() >= options_.max_queue)
      throw QueueFull("the request queue is full (" + std::to_string(options_.max_queue) +
                      " waiting, --max_queue); retry shortly");
    waiting_.push_back(job);
    stats_.queued = waiting_.size();
  }
  wake_.notify_all();
  return job;
}

void Scheduler::cancel(const std::shared_ptr<Job>& job) {
  job->cancel();
  bool removed = false;
  {
    std::lock_guard lock(mutex_);
    if (const auto it = std::find(waiting_.begin(), waiting_.end(), job); it != waiting_.end()) {
      waiting_.erase(it);
      stats_.queued = waiting_.size();
      ++stats_.cancelled;
      removed = true;
    }
  }
  if (removed) {
    std::lock_guard lock(job->mutex_);
    job->finished_ = true;
    job->progress_.finish_reason = "abort";
    job->changed_.notify_all();
  }
}

void Scheduler::stop_accepting() {
  std::lock_guard lock(mutex_);
  accepting_ = false;
}

void Scheduler::drain() {
  {
    std::lock_guard lock(mutex_);
    accepting_ = false;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Scheduler::fail(const std::shared_ptr<Job>& job, const std::string& message) {
  {
    std::lock_guard lock(mutex_);
    ++stats_.failed;
  }
  std::lock_guard lock(job->mutex_);
  job->error_ = message;
  job->finished_ = true;
  job->changed_.notify_all();
}

// Copies what the sequence produced since the last publish into the job, for its handler.
void Scheduler::publish(Running& r) {
  const GenerationResult& out = r.state->result();
  Job& job = *r.job;
  std::lock_guard lock(job.mutex_);
  job.progress_.prompt_tokens = out.prompt_tokens;
  job.progress_.text.append(out.text, r.published_text);
  job.progress_.tokens.insert(job.progress_.tokens.end(), out.tokens.begin() + static_cast<std::ptrdiff_t>(r.published_tokens),
                              out.tokens.end());
  job.progress_.logprobs.insert(job.progress_.logprobs.end(),
                                out.logprobs.begin() + static_cast<std::ptrdiff_t>(job.progress_.logprobs.size()),
                                out.logprobs.end());
  r.published_text = out.text.size();
  r.published_tokens = out.tokens.size();
  if (r.state->done()) {
    job.progress_.finish_reason = out.finish_reason;
    job.finished_ = true;
  }
  job.changed_.notify_all();
}

void Scheduler::loop() {
  std::vector<std::unique_ptr<Running>> running;
  for (;;) {
    std::vector<std::shared_ptr<Job>> joiners;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return !waiting_.empty() || !running.empty() || stopping_; });
      if (waiting_.empty() && running.empty()) break;  // stopping, and nothing left to finish
      while (!waiting_.empty() && running.size() + joiners.size() < options_.max_batch_size) {
        joiners.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
      stats_.queued = waiting_.size();
    }
    step(running, std::move(joiners));
  }
}

void Scheduler::step(std::vector<std::unique_ptr<Running>>& running, std::vector<std::shared_ptr<Job>> joiners) {
  uint64_t finished = 0, cancelled = 0;
  for (auto& job : joiners) {
    if (job->cancelled()) {
      ++cancelled;
      continue;
    }
    auto r = std::make_unique<Running>();
    r->job = job;
    try {
      r->state = std::make_unique<SequenceState>(model_, tokenizer_, std::move(job->prompt_), options_.max_model_len,
                                                 job->params_, &pool_);
    } catch (const std::exception& e) {
      fail(job, e.what());
      continue;
    }
    running.push_back(std::move(r));
  }
  {
    std::lock_guard lock(mutex_);
    stats_.running = running.size();
    stats_.peak_running = std::max(stats_.peak_running, running.size());
  }

  // Leavers: cancelled sequences go before the step; their caches are freed with them.
  std::erase_if(running, [&](const std::unique_ptr<Running>& r) {
    if (!r->job->cancelled()) return false;
    ++cancelled;
    r->state->abort();
    publish(*r);
    return true;
  });

  // One engine step: prompts in prefill advance one chunk each, so a long prompt delays the
  // others' decode steps by a chunk at a time, not by its whole length; then one decode forward
  // for every sequence past its prompt. A failure ends only the sequences it touches.
  std::vector<BatchMember> members(running.size());
  for (size_t i = 0; i < running.size(); ++i) members[i].sequence = running[i]->state.get();
  std::vector<size_t> prefilling;  // prompts whose first chunk runs this step
  for (size_t i = 0; i < running.size(); ++i)
    if (running[i]->state->prefilling() && running[i]->state->cached_prompt_tokens() == 0) prefilling.push_back(i);
  const StepReport report = generation_step(model_, members, FailurePolicy::kFailMember);
  uint64_t cached_prompt = 0;
  for (size_t i : prefilling) cached_prompt += running[i]->state->cached_prompt_tokens();
  // Failed and finished sequences leave; their caches are freed with them.
  std::vector<std::unique_ptr<Running>> staying;
  for (size_t i = 0; i < running.size(); ++i) {
    Running& r = *running[i];
    if (!members[i].error.empty()) {
      fail(r.job, members[i].error);
      continue;
    }
    if (r.state->result().tokens.size() != r.published_tokens || r.state->done()) publish(r);
    if (r.state->done()) {
      ++finished;
      continue;
    }
    staying.push_back(std::move(running[i]));
  }
  running = std::move(staying);

  uint64_t kv_bytes = 0;
  for (auto& r : running) kv_bytes += r->state->cache().bytes();
  std::lock_guard lock(mutex_);
  stats_.running = running.size();
  stats_.prompt_tokens += report.prefill_tokens;
  stats_.generated_tokens += report.sampled_tokens;
  stats_.finished += finished;
  stats_.cancelled += cancelled;
  stats_.kv_cache_bytes = kv_bytes;
  stats_.decode_steps += report.decoded ? 1 : 0;
  stats_.kv_blocks = pool_.table().stats();
  stats_.cached_prompt_tokens += cached_prompt;
}

}  // namespace vlmforge::server
