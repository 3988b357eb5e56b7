// Bench cases: one op at one shape, with prepared inputs, a way to run any backend on them
// and a parity check against the reference. `cppmega run`, `cppmega bench` and the tests
// share them, so what the CLI checks is what the receipt records. Internal (not installed).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cppmega/bench.hpp"
#include "cppmega/dispatch.hpp"
#include "cppmega/tensor.hpp"

namespace cppmega::bench {

struct CaseParams {
  Device device = Device::cpu();
  std::int64_t n = 0;            // elements (the op's main size parameter)
  DType dtype = DType::bf16;     // the floating-point side of the call
  std::uint64_t seed = 0;
  void* stream = nullptr;        // cudaStream_t for CUDA cases; nullptr = legacy default stream
};

class Case {
 public:
  virtual ~Case() = default;

  // Identity and cost model; copied into the receipt's Result.
  std::string op, name, bucket, dtype;
  std::vector<std::int64_t> shape;
  double bytes = 0, flops = 0;
  std::string extra_json = "{}";
  Device device = Device::cpu();
  void* stream = nullptr;

  // Runs the op once on the prepared inputs (asynchronous on CUDA; ops log their dispatch).
  virtual void run(const CallOptions& opts) = 0;
  // Runs the reference backend on CPU copies of the inputs, once; later calls do nothing.
  virtual void compute_reference() = 0;
  // Poisons the outputs, runs the op with `opts`, waits for it and compares with the reference.
  virtual Parity check(const CallOptions& opts) = 0;
  // C++ peers timed next to cppmega's backends (labels "<library>:<what>"); none by default.
  virtual std::vector<Callable> peers() { return {}; }
};

// The bench cases of one op.
struct CaseSuite {
  std::string op;
  std::vector<std::int64_t> (*default_sizes)(const Device& device);  // the default bench suite
  std::unique_ptr<Case> (*make)(const CaseParams& params);           // InvalidArgument on bad params
};

// Every op with bench cases, in listing order.
const std::vector<CaseSuite>& case_suites();
const CaseSuite* find_case_suite(const std::string& op);  // nullptr if none

// The backends of `op` (from list_ops) that run on `device`'s kind and are available here,
// in declared order.
std::vector<std::string> runnable_backends(const std::string& op, const Device& device);

// Parity of every backend, then paired timing of the backends (labels "cppmega:<backend>")
// and the case's peers.
Result bench_case(Case& c, const std::vector<std::string>& backends, int warmup, int iters);

// ---- Helpers for case implementations -----------------------------------------------------------

// A CPU tensor [n] of f32/bf16/f16 values: approximately normal (Irwin-Hall of 4 uniforms)
// times a magnitude drawn from {2^-6, 2^-2, 1, 2^3}, so codecs see several binades. Element i
// depends only on (seed, i). Never all zeros.
Tensor random_floats(DType dtype, std::int64_t n, std::uint64_t seed);
// A CPU u8-like tensor [n] of dtype `dtype` (1-byte) with uniformly random bytes, skipping
// `excluded` byte values (e.g. NaN codes).
Tensor random_bytes(DType dtype, std::int64_t n, std::uint64_t seed, const std::vector<std::uint8_t>& excluded);
// Deterministic 64-bit mixing (splitmix64 finaliser) for seeds and counters.
std::uint64_t mix64(std::uint64_t x);

// The views of owned tensors, in order (cases keep inputs/outputs as Tensors, APIs take views).
inline std::vector<TensorView> views(const std::vector<Tensor>& ts) {
  std::vector<TensorView> v;
  for (auto& t : ts) v.push_back(t.view());
  return v;
}

// Fills every byte of a contiguous tensor with 0xFF (NaN in every float format we use),
// enqueued on `stream` for CUDA tensors.
void poison(const TensorView& t, void* stream);
// Waits for `stream` (CUDA) so outputs can be read; nothing on the CPU.
void sync_stream(const Device& device, void* stream);
// Number of differing bytes of two contiguous CPU tensors of equal byte size.
std::int64_t mismatched_bytes(const TensorView& a, const TensorView& b);

// ---- Each op family's suites (src/ops/<family>/<family>_cases.cpp), listed in case_suites() ------
std::vector<CaseSuite> fp8_case_suites();
std::vector<CaseSuite> fp8_blocks_case_suites();
std::vector<CaseSuite> fp8_gemv_case_suites();
std::vector<CaseSuite> topk_case_suites();

}  // namespace cppmega::bench
