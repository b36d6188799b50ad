#include "bench/machine_limits.h"

#include <cstdio>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bench/machine_limits.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/cache_control.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace vlmforge::bench::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sum of n floats; 4 accumulators so the adds do not wait on each other.
float StreamSum(const float* data, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  size_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    a0 = hn::Add(a0, hn::LoadU(d, data + i));
    a1 = hn::Add(a1, hn::LoadU(d, data + i + lanes));
    a2 = hn::Add(a2, hn::LoadU(d, data + i + 2 * lanes));
    a3 = hn::Add(a3, hn::LoadU(d, data + i + 3 * lanes));
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
}

// The same bytes read as 8 concurrent streams with software prefetch ahead of use: the access
// pattern of the decode kernels (several weight rows at once, prefetched). On some machines only
// this pattern reaches the memory system's read bandwidth, so the bound takes the faster of the two.
float MultiStreamSum(const float* data, size_t n) {
  constexpr size_t kStreams = 8, kAhead = 128;  // floats: 512 bytes ahead of each stream
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d), len = n / kStreams;
  hn::Vec<decltype(d)> acc[kStreams];
  for (auto& a : acc) a = hn::Zero(d);
  for (size_t i = 0; i + lanes <= len; i += lanes) {
    if (i % 16 == 0)
      for (size_t s = 0; s < kStreams; ++s) hwy::Prefetch(data + s * len + std::min(i + kAhead, len - 1));
    for (size_t s = 0; s < kStreams; ++s) acc[s] = hn::Add(acc[s], hn::LoadU(d, data + s * len + i));
  }
  for (size_t s = 1; s < kStreams; ++s) acc[0] = hn::Add(acc[0], acc[s]);
  return hn::GetLane(hn::SumOfLanes(d, acc[0]));
}

// `iterations` rounds of kAcc independent vector FMAs; returns the float operations done. The
// accumulators and the two constants must fit the register file: 16 accumulators on a
// 16-register target (AVX2) spilled to the stack and measured a "peak" below what prefill reaches.
template <size_t kAcc>
double FmaChains(size_t iterations, float* sink) {
  const hn::ScalableTag<float> d;
  decltype(hn::Zero(d)) acc[kAcc];
  for (size_t j = 0; j < kAcc; ++j) acc[j] = hn::Set(d, static_cast<float>(j));
  const auto mul = hn::Set(d, 0.999999f), add = hn::Set(d, 1e-7f);
  for (size_t it = 0; it < iterations; ++it)
    for (size_t j = 0; j < kAcc; ++j) acc[j] = hn::MulAdd(acc[j], mul, add);
  auto total = acc[0];
  for (size_t j = 1; j < kAcc; ++j) total = hn::Add(total, acc[j]);
  *sink = hn::GetLane(hn::SumOfLanes(d, total));
  return 2.0 * kAcc * hn::Lanes(d) * static_cast<double>(iterations);
}

// Chains of 8 cover 4-cycle FMAs on 2 ports; 12 (16 registers) or 24 (32 registers) cover longer
// latencies. The faster variant is the peak.
#if HWY_ARCH_X86 && HWY_TARGET > HWY_AVX3
constexpr size_t kWideChains = 12;
#else
constexpr size_t kWideChains = 24;
#endif
double FmaLoop(size_t variant, size_t iterations, float* sink) {
  return variant == 0 ? FmaChains<8>(iterations, sink) : FmaChains<kWideChains>(iterations, sink);
}

}  // namespace vlmforge::bench::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace vlmforge::bench {
HWY_EXPORT(StreamSum);
HWY_EXPORT(MultiStreamSum);
HWY_EXPORT(FmaLoop);

// Bytes per second of a multi-threaded streaming read of 2 GiB (far beyond every cache level).
double measure_bandwidth(ThreadPool& pool, size_t runs) {
  const size_t n = (size_t{2} << 30) / sizeof(float);
  std::vector<float> buffer(n);
  pool.parallel_for(n, [&](size_t b, size_t e) { std::fill(buffer.data() + b, buffer.data() + e, 1.0f); });
  std::vector<double> linear, streams;
  std::vector<float> sums(pool.size());
  for (size_t r = 0; r < runs; ++r)
    for (bool multi : {false, true}) {
      const auto start = Clock::now();
      pool.parallel_for(n / 64, [&](size_t b, size_t e) {
        const float* part = buffer.data() + b * 64;
        sums[b * pool.size() / (n / 64)] = multi ? HWY_DYNAMIC_DISPATCH(MultiStreamSum)(part, (e - b) * 64)
                                                 : HWY_DYNAMIC_DISPATCH(StreamSum)(part, (e - b) * 64);
      });
      (multi ? streams : linear).push_back(static_cast<double>(n * sizeof(float)) / seconds_since(start));
    }
  std::printf("memory read: %.1f GB/s linear, %.1f GB/s as 8 prefetched streams per thread (medians of %zu)\n",
              median(linear) / 1e9, median(streams) / 1e9, runs);
  return std::max(median(linear), median(streams));
}

// Float operations per second with every thread in an FMA loop: the faster of two chain counts
// (median over runs of each).
double measure_fma_peak(ThreadPool& pool, size_t runs) {
  constexpr double kFlopsPerRun = 20e9;  // per thread: 0.1-0.3 s on AVX-512 and AVX2 cores
  double best = 0;
  std::vector<float> sinks(pool.size());
  for (size_t variant = 0; variant < 2; ++variant) {
    std::vector<double> rates;
    for (size_t r = 0; r < runs; ++r) {
      std::vector<double> flops(pool.size());
      const auto start = Clock::now();
      pool.parallel_for(pool.size(), [&](size_t b, size_t e) {
        for (size_t t = b; t < e; ++t) {
          const size_t per_iteration = static_cast<size_t>(HWY_DYNAMIC_DISPATCH(FmaLoop)(variant, 1, &sinks[t]));
          flops[t] = HWY_DYNAMIC_DISPATCH(FmaLoop)(variant, static_cast<size_t>(kFlopsPerRun / per_iteration), &sinks[t]);
        }
      });
      const double elapsed = seconds_since(start);
      double total = 0;
      for (double f : flops) total += f;
      rates.push_back(total / elapsed);
    }
    best = std::max(best, median(rates));
  }
  return best;
}

}  // namespace vlmforge::bench
#endif  // HWY_ONCE
