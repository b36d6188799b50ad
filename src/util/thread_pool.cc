#include "util/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace vlmforge {
namespace {

// Long enough to bridge the gap between two kernels of one decode step, short enough that an
// idle pool stops burning a core almost at once.
constexpr auto kSpin = std::chrono::microseconds(100);

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or kSpin has passed; true if done() became true.
template <typename Done>
bool spin_until(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (unsigned i = 1;; ++i) {
    if (done()) return true;
    cpu_relax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) return false;
  }
}

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
    stopping_.store(true);
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
  body_ = &body;
  count_ = count;
  error_ = nullptr;
  pending_.store(workers_.size(), std::memory_order_relaxed);
  {
    // Under the mutex so a worker between its last check and its wait cannot miss the bump.
    std::lock_guard lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  work_ready_.notify_all();
  std::exception_ptr own_error;
  const auto [begin, end] = chunk_range(count, size(), 0);
  try {
    if (begin < end) body(begin, end);
  } catch (...) {
    own_error = std::current_exception();
  }
  const auto all_done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(all_done)) {
    std::unique_lock lock(mutex_);
    work_done_.wait(lock, all_done);
  }
  body_ = nullptr;
  if (own_error) std::rethrow_exception(own_error);
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::run_chunk(size_t worker_index) {
  const auto [begin, end] = chunk_range(count_, size(), worker_index);
  try {
    if (begin < end) (*body_)(begin, end);
  } catch (...) {
    std::lock_guard lock(mutex_);
    if (!error_) error_ = std::current_exception();
  }
  if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard lock(mutex_);  // pairs with the caller's predicate check under the mutex
    work_done_.notify_one();
  }
}

void ThreadPool::worker_loop(size_t worker_index) {
  size_t seen_generation = 0;
  const auto new_work = [&] {
    return stopping_.load(std::memory_order_relaxed) ||
           generation_.load(std::memory_order_acquire) != seen_generation;
  };
  for (;;) {
    if (!spin_until(new_work)) {
      std::unique_lock lock(mutex_);
      work_ready_.wait(lock, new_work);
    }
    if (stopping_.load()) return;
    seen_generation = generation_.load(std::memory_order_acquire);
    run_chunk(worker_index);
  }
}

}  // namespace vlmforge
