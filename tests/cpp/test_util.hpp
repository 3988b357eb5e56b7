// Shared helpers for the C++ tests: fresh random inputs (seed printed, CPPMEGA_TEST_SEED
// replays one), poisoned outputs, GPU skipping.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <random>
#include <vector>

#include "cppmega/bench.hpp"
#include "cppmega/dispatch.hpp"
#include "cppmega/error.hpp"
#include "cppmega/runtime.hpp"
#include "cppmega/tensor.hpp"

namespace cppmega::test {

inline std::uint64_t fresh_seed() {
  if (const char* s = std::getenv("CPPMEGA_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return (static_cast<std::uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
}

// A generator whose seed is part of every failure message of the test that owns it.
struct Rng {
  std::uint64_t seed = fresh_seed();
  std::mt19937_64 gen{seed};
  std::string trace() const { return "seed " + std::to_string(seed) + " (replay: CPPMEGA_TEST_SEED=" + std::to_string(seed) + ")"; }
  float normal(float sd = 1.0f) { return std::normal_distribution<float>(0.0f, sd)(gen); }
  std::uint64_t bits() { return gen(); }
  std::int64_t uniform(std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(gen); }
};

#define CPPMEGA_SKIP_WITHOUT_GPU()                                                       \
  do {                                                                                   \
    if (::cppmega::cuda_device_count() == 0)                                             \
      GTEST_SKIP() << "no CUDA device: " << ::cppmega::cuda_unavailable_reason();        \
  } while (0)

// Forced-backend call options.
inline CallOptions ref() { return {"reference", nullptr}; }
inline CallOptions cuda() { return {"cuda", nullptr}; }

// Runs f and checks it raises cppmega::Error of `kind` whose message contains `needle`.
inline void expect_error(ErrorKind kind, const std::string& needle, const std::function<void()>& f) {
  try {
    f();
    ADD_FAILURE() << "expected " << error_kind_name(kind) << " containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

// Median time in us of fn(i) on CUDA device 0 (i counts the calls, for rotating inputs), through
// the bench harness: CUDA events, warm-up, every CUDA call checked. For DISABLED_ timing tests.
inline double median_us(const std::function<void(int)>& fn, int iters, int warmup = 8) {
  int call = 0;
  const auto stats =
      bench::time_paired({{"timed", [&] { fn(call++); }}}, Device::cuda(0), nullptr, warmup, iters);
  return stats.front().median_us;
}

inline void poison(const TensorView& t, std::uint8_t byte = 0xFF) {
  std::vector<std::uint8_t> host(static_cast<std::size_t>(t.numel()) * t.itemsize(), byte);
  if (host.empty()) return;
  TensorView h = TensorView::contiguous(host.data(), t.dtype, t.shape.data(), t.rank, Device::cpu());
  copy_bytes(t, h);
}

inline std::vector<std::uint8_t> bytes_of(const TensorView& t) {
  std::vector<std::uint8_t> host(static_cast<std::size_t>(t.numel()) * t.itemsize());
  if (host.empty()) return host;
  TensorView h = TensorView::contiguous(host.data(), t.dtype, t.shape.data(), t.rank, Device::cpu());
  copy_bytes(h, t);
  return host;
}

inline std::size_t count_mismatches(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
  if (a.size() != b.size()) return a.size() + b.size();
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

}  // namespace cppmega::test
