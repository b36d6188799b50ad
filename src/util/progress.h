#pragma once
// A one-line progress bar on stderr (bytes, rate, ETA), drawn only when stderr is a terminal so
// logs and pipes stay clean.
#include <chrono>
#include <cstdint>
#include <string>

namespace vlmforge {

class ProgressBar {
 public:
  ProgressBar(std::string label, uint64_t total_bytes, bool enabled);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void advance(uint64_t bytes);
  void finish();

  // True when stderr is a terminal (the default for `enabled`).
  static bool stderr_is_terminal();

 private:
  void draw(bool final_draw);

  std::string label_;
  uint64_t total_;
  uint64_t done_ = 0;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace vlmforge
