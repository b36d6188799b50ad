#include "util/turn_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace vlmforge {
namespace {

using namespace std::chrono_literals;

// Spins until `done` holds (the queue's state is observed, never slept for), failing after 10 s.
template <typename Predicate>
void wait_until(Predicate done) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!done()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the queue never reached the expected state";
    std::this_thread::sleep_for(1ms);
  }
}

TEST(TurnQueue, GivesTurnsInArrivalOrderAndSendsARepeatCallerToTheBack) {
  TurnQueue queue;
  std::optional<TurnQueue::Turn> held(queue.wait({}));
  std::mutex order_mutex;
  std::vector<int> order;
  auto take_turn = [&](int who) {
    const TurnQueue::Turn turn = queue.wait({});
    std::lock_guard lock(order_mutex);
    order.push_back(who);
  };
  std::vector<std::thread> callers;
  for (int who = 0; who < 5; ++who) {
    callers.emplace_back(take_turn, who);
    wait_until([&] { return queue.waiting() == static_cast<size_t>(who) + 1; });
  }
  // The holder asks again: it goes behind the five already waiting, as a mutex would not ensure.
  held.reset();
  take_turn(99);
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 99}));
  EXPECT_FALSE(queue.busy());
  EXPECT_EQ(queue.waiting(), 0u);
}

TEST(TurnQueue, RefusesACallerBeyondTheBoundAndServesAFreeTurnAtOnce) {
  TurnQueue unbuffered(0);
  { const TurnQueue::Turn free_turn = unbuffered.wait({}); }  // nobody holds it: no waiting at all

  TurnQueue queue(1);
  std::optional<TurnQueue::Turn> held(queue.wait({}));
  EXPECT_TRUE(queue.busy());
  std::thread waiter([&] { const TurnQueue::Turn turn = queue.wait({}); });
  wait_until([&] { return queue.waiting() == 1; });
  try {
    queue.wait({});
    ADD_FAILURE() << "a second waiter was let into a line of one";
  } catch (const TurnQueueFull& e) {
    EXPECT_NE(std::string(e.what()).find("the line is full (1 waiting)"), std::string::npos) << e.what();
  }
  held.reset();
  waiter.join();
  EXPECT_EQ(queue.waiting(), 0u);
  { const TurnQueue::Turn again = queue.wait({}); }  // the line has room again
}

TEST(TurnQueue, AWaiterThatStopsGivesUpItsPlaceWithoutHoldingBackTheNext) {
  TurnQueue queue(2);
  std::optional<TurnQueue::Turn> held(queue.wait({}));
  std::atomic<bool> first_gone{false};
  std::atomic<bool> first_cancelled{false}, second_served{false};
  std::thread first([&] {
    try {
      const TurnQueue::Turn turn = queue.wait([&] { return first_gone.load(); }, 1ms);
    } catch (const Cancelled&) {
      first_cancelled = true;
    }
  });
  wait_until([&] { return queue.waiting() == 1; });
  std::thread second([&] {
    const TurnQueue::Turn turn = queue.wait([] { return false; }, 1ms);
    second_served = true;
  });
  wait_until([&] { return queue.waiting() == 2; });
  first_gone = true;
  first.join();
  EXPECT_TRUE(first_cancelled);
  EXPECT_EQ(queue.waiting(), 1u);
  EXPECT_FALSE(second_served);  // the turn is still held
  held.reset();
  second.join();
  EXPECT_TRUE(second_served);
  EXPECT_FALSE(queue.busy());
}

}  // namespace
}  // namespace vlmforge
