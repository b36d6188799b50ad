#pragma once
// This machine's limits, measured with all threads of a pool, for benchmarks to report against:
//   - memory read bandwidth: the faster of a linear and an 8-stream prefetched sum over 2 GiB;
//   - fp32 FMA peak: Highway loops of independent fused multiply-adds (the faster of 8 and 12/24 chains).
// Each is the median of `runs` runs. Also the benchmarks' timing helpers.
#include <algorithm>
#include <chrono>
#include <vector>

#include "util/thread_pool.h"

namespace vlmforge::bench {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Bytes per second (prints both patterns' figures).
double measure_bandwidth(ThreadPool& pool, size_t runs);
// Float operations per second.
double measure_fma_peak(ThreadPool& pool, size_t runs);

}  // namespace vlmforge::bench
