#pragma once
// A persistent pool of worker threads for data-parallel loops. The calling thread takes part, so
// a pool of N threads starts N-1 workers. One parallel_for runs at a time (calls are serialized).
//
// A decode step issues a few hundred short parallel_for calls; waking a sleeping thread costs tens
// of microseconds on a virtual machine, so workers and the caller spin briefly (kSpin) on the
// shared counters before they block on a condition variable.
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace vlmforge {

class ThreadPool {
 public:
  // threads == 0 means all hardware threads.
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size() + 1; }

  // Calls body(begin, end) on disjoint chunks covering [0, count), at most size() chunks, and
  // waits for all. The first exception thrown by a chunk is rethrown here.
  void parallel_for(size_t count, const std::function<void(size_t begin, size_t end)>& body);

 private:
  void worker_loop(size_t worker_index);
  void run_chunk(size_t worker_index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;  // guards the sleeping side of the hand-offs and error_
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  std::mutex call_mutex_;  // serializes parallel_for callers
  const std::function<void(size_t, size_t)>* body_ = nullptr;
  size_t count_ = 0;
  std::atomic<size_t> generation_{0};  // bumped (release) after body_/count_ are set
  std::atomic<size_t> pending_{0};     // workers still running the current generation
  std::exception_ptr error_;
  std::atomic<bool> stopping_{false};
};

}  // namespace vlmforge
