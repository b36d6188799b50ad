// The cost of device boundaries on decode: the same checkpoint decoded (batch 1, greedy feedback,
// after a 16-token prompt) three ways, interleaved run by run so load changes hit all alike:
//   host      no placement: weights used in place from the memory map (the default path);
//   1 device  --device_map onto one cpu device: uploaded weights, preallocated KV cache;
//   N devices --device_map auto onto N cpu devices: the same, plus N-1 hand-overs of the hidden
//             states per step (the boundaries).
// Prints median tok/s of each; the boundary cost is the median per-round N-device / 1-device ratio.
// Usage: device_map_bench --model DIR [--devices 3] [--decode 64] [--runs 5] [--threads N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "device/registry.h"
#include "model/qwen2.h"
#include "plan/planner.h"

namespace vlmforge::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string model;
  size_t devices = 3, decode = 64, runs = 5, threads = 0;
};

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Decode tok/s: `steps` batch-1 steps after a 16-token prompt.
double decode_tok_s(Qwen2Model& model, size_t steps) {
  KvCache cache = model.make_cache(16 + steps + 1);
  std::mt19937 rng(7);
  std::vector<int32_t> prompt(16), next(1);
  for (auto& id : prompt) id = static_cast<int32_t>(rng() % std::min<size_t>(model.vocab_size(), 150000));
  SequenceChunk chunk{&cache, prompt};
  auto logits = model.forward({&chunk, 1});
  const auto start = Clock::now();
  for (size_t s = 0; s < steps; ++s) {
    next[0] = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    chunk = {&cache, next};
    logits = model.forward({&chunk, 1});
  }
  return static_cast<double>(steps) / std::chrono::duration<double>(Clock::now() - start).count();
}

// Opens `count` uncapped cpu devices and a balanced plan across them (every device as large as
// the host's free memory, so the spread is even by bytes).
struct Placed {
  std::vector<std::unique_ptr<Device>> devices;
  ModelPlacement placement;
  size_t boundaries = 0;
};

Placed place(const Options& o, size_t count, size_t threads) {
  const DeviceRegistry registry = DeviceRegistry::builtin();
  std::vector<DeviceSpec> specs;
  for (size_t i = 0; i < count; ++i) specs.push_back({"cpu", static_cast<int>(i)});
  PlanOptions po;
  po.max_model_len = 16 + o.decode + 1;
  po.threads = threads;
  const ModelShape shape = ModelShape::from_checkpoint(o.model);
  const auto targets = registry.resolve(specs, {}, process_environment());
  // Equal virtual capacities so the balanced plan spreads by bytes, not by the host's free memory.
  std::vector<DeviceTarget> even = targets;
  for (auto& t : even) t.capacity = t.total = 2 * shape.weight_bytes();
  const Plan plan = make_plan(shape, even, po);
  Placed p;
  p.devices = registry.open(targets, threads);
  size_t previous = SIZE_MAX;
  for (size_t i = 0; i < shape.modules.size(); ++i) {
    Device* d = p.devices[plan.module_device[i]].get();
    if (previous != SIZE_MAX && previous != plan.module_device[i]) ++p.boundaries;
    previous = plan.module_device[i];
    switch (shape.modules[i].kind) {
      case ModuleKind::kEmbed: p.placement.embed = d; break;
      case ModuleKind::kLayer: p.placement.layers.push_back(d); break;
      case ModuleKind::kNorm: p.placement.norm = d; break;
      case ModuleKind::kHead: p.placement.head = d; break;
      case ModuleKind::kVision: break;
    }
  }
  std::printf("%zu device(s):", count);
  for (size_t d = 0; d < plan.devices.size(); ++d)
    std::printf(" %s=%s", plan.devices[d].target.spec.name().c_str(),
                plan.to_json()["devices"][d]["summary"].get<std::string>().c_str());
  std::printf("\n");
  return p;
}

int run(const Options& o) {
  const size_t threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  std::printf("load before: %s; threads %zu per device\n", loadavg().c_str(), threads);
  Qwen2Model host(o.model, threads);
  Placed one = place(o, 1, threads);
  Qwen2Model single(o.model, threads, {}, &one.placement);
  Placed many = place(o, o.devices, threads);
  Qwen2Model split(o.model, threads, {}, &many.placement);
  // Rounds alternate the order (host, 1, N then N, 1, host) so drifting load hits all alike;
  // the boundary cost is the median of each round's own N-device / 1-device ratio.
  std::vector<double> a, b, c, ratio;
  for (size_t r = 0; r < o.runs; ++r) {
    if (r % 2 == 0) {
      a.push_back(decode_tok_s(host, o.decode));
      b.push_back(decode_tok_s(single, o.decode));
      c.push_back(decode_tok_s(split, o.decode));
    } else {
      c.push_back(decode_tok_s(split, o.decode));
      b.push_back(decode_tok_s(single, o.decode));
      a.push_back(decode_tok_s(host, o.decode));
    }
    ratio.push_back(c.back() / b.back());
  }
  const double ta = median(a), tb = median(b), tc = median(c), rc = median(ratio);
  std::printf("decode batch 1, median of %zu rounds of %zu tokens:\n", o.runs, o.decode);
  std::printf("  host (memory map):  %8.2f tok/s\n", ta);
  std::printf("  1 device:           %8.2f tok/s = %.3f x host\n", tb, tb / ta);
  std::printf("  %zu devices:          %8.2f tok/s\n", o.devices, tc);
  std::printf("  %zu devices / 1 device, per round: median %.3f (min %.3f, max %.3f); %zu boundaries per step: "
              "cost %.1f%%\n",
              o.devices, rc, *std::min_element(ratio.begin(), ratio.end()), *std::max_element(ratio.begin(), ratio.end()),
              many.boundaries, 100.0 * (1.0 - rc));
  std::printf("load after: %s\n", loadavg().c_str());
  return 0;
}

}  // namespace
}  // namespace vlmforge::bench

int main(int argc, char** argv) {
  vlmforge::bench::Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--model") o.model = value();
    else if (arg == "--devices") o.devices = std::stoul(value());
    else if (arg == "--decode") o.decode = std::stoul(value());
    else if (arg == "--runs") o.runs = std::stoul(value());
    else if (arg == "--threads") o.threads = std::stoul(value());
    else {
      std::fprintf(stderr, "usage: device_map_bench --model DIR [--devices 3] [--decode 64] [--runs 5] [--threads N]\n");
      return 2;
    }
  }
  if (o.model.empty() || o.devices < 2 || o.runs == 0 || o.decode == 0) {
    std::fprintf(stderr, "usage: device_map_bench --model DIR [--devices 3] [--decode 64] [--runs 5] [--threads N]\n");
    return 2;
  }
  try {
    return vlmforge::bench::run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
