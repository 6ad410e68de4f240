// The AVX-512 VNNI kernel of core/int8_dot.h. This file alone is built with AVX-512 flags
// (core/CMakeLists.txt). It uses intrinsics on raw pointers only: an inline function or
// template from a shared header compiled here could be the copy the linker keeps for the
// whole program and would then crash an AVX2-only CPU.
#include <immintrin.h>

#include <cstdint>

#include "core/int8_dot.h"

namespace cohort {
namespace {

// Rows are scored in tiles of kTileGroups groups × kTileQueries queries: 24 accumulators,
// 3 base registers and one broadcast query register of the 32 zmm registers.
constexpr int kTileGroups = 3;
constexpr int kTileQueries = 8;

inline int32_t LoadInt32(const int8_t* p) {
  int32_t value;
  __builtin_memcpy(&value, p, sizeof(value));
  return value;
}

// The starting value of a query's sums. The base bytes are q + 128, so each sum carries
// 128 · Σ q of the query, which this cancels.
inline __m512i StartSum(const Int8ScanQueries& queries, int64_t query) {
  return _mm512_set1_epi32(-128 * queries.sums[query]);
}

// Appends the passing pairs of a tile to the queries' hits. acc[g · num_queries + i]
// contains the sums of group `group` + g against query `query` + i.
void EmitHits(const Int8ScanBlock& block, const Int8ScanQueries& queries, int64_t group,
              int num_groups, int64_t query, int num_queries, const __m512i* acc,
              int64_t capacity) {
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const float infinity = __builtin_inff();
  for (int i = 0; i < num_queries; ++i) {
    const int64_t query_index = query + i;
    const float scale = queries.scales[query_index];
    const float threshold = queries.thresholds[query_index];
    // The sum times the row's scale is compared with threshold / scale, so the query's
    // scale multiplies only the passing lanes. A zero query (scale 0) scores 0 everywhere.
    const float scaled = scale > 0 ? threshold / scale : (threshold <= 0 ? -infinity : infinity);
    const __m512 query_scale = _mm512_set1_ps(scale);
    const __m512 scaled_threshold = _mm512_set1_ps(scaled);
    int32_t* hit_rows = queries.hit_rows + query_index * capacity;
    float* hit_scores = queries.hit_scores + query_index * capacity;
    int32_t count = queries.hit_counts[query_index];
    for (int g = 0; g < num_groups; ++g) {
      const int64_t row0 = (group + g) * kInt8GroupRows;
      // The zero-masked conversion: g++ 12 warns that the plain one reads an undefined value.
      const __m512 row_score = _mm512_mul_ps(
          _mm512_maskz_cvtepi32_ps(0xFFFF, acc[g * num_queries + i]),
          _mm512_loadu_ps(block.row_scales + row0));
      __mmask16 pass = _mm512_cmp_ps_mask(row_score, scaled_threshold, _CMP_GE_OQ);
      const int64_t valid = block.valid_rows - row0;
      if (valid < kInt8GroupRows) pass &= static_cast<__mmask16>((1u << valid) - 1);
      if (pass == 0) continue;
      // Groups are visited in ascending order, so count <= row0 and the 16-lane stores
      // stay within the query's capacity.
      const __m512i rows = _mm512_add_epi32(lanes, _mm512_set1_epi32(static_cast<int32_t>(row0)));
      _mm512_storeu_si512(hit_rows + count, _mm512_maskz_compress_epi32(pass, rows));
      const __m512 score = _mm512_mul_ps(row_score, query_scale);
      _mm512_storeu_ps(hit_scores + count, _mm512_maskz_compress_ps(pass, score));
      count += __builtin_popcount(pass);
    }
    queries.hit_counts[query_index] = count;
  }
}

// The main tile: kTileGroups = 3 groups × kTileQueries = 8 queries in 24 named
// accumulators (g++ keeps an array of them on the stack).
void ScanFullTile(const Int8ScanBlock& block, const Int8ScanQueries& queries, int64_t group,
                  int64_t query, int64_t capacity) {
  const int64_t d = block.padded_d;
  const int64_t group_bytes = kInt8GroupRows * d;
  const uint8_t* base = block.groups + group * group_bytes;
  const int8_t* q = queries.values + query * d;
#define COHORT_INT8_START(i) \
  __m512i a0_##i = StartSum(queries, query + (i)), a1_##i = a0_##i, a2_##i = a0_##i;
  COHORT_INT8_START(0) COHORT_INT8_START(1) COHORT_INT8_START(2) COHORT_INT8_START(3)
  COHORT_INT8_START(4) COHORT_INT8_START(5) COHORT_INT8_START(6) COHORT_INT8_START(7)
#undef COHORT_INT8_START
  for (int64_t t = 0; t < d / 4; ++t) {
    const __m512i x0 = _mm512_loadu_si512(base + t * 64);
    const __m512i x1 = _mm512_loadu_si512(base + group_bytes + t * 64);
    const __m512i x2 = _mm512_loadu_si512(base + 2 * group_bytes + t * 64);
#define COHORT_INT8_STEP(i)                                            \
  {                                                                    \
    const __m512i y = _mm512_set1_epi32(LoadInt32(q + (i) * d + 4 * t)); \
    a0_##i = _mm512_dpbusd_epi32(a0_##i, x0, y);                       \
    a1_##i = _mm512_dpbusd_epi32(a1_##i, x1, y);                       \
    a2_##i = _mm512_dpbusd_epi32(a2_##i, x2, y);                       \
  }
    COHORT_INT8_STEP(0) COHORT_INT8_STEP(1) COHORT_INT8_STEP(2) COHORT_INT8_STEP(3)
    COHORT_INT8_STEP(4) COHORT_INT8_STEP(5) COHORT_INT8_STEP(6) COHORT_INT8_STEP(7)
#undef COHORT_INT8_STEP
  }
  const __m512i acc[kTileGroups * kTileQueries] = {
      a0_0, a0_1, a0_2, a0_3, a0_4, a0_5, a0_6, a0_7, a1_0, a1_1, a1_2, a1_3,
      a1_4, a1_5, a1_6, a1_7, a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7};
  EmitHits(block, queries, group, kTileGroups, query, kTileQueries, acc, capacity);
}

// A smaller tile at the edges: one group × one query.
void ScanOne(const Int8ScanBlock& block, const Int8ScanQueries& queries, int64_t group,
             int64_t query, int64_t capacity) {
  const int64_t d = block.padded_d;
  const uint8_t* base = block.groups + group * kInt8GroupRows * d;
  const int8_t* q = queries.values + query * d;
  __m512i acc = StartSum(queries, query);
  for (int64_t t = 0; t < d / 4; ++t) {
    acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(base + t * 64),
                              _mm512_set1_epi32(LoadInt32(q + 4 * t)));
  }
  EmitHits(block, queries, group, 1, query, 1, &acc, capacity);
}

}  // namespace

void Int8ScanVnni(const Int8ScanBlock& block, const Int8ScanQueries& queries) {
  const int64_t capacity = block.num_groups * kInt8GroupRows;
  for (int64_t i = 0; i < queries.num_queries; ++i) queries.hit_counts[i] = 0;
  // Groups outer, queries inner: a tile's base rows stay in the L1 cache while every
  // query of the block reads them. Each query gets its groups in ascending order.
  int64_t group = 0;
  for (; group + kTileGroups <= block.num_groups; group += kTileGroups) {
    int64_t query = 0;
    for (; query + kTileQueries <= queries.num_queries; query += kTileQueries) {
      ScanFullTile(block, queries, group, query, capacity);
    }
    for (; query < queries.num_queries; ++query) {
      for (int g = 0; g < kTileGroups; ++g) ScanOne(block, queries, group + g, query, capacity);
    }
  }
  for (; group < block.num_groups; ++group) {
    for (int64_t query = 0; query < queries.num_queries; ++query) {
      ScanOne(block, queries, group, query, capacity);
    }
  }
}

}  // namespace cohort
