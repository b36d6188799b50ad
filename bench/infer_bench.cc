// Inference throughput against this machine's limits (bench/machine_limits.h: memory read
// bandwidth and fp32 FMA peak, with all threads); then, on a Qwen2 checkpoint
// (Qwen2Model::forward directly, random prompt ids, greedy feedback):
//   - prefill of one P-token prompt: tok/s and achieved GFLOP/s ÷ the FMA peak;
//   - batch-1 decode: tok/s ÷ the bandwidth bound (weight + KV bytes read per step ÷ bandwidth);
//   - batch-B decode: aggregate tok/s ÷ batch-1 tok/s.
// Every figure is the median of --runs runs.
// Usage: infer_bench --model DIR [--prompt 512] [--decode 32] [--batch 8] [--runs 3] [--threads N]
//                    [--kv_cache_dtype float32|bfloat16] [--quant_method q8_0|q4_0] [--skip_limits]
//        infer_bench --model DIR --greedy_ids 1,2,3 [--decode N]   (greedy tokens as JSON)
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench/machine_limits.h"
#include "model/qwen2.h"
#include "util/simd_targets.h"
#include "util/thread_pool.h"

namespace vlmforge::bench {
namespace {


int32_t argmax(const float* logits, size_t n) {
  return static_cast<int32_t>(std::max_element(logits, logits + n) - logits);
}

struct Options {
  std::string model;
  size_t prompt = 512, decode = 32, batch = 8, runs = 3, threads = 0;
  DType kv_dtype = DType::F32;
  bool skip_limits = false;
  std::string quant_method = "bf16";                // --quant_method q8_0 | q4_0: quantize on load
  std::optional<kernels::QuantScheme> quantize;
  std::vector<int32_t> greedy_ids;  // --greedy_ids: print greedy tokens after this prompt and exit
};

// Greedy continuation of `prompt` (one token per step, as the PyTorch reference does), printed
// as JSON with its prefill and decode tok/s, for bench/infer_bench.sh to compare.
int run_greedy(Qwen2Model& model, const std::vector<int32_t>& prompt, size_t count) {
  KvCache cache = model.make_cache(prompt.size() + count);
  SequenceChunk chunk{&cache, prompt};
  auto start = Clock::now();
  auto logits = model.forward({&chunk, 1});
  const double prefill_s = seconds_since(start);
  std::vector<int32_t> tokens{argmax(logits.data(), model.vocab_size())};
  start = Clock::now();
  while (tokens.size() < count) {
    chunk = {&cache, std::span(tokens).last(1)};
    logits = model.forward({&chunk, 1});
    tokens.push_back(argmax(logits.data(), model.vocab_size()));
  }
  const double decode_s = seconds_since(start);
  std::printf("{\"tokens\": [");
  for (size_t i = 0; i < tokens.size(); ++i) std::printf("%s%d", i ? ", " : "", tokens[i]);
  std::printf("], \"prefill_tok_s\": %.3f, \"decode_tok_s\": %.3f}\n", prompt.size() / prefill_s,
              (count - 1) / decode_s);
  return 0;
}

// Bytes of weights one forward step reads, and multiply-adds per token of the matrix products.
struct ModelCost {
  double weight_bytes = 0;
  double matmul_macs = 0;
};

// Bytes a decode step reads of the linears [rows, cols] (bf16, or codes with --quant_method as
// the model quantizes on load: inputs a multiple of 32), and their multiply-adds per token.
ModelCost model_cost(const ModelConfig& c, const std::optional<kernels::QuantScheme>& quantize) {
  const uint64_t hidden = c.hidden_size, inter = c.intermediate_size, vocab = c.vocab_size;
  const uint64_t kv_dim = static_cast<uint64_t>(c.num_key_value_heads) * c.head_dim();
  double bytes = 0, macs = 0;
  auto linear = [&](uint64_t rows, uint64_t cols, double count) {
    macs += count * static_cast<double>(rows * cols);
    bytes += count * static_cast<double>(quantize && cols % 32 == 0 ? quantize->layout().bytes(rows, cols) : 2 * rows * cols);
  };
  const double layers = c.num_hidden_layers;
  linear(hidden, hidden, 2 * layers);   // q, o
  linear(kv_dim, hidden, 2 * layers);   // k, v
  linear(inter, hidden, 2 * layers);    // gate, up
  linear(hidden, inter, layers);        // down
  linear(vocab, hidden, 1);             // lm_head
  return {bytes, macs};
}

std::vector<int32_t> random_ids(size_t n, size_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % std::min<size_t>(vocab, 150000));
  return ids;
}


// Seconds of `steps` batched decode steps for `batch` sequences, each after a 16-token prompt.
double time_decode(Qwen2Model& model, size_t batch, size_t steps) {
  std::vector<KvCache> caches;
  for (size_t s = 0; s < batch; ++s) caches.push_back(model.make_cache(16 + steps));
  std::vector<std::vector<int32_t>> prompts, next(batch, std::vector<int32_t>(1));
  std::vector<SequenceChunk> chunks(batch);
  for (size_t s = 0; s < batch; ++s) {
    prompts.push_back(random_ids(16, model.vocab_size(), 7 + static_cast<uint32_t>(s)));
    chunks[s] = {&caches[s], prompts[s]};
  }
  auto logits = model.forward(chunks);
  const auto start = Clock::now();
  for (size_t step = 0; step < steps; ++step) {
    for (size_t s = 0; s < batch; ++s) {
      next[s][0] = argmax(logits.data() + s * model.vocab_size(), model.vocab_size());
      chunks[s] = {&caches[s], next[s]};
    }
    logits = model.forward(chunks);
  }
  return seconds_since(start);
}

int run(const Options& o) {
  if (!o.greedy_ids.empty()) {
    Qwen2Model model(o.model, o.threads, {}, nullptr, o.quantize);
    model.set_kv_cache_dtype(o.kv_dtype);
    return run_greedy(model, o.greedy_ids, o.decode);
  }
  ThreadPool pool(o.threads);
  std::printf("machine: %zu threads, %s\n", pool.size(), vlmforge::current_simd_target().c_str());
  double bandwidth = 0, peak = 0;
  if (!o.skip_limits) {
    bandwidth = measure_bandwidth(pool, o.runs);
    peak = measure_fma_peak(pool, o.runs);
    std::printf("limits:  memory read %.1f GB/s, fp32 FMA peak %.1f GFLOP/s (medians of %zu)\n", bandwidth / 1e9,
                peak / 1e9, o.runs);
  }
  if (o.model.empty()) return 0;

  Qwen2Model model(o.model, pool.size(), {}, nullptr, o.quantize);
  model.set_kv_cache_dtype(o.kv_dtype);
  const ModelConfig& c = model.config();
  const ModelCost cost = model_cost(c, o.quantize);
  const double kv_dim = static_cast<double>(c.num_key_value_heads) * c.head_dim();
  const double kv_elem = o.kv_dtype == DType::F32 ? 4 : 2;
  std::printf("model:   %s, %d layers, hidden %d, %.0f M matmul params (%s, %.0f MB), kv cache %s\n", o.model.c_str(),
              c.num_hidden_layers, c.hidden_size, cost.matmul_macs / 1e6, o.quant_method.c_str(), cost.weight_bytes / 1e6,
              o.kv_dtype == DType::F32 ? "f32" : "bf16");

  // Prefill: matrix products plus causal attention (QKᵀ and PV over an average of P/2 positions).
  std::vector<double> prefill_times;
  const auto prompt = random_ids(o.prompt, model.vocab_size(), 1);
  for (size_t r = 0; r < o.runs; ++r) {
    KvCache cache = model.make_cache(o.prompt);
    const SequenceChunk chunk{&cache, prompt};
    const auto start = Clock::now();
    model.forward({&chunk, 1});
    prefill_times.push_back(seconds_since(start));
  }
  const double prefill_s = median(prefill_times);
  const double attn_flops = 4.0 * c.num_hidden_layers * c.num_attention_heads * c.head_dim() * (o.prompt + 1) / 2.0;
  const double prefill_flops = o.prompt * (2 * cost.matmul_macs + attn_flops);
  std::printf("prefill  %4zu tokens: %8.1f tok/s, %6.1f GFLOP/s", o.prompt, o.prompt / prefill_s,
              prefill_flops / prefill_s / 1e9);
  if (peak > 0) std::printf(" = %5.1f%% of FMA peak (target >= 40%%)", 100 * prefill_flops / prefill_s / peak);
  std::printf("\n");

  // Decode batch 1 (bound: every weight byte plus the KV cache read once per step).
  std::vector<double> t1, tb;
  for (size_t r = 0; r < o.runs; ++r) t1.push_back(time_decode(model, 1, o.decode));
  const double tok1 = o.decode / median(t1);
  const double kv_bytes = 2.0 * c.num_hidden_layers * kv_dim * kv_elem * (16 + o.decode / 2.0);
  const double bound = bandwidth / (cost.weight_bytes + kv_bytes);
  std::printf("decode   batch 1:     %8.1f tok/s", tok1);
  if (bandwidth > 0)
    std::printf(", bound %.1f tok/s (%.0f MB/step) = %5.1f%% of bandwidth bound (target >= 70%%)", bound,
                (cost.weight_bytes + kv_bytes) / 1e6, 100 * tok1 / bound);
  std::printf("\n");
  for (size_t r = 0; r < o.runs; ++r) tb.push_back(time_decode(model, o.batch, o.decode));
  const double tokb = o.batch * o.decode / median(tb);
  std::printf("decode   batch %zu:     %8.1f tok/s aggregate = %4.2fx batch 1 (target >= 4x)\n", o.batch, tokb,
              tokb / tok1);
  return 0;
}

}  // namespace
}  // namespace vlmforge::bench

int main(int argc, char** argv) {
  vlmforge::limit_simd_target_from_environment();  // VLMFORGE_SIMD_TARGET=avx2 measures the AVX2 path
  vlmforge::bench::Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--model") o.model = value();
    else if (arg == "--prompt") o.prompt = std::stoul(value());
    else if (arg == "--decode") o.decode = std::stoul(value());
    else if (arg == "--batch") o.batch = std::stoul(value());
    else if (arg == "--runs") o.runs = std::stoul(value());
    else if (arg == "--threads") o.threads = std::stoul(value());
    else if (arg == "--kv_cache_dtype") o.kv_dtype = value() == "bfloat16" ? vlmforge::DType::BF16 : vlmforge::DType::F32;
    else if (arg == "--skip_limits") o.skip_limits = true;
    else if (arg == "--quant_method") {
      o.quant_method = value();
      if (o.quant_method == "q8_0") o.quantize = vlmforge::kernels::QuantScheme::q8_0();
      else if (o.quant_method == "q4_0") o.quantize = vlmforge::kernels::QuantScheme::q4_0();
      else throw std::runtime_error("--quant_method: q8_0 or q4_0");
    }
    else if (arg == "--greedy_ids") {
      const std::string ids = value();
      for (size_t pos = 0; pos < ids.size();) {
        const size_t comma = std::min(ids.find(',', pos), ids.size());
        o.greedy_ids.push_back(std::stoi(ids.substr(pos, comma - pos)));
        pos = comma + 1;
      }
    }
    else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      return 2;
    }
  }
  try {
    return vlmforge::bench::run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
