// Distance kernels and per-shard K-means steps. Every function here is deterministic:
// results do not depend on the number of OpenMP threads.
#ifndef COHORT_CORE_KMEANS_KERNELS_H_
#define COHORT_CORE_KMEANS_KERNELS_H_

#include <cstdint>
#include <vector>

#include "core/matrix.h"

namespace cohort {

// Rows per block of the assignment kernel. Each block computes one (block × k) matrix
// product, so results do not depend on how blocks are spread over threads.
inline constexpr int64_t kAssignBlockRows = 256;
// Centroids per matrix product of the assignment kernel. A product buffer holds
// kAssignBlockRows × kAssignBlockCentroids floats (512 KiB), whatever k is.
inline constexpr int64_t kAssignBlockCentroids = 512;
// Below this many rows, the kernels stay on the calling thread.
inline constexpr int64_t kParallelMinRows = 4096;

// Squared Euclidean norms of the rows of x (n×d), accumulated in float.
Eigen::VectorXf RowSquaredNorms(const MatrixXfR& x);

// For each row i of x (n×d) finds the nearest centroid among centroids (k×d):
// labels[i] in [0, k) (ties → lowest index) and sq_dist[i] = max(0, ‖x_i‖² − 2 x_i·c + ‖c‖²).
// x_sq_norms and c_sq_norms are RowSquaredNorms of x and centroids.
// The result of a row depends only on that row and the centroids: not on its position in
// x and not on the number of OpenMP threads.
// NOTE: this does not hold after Eigen::setNbThreads(t) with t > 1, because Eigen then
// splits a product over threads, which changes how its elements are computed.
// REQUIRES: k >= 1, x.cols() == centroids.cols(), labels and sq_dist hold n entries.
void AssignNearest(const MatrixXfR& x, const Eigen::VectorXf& x_sq_norms,
                   const MatrixXfR& centroids, const Eigen::VectorXf& c_sq_norms,
                   int32_t* labels, float* sq_dist);

// A data row chosen by a shard: where it is and its values.
struct ShardPoint {
  int shard_id = 0;
  int64_t row = 0;          // row index inside the shard
  double sq_dist = 0;       // meaning depends on the producer
  std::vector<float> values;  // length d
};

// One shard's contribution to a Lloyd update.
struct LloydPartial {
  int shard_id = 0;
  MatrixXdR sums;               // k×d: per-centroid sum of assigned rows
  std::vector<int64_t> counts;  // k
  double inertia = 0;           // sum of squared distances to the nearest centroid
  // Up to `num_farthest` rows with the largest distance to their centroid, ordered by
  // distance descending then row ascending.
  std::vector<ShardPoint> farthest;
};

// One shard's rows (n×d, row-major) with the per-job state of the K-means steps.
// The shard does not own x, which must outlive it.
//
// Thread safety: not thread-safe; one job step at a time.
class KMeansShard {
 public:
  KMeansShard(int shard_id, const MatrixXfR* x);

  int shard_id() const { return shard_id_; }
  int64_t num_rows() const { return x_->rows(); }
  int dim() const { return static_cast<int>(x_->cols()); }

  // Per-column sums and sums of squares in double (for the data scale).
  void ColumnMoments(std::vector<double>* sum, std::vector<double>* sum_sq) const;

  // k-means++ seeding. Each row has a sampling weight: 1 while no center has been added
  // since the last reset (uniform choice of the first center), then D², its squared
  // distance to the nearest chosen center. D² is computed from exact differences
  // (Σ (x − c)²), so a row equal to a center has D² = 0 and is never picked again.
  //
  // ResetMinDistances() clears all centers (every D² becomes +infinity). AddCenters
  // (centers m×d, m may be 0) lowers each row's D² to the nearest new center and returns
  // the sum of the weights in double, rows summed in order: the row count while no center
  // has been added, otherwise Σ D².
  void ResetMinDistances();
  double AddCenters(const MatrixXfR& centers);

  // For each candidate c (rows of candidates, m×d) returns Σ_i min(D²_i, ‖x_i − c‖²),
  // the potential if c were added. Does not change the state.
  std::vector<double> TrialPotentials(const MatrixXfR& candidates) const;

  // Returns the row where the running sum of the weights (rows in order, in double, as
  // AddCenters sums them) first exceeds `offset`, with its values and its weight as
  // sq_dist. A row with weight 0 is never returned. When offset is at or beyond the total
  // (rounding), returns the last row with weight > 0. Returns row = -1 when every weight
  // is 0 or the shard has no rows.
  ShardPoint PickByOffset(double offset) const;

  // Assigns every row to centroids (k×d) and returns the partial sums.
  LloydPartial LloydStep(const MatrixXfR& centroids, int num_farthest) const;

  // Labels and squared distances of every row for centroids (k×d).
  void Assign(const MatrixXfR& centroids, std::vector<int32_t>* labels,
              std::vector<float>* sq_dist) const;

 private:
  int shard_id_;
  const MatrixXfR* x_;
  Eigen::VectorXf x_sq_norms_;
  std::vector<float> min_sq_dist_;  // k-means++ state, n entries
  bool has_centers_ = false;        // a center was added since the last reset
};

}  // namespace cohort

#endif  // COHORT_CORE_KMEANS_KERNELS_H_
