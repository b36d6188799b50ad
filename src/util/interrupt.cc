#include "util/interrupt.h"

#include <atomic>
#include <csignal>

namespace vlmforge {
namespace {

std::atomic<bool> interrupt_flag{false};

extern "C" void on_interrupt(int) { interrupt_flag.store(true); }

}  // namespace

void catch_interrupts() {
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
}

bool interrupted() { return interrupt_flag.load(); }

void clear_interrupt() { interrupt_flag.store(false); }

}  // namespace vlmforge
