#include "core/cluster_metrics.h"

#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"

namespace cohort {
namespace {

// Below this many rows, the per-row loops stay on the calling thread.
constexpr int64_t kMetricsParallelMinRows = 4096;
// Below this many sample rows, SampledSilhouette stays on the calling thread. Each row
// costs m·d operations, so the threshold is lower than for the per-row kernels.
constexpr int64_t kSampledParallelMinRows = 256;
// Rows per block of the silhouette kernel. Each block computes one matrix product of
// kSilhouetteBlockRows rows and its silhouette sum is stored per block, then the block
// sums are added in block order, so the result does not depend on the thread count.
constexpr int64_t kSilhouetteBlockRows = 256;
// Clusters per matrix product of the silhouette kernel, so that a product buffer holds
// at most kSilhouetteBlockRows × kSilhouetteBlockClusters doubles (1 MiB) whatever k is.
constexpr int64_t kSilhouetteBlockClusters = 512;
// scikit-learn 1.2 davies_bouldin_score returns 0 when np.allclose(values, 0) holds for
// the intra-cluster distances or for the centroid distances. With np.allclose's defaults
// that is |value| <= 1e-8 (atol) for every value.
constexpr double kAllCloseAbsoluteTolerance = 1e-8;

// The clusters [begin, end) owned by one thread of a team that splits k clusters.
struct ClusterRange {
  int64_t begin = 0;
  int64_t end = 0;
  bool Contains(int64_t label) const { return label >= begin && label < end; }
};

ClusterRange OwnClusters(int64_t k) {
  const int64_t thread = omp_get_thread_num();
  const int64_t num_threads = omp_get_num_threads();
  return {k * thread / num_threads, k * (thread + 1) / num_threads};
}

// Σ (row_c − center_c)² over the d columns, in double.
double SquaredDistanceTo(const float* row, const double* center, int64_t d) {
  double sum = 0;
  for (int64_t c = 0; c < d; ++c) {
    const double t = static_cast<double>(row[c]) - center[c];
    sum += t * t;
  }
  return sum;
}

// The reason why a metric is undefined for this many non-empty clusters and rows, or an
// empty string when it is defined. scikit-learn 1.2 (check_number_of_labels) raises
// "Number of labels is %d. Valid values are 2 to n_samples - 1 (inclusive)".
std::string LabelCountProblem(int64_t num_labels, int64_t n) {
  if (num_labels >= 2 && num_labels <= n - 1) return "";
  return absl::StrFormat(
      "undefined for %d non-empty clusters and %d rows: it needs 2 to n - 1 clusters",
      num_labels, n);
}

MetricValue Undefined(std::string reason) {
  MetricValue value;
  value.undefined_reason = std::move(reason);
  return value;
}

MetricValue Defined(double v) {
  MetricValue value;
  value.value = v;
  return value;
}

// s(i) = (b − a) / max(a, b) with scikit-learn's rule for 0 / 0: silhouette_samples
// replaces NaN by 0, which covers max(a, b) == 0.
double SilhouetteOf(double a, double b) {
  const double denominator = std::max(a, b);
  return denominator > 0 ? (b - a) / denominator : 0.0;
}

// Cluster statistics that pass 2 needs, derived once from the merged aggregates. Only
// non-empty clusters appear, and `cluster_of_label` maps a label to its index here or
// to -1.
struct PresentClusters {
  std::vector<int64_t> cluster_of_label;  // k
  std::vector<int64_t> counts;            // p
  MatrixXdR centered_means;               // p×d: cluster mean − global mean
  std::vector<double> centered_sq_norms;  // p
  std::vector<double> variances;          // p: Σ ‖x − mean‖² / count
  std::vector<double> global_mean;        // d
};

PresentClusters DescribePresentClusters(const ClusterAggregates& merged) {
  const int64_t k = merged.k;
  const int64_t d = merged.d;
  PresentClusters present;
  present.cluster_of_label.assign(k, -1);
  present.global_mean.assign(d, 0.0);

  int64_t n = 0;
  for (int64_t j = 0; j < k; ++j) {
    if (merged.counts[j] == 0) continue;
    present.cluster_of_label[j] = static_cast<int64_t>(present.counts.size());
    present.counts.push_back(merged.counts[j]);
    n += merged.counts[j];
    for (int64_t c = 0; c < d; ++c) present.global_mean[c] += merged.sums(j, c);
  }
  for (int64_t c = 0; c < d; ++c) present.global_mean[c] /= static_cast<double>(n);

  const int64_t p = static_cast<int64_t>(present.counts.size());
  present.centered_means.resize(p, d);
  present.centered_sq_norms.assign(p, 0.0);
  present.variances.assign(p, 0.0);
  for (int64_t j = 0; j < k; ++j) {
    const int64_t q = present.cluster_of_label[j];
    if (q < 0) continue;
    const double count = static_cast<double>(merged.counts[j]);
    double sq_norm = 0;
    for (int64_t c = 0; c < d; ++c) {
      const double v = merged.sums(j, c) / count - present.global_mean[c];
      present.centered_means(q, c) = v;
      sq_norm += v * v;
    }
    present.centered_sq_norms[q] = sq_norm;
    present.variances[q] = std::max(0.0, merged.sq_deviation_sums[j]) / count;
  }
  return present;
}

// Per-thread buffers of SilhouetteBlockSum, allocated before the parallel region.
struct SilhouetteScratch {
  SilhouetteScratch(int64_t d, int64_t cluster_block)
      : rows(MatrixXdR::Zero(kSilhouetteBlockRows, d)),
        products(kSilhouetteBlockRows, cluster_block),
        row_sq_norms(kSilhouetteBlockRows),
        nearest_other(kSilhouetteBlockRows) {}

  MatrixXdR rows;      // kSilhouetteBlockRows × d: rows − global mean, zero-padded
  MatrixXdR products;  // kSilhouetteBlockRows × min(p, kSilhouetteBlockClusters)
  std::vector<double> row_sq_norms;
  std::vector<double> nearest_other;  // b(i): min over other clusters of D(i, B)
};

// Σ s(i) over rows [row_begin, row_begin + num_rows) of x, num_rows <= kSilhouetteBlockRows.
//
// D(i, B), the mean squared distance of row i to the rows of cluster B, equals
// ‖x_i − mean_B‖² + variance_B. For the row's own cluster A, ‖x_i − mean_A‖² is the
// exact own_sq_dist[i] and a(i) = n_A · D(i, A) / (n_A − 1) leaves out the row's zero
// distance to itself. For the other clusters, ‖x_i − mean_B‖² comes from one matrix
// product as ‖x'‖² − 2 x'·m' + ‖m'‖², with x' and m' centered on the global mean so that
// a large common offset of the data does not cancel.
double SilhouetteBlockSum(const MatrixXfR& x, const int32_t* labels,
                          const std::vector<double>& own_sq_dist,
                          const PresentClusters& present, int64_t row_begin, int64_t num_rows,
                          SilhouetteScratch& scratch) {
  const int64_t d = x.cols();
  const int64_t p = static_cast<int64_t>(present.counts.size());

  // Every product has kSilhouetteBlockRows rows, so a row's distances do not depend on
  // where it sits in its block: a short last block is zero-padded.
  for (int64_t r = 0; r < kSilhouetteBlockRows; ++r) {
    double sq_norm = 0;
    for (int64_t c = 0; c < d; ++c) {
      const double v = r < num_rows ? static_cast<double>(x(row_begin + r, c)) -
                                          present.global_mean[c]
                                    : 0.0;
      scratch.rows(r, c) = v;
      sq_norm += v * v;
    }
    scratch.row_sq_norms[r] = sq_norm;
  }
  std::fill(scratch.nearest_other.begin(), scratch.nearest_other.end(),
            std::numeric_limits<double>::infinity());

  const int64_t cluster_block = scratch.products.cols();
  for (int64_t q_begin = 0; q_begin < p; q_begin += cluster_block) {
    const int64_t num_clusters = std::min(cluster_block, p - q_begin);
    auto products = scratch.products.leftCols(num_clusters);
    products.noalias() =
        scratch.rows * present.centered_means.middleRows(q_begin, num_clusters).transpose();

    for (int64_t r = 0; r < num_rows; ++r) {
      const int64_t own = present.cluster_of_label[labels[row_begin + r]];
      double nearest = scratch.nearest_other[r];
      for (int64_t j = 0; j < num_clusters; ++j) {
        const int64_t q = q_begin + j;
        if (q == own) continue;
        // The expansion cancels when x is close to the mean, and rounding can leave a
        // small negative value where the true squared distance is 0 or tiny.
        const double sq_dist = std::max(
            0.0, scratch.row_sq_norms[r] - 2.0 * products(r, j) + present.centered_sq_norms[q]);
        nearest = std::min(nearest, sq_dist + present.variances[q]);
      }
      scratch.nearest_other[r] = nearest;
    }
  }

  double sum = 0;
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t i = row_begin + r;
    const int64_t own = present.cluster_of_label[labels[i]];
    if (own < 0) continue;  // a label that is empty in the merged aggregates
    const int64_t own_count = present.counts[own];
    if (own_count < 2) continue;  // s(i) = 0 for a singleton cluster, as in scikit-learn
    const double own_mean_dist = own_sq_dist[i] + present.variances[own];
    const double a = static_cast<double>(own_count) * own_mean_dist /
                     static_cast<double>(own_count - 1);
    sum += SilhouetteOf(a, scratch.nearest_other[r]);
  }
  return sum;
}

// Σ s(i) over all rows of x, with squared Euclidean distances.
// REQUIRES: at least 2 present clusters.
double SilhouetteSum(const MatrixXfR& x, const int32_t* labels,
                     const std::vector<double>& own_sq_dist, const PresentClusters& present) {
  const int64_t n = x.rows();
  const int64_t p = static_cast<int64_t>(present.counts.size());
  const int64_t num_blocks = (n + kSilhouetteBlockRows - 1) / kSilhouetteBlockRows;
  const int64_t cluster_block = std::min(p, kSilhouetteBlockClusters);
  const bool parallel = n > kMetricsParallelMinRows;
  const int num_threads = parallel ? omp_get_max_threads() : 1;
  std::vector<SilhouetteScratch> scratch(num_threads, SilhouetteScratch(x.cols(), cluster_block));
  std::vector<double> block_sums(num_blocks, 0.0);

#pragma omp parallel num_threads(num_threads) if (parallel)
  {
    // Eigen parallelizes a large product itself when it runs on a one-thread team and
    // omp_get_max_threads() > 1, and its thread split changes rounding. This call sets
    // the limit for this thread's task only, so Eigen stays single-threaded here.
    omp_set_num_threads(1);
    SilhouetteScratch& own = scratch[omp_get_thread_num()];
#pragma omp for schedule(static)
    for (int64_t b = 0; b < num_blocks; ++b) {
      const int64_t row_begin = b * kSilhouetteBlockRows;
      const int64_t num_rows = std::min(kSilhouetteBlockRows, n - row_begin);
      block_sums[b] =
          SilhouetteBlockSum(x, labels, own_sq_dist, present, row_begin, num_rows, own);
    }
  }

  double total = 0;
  for (int64_t b = 0; b < num_blocks; ++b) total += block_sums[b];
  return total;
}

double CalinskiHarabasz(const ClusterAggregates& aggregates, int64_t n, int64_t num_present,
                        double within) {
  // scikit-learn 1.2 returns 1.0 when the within-cluster dispersion is exactly 0.
  if (within == 0.0) return 1.0;

  const int64_t d = aggregates.d;
  std::vector<double> global_mean(d, 0.0);
  for (int j = 0; j < aggregates.k; ++j) {
    for (int64_t c = 0; c < d; ++c) global_mean[c] += aggregates.sums(j, c);
  }
  for (int64_t c = 0; c < d; ++c) global_mean[c] /= static_cast<double>(n);

  double between = 0;
  for (int j = 0; j < aggregates.k; ++j) {
    const int64_t count = aggregates.counts[j];
    if (count == 0) continue;
    double sq_dist = 0;
    for (int64_t c = 0; c < d; ++c) {
      const double t = aggregates.sums(j, c) / static_cast<double>(count) - global_mean[c];
      sq_dist += t * t;
    }
    between += static_cast<double>(count) * sq_dist;
  }
  return between * static_cast<double>(n - num_present) /
         (within * static_cast<double>(num_present - 1));
}

// Davies–Bouldin index with scikit-learn 1.2's rules: 0 when every intra-cluster distance
// or every centroid distance is within 1e-8 of 0, and a centroid distance of exactly 0
// (coincident means) makes that pair's ratio 0 instead of infinite.
double DaviesBouldin(const ClusterAggregates& aggregates, const SpreadPartial& spread) {
  const int64_t d = aggregates.d;
  std::vector<int> present;
  for (int j = 0; j < aggregates.k; ++j) {
    if (aggregates.counts[j] > 0) present.push_back(j);
  }
  const int64_t p = static_cast<int64_t>(present.size());

  MatrixXdR means(p, d);
  std::vector<double> spreads(p);
  bool all_spreads_zero = true;
  for (int64_t q = 0; q < p; ++q) {
    const double count = static_cast<double>(aggregates.counts[present[q]]);
    for (int64_t c = 0; c < d; ++c) means(q, c) = aggregates.sums(present[q], c) / count;
    spreads[q] = spread.distance_sums[present[q]] / count;
    all_spreads_zero = all_spreads_zero && spreads[q] <= kAllCloseAbsoluteTolerance;
  }

  MatrixXdR distances = MatrixXdR::Zero(p, p);
  bool all_distances_zero = true;
  for (int64_t q = 0; q < p; ++q) {
    for (int64_t r = q + 1; r < p; ++r) {
      double sq_dist = 0;
      for (int64_t c = 0; c < d; ++c) {
        const double t = means(q, c) - means(r, c);
        sq_dist += t * t;
      }
      distances(q, r) = distances(r, q) = std::sqrt(sq_dist);
      all_distances_zero = all_distances_zero && distances(q, r) <= kAllCloseAbsoluteTolerance;
    }
  }
  if (all_spreads_zero || all_distances_zero) return 0.0;

  double total = 0;
  for (int64_t q = 0; q < p; ++q) {
    double worst = 0;
    for (int64_t r = 0; r < p; ++r) {
      if (r == q || distances(q, r) == 0.0) continue;
      worst = std::max(worst, (spreads[q] + spreads[r]) / distances(q, r));
    }
    total += worst;
  }
  return total / static_cast<double>(p);
}

}  // namespace

absl::Status ValidateLabels(const int32_t* labels, int64_t n, int k) {
  if (k < 1) return absl::InvalidArgumentError(absl::StrFormat("invalid k %d: k must be at least 1", k));
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] < 0 || labels[i] >= k) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "invalid label %d in row %d: labels must be in [0, %d)", labels[i], i, k));
    }
  }
  return absl::OkStatus();
}

void ClusterAggregates::Merge(const ClusterAggregates& other) {
  if (other.k == 0) return;
  if (k == 0) {
    *this = other;
    return;
  }
  // Weighted aggregates pool by weight, and a side without weight_sums has weight 1
  // per row. The row counts still add up.
  const bool weighted = !weight_sums.empty() || !other.weight_sums.empty();
  auto weight_of = [](const ClusterAggregates& a, int j) {
    return a.weight_sums.empty() ? static_cast<double>(a.counts[j]) : a.weight_sums[j];
  };
  if (weighted && weight_sums.empty()) {
    weight_sums.assign(counts.begin(), counts.end());
  }
  for (int j = 0; j < k; ++j) {
    const double own_weight = weight_of(*this, j);
    const double other_weight = weight_of(other, j);
    counts[j] += other.counts[j];
    if (weighted) weight_sums[j] += other_weight;
    if (other_weight <= 0) continue;

    // Pooled sum of squares: M = M_a + M_b + ‖mean_b − mean_a‖² · n_a n_b / (n_a + n_b).
    double correction = 0;
    if (own_weight > 0) {
      double sq_delta = 0;
      for (int c = 0; c < d; ++c) {
        const double delta = other.sums(j, c) / other_weight - sums(j, c) / own_weight;
        sq_delta += delta * delta;
      }
      correction = sq_delta * (own_weight * other_weight / (own_weight + other_weight));
    }
    sq_deviation_sums[j] = sq_deviation_sums[j] + other.sq_deviation_sums[j] + correction;
    sq_norm_sums[j] += other.sq_norm_sums[j];
    sums.row(j) += other.sums.row(j);
  }
}

int64_t ClusterAggregates::total() const {
  int64_t n = 0;
  for (int64_t count : counts) n += count;
  return n;
}

ClusterAggregates ComputeClusterAggregates(const MatrixXfR& x, const int32_t* labels, int k) {
  const int64_t n = x.rows();
  const int64_t d = x.cols();
  ClusterAggregates aggregates;
  aggregates.k = k;
  aggregates.d = static_cast<int>(d);
  aggregates.counts.assign(k, 0);
  aggregates.sums = MatrixXdR::Zero(k, d);
  aggregates.sq_norm_sums.assign(k, 0.0);
  aggregates.sq_deviation_sums.assign(k, 0.0);
  MatrixXdR means = MatrixXdR::Zero(k, d);

  // Each thread owns a contiguous range of clusters and scans all rows in order, so every
  // cluster adds its rows in row order whatever the thread count.
#pragma omp parallel if (n > kMetricsParallelMinRows)
  {
    const ClusterRange own = OwnClusters(k);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t label = labels[i];
      if (!own.Contains(label)) continue;
      const float* row = x.data() + i * d;
      double* sum = aggregates.sums.data() + label * d;
      double sq_norm = 0;
      for (int64_t c = 0; c < d; ++c) {
        const double v = row[c];
        sum[c] += v;
        sq_norm += v * v;
      }
      ++aggregates.counts[label];
      aggregates.sq_norm_sums[label] += sq_norm;
    }

    // The sums of this thread's clusters are final here, and no other thread reads them.
    for (int64_t j = own.begin; j < own.end; ++j) {
      if (aggregates.counts[j] > 0) {
        means.row(j) = aggregates.sums.row(j) / static_cast<double>(aggregates.counts[j]);
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t label = labels[i];
      if (!own.Contains(label)) continue;
      aggregates.sq_deviation_sums[label] +=
          SquaredDistanceTo(x.data() + i * d, means.data() + label * d, d);
    }
  }
  return aggregates;
}

void SpreadPartial::Merge(const SpreadPartial& other) {
  if (distance_sums.empty()) distance_sums.assign(other.distance_sums.size(), 0.0);
  for (size_t j = 0; j < other.distance_sums.size() && j < distance_sums.size(); ++j) {
    distance_sums[j] += other.distance_sums[j];
  }
  silhouette_sum += other.silhouette_sum;
  rows += other.rows;
}

SpreadPartial ComputeSpreadPartial(const MatrixXfR& x, const int32_t* labels,
                                   const ClusterAggregates& merged) {
  const int64_t n = x.rows();
  const int64_t d = x.cols();
  const int64_t k = merged.k;
  SpreadPartial partial;
  partial.distance_sums.assign(k, 0.0);
  partial.rows = n;
  if (n == 0) return partial;

  MatrixXdR means = MatrixXdR::Zero(k, d);
  for (int64_t j = 0; j < k; ++j) {
    if (merged.counts[j] > 0) {
      means.row(j) = merged.sums.row(j) / static_cast<double>(merged.counts[j]);
    }
  }

  // Squared distance of each row to its own cluster's mean, from exact differences. The
  // Euclidean distance is its square root, where an expansion's rounding error would
  // grow to about sqrt(rounding).
  std::vector<double> own_sq_dist(n);
#pragma omp parallel for schedule(static) if (n > kMetricsParallelMinRows)
  for (int64_t i = 0; i < n; ++i) {
    own_sq_dist[i] = SquaredDistanceTo(x.data() + i * d, means.data() + labels[i] * d, d);
  }
  for (int64_t i = 0; i < n; ++i) partial.distance_sums[labels[i]] += std::sqrt(own_sq_dist[i]);

  // With fewer than 2 non-empty clusters b(i) does not exist, and FinishClusterMetrics
  // reports the silhouette as undefined.
  const PresentClusters present = DescribePresentClusters(merged);
  if (present.counts.size() >= 2) {
    partial.silhouette_sum = SilhouetteSum(x, labels, own_sq_dist, present);
  }
  return partial;
}

ClusterMetrics FinishClusterMetrics(const ClusterAggregates& aggregates,
                                    const SpreadPartial& spread) {
  ClusterMetrics metrics;
  metrics.n = aggregates.total();
  for (int j = 0; j < aggregates.k; ++j) {
    if (aggregates.counts[j] == 0) continue;
    ++metrics.k;
    metrics.inertia += std::max(0.0, aggregates.sq_deviation_sums[j]);
  }

  const std::string count_problem = LabelCountProblem(metrics.k, metrics.n);
  if (!count_problem.empty()) {
    metrics.calinski_harabasz = Undefined(count_problem);
    metrics.davies_bouldin = Undefined(count_problem);
    metrics.silhouette = Undefined(count_problem);
    return metrics;
  }

  metrics.calinski_harabasz =
      Defined(CalinskiHarabasz(aggregates, metrics.n, metrics.k, metrics.inertia));

  if (spread.rows != metrics.n ||
      static_cast<int64_t>(spread.distance_sums.size()) != aggregates.k) {
    const std::string mismatch = absl::StrFormat(
        "undefined because pass 2 covered %d rows and %d clusters, but the aggregates have "
        "%d rows and %d clusters",
        spread.rows, spread.distance_sums.size(), metrics.n, aggregates.k);
    metrics.davies_bouldin = Undefined(mismatch);
    metrics.silhouette = Undefined(mismatch);
    return metrics;
  }
  metrics.davies_bouldin = Defined(DaviesBouldin(aggregates, spread));
  metrics.silhouette = Defined(spread.silhouette_sum / static_cast<double>(metrics.n));
  return metrics;
}

MetricValue SampledSilhouette(const MatrixXfR& x, const std::vector<int32_t>& labels,
                              const std::string& metric) {
  const bool cosine = metric == "cosine";
  if (!cosine && metric != "euclidean") {
    return Undefined(absl::StrFormat(
        "unknown silhouette metric \"%s\": use \"euclidean\" or \"cosine\"", metric));
  }
  const int64_t m = x.rows();
  const int64_t d = x.cols();
  if (static_cast<int64_t>(labels.size()) != m) {
    return Undefined(absl::StrFormat("labels has %d entries for a sample of %d rows",
                                     labels.size(), m));
  }

  // Labels may be any integers. As scikit-learn's LabelEncoder does, the distinct values
  // in ascending order become 0, 1, ...
  std::vector<int32_t> distinct = labels;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  const int64_t num_labels = static_cast<int64_t>(distinct.size());
  const std::string count_problem = LabelCountProblem(num_labels, m);
  if (!count_problem.empty()) return Undefined(count_problem);

  std::vector<int64_t> cluster(m);
  std::vector<int64_t> cluster_sizes(num_labels, 0);
  for (int64_t i = 0; i < m; ++i) {
    cluster[i] = std::lower_bound(distinct.begin(), distinct.end(), labels[i]) - distinct.begin();
    ++cluster_sizes[cluster[i]];
  }

  MatrixXdR rows = x.cast<double>();
  if (cosine) {
    // Rows are scaled to unit norm as scikit-learn 1.2's normalize does: a row whose norm
    // is below 10 · DBL_EPSILON (a zero row) is left as it is. Its cosine distance is then
    // 1 − 0 = 1 to every other row, also to another zero row, and 0 to itself.
    for (int64_t i = 0; i < m; ++i) {
      const double norm = rows.row(i).norm();
      if (norm >= 10 * DBL_EPSILON) rows.row(i) /= norm;
    }
  }

  const bool parallel = m > kSampledParallelMinRows;
  const int num_threads = parallel ? omp_get_max_threads() : 1;
  std::vector<std::vector<double>> cluster_sums(num_threads, std::vector<double>(num_labels));
  std::vector<double> silhouettes(m, 0.0);

#pragma omp parallel num_threads(num_threads) if (parallel)
  {
    std::vector<double>& sums = cluster_sums[omp_get_thread_num()];
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; ++i) {
      std::fill(sums.begin(), sums.end(), 0.0);
      const double* a = rows.data() + i * d;
      for (int64_t j = 0; j < m; ++j) {
        if (j == i) continue;  // the distance of a row to itself is 0
        const double* b = rows.data() + j * d;
        double distance = 0;
        if (cosine) {
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += a[c] * b[c];
          distance = std::clamp(1.0 - dot, 0.0, 2.0);  // scikit-learn clips to [0, 2]
        } else {
          for (int64_t c = 0; c < d; ++c) distance += (a[c] - b[c]) * (a[c] - b[c]);
          distance = std::sqrt(distance);
        }
        sums[cluster[j]] += distance;
      }

      const int64_t own = cluster[i];
      if (cluster_sizes[own] < 2) continue;  // s(i) = 0 for a singleton cluster
      const double intra = sums[own] / static_cast<double>(cluster_sizes[own] - 1);
      double nearest = std::numeric_limits<double>::infinity();
      for (int64_t q = 0; q < num_labels; ++q) {
        if (q == own) continue;
        nearest = std::min(nearest, sums[q] / static_cast<double>(cluster_sizes[q]));
      }
      silhouettes[i] = SilhouetteOf(intra, nearest);
    }
  }

  double total = 0;
  for (int64_t i = 0; i < m; ++i) total += silhouettes[i];
  return Defined(total / static_cast<double>(m));
}

}  // namespace cohort
