// Bisecting K-means: a segment tree grown top-down by splitting one leaf at a time with
// 2-means (k-means++ seeding and Lloyd, as RunKMeans) until there are k leaves.
// Rows follow the tree: a row of a split node goes to the child whose split centroid is
// nearer (ties to the first child), which is also how a new user is assigned.
// Sample weights act as in KMeansShard: a row of weight w counts as w copies of itself in
// the seeding and Lloyd steps of every split, in node means, node weights and inertia,
// and in the split rules, so a row of weight 0 acts as if it were absent. Node sizes
// still count every row once.
#ifndef COHORT_CORE_BISECTING_H_
#define COHORT_CORE_BISECTING_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/cluster_metrics.h"
#include "core/kmeans.h"
#include "core/kmeans_kernels.h"
#include "core/matrix.h"
#include "core/row_source.h"

namespace cohort {

enum class SplitRule {
  kLargest,         // the leaf with the largest weight (ties: lowest node id)
  kHighestInertia,  // the leaf with the largest within-node inertia (ties: lowest id)
};

struct BisectingOptions {
  // Leaves (segments) wanted. Range [1, 10000].
  int k = 8;
  SplitRule split_rule = SplitRule::kLargest;
  // A leaf whose weight (Σ sample weights, its row count without weights) is below this
  // is never split. Range [2, 2^62].
  int64_t min_divisible_size = 2;
  // Options of every 2-means split; its k is ignored, and its seed is mixed with the
  // node id so that each split draws differently but deterministically.
  KMeansOptions split;

  // Errors: InvalidArgument naming the field, the value and the range.
  [[nodiscard]] absl::Status Validate() const;
};

struct ShardAggregates {
  int shard_id = 0;
  ClusterAggregates aggregates;
};

// One shard's rows (n×d, not owned) with each row's current tree node, and the
// KMeansShard of the focused node's rows. Used by the in-process backend and by workers.
//
// Thread safety: not thread-safe.
class BisectingShard {
 public:
  // `weights` (one per row, not owned, must outlive the shard) may be null: every row
  // then has weight 1. REQUIRES: CheckSampleWeights(*x, *weights) is OK when not null.
  BisectingShard(int shard_id, const MatrixXfR* x, const std::vector<float>* weights = nullptr);
  // As above with the rows of `rows` (not owned, must outlive the shard), which every
  // step reads block by block.
  BisectingShard(int shard_id, const RowSource* rows, const std::vector<float>* weights = nullptr);

  int shard_id() const { return shard_id_; }
  // Restricts the K-means state to the rows of `node` (a list of their indices, not a
  // copy of the rows); returns their count.
  int64_t Focus(int node);
  // The focused rows' K-means state (valid after Focus).
  KMeansShard& focused() { return *focused_; }
  // See BisectingBackend::Split; returns the children's aggregates (k = 2), weighted and
  // with weight_sums when the shard has weights.
  ClusterAggregates Split(int node, const MatrixXfR& centroids, int left, int right);
  // Node of every row (root 0 at the start).
  const std::vector<int32_t>& nodes() const { return nodes_; }

 private:
  BisectingShard(int shard_id, std::unique_ptr<RowSource> owned_rows,
                 const std::vector<float>* weights);

  double Weight(int64_t i) const { return weights_ == nullptr ? 1.0 : (*weights_)[i]; }

  int shard_id_;
  // A source over the caller's matrix, for the constructor that takes one.
  std::unique_ptr<RowSource> owned_rows_;
  const RowSource* rows_;
  const std::vector<float>* weights_;  // null: every row has weight 1
  std::vector<int32_t> nodes_;
  // The focused rows: a view of rows_ through their indices.
  std::unique_ptr<RowSource> focus_rows_;
  std::vector<float> focus_weights_;  // the focused rows' weights, when weighted
  std::unique_ptr<KMeansShard> focused_;
};

// The shards as bisecting K-means sees them: the KMeansBackend steps act on the rows of
// the focused node only. Node 0 is the root and holds every row at the start.
class BisectingBackend : public KMeansBackend {
 public:
  // Restricts the KMeansBackend steps to the rows currently in `node`. Returns the
  // node's rows per shard (sorted by shard id).
  [[nodiscard]] virtual absl::StatusOr<std::vector<ShardSum>> Focus(int node) = 0;
  // Moves every row of `node` to `left` or `right`, whichever of centroids.row(0) and
  // centroids.row(1) (2×d) is nearer (ties: left), and returns, per shard, the
  // aggregates of the two children (k = 2: counts, sums, squared-norm sums, and weight
  // sums when rows have sample weights). With left == right == node no row moves, and
  // the aggregates describe the node's rows.
  [[nodiscard]] virtual absl::StatusOr<std::vector<ShardAggregates>> Split(
      int node, const MatrixXfR& centroids, int left, int right) = 0;
};

// Runs the bisecting steps over BisectingShard objects in this process.
class InProcessBisectingBackend final : public BisectingBackend {
 public:
  // REQUIRES: shards sorted by shard id, same dim, non-empty list.
  explicit InProcessBisectingBackend(std::vector<BisectingShard*> shards);
  int dim() const override;
  absl::StatusOr<std::vector<ShardMoments>> Moments() override;
  absl::StatusOr<std::vector<ShardSum>> AddCenters(const MatrixXfR& centers, bool reset) override;
  absl::StatusOr<std::vector<std::vector<double>>> TrialPotentials(
      const MatrixXfR& candidates) override;
  absl::StatusOr<std::vector<ShardPoint>> Pick(const std::vector<ShardOffset>& offsets) override;
  absl::StatusOr<std::vector<LloydPartial>> LloydStep(const MatrixXfR& centroids,
                                                      int num_farthest) override;
  absl::StatusOr<std::vector<ShardSum>> Focus(int node) override;
  absl::StatusOr<std::vector<ShardAggregates>> Split(int node, const MatrixXfR& centroids,
                                                     int left, int right) override;

 private:
  std::vector<BisectingShard*> shards_;
  std::vector<KMeansShard*> Focused();
};

struct BisectingNode {
  int id = 0;
  int parent = -1;
  int left = -1;   // children; -1 for a leaf
  int right = -1;
  int depth = 0;
  int64_t size = 0;          // rows, each counted once whatever its weight
  double weight = 0;         // Σ sample weights of the rows (= size without weights)
  double inertia = 0;        // Σ w ‖x − node mean‖² over the node's rows
  std::vector<float> mean;   // d, weighted
  // For an inner node: the 2-means centroids (2×d, row 0 = left) that route rows.
  MatrixXfR split_centroids;
  int segment = -1;          // leaf: its segment index (leaves in id order); else -1
};

struct BisectingResult {
  std::vector<BisectingNode> nodes;  // index = node id
  int requested_k = 0;
  int leaves = 0;             // < requested_k when no leaf could be split further
  std::string stop_reason;    // why it stopped before k leaves; empty otherwise
  MatrixXfR leaf_means;       // leaves × d, in segment order
  std::vector<int64_t> leaf_sizes;
  double inertia = 0;         // Σ over leaves
};

struct BisectingProgress {
  int leaves = 0;
  int splitting_node = -1;
  KMeansProgress split;  // progress of the current 2-means
};

// Grows the tree. Errors: InvalidArgument from options; FailedPrecondition when there are
// no rows or every row has weight 0; backend errors unchanged. A leaf whose rows are all identical is not split.
// `progress` may be null. It receives every event of each 2-means, with the node being
// split and the leaf count before that split.
[[nodiscard]] absl::StatusOr<BisectingResult> RunBisectingKMeans(
    BisectingBackend& backend, const BisectingOptions& options,
    const std::function<void(const BisectingProgress&)>& progress);

// The segment of a new point (length d): walks from the root to a leaf.
// REQUIRES: `nodes` from a BisectingResult.
int RouteToLeaf(const std::vector<BisectingNode>& nodes, const float* point);

}  // namespace cohort

#endif  // COHORT_CORE_BISECTING_H_
