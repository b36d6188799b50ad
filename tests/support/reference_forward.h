#pragma once
// A float64 forward of a Qwen2 language model (a Qwen2.5-VL model's decoder too, for text-only
// prompts, where M-RoPE's three position ids are equal and it is plain RoPE), written from the
// transformers model's definition and independent of src/model: the reference the quantized
// export is checked against. Weights come in as float64 matrices, so a quantized checkpoint is
// checked by handing it its dequantized weights.
#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace vlmforge::test {

struct ReferenceModelConfig {
  int hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0;
  double rope_theta = 1e6, rms_norm_eps = 1e-6;
  bool tied = false;
  std::string prefix = "model.";  // where the decoder's tensors are: "model." or "model.language_model."
};

// name -> row-major float64 values.
using ReferenceWeights = std::map<std::string, std::vector<double>>;

// Log-probabilities of each token given the ones before it (ids[1..]), the way `score` reports
// prompt_logprobs after its leading null.
inline std::vector<double> reference_prompt_logprobs(const ReferenceModelConfig& c, const ReferenceWeights& w,
                                                     const std::vector<int32_t>& ids) {
  auto get = [&](const std::string& name) -> const std::vector<double>& {
    const auto it = w.find(name);
    if (it == w.end()) throw std::runtime_error("reference forward: no tensor " + name);
    return it->second;
  };
  const size_t T = ids.size(), H = c.hidden, d = H / c.heads, I = c.intermediate;
  // y[t] = W x[t] (+ b): W [out, in].
  auto linear = [&](const std::vector<std::vector<double>>& x, const std::string& module, size_t out, bool bias) {
    const std::vector<double>& W = get(module + ".weight");
    const size_t in = W.size() / out;
    std::vector<std::vector<double>> y(x.size(), std::vector<double>(out, 0.0));
    for (size_t t = 0; t < x.size(); ++t)
      for (size_t o = 0; o < out; ++o) {
        double s = bias ? get(module + ".bias")[o] : 0.0;
        for (size_t i = 0; i < in; ++i) s += W[o * in + i] * x[t][i];
        y[t][o] = s;
      }
    return y;
  };
  auto rms_norm = [&](const std::vector<std::vector<double>>& x, const std::string& name) {
    const std::vector<double>& g = get(name);
    std::vector<std::vector<double>> y = x;
    for (auto& row : y) {
      double ss = 0;
      for (double v : row) ss += v * v;
      const double r = 1.0 / std::sqrt(ss / static_cast<double>(row.size()) + c.rms_norm_eps);
      for (size_t i = 0; i < row.size(); ++i) row[i] = row[i] * r * g[i];
    }
    return y;
  };
  // rotate_half RoPE on every head of x[t] (heads × d), position t.
  auto rope = [&](std::vector<std::vector<double>>& x, size_t heads) {
    for (size_t t = 0; t < T; ++t)
      for (size_t h = 0; h < heads; ++h)
        for (size_t i = 0; i < d / 2; ++i) {
          const double angle = static_cast<double>(t) * std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / d);
          double& a = x[t][h * d + i];
          double& b = x[t][h * d + i + d / 2];
          const double a0 = a, b0 = b;
          a = a0 * std::cos(angle) - b0 * std::sin(angle);
          b = b0 * std::cos(angle) + a0 * std::sin(angle);
        }
  };

  const std::vector<double>& embed = get(c.prefix + "embed_tokens.weight");
  std::vector<std::vector<double>> x(T, std::vector<double>(H));
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < H; ++i) x[t][i] = embed[static_cast<size_t>(ids[t]) * H + i];
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = c.prefix + "layers." + std::to_string(l) + ".";
    const auto h = rms_norm(x, p + "input_layernorm.weight");
    auto q = linear(h, p + "self_attn.q_proj", c.heads * d, true);
    auto k = linear(h, p + "self_attn.k_proj", c.kv_heads * d, true);
    const auto v = linear(h, p + "self_attn.v_proj", c.kv_heads * d, true);
    rope(q, c.heads);
    rope(k, c.kv_heads);
    std::vector<std::vector<double>> attn(T, std::vector<double>(c.heads * d, 0.0));
    for (size_t t = 0; t < T; ++t)
      for (size_t hd = 0; hd < static_cast<size_t>(c.heads); ++hd) {
        const size_t kv = hd / (c.heads / c.kv_heads);
        std::vector<double> score(t + 1);
        double max = -INFINITY, sum = 0;
        for (size_t s = 0; s <= t; ++s) {
          double dot = 0;
          for (size_t i = 0; i < d; ++i) dot += q[t][hd * d + i] * k[s][kv * d + i];
          score[s] = dot / std::sqrt(static_cast<double>(d));
          max = std::max(max, score[s]);
        }
        for (double& s : score) sum += (s = std::exp(s - max));
        for (size_t s = 0; s <= t; ++s)
          for (size_t i = 0; i < d; ++i) attn[t][hd * d + i] += score[s] / sum * v[s][kv * d + i];
      }
    const auto o = linear(attn, p + "self_attn.o_proj", H, false);
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < H; ++i) x[t][i] += o[t][i];
    const auto h2 = rms_norm(x, p + "post_attention_layernorm.weight");
    const auto gate = linear(h2, p + "mlp.gate_proj", I, false), up = linear(h2, p + "mlp.up_proj", I, false);
    std::vector<std::vector<double>> act(T, std::vector<double>(I));
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < I; ++i) act[t][i] = gate[t][i] / (1 + std::exp(-gate[t][i])) * up[t][i];
    const auto down = linear(act, p + "mlp.down_proj", H, false);
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < H; ++i) x[t][i] += down[t][i];
  }
  const auto final = rms_norm(x, c.prefix + "norm.weight");
  const std::vector<double>& head = c.tied ? embed : get("lm_head.weight");
  std::vector<double> out;
  for (size_t t = 0; t + 1 < T; ++t) {
    std::vector<double> logits(c.vocab);
    double max = -INFINITY;
    for (size_t o = 0; o < static_cast<size_t>(c.vocab); ++o) {
      double s = 0;
      for (size_t i = 0; i < H; ++i) s += head[o * H + i] * final[t][i];
      logits[o] = s;
      max = std::max(max, s);
    }
    double sum = 0;
    for (double l : logits) sum += std::exp(l - max);
    out.push_back(logits[static_cast<size_t>(ids[t + 1])] - max - std::log(sum));
  }
  return out;
}

}  // namespace vlmforge::test
