// Qwen2.5-VL on the language-model side: get_rope_index's positions, and the decoder with image
// embeddings in place of <|image_pad|> tokens and M-RoPE, against a naive double forward pass.
#include "model/mrope.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/convert.h"
#include "model/layout.h"
#include "model/qwen2.h"
#include "model/random_checkpoint.h"
#include "support/test_support.h"
#include "util/error.h"

namespace vlmforge::test {
namespace {

using P = std::array<int64_t, 3>;

ModelConfig tiny_vl() {
  ModelConfig c = preset_config("tiny-vl");
  c.image_token_id = 500;  // inside the tiny vocabulary
  c.vision_start_token_id = 499;
  return c;
}

TEST(Mrope, PositionsOfTextImageText) {
  const ModelConfig c = tiny_vl();
  // 3 text tokens, an image of 4 x 6 patches (2 x 3 merged tokens), 2 text tokens.
  const std::vector<int32_t> tokens{1, 2, 499, 500, 500, 500, 500, 500, 500, 7, 8};
  const ImageGrid grid{1, 4, 6};
  const auto m = mrope_positions(tokens, std::span(&grid, 1), c);
  const std::vector<P> expected{{0, 0, 0}, {1, 1, 1}, {2, 2, 2},                       // text
                                {3, 3, 3}, {3, 3, 4}, {3, 3, 5}, {3, 4, 3}, {3, 4, 4}, {3, 4, 5},  // image rows
                                {6, 6, 6}, {7, 7, 7}};                                  // max + 1 onwards
  EXPECT_EQ(m.positions, expected);
  // rope_deltas: max position + 1 - length = 8 - 11.
  EXPECT_EQ(m.delta, -3);
  // Mismatches are errors.
  const ImageGrid wrong{1, 4, 4};
  EXPECT_THROW(mrope_positions(tokens, std::span(&wrong, 1), c), Error);
  EXPECT_THROW(mrope_positions(tokens, {}, c), Error);
  const std::vector<ImageGrid> two{grid, grid};
  EXPECT_THROW(mrope_positions(tokens, two, c), Error);
  // Text only: positions are 0..n-1 and the delta is 0.
  const std::vector<int32_t> text{5, 6, 7};
  const auto t = mrope_positions(text, {}, c);
  EXPECT_EQ(t.positions, (std::vector<P>{{0, 0, 0}, {1, 1, 1}, {2, 2, 2}}));
  EXPECT_EQ(t.delta, 0);
}

// Naive float64 Qwen2 decoder with per-token embeddings and M-RoPE positions; logits of every row.
std::vector<double> reference_logits(const Checkpoint& ckpt, const ModelConfig& c, const std::vector<std::vector<double>>& embeds,
                                     const std::vector<P>& pos) {
  auto t = [&](const std::string& name) {
    const auto f = kernels::tensor_to_f32(*ckpt.find(name));
    return std::vector<double>(f.begin(), f.end());
  };
  const size_t n = embeds.size(), d = c.hidden_size, heads = c.num_attention_heads, kvh = c.num_key_value_heads;
  const size_t hd = d / heads, kv = kvh * hd, inter = c.intermediate_size;
  auto linear = [](const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>* b, size_t out) {
    const size_t in = w.size() / out;
    std::vector<double> y(out);
    for (size_t o = 0; o < out; ++o) {
      double s = b ? (*b)[o] : 0;
      for (size_t i = 0; i < in; ++i) s += x[i] * w[o * in + i];
      y[o] = s;
    }
    return y;
  };
  auto rms = [&](const std::vector<double>& x, const std::vector<double>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1 / std::sqrt(ss / x.size() + c.rms_norm_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  };
  // Frequency i uses the position of axis section(i): mrope_section [2, 3, 3] → t t h h h w w w.
  std::vector<int> axis;
  for (size_t s = 0; s < c.mrope_section.size(); ++s) axis.insert(axis.end(), c.mrope_section[s], int(s));
  auto rope = [&](std::vector<double>& v, size_t off, const P& p) {
    std::vector<double> h(v.begin() + off, v.begin() + off + hd);
    for (size_t i = 0; i < hd; ++i) {
      const size_t f = i % (hd / 2);
      const double angle = p[axis[f]] * std::pow(c.rope_theta, -2.0 * f / hd);
      const double rot = i < hd / 2 ? -h[i + hd / 2] : h[i - hd / 2];
      v[off + i] = h[i] * std::cos(angle) + rot * std::sin(angle);
    }
  };
  std::vector<std::vector<double>> x = embeds;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto qw = t(p + "self_attn.q_proj.weight"), kw = t(p + "self_attn.k_proj.weight"), vw = t(p + "self_attn.v_proj.weight");
    const auto qb = t(p + "self_attn.q_proj.bias"), kb = t(p + "self_attn.k_proj.bias"), vb = t(p + "self_attn.v_proj.bias");
    std::vector<std::vector<double>> q(n), k(n), v(n);
    for (size_t r = 0; r < n; ++r) {
      const auto h = rms(x[r], t(p + "input_layernorm.weight"));
      q[r] = linear(h, qw, &qb, d), k[r] = linear(h, kw, &kb, kv), v[r] = linear(h, vw, &vb, kv);
      for (size_t hh = 0; hh < heads; ++hh) rope(q[r], hh * hd, pos[r]);
      for (size_t hh = 0; hh < kvh; ++hh) rope(k[r], hh * hd, pos[r]);
    }
    const auto ow = t(p + "self_attn.o_proj.weight");
    for (size_t r = 0; r < n; ++r) {
      std::vector<double> attn(d);
      for (size_t hh = 0; hh < heads; ++hh) {
        const size_t g = hh / (heads / kvh);
        std::vector<double> s(r + 1);
        double mx = -1e300, sum = 0;
        for (size_t j = 0; j <= r; ++j) {
          double dot = 0;
          for (size_t i = 0; i < hd; ++i) dot += q[r][hh * hd + i] * k[j][g * hd + i];
          mx = std::max(mx, s[j] = dot / std::sqrt(double(hd)));
        }
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (size_t j = 0; j <= r; ++j)
          for (size_t i = 0; i < hd; ++i) attn[hh * hd + i] += s[j] / sum * v[j][g * hd + i];
      }
      const auto o = linear(attn, ow, nullptr, d);
      for (size_t i = 0; i < d; ++i) x[r][i] += o[i];
      const auto h = rms(x[r], t(p + "post_attention_layernorm.weight"));
      auto gate = linear(h, t(p + "mlp.gate_proj.weight"), nullptr, inter);
      const auto up = linear(h, t(p + "mlp.up_proj.weight"), nullptr, inter);
      for (size_t i = 0; i < inter; ++i) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
      const auto down = linear(gate, t(p + "mlp.down_proj.weight"), nullptr, d);
      for (size_t i = 0; i < d; ++i) x[r][i] += down[i];
    }
  }
  std::vector<double> logits;
  const auto head = t(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  for (size_t r = 0; r < n; ++r) {
    const auto y = linear(rms(x[r], t("model.norm.weight")), head, nullptr, c.vocab_size);
    logits.insert(logits.end(), y.begin(), y.end());
  }
  return logits;
}

TEST(Mrope, DecoderWithImageEmbeddingsMatchesTheDoubleReference) {
  TempDir dir;
  const ModelConfig c = tiny_vl();
  generate_checkpoint(c, dir.path(), {.dtype = DType::F32, .seed = 5});
  Qwen2Model model(dir.path(), 2);
  const std::vector<int32_t> tokens{1, 2, 499, 500, 500, 500, 500, 500, 500, 7, 8};
  const ImageGrid grid{1, 4, 6};
  const auto m = mrope_positions(tokens, std::span(&grid, 1), c);
  // Six image embedding rows with values of the size the vision tower gives.
  const size_t d = c.hidden_size;
  std::vector<float> image(6 * d);
  for (size_t i = 0; i < image.size(); ++i) image[i] = static_cast<float>(std::sin(0.37 * i));
  KvCache cache = model.make_cache(64);
  SequenceChunk chunk{&cache, tokens, true};
  chunk.image_embeds = image;
  chunk.positions = m.positions;
  chunk.position_delta = m.delta;
  const std::vector<float> got = model.forward(std::span(&chunk, 1));

  const Checkpoint ckpt(dir.path());
  const auto table = kernels::tensor_to_f32(*ckpt.find("model.embed_tokens.weight"));
  std::vector<std::vector<double>> embeds;
  size_t row = 0;
  for (int32_t tok : tokens) {
    const float* src = tok == c.image_token_id ? image.data() + (row++) * d : table.data() + size_t(tok) * d;
    embeds.emplace_back(src, src + d);
  }
  // A generated token continues at cache slot + delta on all three axes.
  const int32_t next = 9;
  std::vector<P> positions = m.positions;
  const int64_t p = int64_t(tokens.size()) + m.delta;
  positions.push_back({p, p, p});
  embeds.emplace_back(table.data() + size_t(next) * d, table.data() + size_t(next + 1) * d);
  const auto want = reference_logits(ckpt, c, embeds, positions);
  const size_t vocab = c.vocab_size;
  ASSERT_EQ(got.size(), tokens.size() * vocab);
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  EXPECT_LT(worst, 1e-4);

  SequenceChunk step{&cache, std::span(&next, 1), false};
  step.position_delta = m.delta;
  const std::vector<float> decoded = model.forward(std::span(&step, 1));
  worst = 0;
  for (size_t i = 0; i < vocab; ++i) worst = std::max(worst, std::fabs(decoded[i] - want[tokens.size() * vocab + i]));
  EXPECT_LT(worst, 1e-4);

  // Fewer embedding rows than <|image_pad|> tokens is an error, not a read past the end.
  KvCache other = model.make_cache(64);
  SequenceChunk short_chunk{&other, tokens, false};
  const std::vector<float> five(5 * d);
  short_chunk.image_embeds = five;
  EXPECT_THROW(model.forward(std::span(&short_chunk, 1)), Error);
}

}  // namespace
}  // namespace vlmforge::test
