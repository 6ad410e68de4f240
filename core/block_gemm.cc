#include "core/block_gemm.h"

#include "core/matrix.h"

#if defined(COHORT_GEMM_OPENBLAS)
#include <cblas.h>

#include <mutex>
#elif defined(COHORT_GEMM_BLIS)
#include <blis.h>
#endif

namespace cohort {

#if defined(COHORT_GEMM_OPENBLAS)

const char* BlockGemmBackend() { return "openblas"; }

void MultiplyByTransposed(const float* a, int64_t m, const float* b, int64_t n, int64_t d,
                          float* products, int64_t products_stride) {
  // The assignment kernel already runs one block per OpenMP thread; OpenBLAS's own
  // threads would only compete with them and make its blocking depend on a thread count.
  static std::once_flag single_thread;
  std::call_once(single_thread, [] { openblas_set_num_threads(1); });
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(d), 1.0f, a,
              static_cast<blasint>(d), b, static_cast<blasint>(d), 0.0f, products,
              static_cast<blasint>(products_stride));
}

#elif defined(COHORT_GEMM_BLIS)

const char* BlockGemmBackend() { return "blis"; }

void MultiplyByTransposed(const float* a, int64_t m, const float* b, int64_t n, int64_t d,
                          float* products, int64_t products_stride) {
  // One BLIS thread per call, for the same reason as with OpenBLAS above.
  rntm_t runtime = BLIS_RNTM_INITIALIZER;
  bli_rntm_set_num_threads(1, &runtime);
  float one = 1.0f;
  float zero = 0.0f;
  // BLIS takes a row and a column stride per operand, so row-major needs no transpose
  // flags: bᵀ is b read with strides (1, d).
  bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, m, n, d, &one, const_cast<float*>(a), d,
               1, const_cast<float*>(b), 1, d, &zero, products, products_stride, 1, nullptr,
               &runtime);
}

#else

const char* BlockGemmBackend() { return "eigen"; }

void MultiplyByTransposed(const float* a, int64_t m, const float* b, int64_t n, int64_t d,
                          float* products, int64_t products_stride) {
  const Eigen::Map<const MatrixXfR> a_map(a, m, d);
  const Eigen::Map<const MatrixXfR> b_map(b, n, d);
  Eigen::Map<MatrixXfR, 0, Eigen::OuterStride<>> out(products, m, n,
                                                     Eigen::OuterStride<>(products_stride));
  out.noalias() = a_map * b_map.transpose();
}

#endif

}  // namespace cohort
