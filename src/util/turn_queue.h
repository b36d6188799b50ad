#pragma once
// Turn-taking in arrival order on one expensive resource (the vision tower). Unlike a mutex, a
// thread that asks again after its turn goes behind every thread already waiting, so callers that
// take one turn per item (a request's images) share the resource round-robin: a request with ten
// images does not hold back a one-image request that arrived during its first. A waiter can give
// up its place (its client hung up) without holding back the ones behind it.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>

namespace vlmforge {

class TurnQueue {
 public:
  // The resource, held until destroyed.
  class Turn {
   public:
    explicit Turn(TurnQueue& queue) : queue_(&queue) {}
    ~Turn();
    Turn(Turn&& other) noexcept : queue_(other.queue_) { other.queue_ = nullptr; }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;
    Turn& operator=(Turn&&) = delete;

   private:
    TurnQueue* queue_;
  };

  // Waits until every caller that asked earlier has had its turn. `stop` (may be empty) is asked
  // every `poll` while waiting, outside the queue's lock: once true, the place is given up and
  // Cancelled is thrown.
  Turn wait(const std::function<bool()>& stop, std::chrono::milliseconds poll = std::chrono::milliseconds(50));

  // Callers waiting now (not counting the one holding the turn).
  size_t waiting() const;

 private:
  void release();

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::list<uint64_t> waiting_;  // tickets in arrival order
  uint64_t next_ticket_ = 0;
  bool busy_ = false;
};

}  // namespace vlmforge
