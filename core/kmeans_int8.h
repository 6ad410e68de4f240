// The int8 first pass of the K-means assignment (AVX-512 VNNI). It computes approximate
// distances from rows and centroids quantized to 8 bits. The exact float distance
// then decides among the centroids that the error bound of this pass cannot rule out
// (see AssignNearest in kmeans_kernels.cc), so the pass never changes an assignment.
//
// The kernel sits in its own translation unit, and its functions carry a target
// attribute instead of file-wide -mavx512* flags. The file includes no standard-library or
// Eigen header, so no inline template is compiled there with AVX-512 instructions and
// then picked by the linker for callers on a CPU without them.
#ifndef COHORT_CORE_KMEANS_INT8_H_
#define COHORT_CORE_KMEANS_INT8_H_

#include <cstdint>

namespace cohort {

// Centroids per packed group: one 512-bit vector of int32 dot products.
inline constexpr int64_t kInt8GroupCentroids = 16;
// Rows per call of Int8TileDistances.
inline constexpr int64_t kInt8TileRows = 4;

// For kInt8TileRows rows and every centroid of num_groups packed groups, computes
//   h[r][c] = c_norms[c] + row_factors[r] · Σ_j q_x[r][j] · q_c[c][j]
// where q_x[r][j] = rows[r · row_stride + j] − 128 and q_c are the packed int8 centroids,
// with the exact integer dot product converted to float. Then sets bit l of
// masks[r · num_groups + g] when h[r][16g + l] <= min_c h[r][c] + row_slack[r].
//
// Layouts: rows contains kInt8TileRows rows of 4 · num_steps bytes (row stride
// row_stride). packed contains num_groups × num_steps blocks of 64 bytes; block (g, p) has
// bytes 4p..4p+3 of centroid 16g + l at bytes 4l..4l+3. offsets[c] = −128 · Σ_j q_c[c][j].
// h has row stride h_stride >= 16 · num_groups.
// REQUIRES: Int8DotVnniSupported() (core/int8_dot.h); num_groups, num_steps >= 1;
// 4 · num_steps · 255 · 127 < 2^31 (no int32 overflow).
void Int8TileDistances(const uint8_t* rows, int64_t row_stride, const float* row_factors,
                       const float* row_slack, const int8_t* packed, const int32_t* offsets,
                       const float* c_norms, int64_t num_groups, int64_t num_steps, float* h,
                       int64_t h_stride, uint16_t* masks);

}  // namespace cohort

#endif  // COHORT_CORE_KMEANS_INT8_H_
