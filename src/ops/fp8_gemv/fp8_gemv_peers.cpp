#include "ops/fp8_gemv/fp8_gemv_peers.hpp"

#include "cppmega/error.hpp"

#if CPPMEGA_WITH_CUDA
#include <cublasLt.h>

#include "core/cuda_check.hpp"

#define CPPMEGA_LT_CHECK(call)                                                                              \
  do {                                                                                                      \
    cublasStatus_t st_ = (call);                                                                            \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                       \
      ::cppmega::fail(::cppmega::ErrorKind::CudaError, "cuBLASLt error ", cublasLtGetStatusName(st_), " in ", #call); \
  } while (0)

namespace cppmega::gemv_op {

struct CublasLtGemm::Impl {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};
  void* workspace = nullptr;
  std::size_t workspace_bytes = 32u << 20;
  int device = 0;
  ~Impl() {
    if (workspace) cudaFree(workspace);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (handle) cublasLtDestroy(handle);
  }
};

CublasLtGemm::CublasLtGemm(Kind kind, int M, int N, int K, int device) : kind_(kind), impl_(std::make_unique<Impl>()) {
  detail::DeviceGuard guard(device);
  Impl& d = *impl_;
  d.device = device;
  CPPMEGA_LT_CHECK(cublasLtCreate(&d.handle));
  CPPMEGA_LT_CHECK(cublasLtMatmulDescCreate(&d.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Column-major view: D[N,M] = op(A)[N,K] * B[K,M] with A = w (K x N, ld K, transposed) and
  // B = x (K x M, ld K): D is y[M,N] row-major.
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  CPPMEGA_LT_CHECK(cublasLtMatmulDescSetAttribute(d.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  CPPMEGA_LT_CHECK(cublasLtMatmulDescSetAttribute(d.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  const cudaDataType_t in = kind == Kind::bf16 ? CUDA_R_16BF : CUDA_R_8F_E4M3;
  CPPMEGA_LT_CHECK(cublasLtMatrixLayoutCreate(&d.la, in, K, N, K));
  CPPMEGA_LT_CHECK(cublasLtMatrixLayoutCreate(&d.lb, in, K, M, K));
  CPPMEGA_LT_CHECK(cublasLtMatrixLayoutCreate(&d.ld, CUDA_R_16BF, N, M, N));
  if (kind == Kind::fp8) {  // scale pointers must be set before the heuristic; placeholders, replaced per run
    static float* dummy = nullptr;
    if (!dummy) CPPMEGA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dummy), 16));
    CPPMEGA_LT_CHECK(cublasLtMatmulDescSetAttribute(d.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof(dummy)));
    CPPMEGA_LT_CHECK(cublasLtMatmulDescSetAttribute(d.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof(dummy)));
  }
  CPPMEGA_CUDA_CHECK(cudaMalloc(&d.workspace, d.workspace_bytes));
  cublasLtMatmulPreference_t pref = nullptr;
  CPPMEGA_LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &d.workspace_bytes,
                                       sizeof(d.workspace_bytes));
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(d.handle, d.desc, d.la, d.lb, d.ld, d.ld, pref, 1, &res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    unsupported("cuBLASLt has no ", kind == Kind::bf16 ? "bf16" : "fp8", " algorithm for M=", M, " N=", N, " K=", K, " (",
                cublasLtGetStatusName(st), ")");
  d.algo = res.algo;
}

CublasLtGemm::~CublasLtGemm() = default;

void CublasLtGemm::run(const void* x, const void* w, void* y, const float* x_scale, const float* w_scale, void* stream) {
  Impl& d = *impl_;
  if (kind_ == Kind::fp8) {
    CPPMEGA_LT_CHECK(cublasLtMatmulDescSetAttribute(d.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof(w_scale)));
    CPPMEGA_LT_CHECK(cublasLtMatmulDescSetAttribute(d.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof(x_scale)));
  }
  const float alpha = 1.0f, beta = 0.0f;
  CPPMEGA_LT_CHECK(cublasLtMatmul(d.handle, d.desc, &alpha, w, d.la, x, d.lb, &beta, y, d.ld, y, d.ld, &d.algo, d.workspace,
                                  d.workspace_bytes, static_cast<cudaStream_t>(stream)));
}

}  // namespace cppmega::gemv_op

#else

namespace cppmega::gemv_op {
struct CublasLtGemm::Impl {};
CublasLtGemm::CublasLtGemm(Kind kind, int, int, int, int) : kind_(kind) { unsupported("cuBLASLt peers need a CUDA build"); }
CublasLtGemm::~CublasLtGemm() = default;
void CublasLtGemm::run(const void*, const void*, void*, const float*, const float*, void*) {}
}  // namespace cppmega::gemv_op

#endif
