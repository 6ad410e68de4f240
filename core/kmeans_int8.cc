#include "core/kmeans_int8.h"

#include <immintrin.h>

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which
// -Wmaybe-uninitialized reports where they are inlined (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define COHORT_INT8_TARGET __attribute__((target("avx512f,avx512vnni")))

namespace cohort {
namespace {

// acc += Σ over each 4 bytes of x (unsigned) times c (signed), per int32 lane. Inline
// assembly because GCC 12 copies the accumulator of _mm512_dpbusd_epi32 to another
// register at every call, which takes as many instructions as the products.
COHORT_INT8_TARGET inline __attribute__((always_inline)) void DotBytes(__m512i& acc, __m512i x,
                                                                      __m512i c) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(c));
}

// Computes h of kInt8TileRows rows against kGroups groups that start at `packed`
// (num_steps blocks per group). The accumulators start at the offsets,
// so the unsigned row bytes (q_x + 128) give Σ q_x · q_c without a correction step.
template <int kGroups>
COHORT_INT8_TARGET inline __attribute__((always_inline)) void TileGroups(
    const uint8_t* rows, int64_t row_stride, const float* row_factors, const int8_t* packed,
    int64_t num_steps, const int32_t* offsets, const float* c_norms, float* h,
    int64_t h_stride) {
  __m512i acc[kInt8TileRows][kGroups];
  for (int g = 0; g < kGroups; ++g) {
    const __m512i offset = _mm512_loadu_si512(offsets + 16 * g);
    for (int r = 0; r < kInt8TileRows; ++r) acc[r][g] = offset;
  }
  for (int64_t p = 0; p < num_steps; ++p) {
    __m512i c[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      c[g] = _mm512_loadu_si512(packed + (g * num_steps + p) * 64);
    }
    for (int r = 0; r < kInt8TileRows; ++r) {
      int32_t four_bytes;
      __builtin_memcpy(&four_bytes, rows + r * row_stride + 4 * p, 4);
      const __m512i x = _mm512_set1_epi32(four_bytes);
      for (int g = 0; g < kGroups; ++g) DotBytes(acc[r][g], x, c[g]);
    }
  }
  for (int r = 0; r < kInt8TileRows; ++r) {
    const __m512 factor = _mm512_set1_ps(row_factors[r]);
    for (int g = 0; g < kGroups; ++g) {
      const __m512 value = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][g]), factor,
                                           _mm512_loadu_ps(c_norms + 16 * g));
      _mm512_storeu_ps(h + r * h_stride + 16 * g, value);
    }
  }
}

}  // namespace

COHORT_INT8_TARGET void Int8TileDistances(const uint8_t* rows, int64_t row_stride,
                                          const float* row_factors, const float* row_slack,
                                          const int8_t* packed, const int32_t* offsets,
                                          const float* c_norms, int64_t num_groups,
                                          int64_t num_steps, float* h, int64_t h_stride,
                                          uint16_t* masks) {
  // Four groups (64 centroids) at a time keep 16 accumulators in registers.
  constexpr int kWide = 4;
  int64_t g = 0;
  for (; g + kWide <= num_groups; g += kWide) {
    TileGroups<kWide>(rows, row_stride, row_factors, packed + g * num_steps * 64, num_steps,
                      offsets + 16 * g, c_norms + 16 * g, h + 16 * g, h_stride);
  }
  for (; g < num_groups; ++g) {
    TileGroups<1>(rows, row_stride, row_factors, packed + g * num_steps * 64, num_steps,
                  offsets + 16 * g, c_norms + 16 * g, h + 16 * g, h_stride);
  }

  for (int r = 0; r < kInt8TileRows; ++r) {
    const float* h_row = h + r * h_stride;
    __m512 min = _mm512_loadu_ps(h_row);
    for (int64_t j = 1; j < num_groups; ++j) min = _mm512_min_ps(min, _mm512_loadu_ps(h_row + 16 * j));
    float lanes[16];
    _mm512_storeu_ps(lanes, min);
    float row_min = lanes[0];
    for (int l = 1; l < 16; ++l) row_min = lanes[l] < row_min ? lanes[l] : row_min;
    const __m512 threshold = _mm512_set1_ps(row_min + row_slack[r]);
    for (int64_t j = 0; j < num_groups; ++j) {
      const __m512 value = _mm512_loadu_ps(h_row + 16 * j);
      masks[r * num_groups + j] =
          static_cast<uint16_t>(_mm512_cmp_ps_mask(value, threshold, _CMP_LE_OQ));
    }
  }
}

}  // namespace cohort
