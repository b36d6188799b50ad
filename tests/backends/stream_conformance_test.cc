// Conformance of every backend's Stream with the op contracts of backends/stream.h, in the spirit
// of llama.cpp's test-backend-ops: each op, each dtype it takes, odd sizes, strided and offset
// views, against a float64 reference written here from the math (not from the kernels), on every
// compiled SIMD target. A new backend joins by adding one line to backends() below.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu_device.h"
#include "backends/registry.h"
#include "backends/stream.h"
#include "backends/transfer.h"
#include "io/convert.h"
#include "support/quant_weight.h"
#include "support/test_support.h"
#include "util/half.h"

namespace vlmforge {
namespace {

using test::error_of;

// fp32's unit roundoff. Recursive summation of n terms errs by at most n·u·Σ|term| (Higham's
// γ_n); blocked and SIMD summation do better, so (n + slack)·u·magnitude bounds every kernel
// order without assuming one.
constexpr double kUnit = 0x1p-24;
double sum_bound(size_t terms, double magnitude) { return static_cast<double>(terms + 4) * kUnit * magnitude; }

// --- the reference: float64, straight from the math ------------------------------------------
namespace ref {

// A stored weight's value: the fp32 the test chose, rounded to the dtype it is stored in.
float round_to(DType d, float v) {
  if (d == DType::BF16) return bf16_to_f32(f32_to_bf16(v));
  if (d == DType::F16) return f16_to_f32(f32_to_f16(v));
  return v;
}

double rms_scale(const float* x, size_t cols, float eps) {
  double sq = 0;
  for (size_t i = 0; i < cols; ++i) sq += double(x[i]) * x[i];
  return 1.0 / std::sqrt(sq / double(cols) + eps);
}

double silu(double g) { return g / (1 + std::exp(-g)); }
double gelu(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }

// Softmax attention of one query head over keys/values [0, length) (row p at k + p * stride);
// returns the output and Σ p_j·|v_j| per element (the magnitude the output's error scales with).
void attend(const float* q, const float* k, const float* v, size_t stride, size_t length, size_t hd, double scale,
            double* out, double* magnitude) {
  std::vector<double> s(length);
  double top = -INFINITY;
  for (size_t p = 0; p < length; ++p) {
    double dot = 0;
    for (size_t i = 0; i < hd; ++i) dot += double(q[i]) * k[p * stride + i];
    s[p] = dot * scale;
    top = std::max(top, s[p]);
  }
  double total = 0;
  for (double& e : s) total += (e = std::exp(e - top));
  for (size_t i = 0; i < hd; ++i) out[i] = magnitude[i] = 0;
  for (size_t p = 0; p < length; ++p)
    for (size_t i = 0; i < hd; ++i) {
      out[i] += s[p] / total * v[p * stride + i];
      magnitude[i] += s[p] / total * std::abs(v[p * stride + i]);
    }
}

// Attention's error relative to Σ p_j·|v_j|: the scores' dot products (hd terms, |q|·|k| each,
// times scale) shift the softmax weights relatively by about that much, exp and the
// normalization add a few ulps, and the weighted sum of `length` values adds length·u.
double attention_relative_error(const float* q, const float* k, size_t stride, size_t length, size_t hd,
                                double scale) {
  double score_error = 0;
  for (size_t p = 0; p < length; ++p) {
    double m = 0;
    for (size_t i = 0; i < hd; ++i) m += std::abs(double(q[i]) * k[p * stride + i]);
    score_error = std::max(score_error, sum_bound(hd, m) * scale);
  }
  return 4 * score_error + 32 * kUnit + double(length + 4) * kUnit;
}

}  // namespace ref

// --- the backends under test ---------------------------------------------------------------------
struct Backend {
  std::string name;
  std::function<std::unique_ptr<Device>(int index)> open;
};

// gtest names a failing case by its backend (not the struct's bytes).
void PrintTo(const Backend& backend, std::ostream* os) { *os << backend.name; }

std::vector<Backend> backends() {
  // The CPU backend partitions rows, weight tiles and attention items over its pool: 1, 2 and 3
  // threads give different splits (and remainders).
  std::vector<Backend> all;
  for (size_t threads : {1, 2, 3})
    all.push_back({"cpu_" + std::to_string(threads) + "threads",
                   [threads](int index) { return std::make_unique<CpuDevice>(index, std::nullopt, threads); }});
#ifdef VLMFORGE_WITH_VULKAN
  // Every usable Vulkan device (lavapipe where there is no GPU); two logical devices of one
  // physical device stand in for two devices.
  static const DeviceRegistry registry = DeviceRegistry::builtin();
  const DeviceBackend* vulkan = registry.find("vulkan");
  for (size_t physical = 0; physical < vulkan->physical_count().value_or(0); ++physical)
    all.push_back({"vulkan" + std::to_string(physical), [vulkan, physical](int index) {
                     return vulkan->open({"vulkan", index}, static_cast<int>(physical), std::nullopt, 1);
                   }});
#endif
  return all;
}

// Host rows laid out as a view sees them: `offset` floats of padding, rows `stride` apart.
struct HostRows {
  size_t rows, cols, offset, stride;
  std::vector<float> data;
  float& at(size_t r, size_t c) { return data[offset + r * stride + c]; }
  float at(size_t r, size_t c) const { return data[offset + r * stride + c]; }
  const float* row(size_t r) const { return data.data() + offset + r * stride; }
};

// One linear layer of the test with its host values, for the reference.
struct HostLinear {
  std::vector<float> w, bias, dora;
  // Quantized weights: per weight, the magnitude the kernels' rounding scales with
  // (test::QuantWeight::folded), used instead of |w|.
  std::vector<double> folded;
  struct Lora {
    std::vector<float> a, b;
    size_t rank;
    float scale;
  };
  std::vector<Lora> loras;
};

class StreamConformance : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    device_ = GetParam().open(0);
    stream_ = device_->open_stream();
  }

  std::vector<float> random(size_t n, float sigma = 1) {
    std::normal_distribution<float> dist(0, sigma);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng_);
    return v;
  }
  // Rows with random contents, padding included (so a kernel reading padding shows in its output).
  HostRows rows(size_t rows, size_t cols, size_t offset, size_t pad, float sigma = 1) {
    HostRows h{rows, cols, offset, cols + pad, {}};
    h.data = random(offset + rows * h.stride + 1, sigma);
    return h;
  }

  DeviceBuffer upload(std::span<const float> host) { return device_->upload(std::as_bytes(host), "test rows"); }
  DeviceBuffer upload(const HostRows& h) { return upload(std::span(h.data)); }
  static F32Rows view(const DeviceBuffer& b, const HostRows& h) { return {&b, h.offset, h.stride}; }
  std::vector<float> read(const DeviceBuffer& b) {
    std::vector<float> out(b.size() / sizeof(float));
    stream_->copy_to_host(std::as_writable_bytes(std::span(out)), b, 0);
    return out;
  }

  // A stored weight [rows, cols] of dtype `d`, `lead` elements into its buffer, uploaded or lent
  // (wrap_host) as the engine does with the memory-mapped weights. `values` become what is stored.
  WeightView weight(DType d, size_t rows, size_t cols, std::vector<float>& values, bool lend = false,
                    size_t lead = 3) {
    const size_t size = dtype_info(d).bits / 8;
    values = random(rows * cols, 1.0f / std::sqrt(float(cols)));
    std::vector<std::byte> bytes((lead + rows * cols) * size, std::byte{0x5a});
    for (size_t i = 0; i < values.size(); ++i) {
      values[i] = ref::round_to(d, values[i]);
      std::byte* at = bytes.data() + (lead + i) * size;
      if (d == DType::F32) {
        std::memcpy(at, &values[i], 4);
      } else {
        const uint16_t h = d == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
        std::memcpy(at, &h, 2);
      }
    }
    if (lend) {
      lent_.push_back(std::move(bytes));
      buffers_.push_back(device_->wrap_host(lent_.back(), "test weight"));
    } else {
      buffers_.push_back(device_->upload(bytes, "test weight"));
    }
    return {&buffers_.back(), lead * size, d, rows, cols};
  }
  // A quantized weight [rows, cols] (random, in `scheme`, with a random permutation or not), `lead`
  // bytes into its buffer; h gets its dequantized values (in input order) and their magnitudes.
  WeightView quant_weight(const kernels::QuantScheme& scheme, bool with_perm, size_t rows, size_t cols, HostLinear& h,
                          size_t lead = 64) {
    const test::QuantWeight q(scheme, with_perm, rows, cols, rng_);
    h.w.assign(rows * cols, 0.0f);
    h.folded.assign(rows * cols, 0.0);
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) {  // (q − z)·s is exact in fp32: at most 8 + 11 significant bits
        h.w[r * cols + q.input_of(c)] = static_cast<float>(q.values[r * cols + c]);
        h.folded[r * cols + q.input_of(c)] = q.folded[r * cols + c];
      }
    std::vector<std::byte> bytes(lead, std::byte{0x5a});
    bytes.insert(bytes.end(), q.bytes.begin(), q.bytes.end());
    buffers_.push_back(device_->upload(bytes, "test quantized weight"));
    return {&buffers_.back(), lead, DType::U8, rows, cols, q.layout};
  }
  VectorView vector(const std::vector<float>& values, size_t lead = 5) {
    std::vector<float> host(lead, NAN);
    host.insert(host.end(), values.begin(), values.end());
    buffers_.push_back(upload(std::span(host)));
    return {&buffers_.back(), lead, values.size()};
  }

  // Each op's check runs on every SIMD target, with fresh random inputs per target.
  template <typename Body>
  void on_every_target(Body&& body) {
    test::for_each_simd_target([&](const std::string& target) {
      SCOPED_TRACE("simd target " + target);
      rng_.seed(17);
      body();
    });
  }

  std::unique_ptr<Device> device_;
  std::unique_ptr<Stream> stream_;
  std::mt19937 rng_{17};
  std::deque<std::vector<std::byte>> lent_;  // host memory behind wrap_host buffers (outlives them)
  std::deque<DeviceBuffer> buffers_;
};

constexpr DType kWeightDtypes[] = {DType::BF16, DType::F16, DType::F32};
constexpr size_t kOddSizes[] = {1, 3, 17, 63, 65, 129};

TEST_P(StreamConformance, CopiesHonourOffsetsAndRefuseToRunPastTheEnd) {
  std::vector<std::byte> host(37);
  for (size_t i = 0; i < host.size(); ++i) host[i] = std::byte(i * 7 + 1);
  DeviceBuffer a = device_->allocate(64, "a"), b = device_->allocate(50, "b");
  stream_->copy_from_host(a, 5, host);
  stream_->copy(b, 3, a, 5, host.size());
  std::vector<std::byte> back(host.size());
  stream_->copy_to_host(back, b, 3);
  EXPECT_EQ(back, host);
  stream_->copy(b, 0, a, 0, 0);  // zero bytes are a no-op
  for (const std::string& message :
       {error_of([&] { stream_->copy_from_host(a, 28, host); }), error_of([&] { stream_->copy_to_host(back, a, 28); }),
        error_of([&] { stream_->copy(b, 14, a, 0, host.size()); }),
        error_of([&] { stream_->copy(a, 0, b, 14, host.size()); })})
    EXPECT_NE(message.find("past the end"), std::string::npos) << message;
}

TEST_P(StreamConformance, CopyBetweenDevicesMovesOddByteCounts) {
  auto other = GetParam().open(1);
  auto other_stream = other->open_stream();
  std::vector<float> staging;
  for (size_t bytes : {1u, 13u, 4096u + 3u}) {
    std::vector<std::byte> host(bytes);
    for (size_t i = 0; i < bytes; ++i) host[i] = std::byte(i * 31 + bytes);
    DeviceBuffer src = device_->upload(host, "src"), dst = other->allocate(bytes + 8, "dst");
    copy_between_devices(*stream_, src, *other_stream, dst, bytes, staging);
    std::vector<std::byte> back(bytes);
    other_stream->copy_to_host(back, dst, 0);
    EXPECT_EQ(back, host) << bytes << " bytes";
    DeviceBuffer same = device_->allocate(bytes, "same device");
    copy_between_devices(*stream_, src, *stream_, same, bytes, staging);
    stream_->copy_to_host(back, same, 0);
    EXPECT_EQ(back, host) << bytes << " bytes within one device";
  }
}

// Every op must refuse a buffer of another device rather than read or write memory it does not own.
TEST_P(StreamConformance, OpsRefuseBuffersOfAnotherDevice) {
  auto other = GetParam().open(1);
  std::vector<float> ones(64, 1.0f);
  DeviceBuffer mine = upload(std::span(ones));
  DeviceBuffer theirs = other->upload(std::as_bytes(std::span(ones)), "other device");
  const F32Rows m{&mine, 0, 8}, t{&theirs, 0, 8};
  const VectorView w{&mine, 0, 8}, w_theirs{&theirs, 0, 8};
  const LinearView own{{&mine, 0, DType::F32, 2, 8}, {}, {}, {}};
  const LinearView foreign{{&theirs, 0, DType::F32, 2, 8}, {}, {}, {}};
  const KvView cache_theirs{DType::F32, &theirs, &theirs, 8};
  const KvSlot slot_theirs[] = {{cache_theirs, 0}};
  const AttentionShape shape{1, 1, 8, 1};
  const size_t bounds[] = {0, 2};
  const std::vector<std::pair<std::string, std::function<void()>>> calls = {
      {"copy src", [&] { stream_->copy(mine, 0, theirs, 0, 4); }},
      {"copy dst", [&] { stream_->copy(theirs, 0, mine, 0, 4); }},
      {"embed", [&] { const int32_t id = 0; stream_->embed(foreign.weight, {&id, 1}, m); }},
      {"rms_norm x", [&] { stream_->rms_norm(t, w, 1e-6f, 2, 8, m); }},
      {"rms_norm weight", [&] { stream_->rms_norm(m, w_theirs, 1e-6f, 2, 8, m); }},
      {"add", [&] { stream_->add(m, t, 2, 8); }},
      {"silu_mul", [&] { stream_->silu_mul(t, m, 2, 8); }},
      {"gelu", [&] { stream_->gelu(t, 2, 8); }},
      {"linear weight", [&] { const Stream::LinearOutput o[] = {{&foreign, m}}; stream_->linear(m, 2, o); }},
      {"linear out", [&] { const Stream::LinearOutput o[] = {{&own, t}}; stream_->linear(m, 2, o); }},
      {"kv_store cache", [&] { stream_->kv_store(slot_theirs, m, m); }},
      {"attention cache", [&] { stream_->attention(m, slot_theirs, shape, m); }},
      {"segment_attention", [&] { stream_->segment_attention(m, t, t, bounds, shape, m); }},
  };
  for (const auto& [name, call] : calls) {
    const std::string message = error_of(call);
    EXPECT_NE(message.find("given a buffer of another device"), std::string::npos) << name << ": " << message;
  }
}

// A KV slot past its cache's end must be refused, not written or read out of bounds. The cache
// buffers lend the first `positions` rows of a larger host block, so an op that runs past them
// touches only this test's memory (where the check below sees it) instead of the heap.
TEST_P(StreamConformance, KvOpsRefuseSlotsPastTheCachesEnd) {
  const size_t kv_dim = 8, positions = 4;
  std::vector<float> host_keys(2 * positions * kv_dim, 0.0f), host_values = host_keys;
  DeviceBuffer keys = device_->wrap_host(std::as_bytes(std::span(host_keys)).first(positions * kv_dim * 4), "k");
  DeviceBuffer values = device_->wrap_host(std::as_bytes(std::span(host_values)).first(positions * kv_dim * 4), "v");
  const KvSlot past[] = {{{DType::F32, &keys, &values, kv_dim}, positions}};
  HostRows kv = rows(1, kv_dim, 0, 0);
  DeviceBuffer b = upload(kv), out = upload(kv);
  EXPECT_THROW(stream_->kv_store(past, view(b, kv), view(b, kv)), Error);
  EXPECT_EQ(host_keys[positions * kv_dim], 0.0f) << "kv_store wrote past the end of the key cache";
  EXPECT_THROW(stream_->attention(view(b, kv), past, {1, 1, kv_dim, 1}, view(out, kv)), Error);
}

TEST_P(StreamConformance, EmbedConvertsEveryDtypeExactly) {
  on_every_target([&] {
    for (DType d : kWeightDtypes)
      for (bool lend : {false, true})
        for (size_t cols : kOddSizes) {
          SCOPED_TRACE(std::string(dtype_name(d)) + (lend ? " lent" : " uploaded") + " cols " + std::to_string(cols));
          const size_t vocab = 11;
          std::vector<float> table;
          const WeightView w = weight(d, vocab, cols, table, lend);
          const std::vector<int32_t> ids = {0, 10, 3, 3, 7};
          HostRows out = rows(ids.size(), cols, 2, 3);
          DeviceBuffer b = upload(out);
          stream_->embed(w, ids, view(b, out));
          const std::vector<float> got = read(b);
          for (size_t i = 0; i < ids.size(); ++i) {
            for (size_t c = 0; c < cols; ++c)
              ASSERT_EQ(got[out.offset + i * out.stride + c], table[ids[i] * cols + c]) << "row " << i << " col " << c;
            for (size_t c = cols; c < out.stride; ++c)  // padding untouched
              ASSERT_EQ(got[out.offset + i * out.stride + c], out.at(i, c));
          }
        }
  });
}

TEST_P(StreamConformance, GatherAndScatterMoveRowsBetweenStridedViews) {
  on_every_target([&] {
    for (size_t cols : kOddSizes) {
      SCOPED_TRACE("cols " + std::to_string(cols));
      HostRows in = rows(9, cols, 1, 2), out = rows(9, cols, 3, 5);
      const std::vector<uint32_t> index = {8, 0, 4, 2, 6, 1, 7, 3, 5};
      DeviceBuffer bin = upload(in), bout = upload(out);
      stream_->gather_rows(view(bin, in), index, cols, view(bout, out));
      std::vector<float> got = read(bout);
      for (size_t i = 0; i < index.size(); ++i)
        for (size_t c = 0; c < out.stride; ++c)
          ASSERT_EQ(got[out.offset + i * out.stride + c], c < cols ? in.at(index[i], c) : out.at(i, c));
      stream_->copy_from_host(bout, 0, std::as_bytes(std::span(out.data)));
      stream_->scatter_rows(view(bin, in), index, cols, view(bout, out));
      got = read(bout);
      for (size_t i = 0; i < index.size(); ++i)
        for (size_t c = 0; c < out.stride; ++c)
          ASSERT_EQ(got[out.offset + index[i] * out.stride + c], c < cols ? in.at(i, c) : out.at(index[i], c));
    }
  });
}

// |got − want| within the bound of (terms) fp32 roundings relative to `magnitude`.
void expect_rms_norm(const std::vector<float>& got, const HostRows& out, const HostRows& x,
                     const std::vector<float>& w, float eps) {
  for (size_t r = 0; r < x.rows; ++r) {
    const double s = ref::rms_scale(x.row(r), x.cols, eps);
    for (size_t c = 0; c < x.cols; ++c) {
      const double want = x.at(r, c) * s * w[c];
      // The mean of squares errs by cols·u relatively, its rsqrt by half that plus an ulp or two,
      // then two products round.
      const double tol = sum_bound(x.cols, std::abs(want)) + 1e-37;
      ASSERT_NEAR(got[out.offset + r * out.stride + c], want, tol) << "row " << r << " col " << c;
    }
  }
}

TEST_P(StreamConformance, RmsNormMatchesTheDefinition) {
  on_every_target([&] {
    for (size_t cols : kOddSizes)
      for (size_t n : {1, 5}) {
        SCOPED_TRACE("cols " + std::to_string(cols) + " rows " + std::to_string(n));
        HostRows x = rows(n, cols, 3, 4, 3.0f), out = rows(n, cols, 1, 1);
        const std::vector<float> w = random(cols);
        const float eps = 1e-6f;
        DeviceBuffer bx = upload(x), bo = upload(out);
        stream_->rms_norm(view(bx, x), vector(w), eps, n, cols, view(bo, out));
        expect_rms_norm(read(bo), out, x, w, eps);
      }
  });
}

TEST_P(StreamConformance, AddRmsNormUpdatesTheResidualThenNormalizes) {
  on_every_target([&] {
    for (size_t cols : kOddSizes) {
      SCOPED_TRACE("cols " + std::to_string(cols));
      const size_t n = 7;
      HostRows x = rows(n, cols, 2, 3), y = rows(n, cols, 0, 1), out = rows(n, cols, 4, 0);
      const std::vector<float> w = random(cols);
      DeviceBuffer bx = upload(x), by = upload(y), bo = upload(out);
      stream_->add_rms_norm(view(bx, x), view(by, y), vector(w), 1e-5f, n, cols, view(bo, out));
      HostRows sum = x;
      for (size_t r = 0; r < n; ++r)
        for (size_t c = 0; c < cols; ++c) sum.at(r, c) = x.at(r, c) + y.at(r, c);  // one fp32 add: exact to compare
      EXPECT_EQ(read(bx), sum.data);
      expect_rms_norm(read(bo), out, sum, w, 1e-5f);
    }
  });
}

TEST_P(StreamConformance, ElementwiseOpsMatchTheirDefinitions) {
  on_every_target([&] {
    for (size_t cols : kOddSizes) {
      SCOPED_TRACE("cols " + std::to_string(cols));
      const size_t n = 5;
      HostRows x = rows(n, cols, 1, 2, 3.0f), y = rows(n, cols, 2, 5, 3.0f);
      DeviceBuffer bx = upload(x), by = upload(y);

      stream_->add(view(bx, x), view(by, y), n, cols);
      HostRows sum = x;
      for (size_t r = 0; r < n; ++r)
        for (size_t c = 0; c < cols; ++c) sum.at(r, c) = x.at(r, c) + y.at(r, c);
      EXPECT_EQ(read(bx), sum.data) << "add";

      stream_->copy_from_host(bx, 0, std::as_bytes(std::span(x.data)));
      stream_->silu_mul(view(bx, x), view(by, y), n, cols);
      std::vector<float> got = read(bx);
      for (size_t r = 0; r < n; ++r)
        for (size_t c = 0; c < x.stride; ++c) {
          const float g = got[x.offset + r * x.stride + c];
          if (c >= cols) {
            ASSERT_EQ(g, x.at(r, c)) << "silu_mul wrote padding";
            continue;
          }
          const double want = ref::silu(x.at(r, c)) * y.at(r, c);
          // exp to a few ulps, a division and a product: 16 ulps relative.
          ASSERT_NEAR(g, want, 16 * kUnit * std::abs(want) + 1e-37) << "silu_mul row " << r << " col " << c;
        }

      stream_->copy_from_host(bx, 0, std::as_bytes(std::span(x.data)));
      stream_->gelu(view(bx, x), n, cols);
      got = read(bx);
      for (size_t r = 0; r < n; ++r)
        for (size_t c = 0; c < x.stride; ++c) {
          const float g = got[x.offset + r * x.stride + c];
          if (c >= cols) {
            ASSERT_EQ(g, x.at(r, c)) << "gelu wrote padding";
            continue;
          }
          const double v = x.at(r, c), want = ref::gelu(v);
          // fp32 erf rounds near ±1 by an ulp of 1, which 1 + erf keeps absolute (not relative to
          // the result) where erf ≈ −1: an error of a few u·|x|.
          ASSERT_NEAR(g, want, 4 * kUnit * (std::abs(v) + std::abs(want))) << "gelu row " << r << " col " << c;
        }
    }
  });
}

TEST_P(StreamConformance, RopeRotatesHalvesOfTheChosenHeadsOnly) {
  on_every_target([&] {
    for (size_t hd : {2, 4, 34, 64, 130})
      for (size_t k_heads : {0, 1, 2}) {
        SCOPED_TRACE("head_dim " + std::to_string(hd) + " k heads " + std::to_string(k_heads));
        // q and k are column blocks of one qkv row, as the tower lays them; q has an extra head
        // past q_heads that must stay as it is.
        const size_t n = 5, q_heads = 3, q_cols = (q_heads + 1) * hd, half = hd / 2;
        HostRows qkv = rows(n, q_cols + 2 * hd + hd, 3, 1);
        HostRows cos = rows(n, half, 1, 2), sin = rows(n, half, 2, 1);
        for (size_t r = 0; r < n; ++r)
          for (size_t i = 0; i < half; ++i) {  // a real angle per row and pair
            const double angle = double(r * 7 + 1) / std::pow(10000.0, 2.0 * i / hd);
            cos.at(r, i) = float(std::cos(angle));
            sin.at(r, i) = float(std::sin(angle));
          }
        DeviceBuffer b = upload(qkv), bc = upload(cos), bs = upload(sin);
        const F32Rows q = view(b, qkv);
        stream_->rope(q, q_heads, q.columns_from(q_cols), k_heads, hd, view(bc, cos), view(bs, sin), n);
        const std::vector<float> got = read(b);
        for (size_t r = 0; r < n; ++r)
          for (size_t c = 0; c < qkv.stride; ++c) {
            const bool in_q = c < q_heads * hd, in_k = c >= q_cols && c < q_cols + k_heads * hd;
            const float g = got[qkv.offset + r * qkv.stride + c];
            if (!in_q && !in_k) {
              ASSERT_EQ(g, qkv.at(r, c)) << "row " << r << " col " << c << " is not to be rotated";
              continue;
            }
            const size_t head = in_q ? c / hd * hd : q_cols + (c - q_cols) / hd * hd, i = (c - head) % half;
            const double x1 = qkv.at(r, head + i), x2 = qkv.at(r, head + i + half);
            const double want = c - head < half ? x1 * cos.at(r, i) - x2 * sin.at(r, i)
                                                : x2 * cos.at(r, i) + x1 * sin.at(r, i);
            const double magnitude = std::abs(x1 * cos.at(r, i)) + std::abs(x2 * sin.at(r, i)) +
                                     std::abs(x2 * cos.at(r, i)) + std::abs(x1 * sin.at(r, i));
            ASSERT_NEAR(g, want, sum_bound(2, magnitude)) << "row " << r << " col " << c;
          }
      }
  });
}

// y = x·Wᵀ + Σ s·(x·Aᵀ)·Bᵀ, then ·dora, then + bias, in float64; checked within the fp32 bound
// of its terms (computed from absolute values). LoRA's x·Aᵀ is rounded to fp32 on the device
// before ·Bᵀ; its error, relative to Σ|x||A|, is covered by the same term count.
void expect_linear(const std::vector<float>& got, const HostRows& out, const HostRows& x, const HostLinear& l,
                   size_t n_out) {
  const size_t in = x.cols;
  for (size_t t = 0; t < x.rows; ++t)
    for (size_t o = 0; o < n_out; ++o) {
      double y = 0, m = 0;
      for (size_t i = 0; i < in; ++i) {
        y += double(x.at(t, i)) * l.w[o * in + i];
        m += std::abs(double(x.at(t, i))) * (l.folded.empty() ? std::abs(l.w[o * in + i]) : l.folded[o * in + i]);
      }
      size_t terms = in;
      for (const HostLinear::Lora& a : l.loras) {
        for (size_t k = 0; k < a.rank; ++k) {
          double p = 0, pm = 0;
          for (size_t i = 0; i < in; ++i) {
            p += double(x.at(t, i)) * a.a[k * in + i];
            pm += std::abs(double(x.at(t, i)) * a.a[k * in + i]);
          }
          y += a.scale * p * a.b[o * a.rank + k];
          m += std::abs(a.scale * a.b[o * a.rank + k]) * pm;
        }
        terms += in + a.rank + 2;
      }
      if (!l.dora.empty()) {
        y *= l.dora[o];
        m *= std::abs(l.dora[o]);
      }
      if (!l.bias.empty()) {
        y += l.bias[o];
        m += std::abs(l.bias[o]);
      }
      ASSERT_NEAR(got[out.offset + t * out.stride + o], y, sum_bound(terms + 2, m) + 1e-37)
          << "token " << t << " output " << o;
    }
}

TEST_P(StreamConformance, LinearMatchesTheProductForEveryDtypeAndShape) {
  on_every_target([&] {
    for (DType d : kWeightDtypes)
      for (size_t in : {1, 3, 17, 63, 129, 520})
        for (size_t n_out : {1, 3, 5, 17, 65})
          for (size_t n : {1, 3, 6, 17}) {
            const bool lend = (in + n_out) % 2 == 0, with_bias = n % 2 == 1;
            SCOPED_TRACE(std::string(dtype_name(d)) + " in " + std::to_string(in) + " out " + std::to_string(n_out) +
                         " rows " + std::to_string(n) + (lend ? " lent" : " uploaded") + (with_bias ? " bias" : ""));
            HostLinear h;
            LinearView l{weight(d, n_out, in, h.w, lend), {}, {}, {}};
            if (with_bias) l.bias = vector(h.bias = random(n_out));
            HostRows x = rows(n, in, 2, 3), out = rows(n, n_out, 1, 2);
            DeviceBuffer bx = upload(x), bo = upload(out);
            const Stream::LinearOutput o[] = {{&l, view(bo, out)}};
            stream_->linear(view(bx, x), n, o);
            expect_linear(read(bo), out, x, h, n_out);
          }
  });
}

TEST_P(StreamConformance, LinearBlocksManyRowsAndKeepsOutputPadding) {
  on_every_target([&] {
    // Past 512 rows the CPU backend splits the input into row blocks; 515 leaves a remainder.
    const size_t n = 515, in = 17, n_out = 7;
    HostLinear h;
    const LinearView l{weight(DType::BF16, n_out, in, h.w), vector(h.bias = random(n_out)), {}, {}};
    HostRows x = rows(n, in, 1, 0), out = rows(n, n_out, 3, 2);
    DeviceBuffer bx = upload(x), bo = upload(out);
    const Stream::LinearOutput o[] = {{&l, view(bo, out)}};
    stream_->linear(view(bx, x), n, o);
    const std::vector<float> got = read(bo);
    expect_linear(got, out, x, h, n_out);
    for (size_t t = 0; t < n; ++t)
      for (size_t c = n_out; c < out.stride; ++c) ASSERT_EQ(got[out.offset + t * out.stride + c], out.at(t, c));
  });
}

// q, k and v of one input written into column blocks of one qkv buffer, as the tower does.
TEST_P(StreamConformance, LinearWritesSeveralOutputsIntoColumnBlocks) {
  on_every_target([&] {
    for (DType d : kWeightDtypes)
      for (size_t n : {1, 3, 17}) {
        SCOPED_TRACE(std::string(dtype_name(d)) + " rows " + std::to_string(n));
        const size_t in = 63, sizes[] = {17, 5, 5};
        HostLinear h[3];
        LinearView l[3];
        for (int i = 0; i < 3; ++i) {
          l[i] = {weight(d, sizes[i], in, h[i].w), {}, {}, {}};
          if (i != 1) l[i].bias = vector(h[i].bias = random(sizes[i]));
        }
        HostRows x = rows(n, in, 1, 1), qkv = rows(n, 27, 2, 3);
        DeviceBuffer bx = upload(x), bo = upload(qkv);
        const F32Rows all = view(bo, qkv);
        const Stream::LinearOutput o[] = {{&l[0], all}, {&l[1], all.columns_from(17)}, {&l[2], all.columns_from(22)}};
        stream_->linear(view(bx, x), n, o);
        const std::vector<float> got = read(bo);
        for (size_t i = 0, first = 0; i < 3; first += sizes[i++]) {
          SCOPED_TRACE("output " + std::to_string(i));
          expect_linear(got, {n, sizes[i], qkv.offset + first, qkv.stride, {}}, x, h[i], sizes[i]);
        }
      }
  });
}

TEST_P(StreamConformance, LinearAddsLoraDeltasDoraAndBias) {
  on_every_target([&] {
    for (DType d : kWeightDtypes)
      for (size_t in : {3, 65})
        for (size_t n : {1, 5}) {
          SCOPED_TRACE(std::string(dtype_name(d)) + " in " + std::to_string(in) + " rows " + std::to_string(n));
          // Two outputs of one input, only one with adapters (the adapter path must still fill both).
          const size_t outs[] = {17, 6};
          HostLinear h[2];
          LinearView l[2];
          for (int i = 0; i < 2; ++i) l[i] = {weight(d, outs[i], in, h[i].w), {}, {}, {}};
          l[0].bias = vector(h[0].bias = random(outs[0]));
          std::vector<float> dora = random(outs[0]);
          for (float& f : dora) f = 1 + 0.1f * f;
          l[0].dora_factor = vector(h[0].dora = dora);
          for (auto [rank, scale] : {std::pair<size_t, float>{1, 2.0f}, {8, 0.5f}}) {
            HostLinear::Lora a{{}, {}, rank, scale};
            l[0].loras.push_back({weight(d, rank, in, a.a), weight(d, outs[0], rank, a.b), scale});
            h[0].loras.push_back(std::move(a));
          }
          HostRows x = rows(n, in, 3, 2), out = rows(n, 23, 1, 1);
          DeviceBuffer bx = upload(x), bo = upload(out);
          const F32Rows all = view(bo, out);
          const Stream::LinearOutput o[] = {{&l[0], all}, {&l[1], all.columns_from(17)}};
          stream_->linear(view(bx, x), n, o);
          const std::vector<float> got = read(bo);
          expect_linear(got, out, x, h[0], outs[0]);
          expect_linear(got, {n, outs[1], out.offset + 17, out.stride, {}}, x, h[1], outs[1]);
        }
  });
}

// Quantized weights of each layout the loaders produce: 4 and 8 bits, groups of 32 to 128, with
// and without a permutation; output counts off the 4-row tile, inputs off the 32-column block
// and groups cut short (160 in groups of 64, 100 in groups of 32); token counts on both sides of
// the decode kernel's token tiles (2 and 4) and both of its paths (the blocked GEMM from 32 on).
const kernels::QuantScheme kQuantSchemes[] = {
    kernels::QuantScheme::q8_0(), kernels::QuantScheme::q4_0(),
    kernels::QuantScheme::round_to_nearest(4, 64, false), kernels::QuantScheme::round_to_nearest(4, 128, true),
    kernels::QuantScheme::round_to_nearest(8, 64, false), kernels::QuantScheme::round_to_nearest(8, 128, false)};

std::string quant_name(const kernels::QuantScheme& s) {
  return std::to_string(s.bits) + "-bit group " + std::to_string(s.group_size) + (s.symmetric ? " symmetric" : "");
}

TEST_P(StreamConformance, LinearRunsQuantizedWeightsWithBiasLoraAndDora) {
  on_every_target([&] {
    for (const kernels::QuantScheme& scheme : kQuantSchemes)
      for (bool with_perm : {false, true})
        for (auto [n_out, in] : {std::pair<size_t, size_t>{5, 160}, {17, 100}, {65, 256}})
          for (size_t n : {1, 2, 3, 7, 8, 31, 33, 64}) {
            const bool with_lora = (n + n_out) % 2 == 0;
            SCOPED_TRACE(quant_name(scheme) + (with_perm ? " permuted" : "") + " in " + std::to_string(in) +
                         " out " + std::to_string(n_out) + " rows " + std::to_string(n) + (with_lora ? " lora+dora" : ""));
            // Two outputs of one input (as q/k/v): the second quantized differently, permuted
            // by its own order, so prepared activations must not be shared between them.
            const size_t second = 6;
            HostLinear h[2];
            LinearView l[2];
            l[0] = {quant_weight(scheme, with_perm, n_out, in, h[0]), vector(h[0].bias = random(n_out)), {}, {}};
            l[1] = {quant_weight(kernels::QuantScheme::round_to_nearest(4, 32, false), true, second, in, h[1]),
                    {}, {}, {}};
            if (with_lora) {  // and DoRA's per-output factors
              HostLinear::Lora a{{}, {}, 4, 0.5f};
              l[0].loras.push_back({weight(DType::BF16, 4, in, a.a), weight(DType::F32, n_out, 4, a.b), a.scale});
              h[0].loras.push_back(std::move(a));
              h[0].dora = random(n_out);
              for (float& f : h[0].dora) f = 1 + 0.1f * f;
              l[0].dora_factor = vector(h[0].dora);
            }
            HostRows x = rows(n, in, 2, 3), out = rows(n, n_out + second, 1, 2);
            DeviceBuffer bx = upload(x), bo = upload(out);
            const F32Rows all = view(bo, out);
            const Stream::LinearOutput o[] = {{&l[0], all}, {&l[1], all.columns_from(n_out)}};
            stream_->linear(view(bx, x), n, o);
            const std::vector<float> got = read(bo);
            expect_linear(got, out, x, h[0], n_out);
            expect_linear(got, {n, second, out.offset + n_out, out.stride, {}}, x, h[1], second);
          }
  });
}

TEST_P(StreamConformance, LinearBlocksManyRowsOfAQuantizedProduct) {
  on_every_target([&] {
    // Past 512 rows the CPU backend prepares and runs the product in row blocks.
    const size_t n = 515, in = 96, n_out = 7;
    HostLinear h;
    const LinearView l{quant_weight(kernels::QuantScheme::q4_0(), true, n_out, in, h), {}, {}, {}};
    HostRows x = rows(n, in, 1, 0), out = rows(n, n_out, 3, 2);
    DeviceBuffer bx = upload(x), bo = upload(out);
    const Stream::LinearOutput o[] = {{&l, view(bo, out)}};
    stream_->linear(view(bx, x), n, o);
    expect_linear(read(bo), out, x, h, n_out);
  });
}

TEST_P(StreamConformance, LinearRefusesMisplacedQuantizedViews) {
  HostLinear h;
  LinearView l{quant_weight(kernels::QuantScheme::q8_0(), false, 4, 64, h), {}, {}, {}};
  HostRows x = rows(1, 64, 0, 0), out = rows(1, 4, 0, 0);
  DeviceBuffer bx = upload(x), bo = upload(out);
  const Stream::LinearOutput o[] = {{&l, view(bo, out)}};
  l.weight.rows = 5;  // one row more than the buffer holds
  std::string message = error_of([&] { stream_->linear(view(bx, x), 1, o); });
  EXPECT_NE(message.find("runs past the end of its"), std::string::npos) << message;
  l.weight.rows = 4;
  l.weight.dtype = DType::BF16;
  message = error_of([&] { stream_->linear(view(bx, x), 1, o); });
  EXPECT_NE(message.find("quantized weights are U8"), std::string::npos) << message;
  l.weight = quant_weight(kernels::QuantScheme::q8_0(), false, 4, 64, h, 65);
  message = error_of([&] { stream_->linear(view(bx, x), 1, o); });
  EXPECT_NE(message.find("not 4-byte aligned"), std::string::npos) << message;
}

// The device's cache bytes of a KV view, read back as fp32.
std::vector<float> cache_values(Stream& stream, DType d, const DeviceBuffer& b) {
  std::vector<std::byte> bytes(b.size());
  stream.copy_to_host(bytes, b, 0);
  const size_t n = b.size() / (dtype_info(d).bits / 8);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    if (d == DType::F32) {
      std::memcpy(&v[i], bytes.data() + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * i, 2);
      v[i] = bf16_to_f32(h);
    }
  }
  return v;
}

TEST_P(StreamConformance, KvStoreWritesEachRowAtItsSlotInTheCacheDtype) {
  on_every_target([&] {
    for (DType d : {DType::F32, DType::BF16})
      for (size_t kv_dim : {1, 17, 128}) {
        SCOPED_TRACE(std::string(dtype_name(d)) + " kv_dim " + std::to_string(kv_dim));
        const size_t positions = 9, bytes = positions * kv_dim * dtype_info(d).bits / 8;
        // Two sequences' caches; rows go to scattered positions of either.
        DeviceBuffer k0 = device_->allocate(bytes, "k0"), v0 = device_->allocate(bytes, "v0");
        DeviceBuffer k1 = device_->allocate(bytes, "k1"), v1 = device_->allocate(bytes, "v1");
        for (DeviceBuffer* b : {&k0, &v0, &k1, &v1}) stream_->copy_from_host(*b, 0, std::vector<std::byte>(bytes));
        const KvView c0{d, &k0, &v0, kv_dim}, c1{d, &k1, &v1, kv_dim};
        const std::vector<KvSlot> slots = {{c0, 0}, {c1, 8}, {c0, 5}, {c1, 3}};
        // keys and values as column blocks of one row (a fused k/v projection).
        HostRows kv = rows(slots.size(), 2 * kv_dim, 2, 3, 4.0f);
        DeviceBuffer b = upload(kv);
        stream_->kv_store(slots, view(b, kv), view(b, kv).columns_from(kv_dim));
        const std::vector<float> got[2][2] = {{cache_values(*stream_, d, k0), cache_values(*stream_, d, v0)},
                                              {cache_values(*stream_, d, k1), cache_values(*stream_, d, v1)}};
        std::vector<bool> written[2] = {std::vector<bool>(positions), std::vector<bool>(positions)};
        for (size_t r = 0; r < slots.size(); ++r) {
          const int seq = slots[r].cache.keys == &k0 ? 0 : 1;
          written[seq][slots[r].position] = true;
          for (size_t c = 0; c < kv_dim; ++c)
            for (int kind = 0; kind < 2; ++kind)  // BF16 rounds to nearest even, as torch's .to(bfloat16)
              ASSERT_EQ(got[seq][kind][slots[r].position * kv_dim + c], ref::round_to(d, kv.at(r, kind * kv_dim + c)))
                  << "row " << r << " col " << c << (kind ? " value" : " key");
        }
        for (int seq = 0; seq < 2; ++seq)
          for (size_t p = 0; p < positions; ++p)
            if (!written[seq][p]) {
              for (size_t c = 0; c < kv_dim; ++c) ASSERT_EQ(got[seq][0][p * kv_dim + c], 0.0f) << "position " << p;
            }
      }
  });
}

struct Shape {
  size_t heads, kv_heads, head_dim;
};
constexpr Shape kAttentionShapes[] = {{1, 1, 1}, {4, 2, 17}, {6, 3, 64}, {14, 2, 64}, {2, 2, 129}};

TEST_P(StreamConformance, AttentionIsCausalSoftmaxWithGroupedQueryHeads) {
  on_every_target([&] {
    for (DType d : {DType::F32, DType::BF16})
      for (const Shape& s : kAttentionShapes) {
        SCOPED_TRACE(std::string(dtype_name(d)) + " heads " + std::to_string(s.heads) + "/" +
                     std::to_string(s.kv_heads) + " head_dim " + std::to_string(s.head_dim));
        const size_t kv_dim = s.kv_heads * s.head_dim, positions = 130, group = s.heads / s.kv_heads;
        // The cache as stored: keys and values rounded to its dtype, which is what the reference
        // must attend over (a BF16 cache's rounding is the cache's, not the op's, error).
        std::vector<float> keys = random(positions * kv_dim, 2.0f), values = random(positions * kv_dim);
        for (float* v : {keys.data(), values.data()})
          for (size_t i = 0; i < positions * kv_dim; ++i) v[i] = ref::round_to(d, v[i]);
        DeviceBuffer bk = device_->allocate(positions * kv_dim * dtype_info(d).bits / 8, "keys");
        DeviceBuffer bv = device_->allocate(bk.size(), "values");
        HostRows staged = {positions, 2 * kv_dim, 0, 2 * kv_dim, {}};
        for (size_t p = 0; p < positions; ++p) {
          staged.data.insert(staged.data.end(), keys.begin() + p * kv_dim, keys.begin() + (p + 1) * kv_dim);
          staged.data.insert(staged.data.end(), values.begin() + p * kv_dim, values.begin() + (p + 1) * kv_dim);
        }
        DeviceBuffer bs = upload(staged);
        std::vector<KvSlot> fill;
        const KvView cache{d, &bk, &bv, kv_dim};
        for (size_t p = 0; p < positions; ++p) fill.push_back({cache, p});
        stream_->kv_store(fill, view(bs, staged), view(bs, staged).columns_from(kv_dim));

        // Rows at the edges of the kernels' blocks: the first position, odd lengths, 64 ± 1, 129.
        const std::vector<size_t> at = {0, 1, 2, 16, 62, 63, 64, 128, 129};
        std::vector<KvSlot> slots;
        for (size_t p : at) slots.push_back({cache, p});
        const size_t q_dim = s.heads * s.head_dim;
        HostRows q = rows(at.size(), q_dim, 3, 5), out = rows(at.size(), q_dim, 1, 2);
        DeviceBuffer bq = upload(q), bo = upload(out);
        const double scale = 1.0 / std::sqrt(double(s.head_dim));
        stream_->attention(view(bq, q), slots, {s.heads, s.kv_heads, s.head_dim, float(scale)}, view(bo, out));
        const std::vector<float> got = read(bo);
        std::vector<double> want(s.head_dim), magnitude(s.head_dim);
        for (size_t r = 0; r < at.size(); ++r)
          for (size_t h = 0; h < s.heads; ++h) {
            const size_t kvh = h / group, length = at[r] + 1;
            const float* qh = q.row(r) + h * s.head_dim;
            ref::attend(qh, keys.data() + kvh * s.head_dim, values.data() + kvh * s.head_dim, kv_dim, length,
                        s.head_dim, scale, want.data(), magnitude.data());
            const double error = ref::attention_relative_error(qh, keys.data() + kvh * s.head_dim, kv_dim, length,
                                                               s.head_dim, scale);
            for (size_t i = 0; i < s.head_dim; ++i)
              ASSERT_NEAR(got[out.offset + r * out.stride + h * s.head_dim + i], want[i], error * magnitude[i] + 1e-30)
                  << "row " << r << " (position " << at[r] << ") head " << h << " element " << i;
          }
      }
  });
}

// Paged caches: two sequences' positions scattered over one pool's blocks by random block tables
// (blocks of 1, 7 and 16 positions), stored by kv_store through the tables and attended over in one
// call, against the float64 reference over each sequence's positions in order. The pool's unused
// blocks hold large values, so a row read through a wrong table entry shows.
TEST_P(StreamConformance, PagedKvStoreAndAttentionAddressPositionsThroughTheBlockTable) {
  on_every_target([&] {
    for (DType d : {DType::F32, DType::BF16})
      for (size_t block : {1, 7, 16})
        for (const Shape& s : {Shape{4, 2, 17}, Shape{14, 2, 64}}) {
          SCOPED_TRACE(std::string(dtype_name(d)) + " block " + std::to_string(block) + " heads " +
                       std::to_string(s.heads) + "/" + std::to_string(s.kv_heads) + " head_dim " +
                       std::to_string(s.head_dim));
          const size_t kv_dim = s.kv_heads * s.head_dim, group = s.heads / s.kv_heads, element = dtype_info(d).bits / 8;
          const size_t lengths[2] = {130, 45};
          size_t used = 0;
          for (size_t len : lengths) used += (len + block - 1) / block;
          const size_t pool_blocks = used + 3;  // three blocks no table names
          std::vector<uint32_t> ids(pool_blocks);
          for (size_t i = 0; i < pool_blocks; ++i) ids[i] = static_cast<uint32_t>(i);
          std::shuffle(ids.begin(), ids.end(), rng_);
          std::vector<uint32_t> tables[2];
          for (size_t seq = 0, next = 0; seq < 2; ++seq)
            for (size_t b = 0; b < (lengths[seq] + block - 1) / block; ++b) tables[seq].push_back(ids[next++]);
          DeviceBuffer bk = device_->allocate(pool_blocks * block * kv_dim * element, "paged keys");
          DeviceBuffer bv = device_->allocate(bk.size(), "paged values");
          {
            std::vector<std::byte> stored(bk.size());
            for (size_t i = 0; i < pool_blocks * block * kv_dim; ++i) store_float(d, stored.data(), i, 1e4f);
            stream_->copy_from_host(bk, 0, stored);
            stream_->copy_from_host(bv, 0, stored);
          }
          const KvView caches[2] = {{d, &bk, &bv, kv_dim, tables[0], block}, {d, &bk, &bv, kv_dim, tables[1], block}};
          std::vector<float> keys[2], values[2];
          for (size_t seq = 0; seq < 2; ++seq) {
            keys[seq] = random(lengths[seq] * kv_dim, 2.0f);
            values[seq] = random(lengths[seq] * kv_dim);
            for (std::vector<float>* v : {&keys[seq], &values[seq]})
              for (float& x : *v) x = ref::round_to(d, x);
            HostRows staged = {lengths[seq], 2 * kv_dim, 0, 2 * kv_dim, {}};
            std::vector<KvSlot> fill;
            // Stored in reverse, so a position's row does not follow from the order of the writes.
            for (size_t i = 0; i < lengths[seq]; ++i) {
              const size_t p = lengths[seq] - 1 - i;
              staged.data.insert(staged.data.end(), keys[seq].begin() + p * kv_dim, keys[seq].begin() + (p + 1) * kv_dim);
              staged.data.insert(staged.data.end(), values[seq].begin() + p * kv_dim,
                                 values[seq].begin() + (p + 1) * kv_dim);
              fill.push_back({caches[seq], p});
            }
            DeviceBuffer bs = upload(staged);
            stream_->kv_store(fill, view(bs, staged), view(bs, staged).columns_from(kv_dim));
          }
          // Rows of both sequences in one call, at block edges and the last position.
          const std::vector<std::pair<size_t, size_t>> at = {{0, 0},  {1, 0},     {0, block - 1}, {1, block},
                                                             {0, 64}, {1, 44},    {0, 129},       {0, 2 * block + 1}};
          std::vector<KvSlot> slots;
          for (auto [seq, p] : at) slots.push_back({caches[seq], p});
          const size_t q_dim = s.heads * s.head_dim;
          HostRows q = rows(at.size(), q_dim, 3, 5), out = rows(at.size(), q_dim, 1, 2);
          DeviceBuffer bq = upload(q), bo = upload(out);
          const double scale = 1.0 / std::sqrt(double(s.head_dim));
          stream_->attention(view(bq, q), slots, {s.heads, s.kv_heads, s.head_dim, float(scale)}, view(bo, out));
          const std::vector<float> got = read(bo);
          std::vector<double> want(s.head_dim), magnitude(s.head_dim);
          for (size_t r = 0; r < at.size(); ++r)
            for (size_t h = 0; h < s.heads; ++h) {
              const auto [seq, position] = at[r];
              const size_t kvh = h / group, length = position + 1;
              const float* qh = q.row(r) + h * s.head_dim;
              const float* k = keys[seq].data() + kvh * s.head_dim;
              ref::attend(qh, k, values[seq].data() + kvh * s.head_dim, kv_dim, length, s.head_dim, scale, want.data(),
                          magnitude.data());
              const double error = ref::attention_relative_error(qh, k, kv_dim, length, s.head_dim, scale);
              for (size_t i = 0; i < s.head_dim; ++i)
                ASSERT_NEAR(got[out.offset + r * out.stride + h * s.head_dim + i], want[i], error * magnitude[i] + 1e-30)
                    << "sequence " << seq << " position " << position << " head " << h << " element " << i;
            }
        }
  });
}

// A paged slot whose position lies past its block table, or whose block lies past the pool, is
// refused before anything is written.
TEST_P(StreamConformance, PagedSlotsPastTheTableOrThePoolAreRefused) {
  const size_t kv_dim = 8, block = 4, pool_blocks = 2;
  DeviceBuffer bk = device_->allocate(pool_blocks * block * kv_dim * 4, "keys"), bv = device_->allocate(bk.size(), "values");
  stream_->copy_from_host(bk, 0, std::vector<std::byte>(bk.size()));
  const std::vector<uint32_t> table = {1}, outside = {2};
  HostRows x = rows(1, kv_dim, 0, 0), out = rows(1, kv_dim, 0, 0);
  DeviceBuffer bx = upload(x), bo = upload(out);
  for (const KvSlot& bad : {KvSlot{{DType::F32, &bk, &bv, kv_dim, table, block}, block},
                            KvSlot{{DType::F32, &bk, &bv, kv_dim, outside, block}, 0}}) {
    const KvSlot slots[] = {bad};
    EXPECT_THROW(stream_->kv_store(slots, view(bx, x), view(bx, x)), Error);
    EXPECT_THROW(stream_->attention(view(bx, x), slots, {1, 1, kv_dim, 1}, view(bo, out)), Error);
  }
  const std::vector<float> keys = cache_values(*stream_, DType::F32, bk);
  EXPECT_TRUE(std::all_of(keys.begin(), keys.end(), [](float v) { return v == 0.0f; }));
}

TEST_P(StreamConformance, SegmentAttentionIsBidirectionalWithinEachSegment) {
  on_every_target([&] {
    // The tower has no grouped heads; 16 × 80 is Qwen2.5-VL's.
    for (const Shape& s : {Shape{1, 1, 1}, Shape{3, 3, 17}, Shape{16, 16, 80}, Shape{2, 2, 129}}) {
      SCOPED_TRACE("heads " + std::to_string(s.heads) + " head_dim " + std::to_string(s.head_dim));
      // Segments of 1, 3, 17 (a query tile plus one), 63 and 65 rows.
      const std::vector<size_t> bounds = {0, 1, 4, 21, 84, 149};
      const size_t n = bounds.back(), dim = s.heads * s.head_dim;
      HostRows qkv = rows(n, 3 * dim, 2, 3), out = rows(n, dim, 1, 1);
      DeviceBuffer b = upload(qkv), bo = upload(out);
      const F32Rows all = view(b, qkv);
      const double scale = 1.0 / std::sqrt(double(s.head_dim));
      stream_->segment_attention(all, all.columns_from(dim), all.columns_from(2 * dim), bounds,
                                 {s.heads, s.heads, s.head_dim, float(scale)}, view(bo, out));
      const std::vector<float> got = read(bo);
      std::vector<double> want(s.head_dim), magnitude(s.head_dim);
      for (size_t seg = 0; seg + 1 < bounds.size(); ++seg)
        for (size_t r = bounds[seg]; r < bounds[seg + 1]; ++r)
          for (size_t h = 0; h < s.heads; ++h) {
            const float* qh = qkv.row(r) + h * s.head_dim;
            const float* k = qkv.row(bounds[seg]) + dim + h * s.head_dim;
            const size_t length = bounds[seg + 1] - bounds[seg];
            ref::attend(qh, k, k + dim, qkv.stride, length, s.head_dim, scale, want.data(), magnitude.data());
            const double error = ref::attention_relative_error(qh, k, qkv.stride, length, s.head_dim, scale);
            for (size_t i = 0; i < s.head_dim; ++i)
              ASSERT_NEAR(got[out.offset + r * out.stride + h * s.head_dim + i], want[i], error * magnitude[i] + 1e-30)
                  << "segment " << seg << " row " << r << " head " << h << " element " << i;
          }
    }
  });
}

// A stream's workspace (attention scores, LoRA intermediates) grows to what the largest call
// needs and stays there: repeating the same calls allocates nothing more.
TEST_P(StreamConformance, WorkspaceStaysBoundedAcrossRepeatedCalls) {
  HostLinear h;
  LinearView l{weight(DType::BF16, 33, 65, h.w), {}, {}, {}};
  HostLinear::Lora a{{}, {}, 8, 1.0f};
  l.loras.push_back({weight(DType::BF16, 8, 65, a.a), weight(DType::BF16, 33, 8, a.b), 1.0f});
  HostRows x = rows(9, 65, 0, 0), out = rows(9, 33, 0, 0);
  const size_t kv_dim = 64, positions = 100;
  DeviceBuffer bx = upload(x), bo = upload(out), bk = device_->allocate(positions * kv_dim * 4, "k"),
               bv = device_->allocate(positions * kv_dim * 4, "v");
  const KvView cache{DType::F32, &bk, &bv, kv_dim};
  const std::vector<KvSlot> slots = {{cache, 99}, {cache, 50}};
  HostRows q = rows(2, 4 * kv_dim, 0, 0);
  DeviceBuffer bq = upload(q), battn = upload(q);
  const auto step = [&] {
    const Stream::LinearOutput o[] = {{&l, view(bo, out)}};
    stream_->linear(view(bx, x), x.rows, o);
    stream_->attention(view(bq, q), slots, {4, 1, kv_dim, 0.125f}, view(battn, q));
  };
  step();
  const uint64_t held = device_->allocated();
  device_->reset_peak();
  for (int i = 0; i < 5; ++i) step();
  EXPECT_EQ(device_->allocated(), held);
  EXPECT_EQ(device_->peak_allocated(), held);
}

INSTANTIATE_TEST_SUITE_P(Backends, StreamConformance, ::testing::ValuesIn(backends()),
                         [](const ::testing::TestParamInfo<Backend>& info) { return info.param.name; });

}  // namespace
}  // namespace vlmforge
