// cuBLASLt peers of fp8_gemv for benches and timing tests (internal; CUDA builds only):
//   bf16: y[M,N] = x[M,K] @ w[N,K]^T with bf16 x and w (what torch's `x @ W.T` runs);
//   fp8:  the same with e4m3 x and w and per-tensor f32 device scales, bf16 out (what
//         torch._scaled_mm runs; cuBLASLt's FP8 layout is "TN", K a multiple of 16).
#pragma once

#include <memory>
#include <string>

namespace cppmega::gemv_op {

class CublasLtGemm {
 public:
  enum class Kind { bf16, fp8 };
  // Throws Unsupported when cuBLASLt has no algorithm for the shape.
  CublasLtGemm(Kind kind, int M, int N, int K, int device);
  ~CublasLtGemm();
  CublasLtGemm(const CublasLtGemm&) = delete;
  CublasLtGemm& operator=(const CublasLtGemm&) = delete;
  // Enqueues one product on `stream` (nullptr: legacy default). x_scale/w_scale: fp8 only.
  void run(const void* x, const void* w, void* y, const float* x_scale, const float* w_scale, void* stream);
  std::string label() const { return kind_ == Kind::bf16 ? "cublaslt:bf16_gemm" : "cublaslt:fp8_gemm"; }

 private:
  struct Impl;
  Kind kind_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cppmega::gemv_op
