// The bench harness: paired timing, ceilings, receipts (schema, strict gate, files), the bench
// cases, and that a receipt the harness writes is what AUTO reads.
#include <gtest/gtest.h>

#include <algorithm>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <iostream>
#include <regex>
#include <sstream>

#include "bench/cases.hpp"
#include "cppmega/bench.hpp"
#include "cppmega/dispatch.hpp"
#include "cppmega/ops/fp8.hpp"
#include "test_util.hpp"

namespace cppmega::bench {
namespace {

using nlohmann::json;

void busy_wait_us(double us) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double, std::micro>(us);
  while (std::chrono::steady_clock::now() < until) {
  }
}

std::filesystem::path fresh_temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("cppmega-test-" + name + "-" + std::to_string(test::fresh_seed() % 1000000007ull));
  std::filesystem::remove_all(dir);
  return dir;
}

Stats stats_of(double median) {
  Stats s;
  s.median_us = s.min_us = s.max_us = s.mean_us = median;
  s.iters = 1;
  s.samples_us = {median};
  return s;
}

// A result with one cppmega backend and one peer, as the Python bench would produce.
Result sample_result(double ours_us, double peer_us, bool parity_ok) {
  Result r;
  r.op = "fp8_amax";
  r.name = "bf16 n=1048576";
  r.bucket = "bf16:n<=2^20";
  r.dtype = "bf16";
  r.shape = {1048576};
  r.bytes = 2.0 * 1048576;
  r.timings["cppmega:cuda"] = stats_of(ours_us);
  r.timings["torch:amax"] = stats_of(peer_us);
  r.parity["cppmega:cuda"] = {parity_ok, "abs_diff", parity_ok ? 0.0 : 0.5, 0.0};
  r.parity["torch:amax"] = {true, "abs_diff", 0.0, 0.0};
  r.extra_json = R"({"format":"e4m3"})";
  return r;
}

// ---- time_paired ----------------------------------------------------------------------------------

TEST(TimePaired, AlternatesOrderEveryRound) {
  std::string order;
  std::vector<Callable> fns{{"a", [&] { order += 'a'; }}, {"b", [&] { order += 'b'; }}, {"c", [&] { order += 'c'; }}};
  const auto stats = time_paired(fns, Device::cpu(), nullptr, /*warmup=*/1, /*iters=*/3);
  // Rounds alternate across warm-up and timing: forward, reverse, forward, reverse.
  EXPECT_EQ(order, "abc" "cba" "abc" "cba");
  ASSERT_EQ(stats.size(), 3u);
  for (auto& s : stats) {
    EXPECT_EQ(s.iters, 3);
    EXPECT_EQ(s.samples_us.size(), 3u);
  }
}

TEST(TimePaired, StatsAreSaneAndSamplesInRunOrder) {
  int calls = 0;
  // Call i busy-waits at least 300*i us. Preemption on a loaded machine can only make a sample
  // longer, so the checks are lower bounds (which still catch samples stored out of run order)
  // and the statistics are checked against the samples themselves.
  std::vector<Callable> fns{{"slow", [&] { busy_wait_us(300.0 * ++calls); }}, {"fast", [] {}}};
  const auto stats = time_paired(fns, Device::cpu(), nullptr, 0, 5);
  const Stats& s = stats[0];
  ASSERT_EQ(s.samples_us.size(), 5u);
  for (std::size_t i = 0; i < s.samples_us.size(); ++i) EXPECT_GE(s.samples_us[i], 300.0 * (i + 1)) << i;
  std::vector<double> sorted = s.samples_us;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_DOUBLE_EQ(s.min_us, sorted.front());
  EXPECT_DOUBLE_EQ(s.max_us, sorted.back());
  EXPECT_DOUBLE_EQ(s.median_us, sorted[2]);
  EXPECT_GE(s.mean_us, s.min_us);
  EXPECT_LE(s.mean_us, s.max_us);
  EXPECT_EQ(stats[1].samples_us.size(), 5u);
}

TEST(TimePaired, ExceptionsPropagate) {
  std::vector<Callable> fns{{"ok", [] {}}, {"bad", [] { throw std::runtime_error("boom"); }}};
  EXPECT_THROW(time_paired(fns, Device::cpu(), nullptr, 0, 3), std::runtime_error);
}

TEST(TimePaired, RejectsBadArguments) {
  const std::vector<Callable> one{{"x", [] {}}};
  EXPECT_THROW(time_paired({}, Device::cpu(), nullptr, 0, 1), Error);
  EXPECT_THROW(time_paired(one, Device::cpu(), nullptr, 0, 0), Error);
  EXPECT_THROW(time_paired(one, Device::cpu(), nullptr, -1, 1), Error);
  EXPECT_THROW(time_paired({{"empty", nullptr}}, Device::cpu(), nullptr, 0, 1), Error);
}

TEST(TimePaired, CudaWithoutDeviceIsUnsupported) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  try {
    time_paired({{"x", [] {}}}, Device::cuda(0), nullptr, 0, 1);
    FAIL() << "expected Unsupported";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported);
  }
}

TEST(TimePaired, CudaEventsTimeDeviceWork) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Tensor x = random_floats(DType::bf16, 1 << 24, 1).to(Device::cuda(0));
  Tensor out = Tensor::empty(DType::f32, {}, Device::cuda(0));
  std::string order;
  std::vector<Callable> fns{{"amax", [&] { order += 'a'; fp8_amax_out(x, out, {"cuda", nullptr}); }},
                            {"nothing", [&] { order += 'n'; }}};
  const auto stats = time_paired(fns, Device::cuda(0), nullptr, 2, 10);
  EXPECT_EQ(order.substr(0, 4), "anna");
  EXPECT_GT(stats[0].median_us, 1.0);  // 32 MiB read takes well over a microsecond
  EXPECT_GT(stats[0].median_us, stats[1].median_us);
  EXPECT_EQ(stats[0].samples_us.size(), 10u);
}

// ---- ceilings -------------------------------------------------------------------------------------

TEST(Ceilings, CpuHasCopyBandwidthAndNoMatmul) {
  const Ceilings c = measure_ceilings(Device::cpu(), nullptr);
  EXPECT_GT(c.copy_tbps, 0.0);
  EXPECT_LT(c.copy_tbps, 10.0);
  EXPECT_EQ(c.bf16_matmul_tflops, 0.0);
  EXPECT_FALSE(c.copy_method.empty());
}

TEST(Ceilings, CudaMeasuresCopyAndMatmul) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  const auto t0 = std::chrono::steady_clock::now();
  const Ceilings c = measure_ceilings(Device::cuda(0), nullptr);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GT(c.copy_tbps, 0.1) << c.copy_method;
  EXPECT_GT(c.bf16_matmul_tflops, 10.0) << c.matmul_method;
  EXPECT_LT(seconds, 10.0);
}

// ---- receipts -------------------------------------------------------------------------------------

TEST(Receipt, JsonHasTheSchemaKeys) {
  Receipt rec("test", Device::cpu(), 3, 7, 42);
  rec.set_ceilings({2.0, 500.0, "copy", "gemm"});
  rec.set_versions("torch", "2.9.0");
  rec.add(sample_result(10.0, 25.0, true));
  const json j = json::parse(rec.to_json());
  EXPECT_EQ(j["schema"], "cppmega.receipt");
  EXPECT_EQ(j["schema_version"], 1);
  EXPECT_TRUE(std::regex_match(j["created_utc"].get<std::string>(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  EXPECT_EQ(j["tool"], "test");
  EXPECT_EQ(j["git"]["commit"], build_git_commit());
  for (const char* k : {"hostname", "os"}) EXPECT_TRUE(j["host"].contains(k)) << k;
  EXPECT_EQ(j["device"]["kind"], "cpu");
  EXPECT_EQ(j["device"]["arch"], "cpu");
  for (const char* k : {"name", "sm_count", "sm_clock_mhz", "mem_clock_mhz", "l2_bytes", "global_mem_bytes"})
    EXPECT_TRUE(j["device"].contains(k)) << k;
  for (const char* k : {"cppmega", "cuda_runtime", "cuda_driver"}) EXPECT_TRUE(j["versions"].contains(k)) << k;
  EXPECT_EQ(j["versions"]["torch"], "2.9.0");
  EXPECT_EQ(j["config"]["warmup"], 3);
  EXPECT_EQ(j["config"]["iters"], 7);
  EXPECT_EQ(j["config"]["seed"], 42);
  EXPECT_EQ(j["ceilings"]["copy_tbps"], 2.0);
  EXPECT_EQ(j["ceilings"]["bf16_matmul_tflops"], 500.0);
  EXPECT_EQ(j["ceilings"]["copy_method"], "copy");
  EXPECT_EQ(j["ceilings"]["matmul_method"], "gemm");

  ASSERT_EQ(j["results"].size(), 1u);
  const json& r = j["results"][0];
  for (const char* k : {"op", "name", "bucket", "dtype", "shape", "bytes", "flops", "timings", "parity", "rates", "ratios"})
    EXPECT_TRUE(r.contains(k)) << k;
  EXPECT_EQ(r["format"], "e4m3");  // extra_json merged
  const json& t = r["timings"]["cppmega:cuda"];
  for (const char* k : {"median_us", "min_us", "max_us", "mean_us", "iters"}) EXPECT_TRUE(t.contains(k)) << k;
  EXPECT_EQ(t["median_us"], 10.0);
  const json& p = r["parity"]["cppmega:cuda"];
  EXPECT_EQ(p["ok"], true);
  EXPECT_EQ(p["metric"], "abs_diff");
  EXPECT_TRUE(p.contains("value") && p.contains("tolerance"));
  // 2 MiB in 10 us = 0.2097 TB/s = 10.49 % of a 2 TB/s ceiling.
  EXPECT_NEAR(r["rates"]["cppmega:cuda"]["tbps"].get<double>(), 2.0 * 1048576 / 10e-6 / 1e12, 1e-9);
  EXPECT_NEAR(r["rates"]["cppmega:cuda"]["pct_of_ceiling"].get<double>(), 100.0 * 2.0 * 1048576 / 10e-6 / 1e12 / 2.0, 1e-6);
  EXPECT_FALSE(r["rates"]["cppmega:cuda"].contains("tflops"));
  EXPECT_DOUBLE_EQ(r["ratios"]["torch:amax/cppmega:cuda"].get<double>(), 2.5);
  EXPECT_EQ(r["ratios"].size(), 1u);
}

TEST(Receipt, CudaDeviceWithoutGpuStillSerialises) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  const json j = json::parse(Receipt("test", Device::cuda(0), 1, 1, 0).to_json());
  EXPECT_EQ(j["device"]["kind"], "cuda");
  EXPECT_TRUE(j["device"]["sm_count"].is_null());
}

TEST(Receipt, ExtraJsonMustBeAnObjectThatAddsFields) {
  Receipt rec("test", Device::cpu(), 1, 1, 0);
  Result r = sample_result(1, 2, true);
  r.extra_json = R"({"op":"other"})";
  rec.add(r);
  EXPECT_THROW(rec.to_json(), Error);
  Receipt rec2("test", Device::cpu(), 1, 1, 0);
  r.extra_json = "[1,2]";
  rec2.add(r);
  EXPECT_THROW(rec2.to_json(), Error);
}

TEST(Receipt, StrictFailuresCatchParityAndRatios) {
  Receipt clean("test", Device::cpu(), 1, 1, 0);
  clean.add(sample_result(10.0, 25.0, true));
  EXPECT_TRUE(clean.strict_failures({}).empty());
  EXPECT_TRUE(clean.strict_failures({{"torch", 2.5}}).empty());  // 25/10 = 2.5 meets 2.5

  const auto missed = clean.strict_failures({{"torch", 3.0}});
  ASSERT_EQ(missed.size(), 1u);
  EXPECT_NE(missed[0].find("torch:amax"), std::string::npos) << missed[0];

  const auto nothing_matched = clean.strict_failures({{"tor", 1.0}});  // a prefix must end at ':'
  ASSERT_EQ(nothing_matched.size(), 1u);
  EXPECT_NE(nothing_matched[0].find("no peer timing"), std::string::npos) << nothing_matched[0];

  Receipt broken("test", Device::cpu(), 1, 1, 0);
  broken.add(sample_result(10.0, 25.0, false));
  const auto parity = broken.strict_failures({});
  ASSERT_EQ(parity.size(), 1u);
  EXPECT_NE(parity[0].find("cppmega:cuda parity failed"), std::string::npos) << parity[0];

  Receipt unchecked("test", Device::cpu(), 1, 1, 0);
  Result r = sample_result(10.0, 25.0, true);
  r.parity.erase("cppmega:cuda");
  unchecked.add(r);
  EXPECT_EQ(unchecked.strict_failures({}).size(), 1u);
}

TEST(Receipt, WriteChoosesANameInAFolderOrUsesTheFile) {
  const auto dir = fresh_temp_dir("write");
  Receipt rec("test", Device::cpu(), 1, 1, 0);
  rec.add(sample_result(10.0, 25.0, true));
  const std::string first = rec.write(dir.string() + "/");
  EXPECT_TRUE(std::regex_match(std::filesystem::path(first).filename().string(),
                               std::regex(R"(fp8_amax-cpu-\d{8}T\d{6}Z\.json)")))
      << first;
  const std::string second = rec.write(dir.string());  // an existing folder: a new, distinct name
  EXPECT_NE(first, second);
  const std::string file = (dir / "sub" / "r.json").string();
  EXPECT_EQ(rec.write(file), file);
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(json::parse(ss.str())["results"][0]["op"], "fp8_amax");
  std::filesystem::remove_all(dir);
}

TEST(Receipt, TableListsEveryLabel) {
  Receipt rec("test", Device::cpu(), 1, 1, 0);
  rec.set_ceilings({2.0, 0.0, "copy", ""});
  rec.add(sample_result(10.0, 25.0, false));
  const std::string t = rec.table();
  EXPECT_NE(t.find("cppmega:cuda"), std::string::npos) << t;
  EXPECT_NE(t.find("torch:amax"), std::string::npos) << t;
  EXPECT_NE(t.find("2.50"), std::string::npos) << t;  // the peer's time relative to the best cppmega
  EXPECT_NE(t.find("FAIL"), std::string::npos) << t;
}

// ---- bench cases ----------------------------------------------------------------------------------

// Every op should be benchable (docs/design.md, "Adding an op"); the ops with cases so far must
// keep them, ops still without cases are reported, and no suite may name an unlisted op.
TEST(BenchCases, SuitesMatchTheListedOps) {
  for (const char* op : {"fp8_amax", "fp8_quantize", "fp8_dequantize", "fp8_pack"})
    EXPECT_NE(find_case_suite(op), nullptr) << op;
  std::string without;
  for (auto& listing : list_ops())
    if (!find_case_suite(listing.op)) without += " " + listing.op;
  if (!without.empty()) std::cout << "[   INFO   ] ops without bench cases:" << without << "\n";
  for (auto& suite : case_suites()) {
    bool listed = false;
    for (auto& listing : list_ops()) listed = listed || listing.op == suite.op;
    EXPECT_TRUE(listed) << suite.op << " has cases but is not in list_ops()";
  }
}

TEST(BenchCases, RandomInputsAreSeededAndNeverZero) {
  const Tensor a = random_floats(DType::bf16, 4096, 7), b = random_floats(DType::bf16, 4096, 7);
  const Tensor c = random_floats(DType::bf16, 4096, 8);
  EXPECT_EQ(mismatched_bytes(a, b), 0);
  EXPECT_GT(mismatched_bytes(a, c), 4096);
  int zeros = 0;
  for (int i = 0; i < 4096; ++i) zeros += (a.ptr<std::uint16_t>()[i] & 0x7FFF) == 0;
  EXPECT_LT(zeros, 8);
  const Tensor q = random_bytes(DType::e4m3, 100000, 3, {0x7F, 0xFF});
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE(q.ptr<std::uint8_t>()[i] != 0x7F && q.ptr<std::uint8_t>()[i] != 0xFF);
  poison(q, nullptr);
  EXPECT_EQ(q.ptr<std::uint8_t>()[12345], 0xFF);
}

TEST(BenchCases, RejectBadParameters) {
  EXPECT_THROW(find_case_suite("fp8_pack")->make({Device::cpu(), 0, DType::bf16, 0, nullptr}), Error);
  EXPECT_THROW(find_case_suite("fp8_pack")->make({Device::cpu(), 16, DType::e4m3, 0, nullptr}), Error);
}

// What the harness writes, AUTO reads: the case's bucket is the dispatcher's, and a receipt
// written from a bench run routes the op.
TEST(BenchCases, ReceiptFromABenchRunRoutesAuto) {
  for (auto& suite : case_suites()) {
    SCOPED_TRACE(suite.op);
    // Each suite's own CPU sizes: "n" means an element count for the fp8 ops and a preset for others.
    for (std::int64_t n : suite.default_sizes(Device::cpu())) {
      auto c = suite.make({Device::cpu(), n, DType::bf16, 11, nullptr});
      const auto backends = runnable_backends(suite.op, Device::cpu());
      ASSERT_EQ(backends, std::vector<std::string>{"reference"});
      Receipt rec("test", Device::cpu(), 0, 2, 11);
      rec.add(bench_case(*c, backends, 0, 2));
      ASSERT_TRUE(rec.strict_failures({}).empty());
      set_receipts_for_testing({rec.to_json()});
      EXPECT_EQ(receipt_ranking(suite.op, Device::cpu(), c->bucket), std::vector<std::string>{"reference"}) << c->bucket;
      clear_dispatch_log();
      c->run({});  // AUTO
      const auto log = dispatch_log();
      ASSERT_FALSE(log.empty());
      EXPECT_EQ(log.back().op, suite.op);
      EXPECT_NE(log.back().reason.find("receipt"), std::string::npos) << log.back().reason << " bucket " << c->bucket;
    }
  }
  set_receipts_for_testing({});
}

TEST(BenchCases, CudaBackendsMatchTheReference) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  for (auto& suite : case_suites()) {
    if (suite.op.rfind("fp8_", 0) != 0 || suite.op == "fp8_gemv" || suite.op.find("blocks") != std::string::npos)
      continue;  // element-count suites only; the other families test their cases in their own files
    for (DType dtype : {DType::bf16, DType::f32}) {
      for (std::int64_t n : {std::int64_t(1), std::int64_t(4096), std::int64_t(1000003)}) {
        SCOPED_TRACE(suite.op + " " + dtype_name(dtype) + " n=" + std::to_string(n));
        auto c = suite.make({Device::cuda(0), n, dtype, 5, nullptr});
        const auto backends = runnable_backends(suite.op, Device::cuda(0));
        ASSERT_FALSE(backends.empty());
        const Result r = bench_case(*c, backends, 1, 3);
        for (auto& b : backends) {
          const auto& p = r.parity.at("cppmega:" + b);
          EXPECT_TRUE(p.ok) << b << ": " << p.metric << " = " << p.value;
          EXPECT_GT(r.timings.at("cppmega:" + b).median_us, 0.0);
        }
      }
    }
  }
}

}  // namespace
}  // namespace cppmega::bench
