#include "util/turn_queue.h"

#include <algorithm>
#include <string>

namespace vlmforge {

TurnQueue::Turn::~Turn() {
  if (queue_) queue_->release();
}

TurnQueue::Turn TurnQueue::wait(const std::function<bool()>& stop, std::chrono::milliseconds poll) {
  std::unique_lock lock(mutex_);
  if ((busy_ || !waiting_.empty()) && waiting_.size() >= max_waiting_)
    throw TurnQueueFull("the line is full (" + std::to_string(waiting_.size()) + " waiting)");
  const uint64_t ticket = next_ticket_++;
  waiting_.push_back(ticket);
  for (;;) {
    if (!busy_ && waiting_.front() == ticket) {
      waiting_.pop_front();
      busy_ = true;
      return Turn(*this);
    }
    changed_.wait_for(lock, poll);
    if (!stop) continue;
    lock.unlock();
    const bool give_up = stop();
    lock.lock();
    if (give_up) {
      waiting_.erase(std::find(waiting_.begin(), waiting_.end(), ticket));
      changed_.notify_all();  // the next in line may now be first
      throw Cancelled("gave up waiting for a turn");
    }
  }
}

size_t TurnQueue::waiting() const {
  std::lock_guard lock(mutex_);
  return waiting_.size();
}

bool TurnQueue::busy() const {
  std::lock_guard lock(mutex_);
  return busy_;
}

void TurnQueue::release() {
  {
    std::lock_guard lock(mutex_);
    busy_ = false;
  }
  changed_.notify_all();
}

}  // namespace vlmforge
