// Backend selection: argument, per-op env, global env, AUTO from receipts; the dispatch log.
#include <gtest/gtest.h>

#include <cstdlib>

#include "cppmega/dispatch.hpp"
#include "cppmega/ops/fp8.hpp"
#include "test_util.hpp"

namespace cppmega {
namespace {

struct EnvGuard {
  std::string name;
  explicit EnvGuard(std::string n, const char* v) : name(std::move(n)) { setenv(name.c_str(), v, 1); }
  ~EnvGuard() { unsetenv(name.c_str()); }
};

Tensor some_input() {
  Tensor x = Tensor::empty(DType::f32, {64});
  for (int i = 0; i < 64; ++i) x.ptr<float>()[i] = static_cast<float>(i) - 20.5f;
  return x;
}

// A toy op with two CPU backends, to test selection without GPUs.
struct ToyArgs {
  Device dev;
  bool fast_ok = true;
};
OpTable<ToyArgs> toy_table(std::string* ran) {
  OpTable<ToyArgs> t("toy_op", [](const ToyArgs& a) { return a.dev; }, [](const ToyArgs&) { return std::string("b1"); });
  t.add({"reference", DeviceKind::cpu, "", nullptr, [ran](const ToyArgs&, const CallOptions&) { *ran = "reference"; }});
  t.add({"cuda", DeviceKind::cpu /* a CPU stand-in named like a CUDA backend */, "",
         [](const ToyArgs& a) -> std::optional<std::string> {
           if (a.fast_ok) return std::nullopt;
           return std::string("shape outside the kernel's limits");
         },
         [ran](const ToyArgs&, const CallOptions&) { *ran = "cuda"; }});
  return t;
}

std::string receipt_with(const std::string& op, const std::string& arch, const std::string& bucket, double ref_us,
                         double cuda_us, bool cuda_parity_ok) {
  return R"({"schema":"cppmega.receipt","schema_version":1,"created_utc":"2026-11-25T00:00:00Z","device":{"arch":")" + arch +
         R"("},"results":[{"op":")" + op + R"(","bucket":")" + bucket + R"(","timings":{"cppmega:reference":{"median_us":)" +
         std::to_string(ref_us) + R"(},"cppmega:cuda":{"median_us":)" + std::to_string(cuda_us) +
         R"(},"torch:x":{"median_us":1}},"parity":{"cppmega:reference":{"ok":true},"cppmega:cuda":{"ok":)" +
         (cuda_parity_ok ? "true" : "false") + "}}}]}";
}

TEST(Dispatch, OrderIsArgumentThenPerOpEnvThenGlobalEnvThenAuto) {
  std::string ran;
  auto t = toy_table(&ran);
  set_receipts_for_testing({receipt_with("toy_op", "cpu", "b1", 10.0, 5.0, true)});
  ToyArgs a{Device::cpu()};
  t.dispatch(a, {});
  EXPECT_EQ(ran, "cuda");  // AUTO: the receipt says cuda is faster and parity-clean
  EXPECT_NE(dispatch_log().back().reason.find("auto: fastest parity-clean in receipt"), std::string::npos);
  {
    EnvGuard g("CPPMEGA_BACKEND", "reference");
    t.dispatch(a, {});
    EXPECT_EQ(ran, "reference");
    EXPECT_EQ(dispatch_log().back().reason, "env CPPMEGA_BACKEND");
    EnvGuard g2("CPPMEGA_BACKEND__TOY_OP", "cuda");
    t.dispatch(a, {});
    EXPECT_EQ(ran, "cuda");
    EXPECT_EQ(dispatch_log().back().reason, "env CPPMEGA_BACKEND__TOY_OP");
    t.dispatch(a, {"reference", nullptr});
    EXPECT_EQ(ran, "reference");
    EXPECT_EQ(dispatch_log().back().reason, "argument backend=");
  }
  set_receipts_for_testing({});
}

TEST(Dispatch, AutoIgnoresParityFailuresAndOtherShapes) {
  std::string ran;
  auto t = toy_table(&ran);
  ToyArgs a{Device::cpu()};
  set_receipts_for_testing({receipt_with("toy_op", "cpu", "b1", 10.0, 5.0, false)});
  t.dispatch(a, {});
  EXPECT_EQ(ran, "reference");  // cuda was faster but not parity-clean: ranked out
  set_receipts_for_testing({receipt_with("toy_op", "cpu", "other-bucket", 10.0, 5.0, true)});
  t.dispatch(a, {});
  EXPECT_EQ(ran, "reference");  // no receipt for this bucket: declared order
  EXPECT_EQ(dispatch_log().back().reason, "auto: default order");
  set_receipts_for_testing({"this is not json", receipt_with("toy_op", "sm_90", "b1", 10.0, 5.0, true)});
  t.dispatch(a, {});
  EXPECT_EQ(ran, "reference");  // malformed receipts and other archs rank nothing
  set_receipts_for_testing({});
}

TEST(Dispatch, AutoSkipsOnlyUnsupportedBackendsAndSaysWhy) {
  std::string ran;
  auto t = toy_table(&ran);
  set_receipts_for_testing({receipt_with("toy_op", "cpu", "b1", 10.0, 5.0, true)});
  ToyArgs a{Device::cpu(), /*fast_ok=*/false};
  t.dispatch(a, {});
  EXPECT_EQ(ran, "reference");
  EXPECT_NE(dispatch_log().back().reason.find("skipped cuda: shape outside the kernel's limits"), std::string::npos);
  // Named, it raises Unsupported instead of running another backend.
  try {
    t.dispatch(a, {"cuda", nullptr});
    FAIL() << "expected Unsupported";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported);
    EXPECT_NE(std::string(e.what()).find("toy_op: backend 'cuda' (argument backend=) cannot run this call: shape outside"),
              std::string::npos)
        << e.what();
  }
  set_receipts_for_testing({});
}

TEST(Dispatch, FailuresPropagateInsteadOfFallingBack) {
  OpTable<ToyArgs> t("toy_fail", [](const ToyArgs& a) { return a.dev; }, [](const ToyArgs&) { return std::string("b"); });
  bool reference_ran = false;
  t.add({"cuda", DeviceKind::cpu, "", nullptr,
         [](const ToyArgs&, const CallOptions&) { fail(ErrorKind::CudaError, "toy_fail: boom"); }});
  t.add({"reference", DeviceKind::cpu, "", nullptr, [&](const ToyArgs&, const CallOptions&) { reference_ran = true; }});
  EXPECT_THROW(t.dispatch({Device::cpu()}, {}), Error);
  EXPECT_FALSE(reference_ran);
}

TEST(Dispatch, UnknownEnvValuesAreInvalidArguments) {
  Tensor x = some_input();
  {
    EnvGuard g("CPPMEGA_BACKEND", "fastest-please");
    try {
      fp8_amax(x);
      FAIL() << "expected InvalidArgument";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find("fp8_amax: unknown backend 'fastest-please' from env CPPMEGA_BACKEND"),
                std::string::npos)
          << e.what();
    }
  }
  {
    EnvGuard g("CPPMEGA_BACKEND__FP8_AMAX", "Reference");  // case-insensitive
    fp8_amax(x);
    EXPECT_EQ(dispatch_log().back().backend, "reference");
  }
  {
    EnvGuard g("CPPMEGA_BACKEND", "cuda");
    if (cuda_device_count() == 0) {
      try {
        fp8_amax(x);
        FAIL() << "expected Unsupported";
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::Unsupported) << e.what();
      }
    }
  }
}

TEST(Dispatch, LogIsBoundedAndOrdered) {
  clear_dispatch_log();
  Tensor x = some_input();
  for (int i = 0; i < 300; ++i) fp8_amax(x, {"reference", nullptr});
  auto log = dispatch_log();
  ASSERT_EQ(log.size(), kDispatchLogCapacity);
  for (std::size_t i = 1; i < log.size(); ++i) EXPECT_EQ(log[i].seq, log[i - 1].seq + 1);
  EXPECT_EQ(log.back().op, "fp8_amax");
}

TEST(Dispatch, ListingNamesEveryOpAndBackend) {
  auto ops = list_ops();
  std::vector<std::string> names;
  for (auto& o : ops) names.push_back(o.op);
  for (const char* want : {"fp8_amax", "fp8_quantize", "fp8_dequantize", "fp8_pack"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  for (auto& o : ops) {
    ASSERT_FALSE(o.backends.empty());
    EXPECT_EQ(o.backends.front().name, "reference");
    EXPECT_EQ(built_with_cuda(), o.backends.size() > 1) << o.op;
  }
}

}  // namespace
}  // namespace cppmega
