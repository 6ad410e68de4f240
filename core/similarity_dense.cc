// Dense user–user top-k: the exact search (a first pass with error bounds, then exact
// scores of the rows it keeps) and the inverted file (IvfIndex) declared in
// core/similarity.h.
#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <utility>

#include <immintrin.h>
#include <omp.h>

#include "absl/strings/str_cat.h"
#include "core/int8_dot.h"
#include "core/similarity.h"

namespace cohort {
namespace {

// Query rows per block of the exact search. A block's score buffer holds
// kDenseQueryBlock × kDenseBaseBlock floats (256 KiB), which stays in the L2 cache while
// the fused scan reads it.
constexpr int64_t kDenseQueryBlock = 64;

// Base rows per matrix product of the exact search.
constexpr int64_t kDenseBaseBlock = 1024;
// Base rows per call of the int8 kernel (a multiple of kInt8FirstBlock). The queries'
// thresholds are raised between calls; the hits of one call take at most
// kDenseQueryBlock × kInt8BaseBlock × 8 bytes (1 MiB).
constexpr int64_t kInt8BaseBlock = 2048;
// Base rows of the first call of the int8 kernel. Before a query has k rows every row
// passes, so a short first call gives the queries thresholds before the long calls.
constexpr int64_t kInt8FirstBlock = 256;
// Minimum number of queries for which kAuto picks the int8 kernel, because quantizing
// the base costs about as much as a few float queries.
constexpr int64_t kInt8MinQueries = 64;
// Rows per block of the all-pairs search: a block pair's scores take 512 × 512 floats
// (1 MiB, the L2 cache of one Zen 4 core).
constexpr int64_t kAllPairsBlock = 512;
// Below this many rows, the per-row merge of the all-pairs search stays serial.
constexpr int64_t kParallelMinQueries = 4096;
// Queries grouped per block of the inverted-file search: each probed list is read once
// per block and multiplied with all the block's queries that probe it.
constexpr int64_t kIvfQueryBlock = 512;

constexpr float kMinusInfinity = -std::numeric_limits<float>::infinity();
// Added to every error bound: covers float underflow of tiny products.
constexpr float kTinyBound = 1e-30f;
// Relative error terms of the int8 kernel's bound that are not quantization: its float
// rounding, the rounding of the exact score, and that of the bound itself (all below
// 16 · 2^−24 of ‖x‖·‖c‖ for d <= kInt8MaxDim).
constexpr float kInt8RoundingBound = 0x1p-19f;

bool IsBounded(DenseMetric metric) { return metric != DenseMetric::kInnerProduct; }

// Returns the exact score of a pair: Σ a_j·b_j summed in double (one running sum per
// j mod 4, added in a fixed order) and rounded once to float. Each product of two floats
// is exact in double, so the result is within (2^−24 + (d + 4)·2^−53)·‖a‖·‖b‖ of the true
// dot product.
float ExactDot(const float* a, const float* b, int64_t d) {
  // Lane l of `sums` is the sum for j mod 4 = l. A fused multiply-add of an exact
  // product rounds as the plain sum does.
  __m256d sums = _mm256_setzero_pd();
  int64_t j = 0;
  for (; j + 4 <= d; j += 4) {
    sums = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + j)), _mm256_cvtps_pd(_mm_loadu_ps(b + j)),
                           sums);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, sums);
  for (int lane = 0; j < d; ++j, ++lane) lanes[lane] += static_cast<double>(a[j]) * b[j];
  return static_cast<float>((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]));
}

// Exact scores of one query against base rows, as Neighbors with the base row's id.
struct ExactScorer {
  const float* query;
  const MatrixXfR* base;
  const int64_t* base_ids;
  bool bounded;

  Neighbor operator()(int64_t row) const {
    float score = ExactDot(query, base->row(row).data(), base->cols());
    if (bounded) score = std::clamp(score, -1.0f, 1.0f);
    return Neighbor{base_ids[row], score};
  }
};

// The base rows that may be among one query's exact top-k. Each offered row comes with
// an approximate score and a bound on its distance to the exact score, so the exact
// score lies in [low, high]. threshold() is the k-th largest low so far (−∞ before k
// rows): a row whose high is below it is beaten by k other rows and cannot be in the
// top-k, whatever the tie rule. The rows kept are scored exactly in Compact, once many
// have piled up (many near-ties), and in Finish.
class CandidateFilter {
 public:
  CandidateFilter(int k, bool bounded)
      : k_(k),
        bounded_(bounded),
        compact_size_(std::max<size_t>(4096, 8 * static_cast<size_t>(k))),
        top_(k, ScoreOrder::kLargerIsBetter) {}

  float threshold() const { return threshold_; }

  // Offers base row `row` whose exact score lies within approx ± bound.
  void Offer(int64_t row, float approx, float bound) {
    float low = approx - bound;
    float high = approx + bound;
    if (bounded_) {
      // Clamping is monotone, so the clamped bounds bound the clamped exact score.
      low = std::clamp(low, -1.0f, 1.0f);
      high = std::clamp(high, -1.0f, 1.0f);
    }
    if (!(high >= threshold_)) return;
    candidates_.push_back({row, high});
    if (static_cast<int>(lows_.size()) < k_) {
      lows_.push_back(low);
      std::push_heap(lows_.begin(), lows_.end(), std::greater<float>());
      if (static_cast<int>(lows_.size()) == k_) threshold_ = lows_.front();
    } else if (low > lows_.front()) {
      std::pop_heap(lows_.begin(), lows_.end(), std::greater<float>());
      lows_.back() = low;
      std::push_heap(lows_.begin(), lows_.end(), std::greater<float>());
      threshold_ = lows_.front();
    }
  }

  // Drops the rows the threshold has passed and, when many remain, scores them exactly.
  void Compact(const ExactScorer& score) {
    if (candidates_.size() < compact_size_) return;
    DropBelowThreshold();
    if (2 * candidates_.size() >= compact_size_) ScoreAll(score);
  }

  // The exact top-k of the offered rows, best first.
  std::vector<Neighbor> Finish(const ExactScorer& score) {
    DropBelowThreshold();
    ScoreAll(score);
    return top_.TakeSorted();
  }

 private:
  struct Candidate {
    int64_t row;
    float high;
  };

  void DropBelowThreshold() {
    const float threshold = threshold_;
    std::erase_if(candidates_, [threshold](const Candidate& c) { return !(c.high >= threshold); });
  }

  void ScoreAll(const ExactScorer& score) {
    for (const Candidate& c : candidates_) {
      const Neighbor neighbor = score(c.row);
      top_.Push(neighbor.id, neighbor.score);
    }
    candidates_.clear();
  }

  int k_;
  bool bounded_;
  size_t compact_size_;
  float threshold_ = kMinusInfinity;
  std::vector<float> lows_;  // min-heap of the k largest lows
  std::vector<Candidate> candidates_;
  TopKAccumulator top_;  // exact scores of the rows scored so far
};

// The score an approximate score must reach to be offered to a filter whose threshold is
// `threshold`, when its error bound is at most `max_bound`. Rounded down.
float PassThreshold(float threshold, float max_bound) {
  if (threshold == kMinusInfinity) return threshold;
  return threshold - max_bound - (std::abs(threshold) + max_bound) * 0x1p-20f;
}

// Relative error bound of a float32 matrix product score: |s − x·c| <= γ_d·‖x‖·‖c‖ in
// any summation order, with γ_d < (d + 1)·2^−24; doubled, it also covers the exact
// score's rounding and the rounding of low and high.
float FloatRelativeBound(int64_t d) { return static_cast<float>(d + 8) * 0x1p-23f; }

// ‖x_r‖ of every row, rounded up.
std::vector<float> RowNorms(const MatrixXfR& x) {
  std::vector<float> norms(static_cast<size_t>(x.rows()));
  const int64_t d = x.cols();
#pragma omp parallel for schedule(static) if (x.rows() >= kParallelMinQueries)
  for (int64_t r = 0; r < x.rows(); ++r) {
    const float* row = x.row(r).data();
    double sum_sq = 0;
    for (int64_t j = 0; j < d; ++j) sum_sq += static_cast<double>(row[j]) * row[j];
    norms[r] = static_cast<float>(std::sqrt(sum_sq) * (1.0 + 0x1p-20));
  }
  return norms;
}

// The largest of values[b·block, (b + 1)·block) for each block b.
std::vector<float> BlockMaxima(const std::vector<float>& values, int64_t block) {
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<float> maxima(static_cast<size_t>((n + block - 1) / block), 0.0f);
  for (int64_t i = 0; i < n; ++i) maxima[i / block] = std::max(maxima[i / block], values[i]);
  return maxima;
}

// Offers to `filter` the base rows row0 + j (j < count) of one row of float scores whose
// bound lets them reach the filter's threshold. The bound of row j is
// relative · norms[j] + kTinyBound, at most relative · max_norm + kTinyBound.
void ScanFloatScores(const float* scores, int64_t count, int64_t row0, const float* norms,
                     float max_norm, float relative, const int64_t* ids, int64_t self_id,
                     bool exclude_self, CandidateFilter* filter) {
  const float max_bound = relative * max_norm + kTinyBound;
  float pass = PassThreshold(filter->threshold(), max_bound);
  auto consider = [&](int64_t j) {
    if (!(scores[j] >= pass)) return;
    if (exclude_self && ids[j] == self_id) return;
    filter->Offer(row0 + j, scores[j], relative * norms[j] + kTinyBound);
    pass = PassThreshold(filter->threshold(), max_bound);
  };
  // Once the filter has k rows almost no score passes, so eight scores are compared at
  // once and only the lanes that pass are looked at.
  int64_t j = 0;
  for (; j + 8 <= count; j += 8) {
    const __m256 block = _mm256_loadu_ps(scores + j);
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(block, _mm256_set1_ps(pass), _CMP_GE_OQ));
    if (mask == 0) continue;
    for (int lane = 0; lane < 8; ++lane) {
      if (mask & (1 << lane)) consider(j + lane);
    }
  }
  for (; j < count; ++j) consider(j);
}

// Offers every score of an off-diagonal block pair in both directions: S(r, c) is the
// float score of row row0 + r for row column0 + c and the reverse. One pass over S
// compares eight scores with both the row's and the eight columns' pass thresholds, so
// no transposed copy is needed. filters and norms are indexed by row of x.
void ScanBothDirections(const MatrixXfR& scores, int64_t rows, int64_t columns, int64_t row0,
                        int64_t column0, const float* norms, float max_row_norm,
                        float max_column_norm, float relative, CandidateFilter* filters,
                        std::vector<float>* column_pass) {
  column_pass->resize(static_cast<size_t>(columns));
  float* pass_of_column = column_pass->data();
  auto refresh_column = [&](int64_t c) {
    pass_of_column[c] = PassThreshold(filters[column0 + c].threshold(),
                                      relative * norms[column0 + c] * max_row_norm + kTinyBound);
  };
  for (int64_t c = 0; c < columns; ++c) refresh_column(c);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = scores.row(r).data();
    const int64_t x_row = row0 + r;
    CandidateFilter& row_filter = filters[x_row];
    const float row_relative = relative * norms[x_row];
    const float row_max_bound = row_relative * max_column_norm + kTinyBound;
    float row_pass = PassThreshold(row_filter.threshold(), row_max_bound);
    auto consider = [&](int64_t c) {
      const float bound = row_relative * norms[column0 + c] + kTinyBound;
      if (row[c] >= row_pass) {
        row_filter.Offer(column0 + c, row[c], bound);
        row_pass = PassThreshold(row_filter.threshold(), row_max_bound);
      }
      if (row[c] >= pass_of_column[c]) {
        filters[column0 + c].Offer(x_row, row[c], bound);
        refresh_column(c);
      }
    };
    int64_t c = 0;
    for (; c + 8 <= columns; c += 8) {
      const __m256 block = _mm256_loadu_ps(row + c);
      const __m256 row_passes = _mm256_cmp_ps(block, _mm256_set1_ps(row_pass), _CMP_GE_OQ);
      const __m256 column_passes =
          _mm256_cmp_ps(block, _mm256_loadu_ps(pass_of_column + c), _CMP_GE_OQ);
      const int mask = _mm256_movemask_ps(_mm256_or_ps(row_passes, column_passes));
      if (mask == 0) continue;
      for (int lane = 0; lane < 8; ++lane) {
        if (mask & (1 << lane)) consider(c + lane);
      }
    }
    for (; c < columns; ++c) consider(c);
  }
}

absl::Status CheckIds(const std::vector<int64_t>& ids, int64_t rows, const char* name) {
  if (static_cast<int64_t>(ids.size()) != rows) {
    return absl::InvalidArgumentError(absl::StrCat(name, " has ", ids.size(), " ids for ", rows,
                                                   " rows; give one id per row"));
  }
  return absl::OkStatus();
}

// True when no entry of x is NaN or infinite. One vectorised pass over the bits (an
// all-ones exponent marks both), parallel for large matrices.
bool AllFinite(const MatrixXfR& x) {
  const float* data = x.data();
  const int64_t size = x.size();
  uint32_t bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (size >= (int64_t{1} << 22))
  for (int64_t i = 0; i < size; ++i) {
    bad |= static_cast<uint32_t>((std::bit_cast<uint32_t>(data[i]) & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

absl::Status CheckFinite(const MatrixXfR& x, const char* name) {
  if (!AllFinite(x)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " contains NaN or infinite values; fix or impute them first"));
  }
  return absl::OkStatus();
}

// Whether the exact search of `num_queries` queries of dimension d runs the int8 kernel.
absl::StatusOr<bool> UseInt8Kernel(DenseKernel kernel, int64_t num_queries, int64_t d) {
  switch (kernel) {
    case DenseKernel::kFloat:
      return false;
    case DenseKernel::kInt8:
      if (!Int8DotVnniSupported()) {
        return absl::FailedPreconditionError(
            "the int8 kernel needs a CPU with AVX-512 VNNI and this one has none; use the "
            "auto or float kernel");
      }
      if (d > kInt8MaxDim) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the int8 kernel takes d <= ", kInt8MaxDim, " but d = ", d, "; use the float kernel"));
      }
      return true;
    case DenseKernel::kAuto:
      break;
  }
  return d <= kInt8MaxDim && num_queries >= kInt8MinQueries && Int8DotVnniSupported();
}

// The search inputs, checked by ExactDenseTopK or ExactDenseAllPairsTopK.
struct ExactSearch {
  const MatrixXfR& queries;
  const std::vector<int64_t>& query_ids;
  const MatrixXfR& base;
  const std::vector<int64_t>& base_ids;
  int k;
  bool bounded;
  bool exclude_self;

  ExactScorer Scorer(int64_t query) const {
    return ExactScorer{queries.row(query).data(), &base, base_ids.data(), bounded};
  }
  int64_t SelfId(int64_t query) const { return exclude_self ? query_ids[query] : -1; }
};

// First pass on float32 matrix products of query blocks with base blocks.
std::vector<std::vector<Neighbor>> FloatExactTopK(const ExactSearch& search) {
  const int64_t q = search.queries.rows();
  const int64_t n = search.base.rows();
  const float relative = FloatRelativeBound(search.base.cols());
  const std::vector<float> base_norms = RowNorms(search.base);
  const std::vector<float> block_max_norms = BlockMaxima(base_norms, kDenseBaseBlock);
  const std::vector<float> query_norms = RowNorms(search.queries);
  std::vector<std::vector<Neighbor>> result(static_cast<size_t>(q));
  const int64_t num_blocks = (q + kDenseQueryBlock - 1) / kDenseQueryBlock;

#pragma omp parallel if (num_blocks > 1)
  {
    MatrixXfR scores(kDenseQueryBlock, kDenseBaseBlock);
    std::vector<CandidateFilter> filters;
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < num_blocks; ++block) {
      const int64_t q0 = block * kDenseQueryBlock;
      const int64_t bq = std::min(kDenseQueryBlock, q - q0);
      filters.assign(static_cast<size_t>(bq), CandidateFilter(search.k, search.bounded));
      for (int64_t b0 = 0; b0 < n; b0 += kDenseBaseBlock) {
        const int64_t bn = std::min(kDenseBaseBlock, n - b0);
        auto block_scores = scores.topLeftCorner(bq, bn);
        block_scores.noalias() =
            search.queries.middleRows(q0, bq) * search.base.middleRows(b0, bn).transpose();
        for (int64_t r = 0; r < bq; ++r) {
          ScanFloatScores(scores.row(r).data(), bn, b0, base_norms.data() + b0,
                          block_max_norms[b0 / kDenseBaseBlock], relative * query_norms[q0 + r],
                          search.base_ids.data() + b0, search.SelfId(q0 + r), search.exclude_self,
                          &filters[r]);
          filters[r].Compact(search.Scorer(q0 + r));
        }
      }
      for (int64_t r = 0; r < bq; ++r) result[q0 + r] = filters[r].Finish(search.Scorer(q0 + r));
    }
  }
  return result;
}

// Base rows quantized for the int8 kernel, with the per-row terms of the error bound
// |x·c − x̂·ĉ| <= ‖x − x̂‖·‖c‖ + ‖x̂‖·‖c − ĉ‖ (plus kInt8RoundingBound·max(‖x‖, ‖x̂‖)·
// max(‖c‖, ‖ĉ‖) for rounding).
struct Int8Base {
  int64_t padded_d = 0;
  std::vector<uint8_t> groups;        // ⌈n / 16⌉ packed groups
  std::vector<float> scales;          // [⌈n / 16⌉ · 16]
  std::vector<float> error_norms;     // [n] ‖x − x̂‖
  std::vector<float> quantized_norms; // [n] ‖x̂‖
  std::vector<float> rounding;        // [n] kInt8RoundingBound · max(‖x‖, ‖x̂‖)
  // Maxima of the three per kInt8FirstBlock rows.
  std::vector<float> max_error_norms, max_quantized_norms, max_rounding;
};

Int8Base QuantizeBase(const MatrixXfR& base) {
  const int64_t n = base.rows();
  const int64_t d = base.cols();
  const int64_t num_groups = (n + kInt8GroupRows - 1) / kInt8GroupRows;
  Int8Base result;
  result.padded_d = (d + 3) / 4 * 4;
  const int64_t group_bytes = kInt8GroupRows * result.padded_d;
  result.groups.resize(static_cast<size_t>(num_groups * group_bytes));
  result.scales.assign(static_cast<size_t>(num_groups * kInt8GroupRows), 0.0f);
  result.error_norms.resize(static_cast<size_t>(n));
  result.quantized_norms.resize(static_cast<size_t>(n));
  result.rounding.resize(static_cast<size_t>(n));
#pragma omp parallel if (num_groups >= kParallelMinQueries / kInt8GroupRows)
  {
    std::vector<int8_t> values(static_cast<size_t>(group_bytes));
#pragma omp for schedule(static)
    for (int64_t g = 0; g < num_groups; ++g) {
      std::fill(values.begin(), values.end(), int8_t{0});
      for (int64_t r = 0; r < kInt8GroupRows; ++r) {
        const int64_t row = g * kInt8GroupRows + r;
        if (row >= n) break;
        const Int8RowInfo info =
            QuantizeRowInt8(base.row(row).data(), d, result.padded_d, values.data() + r * result.padded_d);
        result.scales[row] = info.scale;
        result.error_norms[row] = info.error_norm;
        result.quantized_norms[row] = info.quantized_norm;
        result.rounding[row] = kInt8RoundingBound * std::max(info.norm, info.quantized_norm);
      }
      PackInt8Group(values.data(), result.padded_d, result.groups.data() + g * group_bytes);
    }
  }
  result.max_error_norms = BlockMaxima(result.error_norms, kInt8FirstBlock);
  result.max_quantized_norms = BlockMaxima(result.quantized_norms, kInt8FirstBlock);
  result.max_rounding = BlockMaxima(result.rounding, kInt8FirstBlock);
  return result;
}

// One query block quantized for the int8 kernel, with its hit buffers.
struct Int8QueryBlock {
  std::vector<int8_t> values;     // kDenseQueryBlock × padded_d
  std::vector<int32_t> sums;
  std::vector<float> scales;
  std::vector<float> norms;       // ‖c‖
  std::vector<float> error_norms; // ‖c − ĉ‖
  std::vector<float> max_norms;   // max(‖c‖, ‖ĉ‖)
  std::vector<float> thresholds;
  std::vector<int32_t> hit_rows;  // kDenseQueryBlock × kInt8BaseBlock
  std::vector<float> hit_scores;
  std::vector<int32_t> hit_counts;

  explicit Int8QueryBlock(int64_t padded_d)
      : values(static_cast<size_t>(kDenseQueryBlock * padded_d)),
        sums(kDenseQueryBlock),
        scales(kDenseQueryBlock),
        norms(kDenseQueryBlock),
        error_norms(kDenseQueryBlock),
        max_norms(kDenseQueryBlock),
        thresholds(kDenseQueryBlock),
        hit_rows(static_cast<size_t>(kDenseQueryBlock * kInt8BaseBlock)),
        hit_scores(static_cast<size_t>(kDenseQueryBlock * kInt8BaseBlock)),
        hit_counts(kDenseQueryBlock) {}

  void Quantize(const MatrixXfR& queries, int64_t q0, int64_t bq, int64_t padded_d) {
    for (int64_t i = 0; i < bq; ++i) {
      const Int8RowInfo info = QuantizeRowInt8(queries.row(q0 + i).data(), queries.cols(), padded_d,
                                               values.data() + i * padded_d);
      sums[i] = info.sum;
      scales[i] = info.scale;
      norms[i] = info.norm;
      error_norms[i] = info.error_norm;
      max_norms[i] = std::max(info.norm, info.quantized_norm);
    }
  }
};

// First pass on the int8 kernel (AVX-512 VNNI) over the quantized base.
std::vector<std::vector<Neighbor>> Int8ExactTopK(const ExactSearch& search) {
  const int64_t q = search.queries.rows();
  const int64_t n = search.base.rows();
  const Int8Base base = QuantizeBase(search.base);
  const int64_t padded_d = base.padded_d;
  std::vector<std::vector<Neighbor>> result(static_cast<size_t>(q));
  const int64_t num_blocks = (q + kDenseQueryBlock - 1) / kDenseQueryBlock;

#pragma omp parallel if (num_blocks > 1)
  {
    Int8QueryBlock block(padded_d);
    std::vector<CandidateFilter> filters;
#pragma omp for schedule(dynamic, 1)
    for (int64_t query_block = 0; query_block < num_blocks; ++query_block) {
      const int64_t q0 = query_block * kDenseQueryBlock;
      const int64_t bq = std::min(kDenseQueryBlock, q - q0);
      block.Quantize(search.queries, q0, bq, padded_d);
      filters.assign(static_cast<size_t>(bq), CandidateFilter(search.k, search.bounded));
      for (int64_t b0 = 0, bn = 0; b0 < n; b0 += bn) {
        bn = std::min(b0 == 0 ? kInt8FirstBlock : kInt8BaseBlock, n - b0);
        float max_error_norm = 0;
        float max_quantized_norm = 0;
        float max_rounding = 0;
        for (int64_t s = b0 / kInt8FirstBlock; s * kInt8FirstBlock < b0 + bn; ++s) {
          max_error_norm = std::max(max_error_norm, base.max_error_norms[s]);
          max_quantized_norm = std::max(max_quantized_norm, base.max_quantized_norms[s]);
          max_rounding = std::max(max_rounding, base.max_rounding[s]);
        }
        for (int64_t i = 0; i < bq; ++i) {
          const float max_bound = max_error_norm * block.norms[i] +
                                  max_quantized_norm * block.error_norms[i] +
                                  max_rounding * block.max_norms[i] + kTinyBound;
          block.thresholds[i] = PassThreshold(filters[i].threshold(), max_bound);
        }
        Int8ScanBlock scan_block;
        scan_block.groups = base.groups.data() + b0 * padded_d;
        scan_block.row_scales = base.scales.data() + b0;
        scan_block.num_groups = (bn + kInt8GroupRows - 1) / kInt8GroupRows;
        scan_block.valid_rows = bn;
        scan_block.padded_d = padded_d;
        Int8ScanQueries scan_queries;
        scan_queries.values = block.values.data();
        scan_queries.sums = block.sums.data();
        scan_queries.scales = block.scales.data();
        scan_queries.thresholds = block.thresholds.data();
        scan_queries.num_queries = bq;
        scan_queries.hit_rows = block.hit_rows.data();
        scan_queries.hit_scores = block.hit_scores.data();
        scan_queries.hit_counts = block.hit_counts.data();
        Int8ScanVnni(scan_block, scan_queries);

        const int64_t capacity = scan_block.num_groups * kInt8GroupRows;
        for (int64_t i = 0; i < bq; ++i) {
          const int64_t self_id = search.SelfId(q0 + i);
          const int32_t* hit_rows = block.hit_rows.data() + i * capacity;
          const float* hit_scores = block.hit_scores.data() + i * capacity;
          for (int32_t h = 0; h < block.hit_counts[i]; ++h) {
            const int64_t row = b0 + hit_rows[h];
            if (search.exclude_self && search.base_ids[row] == self_id) continue;
            const float bound = base.error_norms[row] * block.norms[i] +
                                base.quantized_norms[row] * block.error_norms[i] +
                                base.rounding[row] * block.max_norms[i] + kTinyBound;
            filters[i].Offer(row, hit_scores[h], bound);
          }
          filters[i].Compact(search.Scorer(q0 + i));
        }
      }
      for (int64_t i = 0; i < bq; ++i) result[q0 + i] = filters[i].Finish(search.Scorer(q0 + i));
    }
  }
  return result;
}

// All-pairs first pass on float32 products of block pairs, each scanned in both
// directions.
std::vector<std::vector<Neighbor>> FloatAllPairsTopK(const MatrixXfR& x,
                                                     const std::vector<int64_t>& ids, int k,
                                                     bool bounded) {
  const int64_t n = x.rows();
  const float relative = FloatRelativeBound(x.cols());
  const std::vector<float> norms = RowNorms(x);
  const std::vector<float> block_max_norms = BlockMaxima(norms, kAllPairsBlock);
  const ExactSearch search{x, ids, x, ids, k, bounded, true};
  const int64_t num_blocks = (n + kAllPairsBlock - 1) / kAllPairsBlock;
  // The block pairs (i, j) with i <= j, row-major.
  std::vector<std::pair<int64_t, int64_t>> tasks;
  for (int64_t i = 0; i < num_blocks; ++i) {
    for (int64_t j = i; j < num_blocks; ++j) tasks.emplace_back(i, j);
  }
  const int64_t num_tasks = static_cast<int64_t>(tasks.size());
  const int num_threads = num_tasks > 1 ? omp_get_max_threads() : 1;
  // per_thread[t][r]: the exact top-k of row r among the pairs thread t scanned.
  std::vector<std::vector<std::vector<Neighbor>>> per_thread(static_cast<size_t>(num_threads));

#pragma omp parallel num_threads(num_threads)
  {
    std::vector<CandidateFilter> filters(static_cast<size_t>(n), CandidateFilter(k, bounded));
    MatrixXfR scores(kAllPairsBlock, kAllPairsBlock);
    std::vector<float> column_pass;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < num_tasks; ++task) {
      const int64_t i0 = tasks[task].first * kAllPairsBlock;
      const int64_t j0 = tasks[task].second * kAllPairsBlock;
      const int64_t bi = std::min(kAllPairsBlock, n - i0);
      const int64_t bj = std::min(kAllPairsBlock, n - j0);
      auto block_scores = scores.topLeftCorner(bi, bj);
      block_scores.noalias() = x.middleRows(i0, bi) * x.middleRows(j0, bj).transpose();
      if (i0 == j0) {
        // A diagonal block already contains both directions of its pairs.
        for (int64_t r = 0; r < bi; ++r) {
          ScanFloatScores(scores.row(r).data(), bj, j0, norms.data() + j0,
                          block_max_norms[tasks[task].second], relative * norms[i0 + r],
                          ids.data() + j0, ids[i0 + r], true, &filters[i0 + r]);
        }
      } else {
        ScanBothDirections(scores, bi, bj, i0, j0, norms.data(), block_max_norms[tasks[task].first],
                           block_max_norms[tasks[task].second], relative, filters.data(),
                           &column_pass);
        for (int64_t c = 0; c < bj; ++c) filters[j0 + c].Compact(search.Scorer(j0 + c));
      }
      for (int64_t r = 0; r < bi; ++r) filters[i0 + r].Compact(search.Scorer(i0 + r));
    }
    std::vector<std::vector<Neighbor>>& lists = per_thread[omp_get_thread_num()];
    lists.resize(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) lists[r] = filters[r].Finish(search.Scorer(r));
  }

  // Exactly one thread scanned each pair, and each thread's list of a row is the exact
  // top-k of the pairs it scanned. The top-k of a set under the total order of
  // RanksBefore is unique, so merging gives the same lists for any thread count.
  std::vector<std::vector<Neighbor>> result(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) if (n >= kParallelMinQueries)
  for (int64_t r = 0; r < n; ++r) {
    std::vector<std::vector<Neighbor>> lists;
    lists.reserve(per_thread.size());
    for (const auto& thread_lists : per_thread) {
      // A thread the runtime did not start left its lists empty.
      if (!thread_lists.empty()) lists.push_back(thread_lists[r]);
    }
    result[r] = MergeTopK(lists, k, ScoreOrder::kLargerIsBetter);
  }
  return result;
}

}  // namespace

absl::Status DenseSearchOptions::Validate() const {
  if (k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("k is ", k, "; it must be at least 1"));
  }
  return absl::OkStatus();
}

MatrixXfR PrepareDenseRows(const MatrixXfR& x, DenseMetric metric) {
  MatrixXfR prepared = x;
  if (metric == DenseMetric::kInnerProduct) return prepared;
  const int64_t d = x.cols();
  for (int64_t i = 0; i < x.rows(); ++i) {
    float* row = prepared.row(i).data();
    if (metric == DenseMetric::kPearson && d > 0) {
      double sum = 0;
      for (int64_t j = 0; j < d; ++j) sum += row[j];
      const float mean = static_cast<float>(sum / static_cast<double>(d));
      for (int64_t j = 0; j < d; ++j) row[j] -= mean;
    }
    double sum_sq = 0;
    for (int64_t j = 0; j < d; ++j) sum_sq += static_cast<double>(row[j]) * row[j];
    // The zero rule: a zero row (or a constant row under Pearson) stays zero, so its
    // similarity to every row is 0.
    if (!(sum_sq > 0)) {
      std::fill(row, row + d, 0.0f);
      continue;
    }
    const float inverse = static_cast<float>(1.0 / std::sqrt(sum_sq));
    for (int64_t j = 0; j < d; ++j) row[j] *= inverse;
  }
  return prepared;
}

absl::StatusOr<std::vector<std::vector<Neighbor>>> ExactDenseTopK(
    const MatrixXfR& queries, const std::vector<int64_t>& query_ids, const MatrixXfR& base,
    const std::vector<int64_t>& base_ids, const DenseSearchOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (queries.cols() != base.cols()) {
    return absl::InvalidArgumentError(absl::StrCat("queries have d = ", queries.cols(),
                                                   " but base rows have d = ", base.cols()));
  }
  if (absl::Status status = CheckIds(base_ids, base.rows(), "base_ids"); !status.ok()) {
    return status;
  }
  if (options.exclude_self) {
    if (absl::Status status = CheckIds(query_ids, queries.rows(), "query_ids"); !status.ok()) {
      return status;
    }
  }
  if (absl::Status status = CheckFinite(queries, "queries"); !status.ok()) return status;
  if (absl::Status status = CheckFinite(base, "base"); !status.ok()) return status;
  absl::StatusOr<bool> int8 = UseInt8Kernel(options.kernel, queries.rows(), base.cols());
  if (!int8.ok()) return int8.status();

  const ExactSearch search{queries, query_ids, base, base_ids,
                           options.k, IsBounded(options.metric), options.exclude_self};
  return *int8 ? Int8ExactTopK(search) : FloatExactTopK(search);
}

absl::StatusOr<std::vector<std::vector<Neighbor>>> ExactDenseAllPairsTopK(
    const MatrixXfR& x, const std::vector<int64_t>& ids, const DenseSearchOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (absl::Status status = CheckIds(ids, x.rows(), "ids"); !status.ok()) return status;
  if (absl::Status status = CheckFinite(x, "x"); !status.ok()) return status;
  absl::StatusOr<bool> int8 = UseInt8Kernel(options.kernel, x.rows(), x.cols());
  if (!int8.ok()) return int8.status();

  const bool bounded = IsBounded(options.metric);
  if (*int8) return Int8ExactTopK(ExactSearch{x, ids, x, ids, options.k, bounded, true});
  return FloatAllPairsTopK(x, ids, options.k, bounded);
}

// ----------------------------------------------------------------------------------------
// Inverted file.

absl::StatusOr<IvfIndex> IvfIndex::Build(const MatrixXfR& centroids, bool cosine_centroids,
                                         const std::vector<int32_t>& assignments,
                                         const MatrixXfR& base,
                                         const std::vector<int64_t>& base_ids,
                                         DenseMetric metric) {
  const int64_t k = centroids.rows();
  if (k < 1) return absl::InvalidArgumentError("the model has no centroids");
  if (centroids.cols() != base.cols()) {
    return absl::InvalidArgumentError(absl::StrCat("centroids have d = ", centroids.cols(),
                                                   " but base rows have d = ", base.cols()));
  }
  if (static_cast<int64_t>(assignments.size()) != base.rows()) {
    return absl::InvalidArgumentError(absl::StrCat("assignments has ", assignments.size(),
                                                   " labels for ", base.rows(), " rows"));
  }
  if (absl::Status status = CheckIds(base_ids, base.rows(), "base_ids"); !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckFinite(centroids, "centroids"); !status.ok()) return status;
  if (absl::Status status = CheckFinite(base, "base"); !status.ok()) return status;
  for (size_t r = 0; r < assignments.size(); ++r) {
    if (assignments[r] < 0 || assignments[r] >= k) {
      return absl::InvalidArgumentError(absl::StrCat("assignment of row ", r, " is ",
                                                     assignments[r], ", outside [0, ", k, ")"));
    }
  }

  IvfIndex index;
  index.cosine_centroids_ = cosine_centroids;
  index.metric_ = metric;
  index.centroids_ = cosine_centroids ? PrepareDenseRows(centroids, DenseMetric::kCosine)
                                      : centroids;
  index.list_ptr_.assign(static_cast<size_t>(k) + 1, 0);
  for (int32_t label : assignments) ++index.list_ptr_[static_cast<size_t>(label) + 1];
  for (int64_t c = 0; c < k; ++c) index.list_ptr_[c + 1] += index.list_ptr_[c];
  std::vector<int64_t> next(index.list_ptr_.begin(), index.list_ptr_.end() - 1);
  index.rows_.resize(base.rows(), base.cols());
  index.ids_.resize(static_cast<size_t>(base.rows()));
  for (int64_t r = 0; r < base.rows(); ++r) {
    const int64_t slot = next[assignments[r]]++;
    index.rows_.row(slot) = base.row(r);
    index.ids_[slot] = base_ids[r];
  }
  index.norms_ = RowNorms(index.rows_);
  return index;
}

absl::StatusOr<std::vector<std::vector<Neighbor>>> IvfIndex::Search(
    const MatrixXfR& raw_queries, const MatrixXfR& prepared_queries,
    const std::vector<int64_t>& query_ids, const DenseSearchOptions& options, int nprobe) const {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (options.metric != metric_) {
    return absl::InvalidArgumentError(
        "the search metric differs from the metric the index was built for; rebuild the index");
  }
  if (nprobe < 1) {
    return absl::InvalidArgumentError(absl::StrCat("nprobe is ", nprobe, "; it must be at least 1"));
  }
  const int64_t d = centroids_.cols();
  if (raw_queries.cols() != d || prepared_queries.cols() != d ||
      raw_queries.rows() != prepared_queries.rows()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "queries are ", raw_queries.rows(), "×", raw_queries.cols(), " (raw) and ",
        prepared_queries.rows(), "×", prepared_queries.cols(), " (prepared); both must be q×", d));
  }
  if (options.exclude_self) {
    if (absl::Status status = CheckIds(query_ids, raw_queries.rows(), "query_ids");
        !status.ok()) {
      return status;
    }
  }
  if (absl::Status status = CheckFinite(raw_queries, "queries"); !status.ok()) return status;
  if (absl::Status status = CheckFinite(prepared_queries, "queries"); !status.ok()) return status;

  const int64_t q = raw_queries.rows();
  const int64_t k = centroids_.rows();
  const int64_t probes = std::min<int64_t>(nprobe, k);
  const bool bounded = IsBounded(metric_);
  const float relative = FloatRelativeBound(d);
  const std::vector<float> query_norms = RowNorms(prepared_queries);
  const ExactSearch search{prepared_queries, query_ids, rows_, ids_,
                           options.k, bounded, options.exclude_self};
  Eigen::VectorXf centroid_sq_norms = centroids_.rowwise().squaredNorm();
  std::vector<std::vector<Neighbor>> result(static_cast<size_t>(q));
  const int64_t num_blocks = (q + kIvfQueryBlock - 1) / kIvfQueryBlock;

#pragma omp parallel if (num_blocks > 1)
  {
    std::vector<CandidateFilter> filters;
    std::vector<int32_t> order(static_cast<size_t>(k));
    std::vector<std::vector<int32_t>> queries_of_list(static_cast<size_t>(k));
    MatrixXfR gathered;
    MatrixXfR scores;
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < num_blocks; ++block) {
      const int64_t q0 = block * kIvfQueryBlock;
      const int64_t bq = std::min(kIvfQueryBlock, q - q0);
      filters.assign(static_cast<size_t>(bq), CandidateFilter(options.k, bounded));
      for (std::vector<int32_t>& list : queries_of_list) list.clear();

      // Probes: the nprobe nearest centroids of each query under the model's distance,
      // ties by centroid index.
      MatrixXfR raw_block = raw_queries.middleRows(q0, bq);
      if (cosine_centroids_) raw_block = PrepareDenseRows(raw_block, DenseMetric::kCosine);
      const MatrixXfR centroid_dots = raw_block * centroids_.transpose();
      for (int64_t r = 0; r < bq; ++r) {
        auto distance = [&](int32_t c) {
          return cosine_centroids_ ? 1.0f - centroid_dots(r, c)
                                   : centroid_sq_norms[c] - 2.0f * centroid_dots(r, c);
        };
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + probes, order.end(),
                          [&](int32_t a, int32_t b) {
                            const float da = distance(a);
                            const float db = distance(b);
                            return da != db ? da < db : a < b;
                          });
        for (int64_t p = 0; p < probes; ++p) queries_of_list[order[p]].push_back(static_cast<int32_t>(r));
      }

      // Each probed list is multiplied once with all the block's queries that probe it.
      for (int64_t c = 0; c < k; ++c) {
        const std::vector<int32_t>& members = queries_of_list[c];
        const int64_t list_begin = list_ptr_[c];
        const int64_t list_size = list_ptr_[c + 1] - list_begin;
        if (members.empty() || list_size == 0) continue;
        const int64_t m = static_cast<int64_t>(members.size());
        gathered.resize(m, d);
        for (int64_t i = 0; i < m; ++i) gathered.row(i) = prepared_queries.row(q0 + members[i]);
        // Long lists are read in chunks, so the score buffer stays bounded.
        for (int64_t c0 = 0; c0 < list_size; c0 += kDenseBaseBlock) {
          const int64_t chunk = std::min(kDenseBaseBlock, list_size - c0);
          scores.resize(m, chunk);
          scores.noalias() = gathered * rows_.middleRows(list_begin + c0, chunk).transpose();
          const float* chunk_norms = norms_.data() + list_begin + c0;
          const float max_norm = *std::max_element(chunk_norms, chunk_norms + chunk);
          for (int64_t i = 0; i < m; ++i) {
            const int64_t query = q0 + members[i];
            ScanFloatScores(scores.row(i).data(), chunk, list_begin + c0, chunk_norms, max_norm,
                            relative * query_norms[query], ids_.data() + list_begin + c0,
                            search.SelfId(query), options.exclude_self, &filters[members[i]]);
            filters[members[i]].Compact(search.Scorer(query));
          }
        }
      }
      for (int64_t r = 0; r < bq; ++r) result[q0 + r] = filters[r].Finish(search.Scorer(q0 + r));
    }
  }
  return result;
}

}  // namespace cohort
