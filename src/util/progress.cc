#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

#include "util/bytes.h"

namespace vlmforge {

ProgressBar::ProgressBar(std::string label, uint64_t total_bytes, bool enabled)
    : label_(std::move(label)), total_(total_bytes), enabled_(enabled),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  // An interrupted bar still leaves the cursor on a fresh line.
  if (enabled_ && !finished_) std::fputc('\n', stderr);
}

bool ProgressBar::stderr_is_terminal() { return isatty(STDERR_FILENO) == 1; }

void ProgressBar::advance(uint64_t bytes) {
  done_ += bytes;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ >= std::chrono::milliseconds(100)) {
    last_draw_ = now;
    draw(false);
  }
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) return;
  draw(true);
  std::fputc('\n', stderr);
  finished_ = true;
}

void ProgressBar::draw(bool final_draw) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double fraction = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0.0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(fraction * kWidth + 0.5);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  char eta[32] = "";
  if (!final_draw && rate > 0 && done_ < total_) {
    const int left = static_cast<int>(static_cast<double>(total_ - done_) / rate);
    std::snprintf(eta, sizeof eta, " ETA %d:%02d", left / 60, left % 60);
  }
  std::fprintf(stderr, "\r%s [%s] %5.1f%% %s / %s  %s/s%s\033[K", label_.c_str(), bar.c_str(),
               fraction * 100.0, format_bytes(done_).c_str(), format_bytes(total_).c_str(),
               format_bytes(static_cast<uint64_t>(rate)).c_str(), eta);
  std::fflush(stderr);
}

}  // namespace vlmforge
