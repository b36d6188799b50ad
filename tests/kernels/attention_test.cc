#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "io/convert.h"

namespace vlmforge::kernels {
namespace {

// Softmax attention in double over the cache rows as stored (so bf16 rounding is shared).
std::vector<double> naive_attention(const std::vector<float>& q, size_t group, size_t head_dim, const KvRows& kv,
                                    size_t length, double scale) {
  std::vector<double> out(group * head_dim, 0.0);
  for (size_t g = 0; g < group; ++g) {
    std::vector<double> s(length);
    double max = -INFINITY, sum = 0;
    for (size_t p = 0; p < length; ++p) {
      for (size_t i = 0; i < head_dim; ++i)
        s[p] += q[g * head_dim + i] * static_cast<double>(load_float(kv.dtype, kv.keys, p * kv.stride + kv.offset + i));
      s[p] *= scale;
      max = std::max(max, s[p]);
    }
    for (auto& v : s) sum += (v = std::exp(v - max));
    for (size_t p = 0; p < length; ++p)
      for (size_t i = 0; i < head_dim; ++i)
        out[g * head_dim + i] +=
            s[p] / sum * load_float(kv.dtype, kv.values, p * kv.stride + kv.offset + i);
  }
  return out;
}

TEST(Attention, MatchesNaiveDoubleForBothCacheDtypes) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist;
  for (DType dtype : {DType::F32, DType::BF16}) {
    for (auto [group, head_dim, length, kv_heads] :
         {std::tuple<size_t, size_t, size_t, size_t>{1, 8, 1, 1}, {7, 64, 37, 2}, {6, 128, 300, 2}, {2, 20, 17, 3}}) {
      const size_t stride = kv_heads * head_dim, esize = dtype == DType::F32 ? 4 : 2;
      std::vector<std::byte> keys(length * stride * esize), values(length * stride * esize);
      for (size_t i = 0; i < length * stride; ++i) {
        store_float(dtype, keys.data(), i, dist(rng));
        store_float(dtype, values.data(), i, dist(rng));
      }
      std::vector<float> q(group * head_dim), scores(group * length), out(group * head_dim);
      for (auto& v : q) v = dist(rng);
      const KvRows kv{dtype, keys.data(), values.data(), stride, (kv_heads - 1) * head_dim};
      const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      attend(q.data(), group, head_dim, kv, length, scale, scores.data(), out.data());
      const auto want = naive_attention(q, group, head_dim, kv, length, scale);
      for (size_t i = 0; i < out.size(); ++i)
        EXPECT_NEAR(out[i], want[i], 2e-6 * (1 + std::abs(want[i])))
            << dtype_name(dtype) << " group " << group << " head_dim " << head_dim << " length " << length << " at " << i;
    }
  }
}

}  // namespace
}  // namespace vlmforge::kernels
