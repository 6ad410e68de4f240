// AssignNearest: a cheap first pass bounds every row-to-centroid distance, and
// AssignmentDistance decides among the centroids whose lower bound can still beat the best
// upper bound. The proof that the first pass never changes the result:
//
// Let f_c be AssignmentDistance to centroid c and c* the lowest index that minimizes f,
// and let a first-pass value g_c satisfy |g_c − f_c| <= E for every c. Then
// g_c* <= f_c* + E <= f_c + E <= g_c + 2E for every c, so g_c* <= min g + 2E. Every c with
// g_c <= min g + 2E gets its exact f_c, in ascending c, and a later c replaces the best
// only with a strictly smaller f. So the result is c* and f_c*.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include "core/block_gemm.h"
#include "core/int8_dot.h"
#include "core/kmeans_int8.h"
#include "core/kmeans_kernels.h"
#include "core/log.h"

namespace cohort {
namespace {

constexpr float kInfinity = std::numeric_limits<float>::infinity();
constexpr float kUnitRoundoff = 0x1.0p-24f;

// An upper bound on |computed − exact| of any float evaluation of ‖x‖² − 2x·c + ‖c‖²
// (and of its clamp to >= 0) for d columns, given norm_sum >= ‖x‖ + ‖c‖. A dot product of
// d terms summed in any order, with or without FMA, is within γ_d Σ|x_j c_j| <= γ_d ‖x‖‖c‖,
// γ_d = d·u / (1 − d·u) (Higham, "Accuracy and Stability of Numerical Algorithms", 2002,
// section 3.1). The norms add γ_d (‖x‖² + ‖c‖²) and the expansion three roundings. The sum
// is below (d + 4)·u·(‖x‖ + ‖c‖)², and the factor 2 covers γ_d > d·u and the rounding
// of this bound.
float RoundingBound(int64_t d, float norm_sum) {
  return 2.0f * static_cast<float>(d + 4) * kUnitRoundoff * norm_sum * norm_sum;
}

// AssignmentDistance, inline in the loops of this file. Lane l of the accumulator sums
// the columns j with j % 8 == l. A short last chunk is loaded with its other lanes 0, and
// fma(0, 0, a) == a (a is never −0, as it starts at +0). The two horizontal additions
// give ((a0 + a1) + (a2 + a3)) and ((a4 + a5) + (a6 + a7)).
inline float FixedOrderDistance(const float* x_row, float x_sq_norm, const float* centroid,
                                float c_sq_norm, int64_t d) {
  constexpr int kLanes = 8;
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(x_row + j), _mm256_loadu_ps(centroid + j), acc);
  }
  if (j < d) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(d - j)), lane);
    acc = _mm256_fmadd_ps(_mm256_maskload_ps(x_row + j, mask),
                          _mm256_maskload_ps(centroid + j, mask), acc);
  }
  const __m256 pairs = _mm256_hadd_ps(acc, acc);
  const __m256 quads = _mm256_hadd_ps(pairs, pairs);
  const float product = _mm_cvtss_f32(
      _mm_add_ss(_mm256_castps256_ps128(quads), _mm256_extractf128_ps(quads, 1)));
  // The expansion cancels when x is close to c, and rounding can leave a small negative
  // value where the true squared distance is 0 or tiny, so it is clamped to 0. A NaN also
  // becomes 0, as std::max(0.0f, NaN) returns its first argument.
  return std::max(0.0f, (x_sq_norm - 2.0f * product) + c_sq_norm);
}

// The inputs of one AssignNearest call, shared read-only by the threads.
struct AssignProblem {
  const MatrixXfR& x;
  const Eigen::VectorXf& x_sq_norms;
  const MatrixXfR& centroids;
  const Eigen::VectorXf& c_sq_norms;
  float max_c_norm = 0;          // max ‖c‖ over the centroids
  bool finite_centroids = true;  // every ‖c‖² is finite

  int64_t d() const { return x.cols(); }
  int64_t k() const { return centroids.rows(); }
  const float* row(int64_t i) const { return x.data() + i * x.cols(); }
  // Whether the error bounds hold for row i. Otherwise every centroid is compared.
  bool Bounded(int64_t i) const { return finite_centroids && std::isfinite(x_sq_norms[i]); }
};

// The nearest centroid of one row so far.
struct RowBest {
  float dist = kInfinity;
  int32_t label = -1;  // -1 until a centroid was compared

  // Compares centroid c, which must come after every centroid compared before.
  void Compare(const AssignProblem& problem, int64_t i, int64_t c) {
    const float dist_c = FixedOrderDistance(problem.row(i), problem.x_sq_norms[i],
                                            problem.centroids.data() + c * problem.d(),
                                            problem.c_sq_norms[c], problem.d());
    if (label < 0 || dist_c < dist) {
      dist = dist_c;
      label = static_cast<int32_t>(c);
    }
  }

  // Compares every centroid. For rows without error bounds, and for a row whose bound
  // selected nothing (a NaN in the first pass).
  void CompareAll(const AssignProblem& problem, int64_t i) {
    dist = kInfinity;
    label = -1;
    for (int64_t c = 0; c < problem.k(); ++c) Compare(problem, i, c);
  }
};

// ---------------------------------------------------------------------------------------
// Float first pass: one GEMM per block of rows and centroids.

// The clamped expansion of 8 products, as ExpandedDistance up to rounding. _mm256_max_ps
// returns its second operand (0) for a NaN.
inline __m256 ExpandedDistances(__m256 x_norm, const float* products, const float* c_norms) {
  const __m256 p = _mm256_loadu_ps(products);
  const __m256 sum =
      _mm256_add_ps(_mm256_sub_ps(x_norm, _mm256_add_ps(p, p)), _mm256_loadu_ps(c_norms));
  return _mm256_max_ps(sum, _mm256_setzero_ps());
}

inline float ExpandedDistance(float x_norm, float product, float c_norm) {
  return std::max(0.0f, (x_norm - 2.0f * product) + c_norm);
}

// The smallest clamped expansion over the products x·c_j, j in [0, num_centroids).
float MinExpandedDistance(float x_norm, const float* products, const float* c_norms,
                          int64_t num_centroids) {
  constexpr int kLanes = 8;
  const __m256 x_norm_v = _mm256_set1_ps(x_norm);
  __m256 acc[4];
  for (__m256& a : acc) a = _mm256_set1_ps(kInfinity);
  int64_t j = 0;
  for (; j + 4 * kLanes <= num_centroids; j += 4 * kLanes) {
    for (int a = 0; a < 4; ++a) {
      const int64_t at = j + a * kLanes;
      acc[a] = _mm256_min_ps(acc[a], ExpandedDistances(x_norm_v, products + at, c_norms + at));
    }
  }
  for (; j + kLanes <= num_centroids; j += kLanes) {
    acc[0] = _mm256_min_ps(acc[0], ExpandedDistances(x_norm_v, products + j, c_norms + j));
  }
  float lanes[4 * kLanes];
  for (int a = 0; a < 4; ++a) _mm256_storeu_ps(lanes + a * kLanes, acc[a]);
  float best = *std::min_element(lanes, lanes + 4 * kLanes);
  for (; j < num_centroids; ++j) best = std::min(best, ExpandedDistance(x_norm, products[j], c_norms[j]));
  return best;
}

// Calls visit(j) in ascending j for every j in [0, num_centroids) whose clamped expansion
// is <= threshold.
template <typename Visit>
void ForEachCandidate(float x_norm, const float* products, const float* c_norms,
                      int64_t num_centroids, float threshold, Visit visit) {
  constexpr int kLanes = 8;
  const __m256 x_norm_v = _mm256_set1_ps(x_norm);
  const __m256 threshold_v = _mm256_set1_ps(threshold);
  int64_t j = 0;
  for (; j + kLanes <= num_centroids; j += kLanes) {
    const __m256 dist = ExpandedDistances(x_norm_v, products + j, c_norms + j);
    unsigned mask =
        static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(dist, threshold_v, _CMP_LE_OQ)));
    while (mask != 0) {
      visit(j + __builtin_ctz(mask));
      mask &= mask - 1;
    }
  }
  for (; j < num_centroids; ++j) {
    if (ExpandedDistance(x_norm, products[j], c_norms[j]) <= threshold) visit(j);
  }
}

// A centroid that the int8 pass cannot rule out for a row of the current tile.
struct TileCandidate {
  int32_t tile_row;
  int32_t centroid;
};

// Per-thread buffers of AssignNearest, allocated before the parallel region.
struct AssignScratch {
  std::vector<RowBest> best = std::vector<RowBest>(kAssignBlockRows);
  std::vector<float> slack = std::vector<float>(kAssignBlockRows);
  // Float kernel: kAssignBlockRows × centroid block products and the smallest first-pass
  // distance of each row over the centroid blocks done.
  MatrixXfR products;
  std::vector<float> running_min = std::vector<float>(kAssignBlockRows);
  // Int8 kernel: one tile of quantized rows, their first-pass values and candidate masks.
  std::vector<uint8_t> quantized_rows;
  std::vector<float> row_factors = std::vector<float>(kInt8TileRows);
  std::vector<float> approx;
  std::vector<uint16_t> masks;
  std::vector<TileCandidate> candidates;  // in row order, then centroid order
};

// Assigns rows [row_begin, row_begin + num_rows) with the float kernel.
void AssignBlockFloat(const AssignProblem& problem, int64_t row_begin, int64_t num_rows,
                      AssignScratch& scratch) {
  const int64_t d = problem.d();
  const int64_t k = problem.k();
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t i = row_begin + r;
    scratch.best[r] = RowBest();
    scratch.running_min[r] = kInfinity;
    // The GEMM value and f are each within RoundingBound of the exact expansion, so E is
    // twice that, and a candidate is within 2E of the minimum.
    scratch.slack[r] =
        4.0f * RoundingBound(d, std::sqrt(problem.x_sq_norms[i]) + problem.max_c_norm);
  }

  const int64_t centroid_block = scratch.products.cols();
  for (int64_t c_begin = 0; c_begin < k; c_begin += centroid_block) {
    const int64_t num_centroids = std::min(centroid_block, k - c_begin);
    MultiplyByTransposed(problem.row(row_begin), num_rows,
                         problem.centroids.data() + c_begin * d, num_centroids, d,
                         scratch.products.data(), centroid_block);
    for (int64_t r = 0; r < num_rows; ++r) {
      const int64_t i = row_begin + r;
      if (!problem.Bounded(i)) continue;
      const float* products = scratch.products.data() + r * centroid_block;
      const float* c_norms = problem.c_sq_norms.data() + c_begin;
      const float x_norm = problem.x_sq_norms[i];
      // The minimum over the blocks done so far is >= the final minimum, so its threshold
      // keeps every candidate of the final one.
      scratch.running_min[r] = std::min(
          scratch.running_min[r], MinExpandedDistance(x_norm, products, c_norms, num_centroids));
      RowBest& best = scratch.best[r];
      ForEachCandidate(x_norm, products, c_norms, num_centroids,
                       scratch.running_min[r] + scratch.slack[r],
                       [&](int64_t j) { best.Compare(problem, i, c_begin + j); });
    }
  }
}

// ---------------------------------------------------------------------------------------
// Int8 first pass.

// Centroids quantized with one step `scale` for all: q_c = round(c / scale) in
// [-127, 127], packed as Int8TileDistances reads them.
struct Int8Centroids {
  int64_t num_groups = 0;
  int64_t num_steps = 0;  // padded d / 4
  float scale = 0;
  float max_residual = 0;  // upper bound on max_c ‖c − q_c · scale‖
  std::vector<int8_t> packed;
  std::vector<int32_t> offsets;  // num_groups × 16
  std::vector<float> norms;      // num_groups × 16: ‖c‖², +infinity past k
};

// Returns round(value · inverse_scale) clamped to [-127, 127].
inline float QuantizeValue(float value, float inverse_scale) {
  return std::clamp(std::nearbyint(value * inverse_scale), -127.0f, 127.0f);
}

// Upper bound on a Euclidean norm computed in float from d squares: the relative rounding
// of the sum and the square root is far below 2^-10 for d <= kInt8AssignMaxDim.
inline float NormUpperBound(float sum_of_squares) {
  return std::sqrt(sum_of_squares) * (1.0f + 0x1.0p-10f);
}

Int8Centroids QuantizeCentroids(const MatrixXfR& centroids, const Eigen::VectorXf& c_sq_norms) {
  const int64_t k = centroids.rows();
  const int64_t d = centroids.cols();
  Int8Centroids q;
  q.num_groups = (k + kInt8GroupCentroids - 1) / kInt8GroupCentroids;
  q.num_steps = (d + 3) / 4;
  q.packed.assign(q.num_groups * q.num_steps * 64, 0);
  q.offsets.assign(q.num_groups * kInt8GroupCentroids, 0);
  q.norms.assign(q.num_groups * kInt8GroupCentroids, kInfinity);

  float max_abs = 0;
  for (int64_t t = 0; t < k * d; ++t) max_abs = std::max(max_abs, std::fabs(centroids.data()[t]));
  q.scale = max_abs > 0 ? max_abs / 127.0f : 1.0f;
  const float inverse_scale = max_abs > 0 ? 127.0f / max_abs : 0.0f;

  for (int64_t c = 0; c < k; ++c) {
    const float* centroid = centroids.data() + c * d;
    const int64_t group = c / kInt8GroupCentroids;
    const int64_t lane = c % kInt8GroupCentroids;
    int32_t sum = 0;
    float residual = 0;
    for (int64_t j = 0; j < d; ++j) {
      const float value = QuantizeValue(centroid[j], inverse_scale);
      q.packed[((group * q.num_steps + j / 4) * kInt8GroupCentroids + lane) * 4 + j % 4] =
          static_cast<int8_t>(value);
      sum += static_cast<int32_t>(value);
      const float error = centroid[j] - value * q.scale;
      residual += error * error;
    }
    q.offsets[c] = -128 * sum;
    q.norms[c] = c_sq_norms[c];
    q.max_residual = std::max(q.max_residual, NormUpperBound(residual));
  }
  return q;
}

// Sum of the 8 lanes of v.
inline float SumLanes(__m256 v) {
  const __m128 four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
  return _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)));
}

// Quantizes row i into `out` (num_steps · 4 bytes, q + 128) and returns the factor
// −2 · centroid scale · row scale of Int8TileDistances and the candidate slack 2E.
void QuantizeRow(const AssignProblem& problem, const Int8Centroids& q, int64_t i,
                 uint8_t* out, float* factor, float* slack) {
  constexpr int kLanes = 8;
  const int64_t d = problem.d();
  const float* row = problem.row(i);
  const int64_t vector_end = d - d % kLanes;

  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 max_abs_v = _mm256_setzero_ps();
  for (int64_t j = 0; j < vector_end; j += kLanes) {
    max_abs_v = _mm256_max_ps(max_abs_v, _mm256_andnot_ps(sign_bit, _mm256_loadu_ps(row + j)));
  }
  float lanes[kLanes];
  _mm256_storeu_ps(lanes, max_abs_v);
  float max_abs = *std::max_element(lanes, lanes + kLanes);
  for (int64_t j = vector_end; j < d; ++j) max_abs = std::max(max_abs, std::fabs(row[j]));
  const float scale = max_abs / 127.0f;
  const float inverse_scale = max_abs > 0 ? 127.0f / max_abs : 0.0f;

  // The same steps as QuantizeValue, 8 columns at a time.
  const __m256 inverse_v = _mm256_set1_ps(inverse_scale);
  const __m256 scale_v = _mm256_set1_ps(scale);
  const __m256 low = _mm256_set1_ps(-127.0f);
  const __m256 high = _mm256_set1_ps(127.0f);
  const __m256i offset = _mm256_set1_epi32(128);
  __m256 residual_v = _mm256_setzero_ps();
  __m256 quantized_v = _mm256_setzero_ps();
  for (int64_t j = 0; j < vector_end; j += kLanes) {
    const __m256 value = _mm256_loadu_ps(row + j);
    const __m256 rounded = _mm256_round_ps(_mm256_mul_ps(value, inverse_v),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 level = _mm256_min_ps(_mm256_max_ps(rounded, low), high);
    const __m256i shifted = _mm256_add_epi32(_mm256_cvtps_epi32(level), offset);
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(shifted),
                                           _mm256_extracti128_si256(shifted, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm_packus_epi16(words, words));
    const __m256 approx = _mm256_mul_ps(level, scale_v);
    const __m256 error = _mm256_sub_ps(value, approx);
    residual_v = _mm256_fmadd_ps(error, error, residual_v);
    quantized_v = _mm256_fmadd_ps(approx, approx, quantized_v);
  }
  float residual = SumLanes(residual_v);
  float quantized = SumLanes(quantized_v);
  for (int64_t j = vector_end; j < d; ++j) {
    const float value = QuantizeValue(row[j], inverse_scale);
    out[j] = static_cast<uint8_t>(static_cast<int32_t>(value) + 128);
    const float approx = value * scale;
    residual += (row[j] - approx) * (row[j] - approx);
    quantized += approx * approx;
  }
  std::fill(out + d, out + 4 * q.num_steps, uint8_t{128});
  *factor = -2.0f * q.scale * scale;

  // |x·c − x̂·ĉ| <= ‖x − x̂‖ ‖c‖ + ‖x̂‖ ‖c − ĉ‖, and the distance counts the product twice.
  // E adds the rounding of f and of the first-pass value.
  const float residual_norm = NormUpperBound(residual);
  const float quantized_norm = NormUpperBound(quantized);
  const float dot_error =
      residual_norm * problem.max_c_norm + quantized_norm * q.max_residual;
  const float x_norm = std::sqrt(problem.x_sq_norms[i]);
  const float rounding =
      RoundingBound(d, x_norm + residual_norm + problem.max_c_norm + q.max_residual);
  *slack = 2.0f * (2.0f * dot_error + 2.0f * rounding);
}

// Tiles ahead whose rows AssignBlockInt8 prefetches.
constexpr int64_t kPrefetchTiles = 2;

// Assigns rows [row_begin, row_begin + num_rows) with the int8 kernel.
void AssignBlockInt8(const AssignProblem& problem, const Int8Centroids& q, int64_t row_begin,
                     int64_t num_rows, AssignScratch& scratch) {
  const int64_t k = problem.k();
  const int64_t row_bytes = 4 * q.num_steps;
  const int64_t approx_stride = q.num_groups * kInt8GroupCentroids;
  for (int64_t tile = 0; tile < num_rows; tile += kInt8TileRows) {
    const int64_t tile_rows = std::min(kInt8TileRows, num_rows - tile);
    // Without this request, perf showed the first read of each row waiting on memory: the
    // rows are read in order, but slowly enough that the hardware prefetcher falls behind.
    const int64_t ahead = tile + kPrefetchTiles * kInt8TileRows;
    if (ahead < num_rows) {
      const char* start = reinterpret_cast<const char*>(problem.row(row_begin + ahead));
      const int64_t bytes = std::min(kInt8TileRows, num_rows - ahead) * problem.d() * 4;
      for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(start + offset);
    }
    // Rows past the block end, and rows without error bounds, get q = 0 and slack 0. Their
    // first-pass results are not read.
    for (int64_t t = 0; t < kInt8TileRows; ++t) {
      const int64_t i = row_begin + tile + t;
      uint8_t* out = scratch.quantized_rows.data() + t * row_bytes;
      if (t < tile_rows && problem.Bounded(i)) {
        QuantizeRow(problem, q, i, out, &scratch.row_factors[t], &scratch.slack[tile + t]);
      } else {
        std::fill(out, out + row_bytes, uint8_t{128});
        scratch.row_factors[t] = 0;
        if (t < tile_rows) scratch.slack[tile + t] = 0;
      }
    }
    float tile_slack[kInt8TileRows] = {};
    std::copy(scratch.slack.begin() + tile, scratch.slack.begin() + tile + tile_rows, tile_slack);
    Int8TileDistances(scratch.quantized_rows.data(), row_bytes, scratch.row_factors.data(),
                      tile_slack, q.packed.data(), q.offsets.data(), q.norms.data(),
                      q.num_groups, q.num_steps, scratch.approx.data(), approx_stride,
                      scratch.masks.data());

    // The candidates of the tile are listed first and compared after, so the exact
    // distances run back to back instead of between the branches of the mask loop.
    scratch.candidates.clear();
    for (int64_t t = 0; t < tile_rows; ++t) {
      scratch.best[tile + t] = RowBest();
      if (!problem.Bounded(row_begin + tile + t)) continue;
      // Four 16-bit group masks at a time: bit b of the word is centroid 16 g + b.
      const uint16_t* masks = scratch.masks.data() + t * q.num_groups;
      for (int64_t g = 0; g < q.num_groups; g += 4) {
        uint64_t word = 0;
        std::memcpy(&word, masks + g, sizeof(uint16_t) * std::min<int64_t>(4, q.num_groups - g));
        while (word != 0) {
          const int64_t c = g * kInt8GroupCentroids + __builtin_ctzll(word);
          word &= word - 1;
          // Padding lanes are +infinity, but a threshold of +infinity selects them too.
          if (c < k) {
            scratch.candidates.push_back({static_cast<int32_t>(t), static_cast<int32_t>(c)});
          }
        }
      }
    }
    for (const TileCandidate& candidate : scratch.candidates) {
      scratch.best[tile + candidate.tile_row].Compare(problem, row_begin + tile + candidate.tile_row,
                                                      candidate.centroid);
    }
  }
}

}  // namespace

float AssignmentDistance(const float* x_row, float x_sq_norm, const float* centroid,
                         float c_sq_norm, int64_t d) {
  return FixedOrderDistance(x_row, x_sq_norm, centroid, c_sq_norm, d);
}

float ExpansionErrorBound(int64_t d, float norm_sum) { return RoundingBound(d, norm_sum); }

bool Int8AssignKernelSupported() {
  static const bool supported = Int8DotVnniSupported();
  return supported;
}

AssignKernel DefaultAssignKernel() {
  static const AssignKernel kernel = [] {
    const char* value = std::getenv("COHORT_ASSIGN_KERNEL");
    const std::string_view name = value == nullptr ? "" : value;
    if (name == "float") return AssignKernel::kFloat;
    if (!name.empty() && name != "int8") {
      COHORT_LOG_WARN("COHORT_ASSIGN_KERNEL={} is invalid; use float or int8. Using {}", name,
                      Int8AssignKernelSupported() ? "int8" : "float");
    }
    return Int8AssignKernelSupported() ? AssignKernel::kInt8 : AssignKernel::kFloat;
  }();
  return kernel;
}

// The per-centroid state of a CentroidAssigner.
struct CentroidAssigner::Prepared {
  Prepared(const MatrixXfR& centroids_in, const Eigen::VectorXf& c_sq_norms_in)
      : centroids(centroids_in), c_sq_norms(c_sq_norms_in) {}

  const MatrixXfR& centroids;
  const Eigen::VectorXf& c_sq_norms;
  float max_c_norm = 0;
  bool finite_centroids = true;
  bool use_int8 = false;
  Int8Centroids quantized;  // filled when use_int8
};

CentroidAssigner::CentroidAssigner(const MatrixXfR& centroids, const Eigen::VectorXf& c_sq_norms,
                                   AssignKernel kernel)
    : prepared_(std::make_unique<Prepared>(centroids, c_sq_norms)) {
  Prepared& p = *prepared_;
  float max_c_sq_norm = 0;
  for (int64_t c = 0; c < centroids.rows(); ++c) {
    p.finite_centroids = p.finite_centroids && std::isfinite(c_sq_norms[c]);
    max_c_sq_norm = std::max(max_c_sq_norm, c_sq_norms[c]);
  }
  p.max_c_norm = NormUpperBound(max_c_sq_norm);
  p.use_int8 = kernel == AssignKernel::kInt8 && Int8AssignKernelSupported() &&
               centroids.cols() <= kInt8AssignMaxDim && p.finite_centroids;
  if (p.use_int8) p.quantized = QuantizeCentroids(centroids, c_sq_norms);
}

CentroidAssigner::~CentroidAssigner() = default;

void CentroidAssigner::Assign(const MatrixXfR& x, const Eigen::VectorXf& x_sq_norms,
                              int64_t row_begin, int64_t row_end, int32_t* labels,
                              float* sq_dist) const {
  const int64_t n = row_end - row_begin;
  if (n <= 0) return;
  const Prepared& p = *prepared_;
  const int64_t d = x.cols();
  const int64_t k = p.centroids.rows();
  AssignProblem problem{x, x_sq_norms, p.centroids, p.c_sq_norms, p.max_c_norm,
                        p.finite_centroids};

  const int64_t num_blocks = (n + kAssignBlockRows - 1) / kAssignBlockRows;
  const bool parallel = num_blocks > 1 && n * k * d >= kAssignParallelMinMacs;
  const int num_threads = parallel ? omp_get_max_threads() : 1;
  AssignScratch prototype;
  if (p.use_int8) {
    prototype.quantized_rows.resize(kInt8TileRows * 4 * p.quantized.num_steps);
    prototype.approx.resize(kInt8TileRows * p.quantized.num_groups * kInt8GroupCentroids);
    prototype.masks.resize(kInt8TileRows * p.quantized.num_groups);
    prototype.candidates.reserve(kInt8TileRows * 8);
  } else {
    prototype.products.resize(kAssignBlockRows, std::min(k, kAssignBlockCentroids));
  }
  std::vector<AssignScratch> scratch(num_threads, prototype);

#pragma omp parallel num_threads(num_threads) if (parallel)
  {
    // Eigen parallelizes a large product itself when it runs on a one-thread team and
    // omp_get_max_threads() > 1. This call sets the limit for this thread's task only, so
    // the GEMM of the float kernel stays on this thread.
    omp_set_num_threads(1);
    AssignScratch& own = scratch[omp_get_thread_num()];
#pragma omp for schedule(static)
    for (int64_t b = 0; b < num_blocks; ++b) {
      const int64_t block_begin = row_begin + b * kAssignBlockRows;
      const int64_t num_rows = std::min(kAssignBlockRows, row_end - block_begin);
      if (p.use_int8) {
        AssignBlockInt8(problem, p.quantized, block_begin, num_rows, own);
      } else {
        AssignBlockFloat(problem, block_begin, num_rows, own);
      }
      for (int64_t r = 0; r < num_rows; ++r) {
        RowBest& best = own.best[r];
        if (best.label < 0) best.CompareAll(problem, block_begin + r);
        labels[block_begin + r] = best.label;
        sq_dist[block_begin + r] = best.dist;
      }
    }
  }
}

void AssignNearest(const MatrixXfR& x, const Eigen::VectorXf& x_sq_norms,
                   const MatrixXfR& centroids, const Eigen::VectorXf& c_sq_norms,
                   int32_t* labels, float* sq_dist) {
  AssignNearestWithKernel(DefaultAssignKernel(), x, x_sq_norms, centroids, c_sq_norms, labels,
                          sq_dist);
}

void AssignNearestWithKernel(AssignKernel kernel, const MatrixXfR& x,
                             const Eigen::VectorXf& x_sq_norms, const MatrixXfR& centroids,
                             const Eigen::VectorXf& c_sq_norms, int32_t* labels,
                             float* sq_dist) {
  if (x.rows() == 0) return;
  CentroidAssigner(centroids, c_sq_norms, kernel).Assign(x, x_sq_norms, 0, x.rows(), labels,
                                                         sq_dist);
}

}  // namespace cohort
