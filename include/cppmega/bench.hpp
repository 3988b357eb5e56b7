// The benchmark harness shared by `cppmega bench` (C++ peers) and `python -m cppmega.bench`
// (torch peers): paired, order-alternated timing; ceilings measured in the same run;
// receipts (versioned JSON) written by one writer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cppmega/tensor.hpp"

namespace cppmega::bench {

struct Stats {
  double median_us = 0, min_us = 0, max_us = 0, mean_us = 0;
  int iters = 0;
  std::vector<double> samples_us;  // in run order
};

struct Callable {
  std::string label;  // "cppmega:cuda", "torch:amax", "cublas:gemv", ...
  std::function<void()> fn;
};

// Runs `warmup` rounds, then `iters` rounds; each round runs every callable once, the order
// alternating between forward and reverse so neither side always runs first. On CUDA each call
// is timed with events recorded on `stream`; on the CPU with a steady host clock.
std::vector<Stats> time_paired(const std::vector<Callable>& fns, Device device, void* stream, int warmup, int iters);

// The ceilings every rate is compared against, measured in the run that uses them.
struct Ceilings {
  double copy_tbps = 0;           // device-to-device copy, bytes read + written
  double bf16_matmul_tflops = 0;  // cuBLAS bf16 GEMM 8192^3 (0 on the CPU)
  std::string copy_method, matmul_method;
};
Ceilings measure_ceilings(Device device, void* stream);

struct Parity {
  bool ok = false;
  std::string metric;  // "mismatched_bytes", "rel_l2", ...
  double value = 0;
  double tolerance = 0;
};

// One benchmarked case: an op at a shape, every timed label, and each label's parity.
struct Result {
  std::string op;
  std::string name;    // human-readable case name ("bf16 n=67108864")
  std::string bucket;  // AUTO's shape bucket for this call (see each op's bucket function)
  std::string dtype;
  std::vector<std::int64_t> shape;
  double bytes = 0;  // bytes that must cross memory at least once
  double flops = 0;
  std::map<std::string, Stats> timings;
  std::map<std::string, Parity> parity;
  std::string extra_json = "{}";  // op-specific fields, a JSON object
};

// A receipt: environment, ceilings, results. Schema: docs/design.md, "Bench harness".
class Receipt {
 public:
  Receipt(std::string tool, Device device, int warmup, int iters, std::uint64_t seed);
  void set_ceilings(const Ceilings& c) { ceilings_ = c; }
  void set_versions(const std::string& key, const std::string& value) { versions_[key] = value; }
  void add(Result r) { results_.push_back(std::move(r)); }
  const std::vector<Result>& results() const { return results_; }
  const Ceilings& ceilings() const { return ceilings_; }
  std::string to_json() const;
  // Writes to `path` (a .json file, or a folder where a timestamped name is chosen); returns the path.
  std::string write(const std::string& path) const;
  // A fixed-width table: case, label, median us, rate, % of ceiling, ratio to the primary label.
  std::string table() const;
  // Strict gate: parity failures, and `min_ratio` bounds "peer_label_prefix" -> minimum
  // (peer median / best cppmega median). Returns the failures (empty = pass).
  std::vector<std::string> strict_failures(const std::map<std::string, double>& min_ratio) const;

 private:
  std::string tool_;
  Device device_;
  int warmup_, iters_;
  std::uint64_t seed_;
  Ceilings ceilings_;
  std::map<std::string, std::string> versions_;
  std::vector<Result> results_;
};

// The git commit of the source tree this binary was built from ("unknown" if none).
std::string build_git_commit();

}  // namespace cppmega::bench
