#pragma once
// A persistent pool of worker threads for data-parallel loops. The calling thread takes part, so
// a pool of N threads starts N-1 workers. One parallel_for runs at a time (calls are serialized).
#include <condition_variable>
#include <cstddef>
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

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  std::mutex call_mutex_;  // serializes parallel_for callers
  const std::function<void(size_t, size_t)>* body_ = nullptr;
  size_t count_ = 0;
  size_t generation_ = 0;
  size_t pending_ = 0;
  std::exception_ptr error_;
  bool stopping_ = false;
};

}  // namespace vlmforge
