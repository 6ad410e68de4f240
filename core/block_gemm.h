// The matrix product of the assignment kernel, behind one function so that the GEMM
// library is a build option (COHORT_GEMM in CMake): Eigen's own GEMM (the default),
// OpenBLAS or BLIS.
#ifndef COHORT_CORE_BLOCK_GEMM_H_
#define COHORT_CORE_BLOCK_GEMM_H_

#include <cstdint>

namespace cohort {

// Name of the GEMM library this build uses: "eigen", "openblas" or "blis".
const char* BlockGemmBackend();

// Computes products = a · bᵀ on the calling thread only, whatever the library:
// a is m×d, b is n×d and products m×n, all row-major; products has row stride
// products_stride >= n. The result of an entry depends only on the shapes and values,
// not on the thread that calls.
// REQUIRES: m, n, d >= 1; the buffers do not overlap.
void MultiplyByTransposed(const float* a, int64_t m, const float* b, int64_t n, int64_t d,
                          float* products, int64_t products_stride);

}  // namespace cohort

#endif  // COHORT_CORE_BLOCK_GEMM_H_
