#include "util/thread_pool.h"

#include <algorithm>

namespace vlmforge {
namespace {

// Chunk i of `parts` equal-as-possible chunks of [0, count).
std::pair<size_t, size_t> chunk_range(size_t count, size_t parts, size_t i) {
  const size_t base = count / parts, extra = count % parts;
  const size_t begin = i * base + std::min(i, extra);
  return {begin, begin + base + (i < extra ? 1 : 0)};
}

}  // namespace

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(threads - 1);
  for (size_t i = 0; i + 1 < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i + 1); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::parallel_for(size_t count, const std::function<void(size_t, size_t)>& body) {
  if (count == 0) return;
  std::lock_guard call_lock(call_mutex_);
  if (workers_.empty() || count == 1) {
    body(0, count);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    body_ = &body;
    count_ = count;
    pending_ = workers_.size();
    error_ = nullptr;
    ++generation_;
  }
  work_ready_.notify_all();
  std::exception_ptr own_error;
  const auto [begin, end] = chunk_range(count, size(), 0);
  try {
    if (begin < end) body(begin, end);
  } catch (...) {
    own_error = std::current_exception();
  }
  std::unique_lock lock(mutex_);
  work_done_.wait(lock, [this] { return pending_ == 0; });
  body_ = nullptr;
  if (own_error) std::rethrow_exception(own_error);
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::worker_loop(size_t worker_index) {
  size_t seen_generation = 0;
  for (;;) {
    std::unique_lock lock(mutex_);
    work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
    if (stopping_) return;
    seen_generation = generation_;
    const auto* body = body_;
    const auto [begin, end] = chunk_range(count_, size(), worker_index);
    lock.unlock();
    std::exception_ptr error;
    try {
      if (begin < end) (*body)(begin, end);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error && !error_) error_ = error;
    if (--pending_ == 0) work_done_.notify_one();
  }
}

}  // namespace vlmforge
