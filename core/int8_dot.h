// Int8 dot products for the exact dense top-k. Rows are quantized to int8 with one scale
// per row. An AVX-512 VNNI kernel scores blocks of quantized base rows against quantized
// queries and keeps the pairs whose score reaches a per-query threshold.
//
// The kernel lives in its own translation unit built with AVX-512 flags, so the rest of
// the program runs on AVX2-only CPUs. Call it only when Int8DotVnniSupported() is true.
// This header declares plain functions on raw pointers only, so nothing inline is
// compiled with two sets of flags.
#ifndef COHORT_CORE_INT8_DOT_H_
#define COHORT_CORE_INT8_DOT_H_

#include <cstdint>

namespace cohort {

// Base rows per group of the packed layout: one 512-bit register contains 4 dimensions
// of 16 rows.
inline constexpr int64_t kInt8GroupRows = 16;

// Largest dimension the int32 sums hold without overflow (d · 255 · 127 < 2^31), with a
// wide margin.
inline constexpr int64_t kInt8MaxDim = 16384;

// Quantization of one row x (d floats): x̂ = scale · q with q in [−127, 127] and
// scale = max|x_i| / 127 (0 for a zero row). Each norm is rounded up, so it bounds the
// true value from above.
struct Int8RowInfo {
  float scale = 0;
  float norm = 0;            // ‖x‖
  float quantized_norm = 0;  // ‖x̂‖
  float error_norm = 0;      // ‖x − x̂‖
  int32_t sum = 0;           // Σ q_i
};

// Writes q (d values, then zeros up to padded_d) and returns the row's quantization.
// REQUIRES: padded_d >= d >= 0; x finite.
Int8RowInfo QuantizeRowInt8(const float* x, int64_t d, int64_t padded_d, int8_t* q);

// Copies 16 quantized rows (q: 16 × padded_d, row-major) into the packed group layout
// of the kernel: for each run of 4 dimensions, 16 rows × 4 bytes, each byte q + 128.
// REQUIRES: padded_d is a multiple of 4; group has 16 · padded_d bytes.
void PackInt8Group(const int8_t* q, int64_t padded_d, uint8_t* group);

// True when this CPU (and OS) runs AVX-512 F/BW and VNNI instructions.
bool Int8DotVnniSupported();

// One block of base rows scanned by Int8ScanVnni.
struct Int8ScanBlock {
  const uint8_t* groups = nullptr;  // num_groups packed groups (PackInt8Group)
  const float* row_scales = nullptr;  // [num_groups · 16] scale of each row
  int64_t num_groups = 0;
  int64_t valid_rows = 0;  // rows of the block that exist; the rest of the last group is padding
  int64_t padded_d = 0;    // multiple of 4
};

// Queries scanned by Int8ScanVnni and where the passing pairs go.
struct Int8ScanQueries {
  const int8_t* values = nullptr;  // num_queries × padded_d, row-major
  const int32_t* sums = nullptr;   // [num_queries] Σ q of each query
  const float* scales = nullptr;   // [num_queries]
  const float* thresholds = nullptr;  // [num_queries] score a pair must reach to pass
  int64_t num_queries = 0;
  // Output, capacity = num_groups · 16 entries per query: the passing rows (index within
  // the block, ascending) and their scores, and how many passed.
  int32_t* hit_rows = nullptr;    // num_queries × capacity
  float* hit_scores = nullptr;    // num_queries × capacity
  int32_t* hit_counts = nullptr;  // [num_queries]
};

// For every valid row r of the block and every query i, computes the approximate score
// s = (Σ_j q_r,j · q_i,j · scale_r) · scale_i: the int32 sum is exact, and its float
// conversion and the two products round. Writes (r, s) to query i's hits when
// Σ · scale_r >= thresholds[i] / scale_i, which is s >= thresholds[i] up to a few
// roundings (a zero query scores 0 and passes when thresholds[i] <= 0).
// REQUIRES: Int8DotVnniSupported(); padded_d <= kInt8MaxDim.
void Int8ScanVnni(const Int8ScanBlock& block, const Int8ScanQueries& queries);

}  // namespace cohort

#endif  // COHORT_CORE_INT8_DOT_H_
