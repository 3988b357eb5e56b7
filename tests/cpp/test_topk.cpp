// topk: the reference against an independent brute-force formulation of the contract, the CUDA
// backend against the reference (indices, order and padding exactly) on an adversarial suite
// and on random shapes, the planner's limits, and every bad-input rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "cppmega/numerics.hpp"
#include "cppmega/ops/topk.hpp"
#include "ops/topk/topk_plan.hpp"
#include "test_util.hpp"

#if CPPMEGA_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace cppmega {
namespace {

using test::Rng;
using test::cuda;
using test::expect_error;
using test::ref;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();



// ---- problems --------------------------------------------------------------------------------

// One topk call: R rows (as [R,T], or [B,S,T] when B > 0) of T columns stored with a row
// stride >= T, optional ranges, k. Values are kept as f32 (bf16 problems hold bf16-exact
// values; NaN payloads are stored as raw bits).
struct Problem {
  std::string name;
  DType dtype = DType::f32;
  std::int64_t R = 0, T = 0, k = 1, stride = 0, B = 0;  // B > 0: rank-3 [B, R/B, T]
  std::vector<std::uint32_t> bits;                       // R * stride f32 bit patterns
  std::optional<std::vector<std::int64_t>> starts, ends;
  bool idx64 = false;

  Problem(std::string n, DType d, std::int64_t r, std::int64_t t, std::int64_t kk, std::int64_t pad = 0)
      : name(std::move(n)), dtype(d), R(r), T(t), k(kk), stride(t + pad), bits(static_cast<std::size_t>(r * (t + pad)), 0) {
    // Padding columns hold a huge value: reading them would select them.
    for (std::int64_t i = 0; i < r; ++i)
      for (std::int64_t j = t; j < stride; ++j) set_bits(i, j, 0x7F000000u);
  }
  void set_bits(std::int64_t r, std::int64_t j, std::uint32_t b) { bits[static_cast<std::size_t>(r * stride + j)] = b; }
  void set(std::int64_t r, std::int64_t j, float v) {
    std::uint32_t b = num::f32_bits(v);
    if (dtype == DType::bf16 && !std::isnan(v)) b = std::uint32_t(num::f32_to_bf16(v)) << 16;
    set_bits(r, j, b);
  }
  float get(std::int64_t r, std::int64_t j) const { return num::bits_f32(bits[static_cast<std::size_t>(r * stride + j)]); }
};

// Host tensors of a problem: scores (a strided view into a [R, stride] buffer), starts, ends.
struct HostInputs {
  Tensor buffer;
  TensorView scores;
  std::optional<Tensor> starts, ends;
};

Tensor index_tensor(const std::vector<std::int64_t>& v, bool i64, std::int64_t B) {
  const std::int64_t n = static_cast<std::int64_t>(v.size());
  Tensor t = B > 0 ? Tensor::empty(i64 ? DType::i64 : DType::i32, {B, n / B}) : Tensor::empty(i64 ? DType::i64 : DType::i32, {n});
  for (std::int64_t i = 0; i < n; ++i) {
    if (i64)
      t.ptr<std::int64_t>()[i] = v[static_cast<std::size_t>(i)];
    else
      t.ptr<std::int32_t>()[i] = static_cast<std::int32_t>(v[static_cast<std::size_t>(i)]);
  }
  return t;
}

HostInputs host_inputs(const Problem& p) {
  HostInputs h;
  h.buffer = Tensor::empty(p.dtype, {p.R * p.stride});
  for (std::int64_t i = 0; i < p.R * p.stride; ++i) {
    const std::uint32_t b = p.bits[static_cast<std::size_t>(i)];
    if (p.dtype == DType::f32)
      h.buffer.ptr<std::uint32_t>()[i] = b;
    else
      h.buffer.ptr<std::uint16_t>()[i] = std::isnan(num::bits_f32(b)) ? static_cast<std::uint16_t>(b >> 16 | 0x40)
                                                                      : static_cast<std::uint16_t>(b >> 16);
  }
  h.scores = h.buffer.view();
  if (p.B > 0) {
    h.scores.rank = 3;
    h.scores.shape = {p.B, p.R / p.B, p.T};
    h.scores.strides = {p.R / p.B * p.stride, p.stride, 1};
  } else {
    h.scores.rank = 2;
    h.scores.shape = {p.R, p.T};
    h.scores.strides = {p.stride, 1};
  }
  if (p.starts) h.starts = index_tensor(*p.starts, p.idx64, p.B);
  if (p.ends) h.ends = index_tensor(*p.ends, p.idx64, p.B);
  return h;
}

std::optional<TensorView> opt_view(const std::optional<Tensor>& t) {
  if (!t) return std::nullopt;
  return t->view();
}

Tensor out_tensor(const Problem& p, Device d) {
  return p.B > 0 ? Tensor::empty(DType::i32, {p.B, p.R / p.B, p.k}, d) : Tensor::empty(DType::i32, {p.R, p.k}, d);
}

std::vector<std::int32_t> to_vector(const Tensor& t) {
  const Tensor h = t.view().device.is_cuda() ? t.to(Device::cpu()) : t;
  return std::vector<std::int32_t>(h.ptr<std::int32_t>(), h.ptr<std::int32_t>() + h.numel());
}

std::vector<std::int32_t> run_reference(const Problem& p) {
  HostInputs h = host_inputs(p);
  Tensor out = out_tensor(p, Device::cpu());
  test::poison(out, 0x5A);
  topk_out(h.scores, p.k, opt_view(h.starts), opt_view(h.ends), out, ref());
  return to_vector(out);
}

// The contract written a second way: entry i of a row is selectable iff in range and neither
// NaN nor -inf; its rank is the number of selectable entries that beat it (greater value, or an
// equal value at a lower column); it lands at out[rank] if rank < k. O(T^2): small rows only.
std::vector<std::int32_t> brute_force(const Problem& p) {
  std::vector<std::int32_t> out(static_cast<std::size_t>(p.R * p.k), -1);
  for (std::int64_t r = 0; r < p.R; ++r) {
    std::int64_t lo = p.starts ? std::clamp<std::int64_t>((*p.starts)[static_cast<std::size_t>(r)], 0, p.T) : 0;
    std::int64_t hi = p.ends ? std::clamp<std::int64_t>((*p.ends)[static_cast<std::size_t>(r)], 0, p.T) : p.T;
    std::vector<float> val(static_cast<std::size_t>(p.T));
    std::vector<char> ok(static_cast<std::size_t>(p.T));
    for (std::int64_t j = 0; j < p.T; ++j) {
      float v = p.get(r, j);
      if (p.dtype == DType::bf16 && !std::isnan(v)) v = num::bf16_to_f32(num::f32_to_bf16(v));
      val[static_cast<std::size_t>(j)] = v;
      ok[static_cast<std::size_t>(j)] = j >= lo && j < hi && !std::isnan(v) && v != -kInf;
    }
    for (std::int64_t i = lo; i < hi; ++i) {
      if (!ok[static_cast<std::size_t>(i)]) continue;
      const float vi = val[static_cast<std::size_t>(i)];
      std::int64_t rank = 0;
      for (std::int64_t j = lo; j < hi; ++j) {
        const float vj = val[static_cast<std::size_t>(j)];
        rank += ok[static_cast<std::size_t>(j)] && (vj > vi || (vj == vi && j < i));
      }
      if (rank < p.k) out[static_cast<std::size_t>(r * p.k + rank)] = static_cast<std::int32_t>(i);
    }
  }
  return out;
}

std::string first_difference(const Problem& p, const std::vector<std::int32_t>& got, const std::vector<std::int32_t>& want) {
  if (got.size() != want.size()) return "sizes differ: " + std::to_string(got.size()) + " vs " + std::to_string(want.size());
  std::size_t bad = 0, first = got.size();
  for (std::size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) {
      if (first == got.size()) first = i;
      ++bad;
    }
  if (!bad) return "";
  const std::int64_t r = static_cast<std::int64_t>(first) / p.k, j = static_cast<std::int64_t>(first) % p.k;
  std::string s = p.name + ": " + std::to_string(bad) + " of " + std::to_string(got.size()) + " slots differ; first at row " +
                  std::to_string(r) + " slot " + std::to_string(j) + ": got " + std::to_string(got[first]) + ", want " +
                  std::to_string(want[first]);
  auto val = [&](std::int32_t c) { return c >= 0 && c < p.T ? " (value " + std::to_string(p.get(r, c)) + ")" : std::string(); };
  return s + val(got[first]) + " vs" + val(want[first]);
}

#if CPPMEGA_WITH_CUDA
std::vector<std::int32_t> run_cuda(const Problem& p, void* stream = nullptr) {
  const Device gpu = Device::cuda(0);
  HostInputs h = host_inputs(p);
  Tensor buf = h.buffer.to(gpu);
  TensorView scores = h.scores;
  scores.data = buf.data();
  scores.device = gpu;
  std::optional<Tensor> starts, ends;
  if (h.starts) starts = h.starts->to(gpu);
  if (h.ends) ends = h.ends->to(gpu);
  Tensor out = out_tensor(p, gpu);
  test::poison(out, 0x5A);
  topk_out(scores, p.k, opt_view(starts), opt_view(ends), out, {"cuda", stream});
  cuda_synchronize(0);
  return to_vector(out);
}
#endif

// ---- the adversarial suite -------------------------------------------------------------------

std::vector<std::int64_t> shuffled(std::int64_t n, Rng& rng) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  std::shuffle(v.begin(), v.end(), rng.gen);
  return v;
}

std::vector<Problem> adversarial(Rng& rng, bool small) {
  std::vector<Problem> ps;
  const std::int64_t big = small ? 3000 : 20000;
  for (DType dt : {DType::f32, DType::bf16}) {
    const std::string d = std::string(dtype_name(dt)) + " ";
    {  // every value equal
      for (std::int64_t k : {1LL, 5LL, 256LL, 2048LL}) {
        Problem p(d + "all equal k=" + std::to_string(k), dt, 3, big, k);
        for (std::int64_t r = 0; r < 3; ++r)
          for (std::int64_t j = 0; j < big; ++j) p.set(r, j, r == 1 ? 0.0f : 1.5f);
        ps.push_back(std::move(p));
      }
    }
    {  // thousands tied exactly at the k-th value, scattered
      Problem p(d + "ties at the threshold", dt, 4, big, 2048, 3);
      for (std::int64_t r = 0; r < 4; ++r) {
        auto perm = shuffled(big, rng);
        for (std::int64_t i = 0; i < big; ++i) {
          const std::int64_t j = perm[static_cast<std::size_t>(i)];
          float v;
          if (i < 100 + 500 * r) v = 2.0f + static_cast<float>(i % 50) * 0.25f;  // above, with ties among them
          else if (i < 100 + 500 * r + big / 3) v = 0.5f;                       // the tied threshold value
          else v = -1.0f - static_cast<float>(i % 7);
          p.set(r, j, v);
        }
      }
      ps.push_back(std::move(p));
    }
    {  // values differing only in the last mantissa bits
      Problem p(d + "last mantissa bits", dt, 2, big, 300);
      for (std::int64_t r = 0; r < 2; ++r) {
        auto perm = shuffled(big, rng);
        for (std::int64_t i = 0; i < big; ++i) {
          std::uint32_t b = num::f32_bits(r == 0 ? 1.0f : -3.0f) + static_cast<std::uint32_t>(i % (dt == DType::f32 ? 5000 : 1));
          if (dt == DType::bf16) b = (num::f32_bits(1.0f) >> 16 << 16) + (static_cast<std::uint32_t>(i % 97) << 16);
          p.set_bits(r, perm[static_cast<std::size_t>(i)], b);
        }
      }
      ps.push_back(std::move(p));
    }
    {  // +0.0 / -0.0 (equal), around negatives and positives
      for (std::int64_t k : {3LL, 40LL, 400LL}) {
        Problem p(d + "signed zeros k=" + std::to_string(k), dt, 2, 1000, k);
        for (std::int64_t r = 0; r < 2; ++r)
          for (std::int64_t j = 0; j < 1000; ++j) {
            const std::int64_t m = (j * 7 + r) % 10;
            p.set(r, j, m < 4 ? 0.0f : m < 8 ? -0.0f : m == 8 ? 1e-3f * static_cast<float>(j % 5) : -2.0f);
          }
        ps.push_back(std::move(p));
      }
    }
    {  // subnormals of both signs, with zeros
      Problem p(d + "subnormals", dt, 2, 2500, 700);
      for (std::int64_t j = 0; j < 2500; ++j) {
        const std::uint32_t mant = static_cast<std::uint32_t>(rng.uniform(1, dt == DType::f32 ? 0x7FFFFF : 0x7F)) << (dt == DType::f32 ? 0 : 16);
        p.set_bits(0, j, (j % 3 == 0 ? 0x80000000u : 0u) | mant);
        p.set_bits(1, j, j % 5 == 0 ? (j % 2 ? 0x80000000u : 0u) : ((j % 3 == 0 ? 0x80000000u : 0u) | (mant & 0xFFFF0000u) | (mant & 7u)));
      }
      ps.push_back(std::move(p));
    }
    {  // -inf and NaN (several payloads, both signs) scattered in; +inf is selectable
      for (std::int64_t k : {10LL, 900LL, 5000LL}) {
        Problem p(d + "inf and nan k=" + std::to_string(k), dt, 3, 6000, k, 5);
        for (std::int64_t r = 0; r < 3; ++r)
          for (std::int64_t j = 0; j < 6000; ++j) {
            const std::int64_t m = rng.uniform(0, 9);
            if (m == 0) p.set(r, j, -kInf);
            else if (m == 1) p.set_bits(r, j, 0x7FC00000u);
            else if (m == 2) p.set_bits(r, j, 0xFFC00000u);
            else if (m == 3) p.set_bits(r, j, dt == DType::f32 ? 0x7F800001u : 0x7F810000u);
            else if (m == 4 && r == 1) p.set(r, j, kInf);
            else p.set(r, j, rng.normal() * (r == 2 ? 1e30f : 1.0f));
          }
        ps.push_back(std::move(p));
      }
    }
    {  // fewer selectable entries than k (and none at all in row 2)
      Problem p(d + "fewer selectable than k", dt, 3, 5000, 300);
      for (std::int64_t r = 0; r < 3; ++r)
        for (std::int64_t j = 0; j < 5000; ++j) {
          const bool keep = r != 2 && j % (r == 0 ? 20 : 50) == 0;
          p.set(r, j, keep ? static_cast<float>((j * 37) % 11) : (j % 2 ? -kInf : kNaN));
        }
      ps.push_back(std::move(p));
    }
    {  // ranges: empty, inverted, negative start, end past T, ending at T, single column
      Problem p(d + "ranges", dt, 8, 3000, 64, 1);
      for (std::int64_t r = 0; r < 8; ++r)
        for (std::int64_t j = 0; j < 3000; ++j) p.set(r, j, rng.normal());
      p.starts = std::vector<std::int64_t>{0, 100, 200, -50, 2990, 10, 1500, 2999};
      p.ends = std::vector<std::int64_t>{0, 100, 150, 30, 3000, 5000, 1501, -1};
      ps.push_back(std::move(p));
      Problem q = ps.back();
      q.name += " (i64)";
      q.idx64 = true;
      ps.push_back(std::move(q));
      Problem s = ps.back();
      s.name = d + "starts only";
      s.ends.reset();
      ps.push_back(std::move(s));
      Problem e = ps.back();
      e.name = d + "ends only";
      e.ends = e.starts;
      e.starts.reset();
      ps.push_back(std::move(e));
    }
    {  // k = 1, k = T, k > T, T = 1, T = 2, R = 0
      for (auto [R, T, k] : std::vector<std::array<std::int64_t, 3>>{
               {5, 777, 1}, {3, 777, 777}, {3, 300, 1000}, {6, 1, 1}, {6, 1, 4}, {4, 2, 1}, {0, 100, 5}, {2, 4096, 4096}, {2, 5000, 4097}}) {
        Problem p(d + "R=" + std::to_string(R) + " T=" + std::to_string(T) + " k=" + std::to_string(k), dt, R, T, k, 2);
        for (std::int64_t r = 0; r < R; ++r)
          for (std::int64_t j = 0; j < T; ++j) p.set(r, j, static_cast<float>(rng.uniform(-20, 20)) * 0.5f);
        ps.push_back(std::move(p));
      }
    }
    {  // ReLU-like rows: mostly exact zeros, k past the positives (the zeros come in column order)
      Problem p(d + "relu zeros", dt, 3, big, 2048);
      for (std::int64_t r = 0; r < 3; ++r)
        for (std::int64_t j = 0; j < big; ++j)
          p.set(r, j, rng.uniform(0, 99) < 5 + 10 * r ? std::fabs(rng.normal()) + 0.01f : (j % 2 ? 0.0f : -0.0f));
      ps.push_back(std::move(p));
    }
    {  // sorted rows: every selected entry in one end of the row (one CTA of a split row holds them all)
      Problem p(d + "sorted rows", dt, 3, big, 2048);
      for (std::int64_t j = 0; j < big; ++j) {
        p.set(0, j, static_cast<float>(j) * 0.001f);
        p.set(1, j, -static_cast<float>(j) * 0.001f);
        p.set(2, j, static_cast<float>(j % 97) + (j < big / 2 ? 0.0f : 0.5f));
      }
      ps.push_back(std::move(p));
    }
    {  // extremes of the float range, negatives only
      Problem p(d + "extremes", dt, 2, 1000, 50);
      for (std::int64_t j = 0; j < 1000; ++j) {
        const std::int64_t m = j % 6;
        p.set(0, j, m == 0 ? -std::numeric_limits<float>::max() : m == 1 ? std::numeric_limits<float>::max()
                                                                  : m == 2 ? -std::numeric_limits<float>::min()
                                                                           : -1.0f - static_cast<float>(j));
        p.set(1, j, -static_cast<float>(j % 17) - 1.0f);
      }
      ps.push_back(std::move(p));
    }
  }
  {  // bf16 heavy ties: a few distinct values
    Problem p("bf16 heavy ties", DType::bf16, 4, big, 2048);
    for (std::int64_t r = 0; r < 4; ++r)
      for (std::int64_t j = 0; j < big; ++j) p.set(r, j, static_cast<float>(rng.uniform(0, 3 + r)) * 0.125f);
    ps.push_back(std::move(p));
  }
  {  // the [B,S,T] form with causal ranges [0, s+1)
    for (DType dt : {DType::f32, DType::bf16}) {
      Problem p(std::string(dtype_name(dt)) + " rank-3 causal", dt, 2 * 300, 300, 40, 4);
      p.B = 2;
      p.ends = std::vector<std::int64_t>(600);
      for (std::int64_t r = 0; r < 600; ++r) {
        (*p.ends)[static_cast<std::size_t>(r)] = r % 300 + 1;
        for (std::int64_t j = 0; j < 300; ++j) p.set(r, j, rng.normal());
      }
      ps.push_back(std::move(p));
    }
  }
  return ps;
}

// ---- random problems -------------------------------------------------------------------------

Problem random_problem(Rng& rng, DType dt, std::int64_t R, std::int64_t T, std::int64_t k, bool ranges, int dist) {
  Problem p(std::string(dtype_name(dt)) + " random R=" + std::to_string(R) + " T=" + std::to_string(T) + " k=" +
                std::to_string(k) + " dist=" + std::to_string(dist) + (ranges ? " ranges" : ""),
            dt, R, T, k, rng.uniform(0, 1) ? rng.uniform(1, 9) : 0);
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t j = 0; j < T; ++j) {
      float v;
      switch (dist) {
        case 0: v = rng.normal(); break;                                                 // distinct
        case 1: v = static_cast<float>(rng.uniform(-8, 8)); break;                       // heavy ties
        case 2: v = rng.uniform(0, 3) == 0 ? std::fabs(rng.normal()) : 0.0f; break;      // ReLU
        default: v = rng.normal() * std::ldexp(1.0f, static_cast<int>(rng.uniform(-60, 60)));  // many binades
      }
      p.set(r, j, v);
    }
  if (ranges) {
    p.starts = std::vector<std::int64_t>(static_cast<std::size_t>(R));
    p.ends = std::vector<std::int64_t>(static_cast<std::size_t>(R));
    for (std::int64_t r = 0; r < R; ++r) {
      (*p.starts)[static_cast<std::size_t>(r)] = rng.uniform(0, 3) == 0 ? 0 : rng.uniform(-5, T);
      (*p.ends)[static_cast<std::size_t>(r)] = rng.uniform(0, 3) == 0 ? T : rng.uniform(0, T + 5);
    }
  }
  return p;
}

// ---- reference -------------------------------------------------------------------------------

TEST(TopkReference, AdversarialSuiteMatchesBruteForce) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (const Problem& p : adversarial(rng, /*small=*/true)) {
    SCOPED_TRACE(p.name);
    const std::string diff = first_difference(p, run_reference(p), brute_force(p));
    EXPECT_EQ(diff, "");
  }
}

TEST(TopkReference, RandomMatchesBruteForce) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (int it = 0; it < 60; ++it) {
    const DType dt = it % 2 ? DType::bf16 : DType::f32;
    const std::int64_t T = rng.uniform(1, 700), k = rng.uniform(1, T + 20);
    Problem p = random_problem(rng, dt, rng.uniform(1, 4), T, k, it % 3 == 0, static_cast<int>(it % 4));
    EXPECT_EQ(first_difference(p, run_reference(p), brute_force(p)), "");
  }
}

TEST(TopkReference, HandWrittenRows) {
  // [[5,4,3,2]] with the empty range [0,-1) gives [[-1,-1]].
  Problem p("hand", DType::f32, 1, 4, 2);
  for (int j = 0; j < 4; ++j) p.set(0, j, static_cast<float>(5 - j));
  p.starts = std::vector<std::int64_t>{0};
  p.ends = std::vector<std::int64_t>{-1};
  EXPECT_EQ(run_reference(p), (std::vector<std::int32_t>{-1, -1}));
  // Ties to the lower column, -0.0 == +0.0, NaN and -inf skipped, +inf first, padding last.
  Problem q("hand2", DType::f32, 1, 8, 8);
  const float v[8] = {0.0f, kNaN, 1.0f, -0.0f, -kInf, 1.0f, kInf, -0.0f};
  for (int j = 0; j < 8; ++j) q.set(0, j, v[j]);
  EXPECT_EQ(run_reference(q), (std::vector<std::int32_t>{6, 2, 5, 0, 3, 7, -1, -1}));
}

TEST(TopkReference, RankThreeFormAndDeterminism) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  Problem p = random_problem(rng, DType::f32, 12, 500, 37, true, 1);
  p.B = 3;
  const auto a = run_reference(p), b = run_reference(p);
  EXPECT_EQ(a, b);
  EXPECT_EQ(first_difference(p, a, brute_force(p)), "");
}

// ---- planner (CPU) ---------------------------------------------------------------------------

TEST(TopkPlan, EveryShapeFitsSharedMemory) {
  using namespace topk_op;
  const std::size_t limit = 227 * 1024 - 2048;
  for (int kb : {4, 2})
    for (std::int64_t R : {1LL, 2LL, 7LL, 64LL, 132LL, 4096LL, 1LL << 20})
      for (std::int64_t T : {1LL, 31LL, 4096LL, 4097LL, 65536LL, 131072LL, 1LL << 20, 1LL << 24, (1LL << 31) - 1})
        for (std::int64_t k : {1LL, 256LL, 2048LL, 4096LL, 4097LL, 1LL << 30}) {
          for (int mc : {16, 8, 1}) {
            const Plan pl = make_plan(R, T, k, kb, 132, limit, mc);
            SCOPED_TRACE("R=" + std::to_string(R) + " T=" + std::to_string(T) + " k=" + std::to_string(k));
            EXPECT_LE(pl.smem_bytes, limit);
            EXPECT_GE(pl.cluster, 1);
            EXPECT_LE(pl.cluster, mc);
            EXPECT_GE(pl.chunk_cap * pl.cluster, T);
            EXPECT_EQ(pl.smem_sort, std::min(k, T) <= kSmemSortMax);
            if (pl.smem_sort) EXPECT_GE(pl.sort_cap, std::min(k, T));
            if (!pl.cluster_kernel) EXPECT_TRUE(pl.cached);
          }
        }
  // The issue's shapes.
  EXPECT_EQ(make_plan(32768, 4096, 256, 4, 132, limit, 16).cluster, 1);
  EXPECT_EQ(make_plan(1, 131072, 2048, 4, 132, limit, 16).cluster, 16);
  EXPECT_TRUE(make_plan(64, 131072, 2048, 4, 132, limit, 16).cached);
}

// ---- errors ----------------------------------------------------------------------------------

TEST(TopkErrors, EveryRuleHasAClearMessage) {
  Tensor s = Tensor::empty(DType::f32, {4, 8});
  for (int i = 0; i < 32; ++i) s.ptr<float>()[i] = static_cast<float>(i);
  Tensor out = Tensor::empty(DType::i32, {4, 3});
  Tensor se = Tensor::empty(DType::i32, {4});
  Tensor se3 = Tensor::empty(DType::i32, {3});
  Tensor sef = Tensor::empty(DType::f32, {4});
  Tensor f16 = Tensor::empty(DType::f16, {4, 8});
  Tensor out64 = Tensor::empty(DType::i64, {4, 3});
  Tensor out_wrong = Tensor::empty(DType::i32, {4, 2});
  expect_error(ErrorKind::InvalidArgument, "topk: k must be >= 1, got 0", [&] { topk(s, 0); });
  expect_error(ErrorKind::InvalidArgument, "topk: k must be >= 1, got -3", [&] { topk_out(s, -3, {}, {}, out); });
  expect_error(ErrorKind::InvalidArgument, "topk: k must be <= 2^31-1", [&] { topk_out(s, 1LL << 31, {}, {}, out); });
  expect_error(ErrorKind::InvalidArgument, "topk: scores must be f32 or bf16, got f16[4,8] cpu", [&] { topk(f16, 3); });
  Tensor s1 = Tensor::empty(DType::f32, {32});
  expect_error(ErrorKind::InvalidArgument, "topk: scores must have rank 2 [R,T] or rank 3 [B,S,T], got f32[32] cpu",
               [&] { topk(s1, 3); });
  expect_error(ErrorKind::InvalidArgument, "topk: starts must have shape [R]=[4] (the rows of scores [4,8]), got i32[3] cpu",
               [&] { topk(s, 3, se3.view(), std::nullopt); });
  expect_error(ErrorKind::InvalidArgument, "topk: ends must be i32 or i64, got f32[4] cpu", [&] { topk(s, 3, std::nullopt, sef.view()); });
  Tensor s3 = Tensor::empty(DType::f32, {2, 2, 8});
  expect_error(ErrorKind::InvalidArgument, "topk: ends must have shape [B,S]=[2,2]", [&] { topk(s3, 3, std::nullopt, se.view()); });
  expect_error(ErrorKind::InvalidArgument, "topk: out must be i32 with shape [R,k]=[4,3], got i64[4,3] cpu",
               [&] { topk_out(s, 3, {}, {}, out64); });
  expect_error(ErrorKind::InvalidArgument, "topk: out must be i32 with shape [R,k]=[4,3], got i32[4,2] cpu",
               [&] { topk_out(s, 3, {}, {}, out_wrong); });
  // A non-contiguous innermost dim.
  TensorView strided = s.view();
  strided.shape[1] = 4;
  strided.strides[1] = 2;
  expect_error(ErrorKind::InvalidArgument, "topk: scores must have a contiguous innermost dimension (stride 1), got f32[4,4] strides (8,2) cpu",
               [&] { topk(strided, 2); });
  // Inputs on two devices.
  TensorView on_gpu = out.view();
  on_gpu.device = Device::cuda(0);
  expect_error(ErrorKind::InvalidArgument, "topk: all tensors of one call must be on one device: out is on cuda:0, scores on cpu",
               [&] { topk_out(s, 3, {}, {}, on_gpu); });
  // Nothing was written by the failed calls.
  test::poison(out, 0x5A);
  try {
    topk_out(s, 3, se3.view(), std::nullopt, out);
  } catch (const Error&) {
  }
  for (auto b : test::bytes_of(out)) EXPECT_EQ(b, 0x5A);
  // A row stride larger than T is fine, and so is a [B,S,T] view with free outer strides.
  TensorView wide = s.view();
  wide.shape[1] = 5;
  EXPECT_NO_THROW(topk(wide, 2));
}

TEST(TopkErrors, ForcedBackendThatCannotRunIsUnsupported) {
  Tensor s = Tensor::empty(DType::f32, {2, 8});
  for (int i = 0; i < 16; ++i) s.ptr<float>()[i] = static_cast<float>(i % 5);
  expect_error(ErrorKind::Unsupported, "topk: backend 'cuda' (argument backend=)", [&] { topk(s, 3, {}, {}, cuda()); });
  expect_error(ErrorKind::InvalidArgument, "topk: unknown backend 'nope'", [&] { topk(s, 3, {}, {}, {"nope", nullptr}); });
  Tensor r = topk(s, 3);  // AUTO runs the reference on the CPU
  EXPECT_EQ(to_vector(r), (std::vector<std::int32_t>{4, 3, 2, 1, 6, 0}));
}

TEST(TopkApi, EmptyInputs) {
  Tensor s0 = Tensor::empty(DType::f32, {0, 16});
  EXPECT_EQ(topk(s0, 4).numel(), 0);
  Tensor t0 = Tensor::empty(DType::bf16, {3, 0});
  EXPECT_EQ(to_vector(topk(t0, 2)), std::vector<std::int32_t>(6, -1));
}

// ---- CUDA vs reference -----------------------------------------------------------------------

#if CPPMEGA_WITH_CUDA

TEST(TopkCuda, AdversarialSuiteMatchesReference) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (const Problem& p : adversarial(rng, /*small=*/false)) {
    SCOPED_TRACE(p.name);
    EXPECT_EQ(first_difference(p, run_cuda(p), run_reference(p)), "");
  }
}

TEST(TopkCuda, RandomShapesMatchReference) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  SCOPED_TRACE(rng.trace());
  const std::int64_t Ts[] = {1, 2, 31, 32, 33, 100, 1000, 4095, 4096, 4097, 8192, 8195, 16385, 40000, 65536, 131072, 200003};
  const std::int64_t ks[] = {1, 2, 7, 64, 256, 512, 2048, 4096, 4097, 6000};
  int n = 0;
  for (std::int64_t T : Ts)
    for (std::int64_t k : ks) {
      if (k > 3 * T && k > 64) continue;
      const std::int64_t R = T >= 65536 ? rng.uniform(1, 3) : T >= 4096 ? rng.uniform(1, 9) : rng.uniform(1, 40);
      Problem p = random_problem(rng, n % 3 == 1 ? DType::bf16 : DType::f32, R, T, k, n % 4 == 0, n % 4);
      ++n;
      SCOPED_TRACE(p.name);
      EXPECT_EQ(first_difference(p, run_cuda(p), run_reference(p)), "");
    }
}

TEST(TopkCuda, IssueShapesAtReducedRows) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (DType dt : {DType::f32, DType::bf16}) {
    // 64 x 131072 k=2048 (at 4 rows) and 1 x 131072 k=2048 (decode)
    for (std::int64_t R : {4LL, 1LL}) {
      Problem p = random_problem(rng, dt, R, 131072, 2048, false, 0);
      EXPECT_EQ(first_difference(p, run_cuda(p), run_reference(p)), "");
    }
    // 32768 x 4096 k=256 with causal ranges [0, s+1) (at 512 rows of random s)
    Problem c = random_problem(rng, dt, 512, 4096, 256, false, 2);
    c.ends = std::vector<std::int64_t>(512);
    for (auto& e : *c.ends) e = rng.uniform(1, 4096);
    EXPECT_EQ(first_difference(c, run_cuda(c), run_reference(c)), "");
    // 4096 x 65536 k=512 (at 12 rows)
    Problem w = random_problem(rng, dt, 12, 65536, 512, false, 3);
    EXPECT_EQ(first_difference(w, run_cuda(w), run_reference(w)), "");
    // 1 x 2^20 (rows that do not fit shared memory: streamed from memory each pass)
    Problem l = random_problem(rng, dt, 2, 1 << 20, 2048, false, 0);
    EXPECT_EQ(first_difference(l, run_cuda(l), run_reference(l)), "");
    // the global-memory sort path: a long row (cluster kernel), many short rows (one-CTA
    // kernel), and a row streamed from memory
    Problem g = random_problem(rng, dt, 3, 300000, 9000, true, 1);
    EXPECT_EQ(first_difference(g, run_cuda(g), run_reference(g)), "");
    Problem gs = random_problem(rng, dt, 140, 6000, 5000, true, 0);
    EXPECT_EQ(first_difference(gs, run_cuda(gs), run_reference(gs)), "");
    Problem gl = random_problem(rng, dt, 1, 1 << 21, 5000, false, 3);
    EXPECT_EQ(first_difference(gl, run_cuda(gl), run_reference(gl)), "");
  }
}

TEST(TopkCuda, UserStreamAndEmptyInputs) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  SCOPED_TRACE(rng.trace());
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  Problem p = random_problem(rng, DType::f32, 64, 20000, 2048, true, 0);
  const auto got = run_cuda(p, s);
  EXPECT_EQ(first_difference(p, got, run_reference(p)), "");
  EXPECT_EQ(run_cuda(p, s), got);  // deterministic
  cudaStreamDestroy(s);
  const Device gpu = Device::cuda(0);
  Tensor s0 = Tensor::empty(DType::f32, {0, 16}, gpu);
  EXPECT_EQ(topk(s0, 4, {}, {}, cuda()).numel(), 0);
  Tensor t0 = Tensor::empty(DType::bf16, {3, 0}, gpu);
  EXPECT_EQ(to_vector(topk(t0, 2, {}, {}, cuda())), std::vector<std::int32_t>(6, -1));
}

// Timing of the issue's shapes (CUDA-event medians): --gtest_also_run_disabled_tests.
TEST(TopkCuda, DISABLED_Timing) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  struct Shape {
    const char* name;
    DType dt;
    std::int64_t R, T, k;
    bool causal;
  };
  const Shape shapes[] = {
      {"64 x 131072 k=2048 f32", DType::f32, 64, 131072, 2048, false},
      {"1 x 131072 k=2048 f32", DType::f32, 1, 131072, 2048, false},
      {"32768 x 4096 k=256 f32 causal", DType::f32, 32768, 4096, 256, true},
      {"32768 x 4096 k=256 f32 full", DType::f32, 32768, 4096, 256, false},
      {"4096 x 65536 k=512 f32", DType::f32, 4096, 65536, 512, false},
      {"64 x 131072 k=2048 bf16", DType::bf16, 64, 131072, 2048, false},
      {"1 x 131072 k=2048 bf16", DType::bf16, 1, 131072, 2048, false},
      {"32768 x 4096 k=256 bf16 causal", DType::bf16, 32768, 4096, 256, true},
      {"8 x 131072 k=2048 f32", DType::f32, 8, 131072, 2048, false},
      {"32 x 131072 k=2048 f32", DType::f32, 32, 131072, 2048, false},
  };
  const Device gpu = Device::cuda(0);
  // CPPMEGA_TOPK_TIMING="0,2": only those shapes; CPPMEGA_TOPK_TIMING_ITERS: timed iterations.
  const char* sel = std::getenv("CPPMEGA_TOPK_TIMING");
  const char* it_env = std::getenv("CPPMEGA_TOPK_TIMING_ITERS");
  const int iters = it_env ? std::atoi(it_env) : 20;
  int index = -1;
  for (const Shape& sh : shapes) {
    ++index;
    if (sel && std::string(",") .append(sel).append(",").find("," + std::to_string(index) + ",") == std::string::npos) continue;
    Tensor h = Tensor::empty(sh.dt, {sh.R, sh.T});
    std::uint64_t x = 0x9E3779B97F4A7C15ull;
    for (std::int64_t i = 0; i < sh.R * sh.T; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      const float v = static_cast<float>(static_cast<std::int64_t>(x >> 40) - (1LL << 23)) * (1.0f / (1 << 23));
      if (sh.dt == DType::f32)
        h.ptr<float>()[i] = v;
      else
        h.ptr<std::uint16_t>()[i] = num::f32_to_bf16(v);
    }
    Tensor d = h.to(gpu);
    std::optional<Tensor> ends;
    if (sh.causal) {
      Tensor e = Tensor::empty(DType::i32, {sh.R});
      for (std::int64_t r = 0; r < sh.R; ++r) e.ptr<std::int32_t>()[r] = static_cast<std::int32_t>(r % sh.T + 1);
      ends = e.to(gpu);
    }
    Tensor out = Tensor::empty(DType::i32, {sh.R, sh.k}, gpu);
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    std::vector<float> ms;
    for (int it = 0; it < iters + 5; ++it) {
      cudaEventRecord(a, nullptr);
      topk_out(d, sh.k, std::nullopt, opt_view(ends), out, cuda());
      cudaEventRecord(b, nullptr);
      cudaEventSynchronize(b);
      float t = 0;
      cudaEventElapsedTime(&t, a, b);
      if (it >= 5) ms.push_back(t);
    }
    // Back to back (the GPU never waits for the host): the kernels' own time per call.
    cudaEventRecord(a, nullptr);
    for (int it = 0; it < iters; ++it) topk_out(d, sh.k, std::nullopt, opt_view(ends), out, cuda());
    cudaEventRecord(b, nullptr);
    cudaEventSynchronize(b);
    float total = 0;
    cudaEventElapsedTime(&total, a, b);
    std::sort(ms.begin(), ms.end());
    const double us = ms[ms.size() / 2] * 1e3;
    double bytes = static_cast<double>(sh.R) * static_cast<double>(sh.T) * static_cast<double>(dtype_size(sh.dt));
    if (sh.causal) bytes *= 0.5;
    std::printf("[timing] %-34s median %9.1f us  min %9.1f us  back-to-back %9.1f us  %7.3f TB/s\n", sh.name, us,
                ms.front() * 1e3, total * 1e3 / iters, bytes / us * 1e-6);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
}

#endif  // CPPMEGA_WITH_CUDA

}  // namespace
}  // namespace cppmega
