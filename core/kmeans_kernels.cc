#include "core/kmeans_kernels.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/block_gemm.h"
#include "core/row_source.h"

namespace cohort {
namespace {

// splitmix64 finalizer (Steele, Lea and Flood 2014): spreads nearby keys apart.
uint64_t SplitMix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Rows per chunk of TrialPotentials: the per-row distances of one chunk are computed in
// parallel into a buffer of kTrialChunkRows × m floats, then summed on one thread.
constexpr int64_t kTrialChunkRows = 16384;

// Independent accumulators of SquaredNorm and SquaredDistance. Lane l sums the terms of
// the columns j with j % kLanes == l, and the lanes are combined in a fixed tree, so a
// row's result does not depend on its address. Eigen 3.4 reductions start their packets
// at the first aligned element, so their order does. Without -ffast-math the compiler
// keeps this order.
constexpr int kLanes = 8;

float CombineLanes(const float* acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

float SquaredNorm(const float* a, int64_t d) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += a[j + l] * a[j + l];
  }
  for (int l = 0; j < d; ++j, ++l) acc[l] += a[j] * a[j];
  return CombineLanes(acc);
}

// Σ (a_j − b_j)² in float: exactly 0 when a and b are equal.
float SquaredDistance(const float* a, const float* b, int64_t d) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float t = a[j + l] - b[j + l];
      acc[l] += t * t;
    }
  }
  for (int l = 0; j < d; ++j, ++l) {
    const float t = a[j] - b[j];
    acc[l] += t * t;
  }
  return CombineLanes(acc);
}

// Centers per matrix product in the seeding distances: 2048 rows × 64 centers of
// products take 512 KB.
constexpr int64_t kSeedingCenterTile = 64;

// A set of centers (m×d) with the norms and bounds of the seeding distances' first pass.
struct SeedingCenters {
  explicit SeedingCenters(const MatrixXfR& c)
      : centers(c), sq_norms(RowSquaredNorms(c)), finite(c.allFinite()) {
    const float max_sq_norm = sq_norms.size() > 0 ? sq_norms.maxCoeff() : 0.0f;
    max_norm = std::sqrt(max_sq_norm) * (1.0f + 0x1.0p-10f);
  }
  const MatrixXfR& centers;
  Eigen::VectorXf sq_norms;
  bool finite;
  float max_norm;  // upper bound on the largest center norm
};

// For the rows [0, count) of `block` (count×d, the rows of a RowSource block) and every
// center c, calls visit(r, c, SquaredDistance(row r, c)) unless that distance is
// certainly above limit(r), in which case c is skipped. limit(r) may fall between calls.
// The first pass is a float matrix product. Its expansion g = ‖x‖² + (‖c‖² − 2x·c) is
// within E = 4·ExpansionErrorBound of the exact squared distance t. SquaredDistance sums
// d squares of rounded differences in lanes, so it is at least t·(1 − (d/8 + 7)·u). A
// center is skipped only when g > (limit / (1 − (d + 16)·u) + E)·(1 + 2^-20), with room
// for the rounding of that test. So the visits decide every minimum as visiting every
// center would. A limit that fell since the test only skips fewer centers.
template <typename Limit, typename Visit>
void ForEachPossiblyCloseCenter(const MatrixXfR& block, int64_t count, const SeedingCenters& s,
                                std::vector<float>& products, std::vector<float>& row_norms,
                                std::vector<float>& slacks, Limit limit, Visit visit) {
  const int64_t d = s.centers.cols();
  const int64_t m = s.centers.rows();
  const float lower_factor = 1.0f - static_cast<float>(d + 16) * 0x1.0p-24f;
  row_norms.resize(static_cast<size_t>(count));
  slacks.resize(static_cast<size_t>(count));
  for (int64_t r = 0; r < count; ++r) {
    const float x_norm = SquaredNorm(block.data() + r * d, d);
    row_norms[r] = x_norm;
    // A negative slack marks a row without a bound: every center is visited.
    slacks[r] = s.finite && std::isfinite(x_norm)
                    ? 4.0f * ExpansionErrorBound(d, std::sqrt(x_norm) * (1.0f + 0x1.0p-10f) +
                                                        s.max_norm)
                    : -1.0f;
  }
  products.resize(static_cast<size_t>(count * std::min(m, kSeedingCenterTile)));
  int32_t hits[kSeedingCenterTile];
  for (int64_t c_begin = 0; c_begin < m; c_begin += kSeedingCenterTile) {
    const int64_t tile = std::min(kSeedingCenterTile, m - c_begin);
    if (s.finite && count > 0) {
      MultiplyByTransposed(block.data(), count, s.centers.data() + c_begin * d, tile, d,
                           products.data(), tile);
    }
    const float* c_norms = s.sq_norms.data() + c_begin;
    for (int64_t r = 0; r < count; ++r) {
      const float* row = block.data() + r * d;
      int num_hits = 0;
      if (slacks[r] < 0) {
        for (int j = 0; j < tile; ++j) hits[num_hits++] = j;
      } else {
        const float x_norm = row_norms[r];
        const float bound = (limit(r) / lower_factor + slacks[r]) * (1.0f + 0x1.0p-20f);
        const float* p = products.data() + r * tile;
        for (int j = 0; j < tile; ++j) {
          hits[num_hits] = j;
          num_hits += x_norm + (c_norms[j] - 2.0f * p[j]) <= bound ? 1 : 0;
        }
      }
      for (int h = 0; h < num_hits; ++h) {
        const int64_t c = c_begin + hits[h];
        visit(r, c, SquaredDistance(row, s.centers.data() + c * d, d));
      }
    }
  }
}

// Rows ahead of the copy whose cache lines GatherRows requests.
constexpr int64_t kGatherPrefetchRows = 16;
// Rows from which GatherRows runs on the OpenMP threads.
constexpr int64_t kGatherParallelMinRows = 2048;

// Copies the rows of `source` at `rows` (any order, repeats allowed) into a
// rows.size() × d matrix. The rows sit at random places in storage much larger than the
// caches, so each copy waits on memory unless its lines were requested earlier.
MatrixXfR GatherRows(const RowSource& source, const std::vector<int64_t>& rows) {
  const int64_t m = static_cast<int64_t>(rows.size());
  MatrixXfR out(m, source.cols());
#pragma omp parallel for schedule(static) if (m >= kGatherParallelMinRows)
  for (int64_t j = 0; j < m; ++j) {
    if (j + kGatherPrefetchRows < m) source.PrefetchRow(rows[j + kGatherPrefetchRows]);
    source.CopyRows(rows[j], 1, out.row(j).data());
  }
  return out;
}

}  // namespace

float SeedingSquaredDistance(const float* a, const float* b, int64_t d) {
  return SquaredDistance(a, b, d);
}

Eigen::VectorXf RowSquaredNorms(const MatrixXfR& x) {
  const int64_t n = x.rows();
  const int64_t d = x.cols();
  Eigen::VectorXf norms(n);
#pragma omp parallel for schedule(static) if (n > kParallelMinRows)
  for (int64_t i = 0; i < n; ++i) norms[i] = SquaredNorm(x.data() + i * d, d);
  return norms;
}

int64_t NormalizeRows(MatrixXfR* x) {
  const Eigen::VectorXf sq_norms = RowSquaredNorms(*x);
  int64_t zero_rows = 0;
  for (int64_t i = 0; i < x->rows(); ++i) {
    if (sq_norms[i] > 0) {
      x->row(i) /= std::sqrt(sq_norms[i]);
    } else {
      x->row(i).setZero();  // also turns -0.0 into 0
      ++zero_rows;
    }
  }
  return zero_rows;
}

void AssignNearestCosine(const MatrixXfR& x_unit, const MatrixXfR& centroids_unit,
                         int32_t* labels, float* cos_dist) {
  const Eigen::VectorXf x_sq_norms = RowSquaredNorms(x_unit);
  AssignNearest(x_unit, x_sq_norms, centroids_unit, RowSquaredNorms(centroids_unit), labels,
                cos_dist);
  // For unit x and c, ‖x − c‖² = 2 (1 − x·c).
  for (int64_t i = 0; i < x_unit.rows(); ++i) {
    if (x_sq_norms[i] > 0) {
      cos_dist[i] *= 0.5f;
    } else {
      labels[i] = 0;
      cos_dist[i] = kZeroRowCosineDistance;
    }
  }
}

double KeyedUniform(uint64_t seed, uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  uint64_t h = SplitMix64(seed);
  h = SplitMix64(h ^ a);
  h = SplitMix64(h ^ b);
  h = SplitMix64(h ^ c);
  h = SplitMix64(h ^ d);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

absl::Status CheckSampleWeights(const MatrixXfR& x, const std::vector<float>& weights) {
  return CheckSampleWeights(x.rows(), weights);
}

absl::Status CheckSampleWeights(int64_t rows, const std::vector<float>& weights) {
  if (static_cast<int64_t>(weights.size()) != rows) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "weights has %d entries; it must have one per row (%d rows)", weights.size(), rows));
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!(std::isfinite(weights[i]) && weights[i] >= 0)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "weights[%d] = %g is invalid; weights must be finite and >= 0", i, weights[i]));
    }
  }
  return absl::OkStatus();
}

namespace {

// The rows of `base` scaled to unit norm as NormalizeRows scales them, row by row.
class NormalizedRowSource final : public RowSource {
 public:
  explicit NormalizedRowSource(const RowSource* base) : base_(base) {}

  int64_t rows() const override { return base_->rows(); }
  int cols() const override { return base_->cols(); }
  void CopyRows(int64_t begin, int64_t count, float* out) const override {
    base_->CopyRows(begin, count, out);
    const int64_t d = cols();
    for (int64_t r = 0; r < count; ++r) {
      float* row = out + r * d;
      const float sq_norm = SquaredNorm(row, d);
      if (sq_norm > 0) {
        const float norm = std::sqrt(sq_norm);
        for (int64_t j = 0; j < d; ++j) row[j] /= norm;
      } else {
        std::fill(row, row + d, 0.0f);  // also turns -0.0 into 0
      }
    }
  }

 private:
  const RowSource* base_;
};

// Blocks of kRowBlockRows rows whose Lloyd partials are held at once. The partials of a
// wave are merged in block order, so the result does not depend on the thread count,
// and memory stays at kLloydWaveBlocks × k × d doubles whatever n is. Each wave is one
// OpenMP region: with other processes on the cores, a thread that spins at the region's
// end (libgomp's default wait policy) can lose a time slice, so waves are kept long.
constexpr int64_t kLloydWaveBlocks = 32;

// (squared distance, row) ordered as LloydPartial::farthest: distance descending, then
// row ascending.
using FarRow = std::pair<float, int64_t>;
bool FartherFirst(const FarRow& a, const FarRow& b) {
  if (a.first != b.first) return a.first > b.first;
  return a.second < b.second;
}

// Keeps the first `keep` rows of `rows` in FartherFirst order.
void KeepFarthest(int64_t keep, std::vector<FarRow>* rows) {
  const int64_t kept = std::min<int64_t>(keep, static_cast<int64_t>(rows->size()));
  std::partial_sort(rows->begin(), rows->begin() + kept, rows->end(), FartherFirst);
  rows->resize(kept);
}

// One block's share of a Lloyd step.
struct LloydBlock {
  MatrixXdR sums;
  std::vector<int64_t> counts;
  std::vector<double> weighted_counts;
  double inertia = 0;
  std::vector<FarRow> farthest;
};

}  // namespace

KMeansShard::KMeansShard(int shard_id, const MatrixXfR* x) : KMeansShard(shard_id, x, nullptr) {}

KMeansShard::KMeansShard(int shard_id, const MatrixXfR* x, const std::vector<float>* weights)
    : shard_id_(shard_id),
      owned_rows_(std::make_unique<MatrixRowSource>(x)),
      rows_(owned_rows_.get()) {
  if (weights != nullptr) weights_ = *weights;
}

KMeansShard::KMeansShard(int shard_id, const RowSource* rows, const std::vector<float>* weights)
    : shard_id_(shard_id),
      rows_(rows) {
  if (weights != nullptr) weights_ = *weights;
}

void KMeansShard::UseCosineDistance() {
  if (normalized_rows_ != nullptr) return;
  normalized_rows_ = std::make_unique<NormalizedRowSource>(rows_);
  rows_ = normalized_rows_.get();
  const int64_t n = rows_->rows();
  const int64_t d = rows_->cols();
  std::vector<uint8_t> zero_row(n, 0);
  ForEachRowBlock(*rows_, 0, n, [&](int64_t begin, int64_t count, const MatrixXfR& block) {
    for (int64_t r = 0; r < count; ++r) {
      zero_row[begin + r] = SquaredNorm(block.data() + r * d, d) > 0 ? 0 : 1;
    }
  });
  for (int64_t i = 0; i < n; ++i) {
    if (zero_row[i] == 0) continue;
    if (weights_.empty()) weights_.assign(n, 1.0f);
    weights_[i] = 0.0f;
  }
  ResetMinDistances();
}

// NOTE: the moments count every row once, whatever its weight, so with sample weights
// the data scale (and so the tol rule) is that of the unweighted rows.
void KMeansShard::ColumnMoments(std::vector<double>* sum, std::vector<double>* sum_sq) const {
  const int64_t n = rows_->rows();
  const int64_t d = rows_->cols();
  // Per block: d sums then d sums of squares, merged in block order below.
  const int64_t num_blocks = (n + kRowBlockRows - 1) / kRowBlockRows;
  std::vector<double> block_sums(static_cast<size_t>(num_blocks * 2 * d), 0.0);
  ForEachRowBlock(*rows_, 0, n, [&](int64_t begin, int64_t count, const MatrixXfR& block) {
    double* block_sum = block_sums.data() + (begin / kRowBlockRows) * 2 * d;
    double* block_sum_sq = block_sum + d;
    for (int64_t r = 0; r < count; ++r) {
      const float* row = block.data() + r * d;
      for (int64_t j = 0; j < d; ++j) {
        const double v = row[j];
        block_sum[j] += v;
        block_sum_sq[j] += v * v;
      }
    }
  });
  sum->assign(d, 0.0);
  sum_sq->assign(d, 0.0);
  for (int64_t b = 0; b < num_blocks; ++b) {
    for (int64_t j = 0; j < d; ++j) {
      (*sum)[j] += block_sums[(b * 2) * d + j];
      (*sum_sq)[j] += block_sums[(b * 2 + 1) * d + j];
    }
  }
}

void KMeansShard::ResetMinDistances() {
  // No center: every D² is +infinity, which the empty vector stands for.
  min_sq_dist_.clear();
  min_sq_dist_.shrink_to_fit();
  has_centers_ = false;
}

float KMeansShard::MinSqDist(int64_t i) const {
  return min_sq_dist_.empty() ? std::numeric_limits<float>::infinity() : min_sq_dist_[i];
}

double KMeansShard::AddCenters(const MatrixXfR& centers) {
  const int64_t n = rows_->rows();
  const int64_t m = centers.rows();
  if (m > 0) {
    if (min_sq_dist_.empty()) {
      min_sq_dist_.assign(static_cast<size_t>(n), std::numeric_limits<float>::infinity());
    }
    const SeedingCenters seeding(centers);
    ForEachRowBlock(*rows_, 0, n, [&](int64_t begin, int64_t count, const MatrixXfR& block) {
      std::vector<float> products, row_norms, slacks;
      float* best = min_sq_dist_.data() + begin;
      ForEachPossiblyCloseCenter(
          block, count, seeding, products, row_norms, slacks,
          [&](int64_t r) { return best[r]; },
          [&](int64_t r, int64_t, float distance) { best[r] = std::min(best[r], distance); });
    });
    has_centers_ = true;
  }

  double total = 0;
  if (weights_.empty()) {
    if (!has_centers_) return static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) total += min_sq_dist_[i];
    return total;
  }
  for (int64_t i = 0; i < n; ++i) {
    // Skipping weight 0 also avoids 0 × infinity before the first center.
    if (weights_[i] == 0) continue;
    total += has_centers_ ? static_cast<double>(weights_[i]) * min_sq_dist_[i] : weights_[i];
  }
  return total;
}

std::vector<double> KMeansShard::TrialPotentials(const MatrixXfR& candidates) const {
  const int64_t n = rows_->rows();
  const int64_t m = candidates.rows();
  std::vector<double> potentials(m, 0.0);
  if (m == 0 || n == 0) return potentials;

  const int64_t chunk_rows = std::min(n, kTrialChunkRows);
  std::vector<float> dist(chunk_rows * m);
  const SeedingCenters seeding(candidates);
  for (int64_t first = 0; first < n; first += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, n - first);
    ForEachRowBlock(*rows_, first, first + rows,
                    [&](int64_t begin, int64_t count, const MatrixXfR& block) {
                      std::vector<float> products, row_norms, slacks;
                      float* out = dist.data() + (begin - first) * m;
                      for (int64_t r = 0; r < count; ++r) {
                        std::fill(out + r * m, out + (r + 1) * m, MinSqDist(begin + r));
                      }
                      ForEachPossiblyCloseCenter(
                          block, count, seeding, products, row_norms, slacks,
                          [&](int64_t r) { return MinSqDist(begin + r); },
                          [&](int64_t r, int64_t c, float distance) {
                            out[r * m + c] = std::min(out[r * m + c], distance);
                          });
                    });
    // Summed on one thread, rows in order, as AddCenters sums them.
    for (int64_t c = 0; c < m; ++c) {
      double sum = potentials[c];
      if (weights_.empty()) {
        for (int64_t r = 0; r < rows; ++r) sum += dist[r * m + c];
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          const float w = weights_[first + r];
          if (w != 0) sum += static_cast<double>(w) * dist[r * m + c];
        }
      }
      potentials[c] = sum;
    }
  }
  return potentials;
}

std::vector<float> KMeansShard::RowValues(int64_t row) const {
  std::vector<float> values(static_cast<size_t>(rows_->cols()));
  rows_->CopyRows(row, 1, values.data());
  return values;
}

ShardPoint KMeansShard::PickByOffset(double offset) const {
  const int64_t n = rows_->rows();
  ShardPoint point;
  point.shard_id = shard_id_;
  point.row = -1;

  const auto sampling_weight = [this](int64_t i) {
    const double w = Weight(i);
    if (w == 0) return 0.0;
    return has_centers_ ? w * static_cast<double>(MinSqDist(i)) : w;
  };
  double running = 0;
  int64_t last_positive = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double weight = sampling_weight(i);
    if (weight <= 0) continue;
    last_positive = i;
    running += weight;
    if (running > offset) break;
  }
  if (last_positive < 0) return point;

  point.row = last_positive;
  point.sq_dist = sampling_weight(last_positive);
  point.values = RowValues(last_positive);
  return point;
}

std::vector<ShardPoint> KMeansShard::SampleCandidates(uint64_t seed, int run, int round,
                                                      double oversampling,
                                                      double potential) const {
  std::vector<ShardPoint> picks;
  if (!(potential > 0) || !has_centers_) return picks;
  const int64_t n = rows_->rows();
  for (int64_t i = 0; i < n; ++i) {
    const double weighted = static_cast<double>(Weight(i)) * MinSqDist(i);
    if (!(weighted > 0)) continue;
    const double probability = std::min(1.0, oversampling * weighted / potential);
    const double u = KeyedUniform(seed, static_cast<uint64_t>(run), static_cast<uint64_t>(round),
                                  static_cast<uint64_t>(shard_id_), static_cast<uint64_t>(i));
    if (u >= probability) continue;
    ShardPoint point;
    point.shard_id = shard_id_;
    point.row = i;
    point.sq_dist = MinSqDist(i);
    point.values = RowValues(i);
    picks.push_back(std::move(point));
  }
  return picks;
}

LloydPartial KMeansShard::LloydStep(const MatrixXfR& centroids, int num_farthest) const {
  const int64_t n = rows_->rows();
  const int64_t d = rows_->cols();
  const int64_t k = centroids.rows();
  const bool weighted = !weights_.empty();
  const Eigen::VectorXf c_sq_norms = RowSquaredNorms(centroids);

  LloydPartial partial;
  partial.shard_id = shard_id_;
  partial.sums = MatrixXdR::Zero(k, d);
  partial.counts.assign(k, 0);
  partial.weighted_counts.assign(k, 0.0);
  std::vector<FarRow> farthest;

  // Rows are read once, block by block: each block is assigned and summed by one thread,
  // rows in order, and the blocks of a wave are merged in block order.
  // The centroids are prepared for the assignment (quantized, packed) once per step.
  const CentroidAssigner assigner(centroids, c_sq_norms);
  const int64_t num_blocks = (n + kRowBlockRows - 1) / kRowBlockRows;
  for (int64_t wave = 0; wave < num_blocks; wave += kLloydWaveBlocks) {
    const int64_t wave_blocks = std::min(kLloydWaveBlocks, num_blocks - wave);
    std::vector<LloydBlock> blocks(static_cast<size_t>(wave_blocks));
    const int64_t first = wave * kRowBlockRows;
    const int64_t last = std::min(n, (wave + wave_blocks) * kRowBlockRows);
    ForEachRowBlock(*rows_, first, last, [&](int64_t begin, int64_t count, const MatrixXfR& x) {
      LloydBlock& out = blocks[(begin - first) / kRowBlockRows];
      out.sums = MatrixXdR::Zero(k, d);
      out.counts.assign(k, 0);
      out.weighted_counts.assign(k, 0.0);
      std::vector<int32_t> labels(count);
      std::vector<float> sq_dist(count);
      assigner.Assign(x, RowSquaredNorms(x), 0, count, labels.data(), sq_dist.data());
      for (int64_t r = 0; r < count; ++r) {
        const double w = Weight(begin + r);
        if (w == 0) continue;
        const int32_t label = labels[r];
        const float* row = x.data() + r * d;
        double* sum = out.sums.data() + label * d;
        ++out.counts[label];
        out.weighted_counts[label] += w;
        out.inertia += weighted ? w * sq_dist[r] : sq_dist[r];
        if (weighted) {
          for (int64_t j = 0; j < d; ++j) sum[j] += w * row[j];
        } else {
          for (int64_t j = 0; j < d; ++j) sum[j] += row[j];
        }
        if (num_farthest > 0) out.farthest.emplace_back(sq_dist[r], begin + r);
      }
      KeepFarthest(num_farthest, &out.farthest);
    });
    for (const LloydBlock& block : blocks) {
      partial.sums += block.sums;
      for (int64_t j = 0; j < k; ++j) {
        partial.counts[j] += block.counts[j];
        partial.weighted_counts[j] += block.weighted_counts[j];
      }
      partial.inertia += block.inertia;
      farthest.insert(farthest.end(), block.farthest.begin(), block.farthest.end());
    }
    KeepFarthest(num_farthest, &farthest);
  }

  partial.farthest.reserve(farthest.size());
  for (const FarRow& far : farthest) {
    ShardPoint point;
    point.shard_id = shard_id_;
    point.row = far.second;
    point.sq_dist = far.first;
    point.values = RowValues(far.second);
    partial.farthest.push_back(std::move(point));
  }
  return partial;
}

MiniBatchPartial KMeansShard::MiniBatchStep(const MatrixXfR& centroids, uint64_t seed, int run,
                                            int64_t step, int64_t batch_rows,
                                            int num_points) const {
  const int64_t n = rows_->rows();
  const int64_t d = rows_->cols();
  const int64_t k = centroids.rows();
  MiniBatchPartial partial;
  partial.shard_id = shard_id_;
  partial.sums = MatrixXdR::Zero(k, d);
  partial.counts.assign(k, 0);
  partial.weighted_counts.assign(k, 0.0);
  if (n == 0 || batch_rows <= 0) return partial;

  std::vector<int64_t> rows(batch_rows);
  for (int64_t j = 0; j < batch_rows; ++j) {
    const double u = KeyedUniform(seed, static_cast<uint64_t>(run), static_cast<uint64_t>(step),
                                  static_cast<uint64_t>(shard_id_), static_cast<uint64_t>(j));
    rows[j] = std::min(n - 1, static_cast<int64_t>(u * static_cast<double>(n)));
  }
  const MatrixXfR batch = GatherRows(*rows_, rows);

  std::vector<int32_t> labels(batch_rows);
  std::vector<float> sq_dist(batch_rows);
  AssignNearest(batch, RowSquaredNorms(batch), centroids, RowSquaredNorms(centroids),
                labels.data(), sq_dist.data());

  for (int64_t j = 0; j < batch_rows; ++j) {
    const double w = Weight(rows[j]);
    if (w == 0) continue;
    const int32_t label = labels[j];
    ++partial.counts[label];
    partial.weighted_counts[label] += w;
    partial.inertia += w * sq_dist[j];
    double* sum = partial.sums.data() + label * d;
    for (int64_t c = 0; c < d; ++c) sum[c] += w * batch(j, c);
    if (static_cast<int>(partial.points.size()) < num_points) {
      ShardPoint point;
      point.shard_id = shard_id_;
      point.row = rows[j];
      point.sq_dist = sq_dist[j];
      point.values.assign(batch.row(j).data(), batch.row(j).data() + d);
      partial.points.push_back(std::move(point));
    }
  }
  return partial;
}

void KMeansShard::Assign(const MatrixXfR& centroids, std::vector<int32_t>* labels,
                         std::vector<float>* sq_dist) const {
  const int64_t n = rows_->rows();
  labels->resize(n);
  sq_dist->resize(n);
  const bool use_cosine = cosine();
  const Eigen::VectorXf c_sq_norms = RowSquaredNorms(centroids);
  // AssignNearest and AssignNearestCosine give each row a result that depends only on
  // the row, so assigning block by block equals assigning all rows at once.
  ForEachRowBlock(*rows_, 0, n, [&](int64_t begin, int64_t count, const MatrixXfR& x) {
    if (use_cosine) {
      AssignNearestCosine(x, centroids, labels->data() + begin, sq_dist->data() + begin);
    } else {
      AssignNearest(x, RowSquaredNorms(x), centroids, c_sq_norms, labels->data() + begin,
                    sq_dist->data() + begin);
    }
  });
}

}  // namespace cohort
