#include "core/kmeans_kernels.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/strings/str_format.h"

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

// Rows per chunk of LloydStep: 16 MiB of 64-column rows, which stay in a last-level cache
// of 32 MiB between the assignment and the sums. Each chunk ends two OpenMP regions. With
// other processes on the cores, a thread that spins at a barrier (libgomp's default wait
// policy) can wait a time slice for its partner. At load average 11 on 2 CPUs, chunks of
// 16,384 rows made an iteration about 3 times slower than chunks of this size.
constexpr int64_t kLloydChunkRows = 65536;

// Rows ahead of the copy whose cache lines GatherRows requests.
constexpr int64_t kGatherPrefetchRows = 16;
// Rows from which GatherRows runs on the OpenMP threads.
constexpr int64_t kGatherParallelMinRows = 2048;

// Copies the rows of x at `rows` (any order, repeats allowed) into a rows.size() × d
// matrix. The rows sit at random places in a matrix much larger than the caches, so each
// copy waits on memory unless its lines were requested earlier.
MatrixXfR GatherRows(const MatrixXfR& x, const std::vector<int64_t>& rows) {
  const int64_t m = static_cast<int64_t>(rows.size());
  const int64_t d = x.cols();
  MatrixXfR out(m, d);
  constexpr int64_t kFloatsPerLine = 64 / sizeof(float);
#pragma omp parallel for schedule(static) if (m >= kGatherParallelMinRows)
  for (int64_t j = 0; j < m; ++j) {
    if (j + kGatherPrefetchRows < m) {
      const float* ahead = x.data() + rows[j + kGatherPrefetchRows] * d;
      for (int64_t t = 0; t < d; t += kFloatsPerLine) __builtin_prefetch(ahead + t);
    }
    std::copy_n(x.data() + rows[j] * d, d, out.data() + j * d);
  }
  return out;
}

}  // namespace

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
  if (static_cast<int64_t>(weights.size()) != x.rows()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "weights has %d entries; it must have one per row (%d rows)", weights.size(), x.rows()));
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!(std::isfinite(weights[i]) && weights[i] >= 0)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "weights[%d] = %g is invalid; weights must be finite and >= 0", i, weights[i]));
    }
  }
  return absl::OkStatus();
}

KMeansShard::KMeansShard(int shard_id, const MatrixXfR* x)
    : shard_id_(shard_id),
      x_(x),
      x_sq_norms_(RowSquaredNorms(*x)),
      min_sq_dist_(x->rows(), std::numeric_limits<float>::infinity()) {}

KMeansShard::KMeansShard(int shard_id, const MatrixXfR* x, const std::vector<float>* weights)
    : KMeansShard(shard_id, x) {
  if (weights != nullptr) weights_ = *weights;
}

void KMeansShard::UseCosineDistance() {
  if (normalized_ != nullptr) return;
  normalized_ = std::make_unique<MatrixXfR>(*x_);
  NormalizeRows(normalized_.get());
  const int64_t n = x_->rows();
  x_ = normalized_.get();
  x_sq_norms_ = RowSquaredNorms(*x_);
  for (int64_t i = 0; i < n; ++i) {
    if (x_sq_norms_[i] > 0) continue;
    if (weights_.empty()) weights_.assign(n, 1.0f);
    weights_[i] = 0.0f;
  }
  ResetMinDistances();
}

// NOTE: the moments count every row once, whatever its weight, so with sample weights
// the data scale (and so the tol rule) is that of the unweighted rows.
void KMeansShard::ColumnMoments(std::vector<double>* sum, std::vector<double>* sum_sq) const {
  const int64_t n = x_->rows();
  const int64_t d = x_->cols();
  sum->assign(d, 0.0);
  sum_sq->assign(d, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x_->data() + i * d;
    for (int64_t j = 0; j < d; ++j) {
      const double v = row[j];
      (*sum)[j] += v;
      (*sum_sq)[j] += v * v;
    }
  }
}

void KMeansShard::ResetMinDistances() {
  std::fill(min_sq_dist_.begin(), min_sq_dist_.end(), std::numeric_limits<float>::infinity());
  has_centers_ = false;
}

double KMeansShard::AddCenters(const MatrixXfR& centers) {
  const int64_t n = x_->rows();
  const int64_t d = x_->cols();
  const int64_t m = centers.rows();
  if (m > 0) {
#pragma omp parallel for schedule(static) if (n > kParallelMinRows)
    for (int64_t i = 0; i < n; ++i) {
      const float* row = x_->data() + i * d;
      float best = min_sq_dist_[i];
      for (int64_t c = 0; c < m; ++c) {
        best = std::min(best, SquaredDistance(row, centers.data() + c * d, d));
      }
      min_sq_dist_[i] = best;
    }
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
  const int64_t n = x_->rows();
  const int64_t d = x_->cols();
  const int64_t m = candidates.rows();
  std::vector<double> potentials(m, 0.0);
  if (m == 0 || n == 0) return potentials;

  const int64_t chunk_rows = std::min(n, kTrialChunkRows);
  std::vector<float> dist(chunk_rows * m);
  for (int64_t begin = 0; begin < n; begin += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, n - begin);
#pragma omp parallel for schedule(static) if (rows > kParallelMinRows)
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x_->data() + (begin + r) * d;
      for (int64_t c = 0; c < m; ++c) {
        dist[r * m + c] =
            std::min(min_sq_dist_[begin + r], SquaredDistance(row, candidates.data() + c * d, d));
      }
    }
    // Summed on one thread, rows in order, as AddCenters sums them.
    for (int64_t c = 0; c < m; ++c) {
      double sum = potentials[c];
      if (weights_.empty()) {
        for (int64_t r = 0; r < rows; ++r) sum += dist[r * m + c];
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          const float w = weights_[begin + r];
          if (w != 0) sum += static_cast<double>(w) * dist[r * m + c];
        }
      }
      potentials[c] = sum;
    }
  }
  return potentials;
}

ShardPoint KMeansShard::PickByOffset(double offset) const {
  const int64_t n = x_->rows();
  ShardPoint point;
  point.shard_id = shard_id_;
  point.row = -1;

  const auto sampling_weight = [this](int64_t i) {
    const double w = Weight(i);
    if (w == 0) return 0.0;
    return has_centers_ ? w * static_cast<double>(min_sq_dist_[i]) : w;
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
  const float* row = x_->data() + last_positive * x_->cols();
  point.values.assign(row, row + x_->cols());
  return point;
}

std::vector<ShardPoint> KMeansShard::SampleCandidates(uint64_t seed, int run, int round,
                                                      double oversampling,
                                                      double potential) const {
  std::vector<ShardPoint> picks;
  if (!(potential > 0) || !has_centers_) return picks;
  const int64_t n = x_->rows();
  const int64_t d = x_->cols();
  for (int64_t i = 0; i < n; ++i) {
    const double weighted = static_cast<double>(Weight(i)) * min_sq_dist_[i];
    if (!(weighted > 0)) continue;
    const double probability = std::min(1.0, oversampling * weighted / potential);
    const double u = KeyedUniform(seed, static_cast<uint64_t>(run), static_cast<uint64_t>(round),
                                  static_cast<uint64_t>(shard_id_), static_cast<uint64_t>(i));
    if (u >= probability) continue;
    ShardPoint point;
    point.shard_id = shard_id_;
    point.row = i;
    point.sq_dist = min_sq_dist_[i];
    const float* row = x_->data() + i * d;
    point.values.assign(row, row + d);
    picks.push_back(std::move(point));
  }
  return picks;
}

LloydPartial KMeansShard::LloydStep(const MatrixXfR& centroids, int num_farthest) const {
  const int64_t n = x_->rows();
  const int64_t d = x_->cols();
  const int64_t k = centroids.rows();
  const bool weighted = !weights_.empty();

  LloydPartial partial;
  partial.shard_id = shard_id_;
  partial.sums = MatrixXdR::Zero(k, d);
  partial.counts.assign(k, 0);
  partial.weighted_counts.assign(k, 0.0);

  // Rows are assigned and summed chunk by chunk, so the sums read each chunk from the
  // cache right after its assignment instead of reading x from memory a second time.
  std::vector<int32_t> labels(n);
  std::vector<float> sq_dist(n);
  const Eigen::VectorXf c_sq_norms = RowSquaredNorms(centroids);
  const CentroidAssigner assigner(centroids, c_sq_norms);
  for (int64_t begin = 0; begin < n; begin += kLloydChunkRows) {
    const int64_t end = std::min(n, begin + kLloydChunkRows);
    assigner.Assign(*x_, x_sq_norms_, begin, end, labels.data(), sq_dist.data());

    // Each thread owns a contiguous range of centroids and scans the chunk's rows in
    // order, so the sum of every centroid adds its rows in row order whatever the thread
    // count.
#pragma omp parallel if (n > kParallelMinRows)
    {
      const int64_t thread = omp_get_thread_num();
      const int64_t num_threads = omp_get_num_threads();
      const int64_t own_begin = k * thread / num_threads;
      const int64_t own_end = k * (thread + 1) / num_threads;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t label = labels[i];
        if (label < own_begin || label >= own_end) continue;
        const float* row = x_->data() + i * d;
        double* sum = partial.sums.data() + label * d;
        if (!weighted) {
          ++partial.counts[label];
          for (int64_t j = 0; j < d; ++j) sum[j] += row[j];
          continue;
        }
        const double w = weights_[i];
        if (w == 0) continue;
        ++partial.counts[label];
        partial.weighted_counts[label] += w;
        for (int64_t j = 0; j < d; ++j) sum[j] += w * row[j];
      }
    }
  }
  if (!weighted) {
    for (int64_t j = 0; j < k; ++j) partial.weighted_counts[j] = static_cast<double>(partial.counts[j]);
  }

  if (!weighted) {
    for (int64_t i = 0; i < n; ++i) partial.inertia += sq_dist[i];
  } else {
    for (int64_t i = 0; i < n; ++i) {
      if (weights_[i] != 0) partial.inertia += static_cast<double>(weights_[i]) * sq_dist[i];
    }
  }

  if (num_farthest <= 0) return partial;
  // Rows of weight 0 are never reseeding candidates.
  std::vector<int64_t> order;
  order.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (Weight(i) != 0) order.push_back(i);
  }
  const int64_t num_kept =
      std::min<int64_t>(std::max(num_farthest, 0), static_cast<int64_t>(order.size()));
  if (num_kept > 0) {
    std::partial_sort(order.begin(), order.begin() + num_kept, order.end(),
                      [&sq_dist](int64_t a, int64_t b) {
                        if (sq_dist[a] != sq_dist[b]) return sq_dist[a] > sq_dist[b];
                        return a < b;
                      });
    partial.farthest.reserve(num_kept);
    for (int64_t r = 0; r < num_kept; ++r) {
      ShardPoint point;
      point.shard_id = shard_id_;
      point.row = order[r];
      point.sq_dist = sq_dist[order[r]];
      const float* row = x_->data() + order[r] * d;
      point.values.assign(row, row + d);
      partial.farthest.push_back(std::move(point));
    }
  }
  return partial;
}

MiniBatchPartial KMeansShard::MiniBatchStep(const MatrixXfR& centroids, uint64_t seed, int run,
                                            int64_t step, int64_t batch_rows,
                                            int num_points) const {
  const int64_t n = x_->rows();
  const int64_t d = x_->cols();
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
  const MatrixXfR batch = GatherRows(*x_, rows);
  Eigen::VectorXf batch_sq_norms(batch_rows);
  for (int64_t j = 0; j < batch_rows; ++j) batch_sq_norms[j] = x_sq_norms_[rows[j]];

  std::vector<int32_t> labels(batch_rows);
  std::vector<float> sq_dist(batch_rows);
  AssignNearest(batch, batch_sq_norms, centroids, RowSquaredNorms(centroids), labels.data(),
                sq_dist.data());

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

void KMeansShard::AssignSquared(const MatrixXfR& centroids, std::vector<int32_t>* labels,
                                std::vector<float>* sq_dist) const {
  labels->resize(x_->rows());
  sq_dist->resize(x_->rows());
  const Eigen::VectorXf c_sq_norms = RowSquaredNorms(centroids);
  AssignNearest(*x_, x_sq_norms_, centroids, c_sq_norms, labels->data(), sq_dist->data());
}

void KMeansShard::Assign(const MatrixXfR& centroids, std::vector<int32_t>* labels,
                         std::vector<float>* sq_dist) const {
  if (!cosine()) {
    AssignSquared(centroids, labels, sq_dist);
    return;
  }
  labels->resize(x_->rows());
  sq_dist->resize(x_->rows());
  AssignNearestCosine(*x_, centroids, labels->data(), sq_dist->data());
}

}  // namespace cohort
