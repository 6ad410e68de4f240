// Cluster quality metrics computed exactly from per-cluster aggregates, so that a
// distributed job needs two passes over the shards and no n×n matrix:
//   pass 1: ClusterAggregates per shard (counts, sums, sums of squared norms), merged
//   pass 2: SpreadPartial per shard, given the merged aggregates, merged
// then FinishClusterMetrics. Labels are the clusters' indices in [0, k).
// Every metric matches scikit-learn's sklearn.metrics (1.2) on the same labels:
// inertia (KMeans.inertia_ for centroids = cluster means), calinski_harabasz_score,
// davies_bouldin_score and silhouette_score(metric="sqeuclidean").
#ifndef COHORT_CORE_CLUSTER_METRICS_H_
#define COHORT_CORE_CLUSTER_METRICS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/matrix.h"

namespace cohort {

// Per-cluster sums of one shard or of all shards. Merge in shard-id order.
struct ClusterAggregates {
  int k = 0;
  int d = 0;
  std::vector<int64_t> counts;        // k
  MatrixXdR sums;                     // k×d: Σ x over the cluster's rows
  std::vector<double> sq_norm_sums;   // k: Σ ‖x‖²
  // k: Σ ‖x − mean‖² over the cluster's rows (its within-cluster sum of squares).
  // Merge adds the two sums and n_a n_b / (n_a + n_b) · ‖mean_a − mean_b‖², which is
  // exact, so no value comes from the cancelling difference Σ ‖x‖² − ‖Σ x‖² / n.
  std::vector<double> sq_deviation_sums;
  // k: Σ w over the cluster's rows, filled only by producers of weighted aggregates
  // (BisectingShard::Split with sample weights), whose sums, sq_norm_sums and
  // sq_deviation_sums are then weighted too. Empty: every row has weight 1.
  std::vector<double> weight_sums;

  // REQUIRES: same k and d, or one side default-constructed.
  void Merge(const ClusterAggregates& other);
  int64_t total() const;
};

// Checks that each of the n labels is in [0, k).
// Errors: InvalidArgument naming the first row whose label is out of range, or k < 1.
[[nodiscard]] absl::Status ValidateLabels(const int32_t* labels, int64_t n, int k);

// Aggregates of rows x (n×d) with labels (n entries in [0, k)).
// Results do not depend on the number of OpenMP threads.
// REQUIRES: ValidateLabels(labels, n, k) is OK.
ClusterAggregates ComputeClusterAggregates(const MatrixXfR& x, const int32_t* labels, int k);

// One shard's contribution to pass 2.
struct SpreadPartial {
  std::vector<double> distance_sums;  // k: Σ ‖x − mean_j‖ (Euclidean) over cluster j
  double silhouette_sum = 0;          // Σ s(i) with squared Euclidean distances
  int64_t rows = 0;

  // REQUIRES: same k, or one side default-constructed.
  void Merge(const SpreadPartial& other);
};

// Pass 2 for rows x (n×d) with labels, given the aggregates merged over all shards.
// Results do not depend on the number of OpenMP threads.
// REQUIRES: merged includes these rows, and x.cols() == merged.d.
SpreadPartial ComputeSpreadPartial(const MatrixXfR& x, const int32_t* labels,
                                   const ClusterAggregates& merged);

// A metric that may be undefined for the given clustering, with the reason.
struct MetricValue {
  std::optional<double> value;
  std::string undefined_reason;  // set when value is empty
};

struct ClusterMetrics {
  int64_t n = 0;
  int k = 0;              // clusters with at least one row
  double inertia = 0;     // Σ ‖x − mean of its cluster‖²
  MetricValue calinski_harabasz;
  MetricValue davies_bouldin;
  MetricValue silhouette;  // squared Euclidean, exact
};

// Combines the merged passes. A metric is undefined (with a reason) when sklearn raises:
// fewer than 2 non-empty clusters, or as many clusters as rows. Singleton clusters
// contribute s(i) = 0 to the silhouette, as in sklearn. Empty clusters are ignored.
ClusterMetrics FinishClusterMetrics(const ClusterAggregates& aggregates,
                                    const SpreadPartial& spread);

// Silhouette on a sample (rows of x, m×d, with labels) under "euclidean" or "cosine"
// distance, O(m²); for the metrics that have no aggregate form. Errors are reported as
// an undefined value (fewer than 2 labels present, m < 2, unknown metric name).
MetricValue SampledSilhouette(const MatrixXfR& x, const std::vector<int32_t>& labels,
                              const std::string& metric);

}  // namespace cohort

#endif  // COHORT_CORE_CLUSTER_METRICS_H_
