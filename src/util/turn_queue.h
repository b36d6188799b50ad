#pragma once
// Turn-taking in arrival order on one expensive resource (the vision tower). Unlike a mutex, a
// thread that asks again after its turn goes behind every thread already waiting, so callers that
// take one turn per item (a request's images) share the resource round-robin: a request with ten
// images does not hold back a one-image request that arrived during its first. A waiter can give
// up its place (its client hung up) without holding back the ones behind it, and the line is
// bounded, so a flood of callers is refused at once instead of piling up.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>

#include "util/error.h"

namespace vlmforge {

// Thrown by TurnQueue::wait when max_waiting callers are already in line.
class TurnQueueFull : public Error {
 public:
  using Error::Error;
};

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

  // At most `max_waiting` callers wait at once (the one holding the turn not counted).
  explicit TurnQueue(size_t max_waiting = SIZE_MAX) : max_waiting_(max_waiting) {}

  // Waits until every caller that asked earlier has had its turn. Throws TurnQueueFull when the
  // turn is taken and max_waiting callers already wait. `stop` (may be empty) is asked every
  // `poll` while waiting, outside the queue's lock: once true, the place is given up and Cancelled
  // is thrown.
  Turn wait(const std::function<bool()>& stop, std::chrono::milliseconds poll = std::chrono::milliseconds(50));

  // Callers waiting now (not counting the one holding the turn).
  size_t waiting() const;
  // Whether some caller holds the turn now.
  bool busy() const;
  size_t max_waiting() const { return max_waiting_; }

 private:
  void release();

  const size_t max_waiting_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::list<uint64_t> waiting_;  // tickets in arrival order
  uint64_t next_ticket_ = 0;
  bool busy_ = false;
};

}  // namespace vlmforge
