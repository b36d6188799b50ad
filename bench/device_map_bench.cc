// The cost of device boundaries on decode: the same checkpoint decoded (batch 1, greedy feedback,
// after a 16-token prompt) three ways, interleaved step by step (the order rotating each step) so
// load changes on a shared machine hit all three alike:
//   host      no placement: weights used in place from the memory map (the default path);
//   1 device  --device_map onto one cpu device: uploaded weights, preallocated KV cache;
//   N devices --device_map auto onto N cpu devices: the same, plus N-1 hand-overs of the hidden
//             states per step (the boundaries).
// Prints tok/s from each one's median step time and the medians of the per-step time ratios, for
// both creation orders of the two placed models; the boundary cost is 1 - the geometric mean of
// the two orders' medians of (1-device step time / N-device step time).
// Usage: device_map_bench --model DIR [--devices 3] [--steps 200] [--threads N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backends/registry.h"
#include "model/qwen2.h"
#include "plan/planner.h"

namespace vlmforge::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string model;
  size_t devices = 3, steps = 200, threads = 0;
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

// One model decoding greedily, one step at a time.
class Decoder {
 public:
  Decoder(Qwen2Model& model, size_t steps) : model_(model), cache_(model.make_cache(16 + steps + 1)) {
    std::mt19937 rng(7);
    std::vector<int32_t> prompt(16);
    for (auto& id : prompt) id = static_cast<int32_t>(rng() % std::min<size_t>(model.vocab_size(), 150000));
    const SequenceChunk chunk{&cache_, prompt};
    logits_ = model.forward({&chunk, 1});
  }
  // Seconds of one decode step.
  double step() {
    next_[0] = static_cast<int32_t>(std::max_element(logits_.begin(), logits_.end()) - logits_.begin());
    const SequenceChunk chunk{&cache_, next_};
    const auto start = Clock::now();
    logits_ = model_.forward({&chunk, 1});
    return std::chrono::duration<double>(Clock::now() - start).count();
  }

 private:
  Qwen2Model& model_;
  KvCache cache_;
  std::vector<float> logits_;
  std::vector<int32_t> next_ = {0};
};

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
  po.max_model_len = 16 + o.steps + 1;
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
  if (count > 1) {
    std::printf("  %zu devices:", count);
    for (size_t d = 0; d < plan.devices.size(); ++d)
      std::printf(" %s=%s", plan.devices[d].target.spec.name().c_str(),
                  plan.to_json()["devices"][d]["summary"].get<std::string>().c_str());
    std::printf("\n");
  }
  return p;
}

struct Phase {
  double host, single, split;     // tok/s from median step times
  double single_vs_host, split_vs_single;  // medians of per-step ratios
};

// One measurement with the two placed models created in the given order. The model allocated
// second ran up to 9% faster than the first in either order on this VM (memory layout, not the
// placement), so run() measures both orders and combines them.
Phase measure(const Options& o, size_t threads, Qwen2Model& host, bool split_first, size_t& boundaries) {
  std::unique_ptr<Placed> one, many;
  std::unique_ptr<Qwen2Model> single, split;
  auto make_single = [&] {
    one = std::make_unique<Placed>(place(o, 1, threads));
    single = std::make_unique<Qwen2Model>(o.model, threads, std::vector<std::filesystem::path>{}, &one->placement);
  };
  auto make_split = [&] {
    many = std::make_unique<Placed>(place(o, o.devices, threads));
    split = std::make_unique<Qwen2Model>(o.model, threads, std::vector<std::filesystem::path>{}, &many->placement);
  };
  if (split_first) {
    make_split();
    make_single();
  } else {
    make_single();
    make_split();
  }
  boundaries = many->boundaries;
  Decoder decoders[] = {Decoder(host, o.steps), Decoder(*single, o.steps), Decoder(*split, o.steps)};
  std::vector<double> times[3], one_vs_host, many_vs_one;
  for (size_t s = 0; s < o.steps; ++s) {
    double t[3];
    for (size_t k = 0; k < 3; ++k) {
      const size_t which = (s + k) % 3;  // rotate who goes first
      t[which] = decoders[which].step();
    }
    for (size_t k = 0; k < 3; ++k) times[k].push_back(t[k]);
    one_vs_host.push_back(t[0] / t[1]);
    many_vs_one.push_back(t[1] / t[2]);
  }
  return {1 / median(times[0]), 1 / median(times[1]), 1 / median(times[2]), median(one_vs_host), median(many_vs_one)};
}

int run(const Options& o) {
  const size_t threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  std::printf("load before: %s; threads %zu per device\n", loadavg().c_str(), threads);
  Qwen2Model host(o.model, threads);
  size_t boundaries = 0;
  std::printf("decode batch 1, %zu steps each, interleaved step by step:\n", o.steps);
  double product = 1;
  for (const bool split_first : {false, true}) {
    const Phase p = measure(o, threads, host, split_first, boundaries);
    std::printf("  %s allocated first: host %.2f tok/s, 1 device %.2f tok/s (per step %.3f x host), %zu devices "
                "%.2f tok/s (per step %.3f x 1 device)\n",
                split_first ? "N devices" : "1 device ", p.host, p.single, p.single_vs_host, o.devices, p.split,
                p.split_vs_single);
    product *= p.split_vs_single;
  }
  const double ratio = std::sqrt(product);
  std::printf("  %zu devices / 1 device, geometric mean of both orders: %.3f (%zu boundaries per step): cost %.1f%%\n",
              o.devices, ratio, boundaries, 100.0 * (1.0 - ratio));
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
    else if (arg == "--steps") o.steps = std::stoul(value());
    else if (arg == "--threads") o.threads = std::stoul(value());
    else {
      std::fprintf(stderr, "usage: device_map_bench --model DIR [--devices 3] [--steps 200] [--threads N]\n");
      return 2;
    }
  }
  if (o.model.empty() || o.devices < 2 || o.steps == 0) {
    std::fprintf(stderr, "usage: device_map_bench --model DIR [--devices 3] [--steps 200] [--threads N]\n");
    return 2;
  }
  try {
    return vlmforge::bench::run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
