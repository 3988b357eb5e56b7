// The `cppmega` command: list ops and backends, run one op against the reference, bench suites.
// A thin front end over the public API and the bench cases (src/bench/cases.hpp).
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "bench/cases.hpp"
#include "cppmega/bench.hpp"
#include "cppmega/dispatch.hpp"
#include "cppmega/error.hpp"
#include "cppmega/runtime.hpp"

namespace {

using namespace cppmega;

constexpr const char* kDefaultRunDevice = "auto";

// "auto" (the first GPU if there is one, else the CPU), "cpu", "cuda", "cuda:N".
Device resolve_device(const std::string& s) {
  Device d;
  if (s == "auto") {
    d = cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
  } else if (s == "cpu") {
    d = Device::cpu();
  } else if (s == "cuda") {
    d = Device::cuda(0);
  } else if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.find_first_not_of("0123456789", 5) == std::string::npos) {
    d = Device::cuda(std::stoi(s.substr(5)));
  } else {
    invalid_argument("--device: expected auto, cpu, cuda or cuda:N, got '", s, "'");
  }
  if (d.is_cuda()) {
    const Availability a = detail::cuda_availability(d);
    if (!a.available) unsupported("--device ", s, ": ", a.reason);
  }
  return d;
}

std::string known_case_ops() {
  std::string s;
  for (auto& suite : bench::case_suites()) s += (s.empty() ? "" : ", ") + suite.op;
  return s;
}

const bench::CaseSuite& suite_for(const std::string& op) {
  const bench::CaseSuite* s = bench::find_case_suite(op);
  if (!s) invalid_argument("unknown op '", op, "' (ops with cases: ", known_case_ops(), ")");
  return *s;
}

// ---- cppmega ops --------------------------------------------------------------------------------

int cmd_ops() {
  for (auto& listing : list_ops()) {
    std::printf("%s\n", listing.op.c_str());
    for (auto& b : listing.backends) {
      const Availability a = backend_availability(b);
      const std::string status = a.available ? "available" : "unavailable: " + a.reason;
      std::printf("  %-10s %-5s %s\n", b.name.c_str(), b.device == DeviceKind::cpu ? "cpu" : "cuda", status.c_str());
      std::printf("  %-10s %-5s %s\n", "", "", b.features.c_str());
    }
  }
  return 0;
}

// ---- cppmega run ---------------------------------------------------------------------------------

struct RunArgs {
  std::string op;
  std::int64_t n = 1 << 20;
  std::string dtype = "bf16";
  std::string device = kDefaultRunDevice;
  std::string backend;
  std::uint64_t seed = 0;
  int iters = 5;
};

int cmd_run(const RunArgs& a) {
  const bench::CaseSuite& suite = suite_for(a.op);
  const Device device = resolve_device(a.device);
  auto c = suite.make({device, a.n, parse_dtype(a.dtype, "--dtype"), a.seed, nullptr});
  c->compute_reference();
  const CallOptions opts{a.backend, nullptr};

  clear_dispatch_log();  // so the log below holds exactly this call's decisions
  const bench::Parity parity = c->check(opts);
  const std::vector<DispatchRecord> log = dispatch_log();
  const bench::Stats t =
      bench::time_paired({{"run", [&] { c->run(opts); }}}, device, nullptr, /*warmup=*/1, a.iters).front();

  std::printf("%s %s on %s (bucket %s, seed %llu, backend %s)\n", c->op.c_str(), c->name.c_str(), device.str().c_str(),
              c->bucket.c_str(), static_cast<unsigned long long>(a.seed),
              a.backend.empty() ? "from the selection chain" : a.backend.c_str());
  for (auto& r : log) std::printf("dispatch: #%llu %s -> %s (%s)\n", static_cast<unsigned long long>(r.seq), r.op.c_str(),
                                  r.backend.c_str(), r.reason.c_str());
  std::printf("parity:   %s, %s = %g (tolerance %g) against the reference backend on CPU copies of the inputs\n",
              parity.ok ? "ok" : "FAILED", parity.metric.c_str(), parity.value, parity.tolerance);
  std::printf("time:     median %.2f us over %d runs (min %.2f, max %.2f)\n", t.median_us, t.iters, t.min_us, t.max_us);
  return parity.ok ? 0 : 1;
}

// ---- cppmega bench -------------------------------------------------------------------------------

struct BenchArgs {
  std::vector<std::string> ops;
  std::string device = "auto";
  std::vector<std::int64_t> sizes;
  std::string dtype = "bf16";
  int warmup = 5, iters = 30;
  std::uint64_t seed = 0;
  std::string out;
  bool save = false, strict = false, no_ceilings = false;
  std::vector<std::string> min_ratio;
};

std::map<std::string, double> parse_min_ratios(const std::vector<std::string>& items) {
  std::map<std::string, double> out;
  for (auto& item : items) {
    const auto eq = item.find('=');
    double v = 0;
    std::size_t used = 0;
    bool ok = eq != std::string::npos && eq > 0;
    if (ok) {
      try {
        v = std::stod(item.substr(eq + 1), &used);
      } catch (const std::exception&) {
        ok = false;
      }
      ok = ok && used == item.size() - eq - 1 && v > 0;
    }
    if (!ok) invalid_argument("--min-ratio: expected LABEL=X with X > 0 (e.g. torch=1.0), got '", item, "'");
    out[item.substr(0, eq)] = v;
  }
  return out;
}

std::string default_out(bool save) {
  if (!save) return (std::filesystem::temp_directory_path() / "cppmega-receipts").string() + "/";
  std::error_code ec;
  if (!std::filesystem::is_directory("bench/receipts", ec))
    invalid_argument("--save writes to ./bench/receipts/, which does not exist here: run from the repository root or pass --out");
  return "bench/receipts/";
}

int cmd_bench(const BenchArgs& a) {
  const Device device = resolve_device(a.device);
  const DType dtype = parse_dtype(a.dtype, "--dtype");
  const std::map<std::string, double> min_ratio = parse_min_ratios(a.min_ratio);
  std::vector<const bench::CaseSuite*> suites;
  if (a.ops.empty()) {
    for (auto& s : bench::case_suites()) suites.push_back(&s);
  } else {
    for (auto& op : a.ops) suites.push_back(&suite_for(op));
  }
  const std::string out = a.out.empty() ? default_out(a.save) : a.out;

  bench::Receipt receipt("cppmega bench", device, a.warmup, a.iters, a.seed);
  if (!a.no_ceilings) {
    std::fprintf(stderr, "measuring ceilings on %s ...\n", device.str().c_str());
    receipt.set_ceilings(bench::measure_ceilings(device, nullptr));
  }
  for (const bench::CaseSuite* suite : suites) {
    const std::vector<std::string> backends = bench::runnable_backends(suite->op, device);
    if (backends.empty()) {
      std::fprintf(stderr, "%s: no backend runs on %s here; skipped\n", suite->op.c_str(), device.str().c_str());
      continue;
    }
    for (std::int64_t n : a.sizes.empty() ? suite->default_sizes(device) : a.sizes) {
      auto c = suite->make({device, n, dtype, a.seed, nullptr});
      std::fprintf(stderr, "bench %s %s ...\n", c->op.c_str(), c->name.c_str());
      receipt.add(bench::bench_case(*c, backends, a.warmup, a.iters));
    }
  }
  std::printf("%s", receipt.table().c_str());
  const std::string path = receipt.write(out);
  std::printf("receipt: %s\n", path.c_str());

  const std::vector<std::string> failures = receipt.strict_failures(min_ratio);
  for (auto& f : failures) std::printf("%s: %s\n", a.strict ? "strict failure" : "warning", f.c_str());
  return a.strict && !failures.empty() ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cppmega: kernels with a reference, a dispatcher and receipts"};
  app.require_subcommand(1);

  app.add_subcommand("ops", "List every op and its backends: device, availability here (and why not), features");

  RunArgs run;
  CLI::App* run_cmd = app.add_subcommand(
      "run", "Run one op on random inputs, check it against the reference backend, time it and print the dispatch log. "
             "Exit 1 on a parity failure, 2 on an error");
  run_cmd->add_option("op", run.op, "Op name (see `cppmega ops`)")->required();
  run_cmd->add_option("--n", run.n, "Elements")->capture_default_str();
  run_cmd->add_option("--dtype", run.dtype, "Floating dtype of the call: f32, bf16, f16")->capture_default_str();
  run_cmd->add_option("--device", run.device, "auto (GPU if present), cpu, cuda, cuda:N")->capture_default_str();
  run_cmd->add_option("--backend", run.backend, "Backend name; default: the selection chain (env, then AUTO)");
  run_cmd->add_option("--seed", run.seed, "Input seed")->capture_default_str();
  run_cmd->add_option("--iters", run.iters, "Timed runs (median reported)")->capture_default_str()->check(CLI::PositiveNumber);

  BenchArgs bench_args;
  CLI::App* bench_cmd = app.add_subcommand(
      "bench", "Measure ceilings, bench every backend of the selected ops against the reference, print a table and write "
               "a receipt. Default sizes: 64M elements (and 4096 for fp8_pack) on a GPU, 1M (and 4096) on the CPU");
  bench_cmd->add_option("--ops", bench_args.ops, "Comma-separated ops (default: every op with cases)")->delimiter(',');
  bench_cmd->add_option("--device", bench_args.device, "auto (GPU if present, else CPU), cpu, cuda, cuda:N")->capture_default_str();
  bench_cmd->add_option("--n", bench_args.sizes, "Element counts (replaces each op's default sizes)")->delimiter(',');
  bench_cmd->add_option("--dtype", bench_args.dtype, "Floating dtype of the calls: f32, bf16, f16")->capture_default_str();
  bench_cmd->add_option("--warmup", bench_args.warmup, "Warm-up rounds")->capture_default_str()->check(CLI::NonNegativeNumber);
  bench_cmd->add_option("--iters", bench_args.iters, "Timed rounds")->capture_default_str()->check(CLI::PositiveNumber);
  bench_cmd->add_option("--seed", bench_args.seed, "Input seed")->capture_default_str();
  CLI::Option* out_opt = bench_cmd->add_option(
      "--out", bench_args.out,
      "Receipt file, or folder (ending in '/' or existing) that gets <op-or-family>-<arch>-<UTC>.json. "
      "Default: <system temp>/cppmega-receipts/, or ./bench/receipts/ with --save");
  bench_cmd->add_flag("--save", bench_args.save, "Write the receipt into ./bench/receipts/ (run from the repository root)")
      ->excludes(out_opt);
  bench_cmd->add_flag("--strict", bench_args.strict, "Exit 1 on a parity failure or a missed --min-ratio");
  bench_cmd->add_option("--min-ratio", bench_args.min_ratio,
                        "LABEL=X: peer labels LABEL or LABEL:* must take >= X times the best cppmega median");
  bench_cmd->add_flag("--no-ceilings", bench_args.no_ceilings, "Skip the ceiling measurements (rates get no % of ceiling)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (app.got_subcommand("ops")) return cmd_ops();
    if (app.got_subcommand("run")) return cmd_run(run);
    if (app.got_subcommand("bench")) return cmd_bench(bench_args);
  } catch (const Error& e) {
    std::fprintf(stderr, "error [%s]: %s\n", error_kind_name(e.kind()), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
