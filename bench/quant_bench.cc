// Quantized matrix products against bf16 and this machine's read bandwidth, on the MLP shapes of
// Qwen2.5-0.5B and -1.5B (gate/up: 896 → 4864, 1536 → 8960; down: the reverse). For bf16, q8_0
// and q4_0 weights (random, quantized from the bf16 values) it times, with all threads:
//   - decode with 1 and 8 tokens over copies of the weight that together exceed the caches
//     (each weight byte comes from memory once per product, as in a decode step);
//   - prefill of 512 tokens over one copy (compute bound);
// and prints each as GB/s of the bytes the product reads (weight sections and activations), as a
// share of the measured bandwidth, and as a speedup over bf16. Formats alternate within each run;
// figures are medians over --runs. --crossover instead times the quantized decode kernel against
// the dequantizing GEMM from 8 to 64 tokens (where kernels/quant_matmul.cc switches).
// Usage: quant_bench [--runs 7] [--threads N] [--footprint_mb 1024] [--crossover]
//        (VLMFORGE_SIMD_TARGET=avx2 measures the AVX2 path)
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/machine_limits.h"
#include "io/convert.h"
#include "kernels/matmul.h"
#include "kernels/quant_matmul.h"
#include "kernels/quantize.h"
#include "util/simd_targets.h"
#include "util/thread_pool.h"

namespace vlmforge::bench {
namespace {

struct Options {
  size_t runs = 7, threads = 0, footprint_mb = 1024;
  bool crossover = false;
};

struct Shape {
  const char* name;
  size_t rows, cols;  // out, in
};
constexpr Shape kShapes[] = {{"0.5B up  ", 4864, 896}, {"0.5B down", 896, 4864},
                             {"1.5B up  ", 8960, 1536}, {"1.5B down", 1536, 8960}};

// One weight format's copies, laid end to end in one buffer.
struct Format {
  std::string name;
  kernels::QuantLayout layout;  // bits 0: bf16
  size_t bytes = 0;             // per copy
  size_t copies = 0;
  std::vector<std::byte> data;
};

Format make_format(const std::string& name, const kernels::QuantLayout& layout, const std::vector<std::byte>& bf16,
                   const Shape& s, size_t footprint) {
  Format f{name, layout, layout.quantized() ? layout.bytes(s.rows, s.cols) : bf16.size(), 0, {}};
  std::vector<std::byte> one = bf16;
  if (layout.quantized()) {
    one.resize(f.bytes);
    const auto scheme = layout.bits == 8 ? kernels::QuantScheme::q8_0() : kernels::QuantScheme::q4_0();
    kernels::quantize_rows(DType::BF16, bf16.data(), s.rows, s.cols, scheme, one.data());
  }
  f.copies = std::max<size_t>(1, footprint / f.bytes);
  f.data.resize(f.copies * f.bytes);
  for (size_t c = 0; c < f.copies; ++c) std::memcpy(f.data.data() + c * f.bytes, one.data(), f.bytes);
  return f;
}

// One product out = x·Wᵀ with copy `copy` of the weight, partitioned over the pool in 4-row tiles
// as the CPU backend does.
void product(ThreadPool& pool, const Format& f, size_t copy, const Shape& s, const float* x, size_t tokens,
             float* out, std::vector<float>& scratch, kernels::QuantPath path) {
  const std::byte* w = f.data.data() + copy * f.bytes;
  const size_t tiles = (s.rows + 3) / 4;
  if (!f.layout.quantized()) {
    const kernels::WeightMatrix m{DType::BF16, w, s.rows, s.cols};
    pool.parallel_for(tiles, [&](size_t b, size_t e) {
      kernels::matmul_rows(x, tokens, s.cols, m, nullptr, out, s.rows, b * 4, std::min(e * 4, s.rows));
    });
    return;
  }
  const kernels::QuantMatrix m{w, s.rows, s.cols, f.layout};
  scratch.resize(std::max(scratch.size(), kernels::quant_inputs_floats(m, tokens, path)));
  const kernels::QuantInputs in = kernels::prepare_quant_inputs(x, tokens, s.cols, m, scratch.data(), path);
  pool.parallel_for(tiles, [&](size_t b, size_t e) {
    kernels::quant_matmul_rows(in, m, nullptr, out, s.rows, b * 4, std::min(e * 4, s.rows));
  });
}

// Seconds per product: over `copies` consecutive copies (each read from memory), or one copy
// `repeat` times.
double time_products(ThreadPool& pool, const Format& f, size_t copies, size_t repeat, const Shape& s,
                     const std::vector<float>& x, size_t tokens, std::vector<float>& out, std::vector<float>& scratch,
                     kernels::QuantPath path = kernels::QuantPath::Auto) {
  const auto start = Clock::now();
  for (size_t i = 0; i < copies * repeat; ++i)
    product(pool, f, i % copies, s, x.data(), tokens, out.data(), scratch, path);
  return seconds_since(start) / static_cast<double>(copies * repeat);
}

std::vector<float> random_floats(size_t n, std::mt19937& rng, float sigma) {
  std::normal_distribution<float> dist(0, sigma);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

std::vector<Format> formats_of(const Shape& s, size_t footprint, std::mt19937& rng) {
  const std::vector<float> w = random_floats(s.rows * s.cols, rng, 0.02f);
  std::vector<std::byte> bf16(w.size() * 2);
  for (size_t i = 0; i < w.size(); ++i) store_float(DType::BF16, bf16.data(), i, w[i]);
  std::vector<Format> f;
  f.push_back(make_format("bf16", {}, bf16, s, footprint));
  f.push_back(make_format("q8_0", kernels::QuantScheme::q8_0().layout(), bf16, s, footprint));
  f.push_back(make_format("q4_0", kernels::QuantScheme::q4_0().layout(), bf16, s, footprint));
  return f;
}

void run_throughput(ThreadPool& pool, const Options& o, double bandwidth) {
  std::mt19937 rng(1);
  for (const Shape& s : kShapes) {
    std::vector<Format> formats = formats_of(s, o.footprint_mb << 20, rng);
    for (size_t tokens : {1, 8, 512}) {
      const bool prefill = tokens > 32;
      const std::vector<float> x = random_floats(tokens * s.cols, rng, 1.0f);
      std::vector<float> out(tokens * s.rows), scratch;
      std::vector<std::vector<double>> times(formats.size());
      for (size_t r = 0; r <= o.runs; ++r)  // run 0 warms up
        for (size_t i = 0; i < formats.size(); ++i) {
          const Format& f = formats[i];
          const double t = prefill ? time_products(pool, f, 1, 2, s, x, tokens, out, scratch)
                                   : time_products(pool, f, f.copies, 1, s, x, tokens, out, scratch);
          if (r > 0) times[i].push_back(t);
        }
      const double bf16_s = median(times[0]);
      for (size_t i = 0; i < formats.size(); ++i) {
        const double t = median(times[i]);
        const double bytes = static_cast<double>(formats[i].bytes) + 4.0 * tokens * s.cols;
        std::printf("%s %5zux%-5zu %-4s tokens %3zu: %8.3f ms  %6.1f GB/s = %5.1f%% of bandwidth  %5.2fx bf16",
                    s.name, s.rows, s.cols, formats[i].name.c_str(), tokens, t * 1e3, bytes / t / 1e9,
                    100 * bytes / t / bandwidth, bf16_s / t);
        if (prefill) std::printf("  %6.1f GFLOP/s", 2.0 * tokens * s.rows * s.cols / t / 1e9);
        std::printf("\n");
      }
    }
  }
}

void run_crossover(ThreadPool& pool, const Options& o) {
  std::mt19937 rng(2);
  for (const Shape& s : {kShapes[2], kShapes[3]}) {
    std::vector<Format> formats = formats_of(s, 0, rng);  // one copy each: compute bound from 8 tokens on
    for (size_t i = 1; i < formats.size(); ++i)
      for (size_t tokens : {8, 16, 24, 32, 48, 64}) {
        const std::vector<float> x = random_floats(tokens * s.cols, rng, 1.0f);
        std::vector<float> out(tokens * s.rows), scratch;
        std::vector<double> decode, gemm;
        for (size_t r = 0; r <= o.runs; ++r) {
          const double d = time_products(pool, formats[i], 1, 3, s, x, tokens, out, scratch, kernels::QuantPath::Decode);
          const double g = time_products(pool, formats[i], 1, 3, s, x, tokens, out, scratch, kernels::QuantPath::Gemm);
          if (r > 0) {
            decode.push_back(d);
            gemm.push_back(g);
          }
        }
        std::printf("%s %5zux%-5zu %-4s tokens %2zu: decode kernel %7.3f ms, dequantizing GEMM %7.3f ms (%4.2fx)\n",
                    s.name, s.rows, s.cols, formats[i].name.c_str(), tokens, median(decode) * 1e3, median(gemm) * 1e3,
                    median(decode) / median(gemm));
      }
  }
}

}  // namespace
}  // namespace vlmforge::bench

int main(int argc, char** argv) {
  vlmforge::limit_simd_target_from_environment();
  vlmforge::bench::Options o;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
        return argv[++i];
      };
      if (arg == "--runs") o.runs = std::stoul(value());
      else if (arg == "--threads") o.threads = std::stoul(value());
      else if (arg == "--footprint_mb") o.footprint_mb = std::stoul(value());
      else if (arg == "--crossover") o.crossover = true;
      else throw std::runtime_error("unknown argument " + arg);
    }
    vlmforge::ThreadPool pool(o.threads);
    std::printf("machine: %zu threads, %s\n", pool.size(), vlmforge::current_simd_target().c_str());
    if (o.crossover) {
      vlmforge::bench::run_crossover(pool, o);
      return 0;
    }
    const double bandwidth = vlmforge::bench::measure_bandwidth(pool, o.runs);
    vlmforge::bench::run_throughput(pool, o, bandwidth);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
