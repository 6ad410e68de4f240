#include "core/bisecting.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/log.h"
#include "core/status_macros.h"

namespace cohort {
namespace {

constexpr int kMaxK = 10000;
constexpr int64_t kMaxMinDivisibleSize = int64_t{1} << 62;

// splitmix64 finalizer (Steele, Lea and Flood 2014): spreads nearby seeds apart.
uint64_t SplitMix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The seed of the 2-means that splits `node`.
uint64_t SplitSeed(uint64_t seed, int node) {
  return SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(node)));
}

// Accumulator lanes of SquaredDistance, combined in a fixed tree as in the exact distance
// of core/kmeans_kernels.cc.
constexpr int kLanes = 8;

// Σ (a_j − b_j)² in float: exactly 0 when a and b are equal. BisectingShard::Split and
// RouteToLeaf must round identically, or a training row could route to another leaf than
// the one it is in. With -mfma, g++ may contract a * b + c into one fused multiply-add,
// and an inlined copy could be contracted differently, so the function stays out of line.
[[gnu::noinline]] float SquaredDistance(const float* a, const float* b, int64_t d) {
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
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Returns true when `point` (length d) goes to the right child of a node split by
// `centroids` (2×d), which needs centroid 1 strictly nearer. Ties go left.
bool GoesRight(const float* point, const MatrixXfR& centroids) {
  const int64_t d = centroids.cols();
  const float left = SquaredDistance(point, centroids.data(), d);
  const float right = SquaredDistance(point, centroids.data() + d, d);
  return right < left;
}

// Σ w ‖x − mean‖² over rows of total weight W from their weighted sum S and
// Σ w ‖x‖² = Q: Q − ‖S‖²/W, clamped at 0 because the subtraction cancels when the rows
// are close together.
double InertiaFromSums(double weight, double sq_norm_sum, const double* sum, int d) {
  if (weight <= 0) return 0;
  double sum_norm = 0;
  for (int j = 0; j < d; ++j) sum_norm += sum[j] * sum[j];
  return std::max(0.0, sq_norm_sum - sum_norm / weight);
}

std::vector<float> MeanFromSums(double weight, const double* sum, int d) {
  std::vector<float> mean(d, 0.0f);
  if (weight <= 0) return mean;
  for (int j = 0; j < d; ++j) mean[j] = static_cast<float>(sum[j] / weight);
  return mean;
}

// Weight of cluster `side` of split aggregates: its row count when rows are unweighted.
double SideWeight(const ClusterAggregates& aggregates, int side) {
  return aggregates.weight_sums.empty() ? static_cast<double>(aggregates.counts[side])
                                        : aggregates.weight_sums[side];
}

// Adds `from` into `into`, which is default-constructed or has the same k and d.
// ClusterAggregates::Merge does the same, but this copy keeps the bisecting driver
// independent of the metrics library.
void AddAggregates(const ClusterAggregates& from, ClusterAggregates* into) {
  if (into->k == 0) {
    *into = from;
    return;
  }
  into->sums += from.sums;
  for (int c = 0; c < into->k; ++c) {
    into->counts[c] += from.counts[c];
    into->sq_norm_sums[c] += from.sq_norm_sums[c];
  }
  if (!into->weight_sums.empty() || !from.weight_sums.empty()) {
    std::vector<double> weights(into->k);
    for (int c = 0; c < into->k; ++c) {
      // into->counts already include from's rows.
      const double into_weight = into->weight_sums.empty()
                                     ? static_cast<double>(into->counts[c] - from.counts[c])
                                     : into->weight_sums[c];
      weights[c] = into_weight + SideWeight(from, c);
    }
    into->weight_sums = std::move(weights);
  }
}

absl::StatusOr<ClusterAggregates> MergeSplitAggregates(
    const std::vector<ShardAggregates>& per_shard, int d);

// The root's size, weight, mean and inertia. A split of the root into itself moves no
// row and returns the root's (weighted) sums per shard, merged in shard order. The zero
// centroids send every row to side 0.
absl::Status FillRootStats(BisectingBackend& backend, BisectingNode* root) {
  const int d = backend.dim();
  COHORT_ASSIGN_OR_RETURN(std::vector<ShardAggregates> per_shard,
                          backend.Split(0, MatrixXfR::Zero(2, d), 0, 0));
  COHORT_ASSIGN_OR_RETURN(const ClusterAggregates merged, MergeSplitAggregates(per_shard, d));
  root->size = merged.counts[0] + merged.counts[1];
  root->weight = SideWeight(merged, 0) + SideWeight(merged, 1);
  std::vector<double> sum(d, 0.0);
  for (int j = 0; j < d; ++j) sum[j] = merged.sums(0, j) + merged.sums(1, j);
  const double sq_norm_sum = merged.sq_norm_sums[0] + merged.sq_norm_sums[1];
  root->mean = MeanFromSums(root->weight, sum.data(), d);
  root->inertia = InertiaFromSums(root->weight, sq_norm_sum, sum.data(), d);
  return absl::OkStatus();
}

// Focuses the backend on `node` and returns the focused row count over all shards.
absl::StatusOr<int64_t> FocusRows(BisectingBackend& backend, int node) {
  COHORT_ASSIGN_OR_RETURN(std::vector<ShardSum> per_shard, backend.Focus(node));
  int64_t rows = 0;
  for (const ShardSum& shard : per_shard) rows += shard.rows;
  return rows;
}

// Merges the per-shard aggregates of a split in shard order and checks their shape.
absl::StatusOr<ClusterAggregates> MergeSplitAggregates(
    const std::vector<ShardAggregates>& per_shard, int d) {
  ClusterAggregates merged;
  for (const ShardAggregates& shard : per_shard) {
    const ClusterAggregates& a = shard.aggregates;
    if (a.k != 2 || a.d != d || a.counts.size() != 2 || a.sq_norm_sums.size() != 2 ||
        a.sums.rows() != 2 || a.sums.cols() != d ||
        (!a.weight_sums.empty() && a.weight_sums.size() != 2)) {
      return absl::InternalError(absl::StrFormat(
          "backend Split returned aggregates with k = %d and d = %d for shard %d, "
          "expected k = 2 and d = %d",
          a.k, a.d, shard.shard_id, d));
    }
    AddAggregates(a, &merged);
  }
  if (merged.k == 0) {
    return absl::InternalError("backend Split returned no shard aggregates");
  }
  return merged;
}

// State of a leaf: divisible, or the reason why it is not split although it has at least
// min_divisible_size rows.
enum class LeafState {
  kDivisible,
  kIdenticalRows,  // the 2-means found fewer than 2 distinct points
  kEmptyChild,     // the 2-means split left one child empty (see RunBisectingKMeans)
};

// The divisible leaf that `rule` splits next, or -1 when no leaf is divisible.
int ChooseLeaf(const std::vector<BisectingNode>& nodes, const std::vector<LeafState>& states,
               SplitRule rule, int64_t min_divisible_size) {
  int best = -1;
  for (const BisectingNode& node : nodes) {
    if (node.left >= 0 || states[node.id] != LeafState::kDivisible ||
        node.weight < static_cast<double>(min_divisible_size)) {
      continue;
    }
    if (best < 0) {
      best = node.id;
      continue;
    }
    // Strictly greater, so a tie keeps the lower id.
    const bool better = rule == SplitRule::kLargest ? node.weight > nodes[best].weight
                                                    : node.inertia > nodes[best].inertia;
    if (better) best = node.id;
  }
  return best;
}

// Explains why the tree has fewer leaves than requested.
std::string StopReason(const std::vector<BisectingNode>& nodes,
                       const std::vector<LeafState>& states, int leaves, int k,
                       int64_t min_divisible_size) {
  int too_small = 0;
  int identical = 0;
  int empty_child = 0;
  for (const BisectingNode& node : nodes) {
    if (node.left >= 0) continue;
    if (node.weight < static_cast<double>(min_divisible_size)) {
      ++too_small;
    } else if (states[node.id] == LeafState::kIdenticalRows) {
      ++identical;
    } else if (states[node.id] == LeafState::kEmptyChild) {
      ++empty_child;
    }
  }
  std::string reason = absl::StrFormat(
      "stopped at %d of %d requested leaves because no leaf can be split. Leaves whose "
      "weight (rows without sample weights) is below min_divisible_size = %d: %d, leaves "
      "whose rows are all identical: %d",
      leaves, k, min_divisible_size, too_small, identical);
  if (empty_child > 0) {
    absl::StrAppendFormat(&reason, ", leaves whose 2-means split left a child empty: %d",
                          empty_child);
  }
  return reason;
}

// Sets the segment of every leaf (leaves in id order) and the result's leaf tables.
void FinishResult(const std::vector<LeafState>& states, const BisectingOptions& options, int d,
                  BisectingResult* result) {
  std::vector<BisectingNode>& nodes = result->nodes;
  int leaves = 0;
  for (BisectingNode& node : nodes) {
    if (node.left < 0) node.segment = leaves++;
  }
  result->requested_k = options.k;
  result->leaves = leaves;
  result->leaf_means.resize(leaves, d);
  result->leaf_sizes.assign(leaves, 0);
  result->inertia = 0;
  for (const BisectingNode& node : nodes) {
    if (node.segment < 0) continue;
    result->leaf_means.row(node.segment) =
        Eigen::Map<const Eigen::RowVectorXf>(node.mean.data(), d);
    result->leaf_sizes[node.segment] = node.size;
    result->inertia += node.inertia;
  }
  if (leaves < options.k) {
    result->stop_reason =
        StopReason(nodes, states, leaves, options.k, options.min_divisible_size);
  }
}

}  // namespace

absl::Status BisectingOptions::Validate() const {
  if (k < 1 || k > kMaxK) {
    return absl::InvalidArgumentError(
        absl::StrFormat("k = %d is invalid; k must be in [1, %d]", k, kMaxK));
  }
  if (min_divisible_size < 2 || min_divisible_size > kMaxMinDivisibleSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "min_divisible_size = %d is invalid; min_divisible_size must be in [2, 2^62]",
        min_divisible_size));
  }
  // Every split runs with k = 2, whatever split.k holds.
  KMeansOptions two_means = split;
  two_means.k = 2;
  const absl::Status status = two_means.Validate();
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("split.", status.message()));
  }
  return absl::OkStatus();
}

namespace {

// The rows of `base` whose indices are listed, in list order.
class IndexedRowSource final : public RowSource {
 public:
  IndexedRowSource(const RowSource* base, std::vector<uint32_t> indices)
      : base_(base), indices_(std::move(indices)) {}

  int64_t rows() const override { return static_cast<int64_t>(indices_.size()); }
  int cols() const override { return base_->cols(); }
  void CopyRows(int64_t begin, int64_t count, float* out) const override {
    const int64_t d = cols();
    for (int64_t r = 0; r < count; ++r) base_->CopyRows(indices_[begin + r], 1, out + r * d);
  }

 private:
  const RowSource* base_;
  std::vector<uint32_t> indices_;
};

}  // namespace

BisectingShard::BisectingShard(int shard_id, const MatrixXfR* x,
                               const std::vector<float>* weights)
    : BisectingShard(shard_id, std::make_unique<MatrixRowSource>(x), weights) {}

BisectingShard::BisectingShard(int shard_id, std::unique_ptr<RowSource> owned_rows,
                               const std::vector<float>* weights)
    : BisectingShard(shard_id, owned_rows.get(), weights) {
  owned_rows_ = std::move(owned_rows);
}

BisectingShard::BisectingShard(int shard_id, const RowSource* rows,
                               const std::vector<float>* weights)
    : shard_id_(shard_id),
      rows_(rows),
      weights_(weights),
      nodes_(rows->rows(), 0),
      // No node is focused yet, so the K-means steps see no rows.
      focus_rows_(std::make_unique<IndexedRowSource>(rows, std::vector<uint32_t>())),
      focused_(std::make_unique<KMeansShard>(shard_id, focus_rows_.get(), nullptr)) {}

int64_t BisectingShard::Focus(int node) {
  const int64_t n = rows_->rows();
  const int64_t count = std::count(nodes_.begin(), nodes_.end(), node);

  // The KMeansShard reads focus_rows_, so it goes before the rows change.
  focused_.reset();
  focus_rows_.reset();
  std::vector<uint32_t> indices;
  indices.reserve(count);
  focus_weights_.clear();
  for (int64_t i = 0; i < n; ++i) {
    if (nodes_[i] != node) continue;
    // Shards hold at most kMaxShardRows < 2^32 rows.
    indices.push_back(static_cast<uint32_t>(i));
    if (weights_ != nullptr) focus_weights_.push_back((*weights_)[i]);
  }
  focus_rows_ = std::make_unique<IndexedRowSource>(rows_, std::move(indices));
  focused_ = std::make_unique<KMeansShard>(shard_id_, focus_rows_.get(),
                                           weights_ == nullptr ? nullptr : &focus_weights_);
  return count;
}

ClusterAggregates BisectingShard::Split(int node, const MatrixXfR& centroids, int left,
                                        int right) {
  const int64_t n = rows_->rows();
  const int d = rows_->cols();

  // Sides are computed in parallel. Each row's side depends only on that row, and the
  // sums below add the rows in order on one thread, so the result does not depend on the
  // thread count.
  std::vector<uint8_t> goes_right(n, 0);
  ForEachRowBlock(*rows_, 0, n, [&](int64_t begin, int64_t count, const MatrixXfR& block) {
    for (int64_t r = 0; r < count; ++r) {
      if (nodes_[begin + r] != node) continue;
      goes_right[begin + r] = GoesRight(block.data() + r * d, centroids) ? 1 : 0;
    }
  });

  ClusterAggregates aggregates;
  aggregates.k = 2;
  aggregates.d = d;
  aggregates.counts.assign(2, 0);
  aggregates.sums = MatrixXdR::Zero(2, d);
  aggregates.sq_norm_sums.assign(2, 0.0);
  std::vector<double> weight_sums(2, 0.0);
  // Sides of this split's rows, for the deviation pass below; with left == right the
  // node ids alone cannot tell the sides apart.
  std::vector<uint8_t> moved(n, 0);
  MatrixXfR block;
  for (int64_t i = 0; i < n; ++i) {
    if (i % kRowBlockRows == 0) rows_->CopyBlock(i, std::min(kRowBlockRows, n - i), &block);
    if (nodes_[i] != node) continue;
    const int side = goes_right[i];
    nodes_[i] = side == 1 ? right : left;
    moved[i] = 1;
    ++aggregates.counts[side];
    const double w = Weight(i);
    weight_sums[side] += w;
    const float* row = block.data() + (i % kRowBlockRows) * d;
    double* sum = aggregates.sums.data() + side * d;
    double sq_norm = 0;
    for (int j = 0; j < d; ++j) {
      const double v = row[j];
      sum[j] += w * v;
      sq_norm += v * v;
    }
    aggregates.sq_norm_sums[side] += w * sq_norm;
  }

  // Σ w ‖x − side mean‖² per side, from exact differences, as ComputeClusterAggregates
  // defines it, so that ClusterAggregates::Merge can pool shards.
  aggregates.sq_deviation_sums.assign(2, 0.0);
  MatrixXdR means = MatrixXdR::Zero(2, d);
  for (int side = 0; side < 2; ++side) {
    if (weight_sums[side] > 0) means.row(side) = aggregates.sums.row(side) / weight_sums[side];
  }
  for (int64_t i = 0; i < n; ++i) {
    if (i % kRowBlockRows == 0) rows_->CopyBlock(i, std::min(kRowBlockRows, n - i), &block);
    if (moved[i] == 0) continue;
    const int side = goes_right[i];
    const float* row = block.data() + (i % kRowBlockRows) * d;
    double sq_deviation = 0;
    for (int j = 0; j < d; ++j) {
      const double diff = row[j] - means(side, j);
      sq_deviation += diff * diff;
    }
    aggregates.sq_deviation_sums[side] += Weight(i) * sq_deviation;
  }
  if (weights_ != nullptr) aggregates.weight_sums = std::move(weight_sums);
  return aggregates;
}

InProcessBisectingBackend::InProcessBisectingBackend(std::vector<BisectingShard*> shards)
    : shards_(std::move(shards)) {}

std::vector<KMeansShard*> InProcessBisectingBackend::Focused() {
  std::vector<KMeansShard*> focused;
  focused.reserve(shards_.size());
  for (BisectingShard* shard : shards_) focused.push_back(&shard->focused());
  return focused;
}

int InProcessBisectingBackend::dim() const { return shards_.front()->focused().dim(); }

absl::StatusOr<std::vector<ShardMoments>> InProcessBisectingBackend::Moments() {
  InProcessKMeansBackend focused(Focused());
  return focused.Moments();
}

absl::StatusOr<std::vector<ShardSum>> InProcessBisectingBackend::AddCenters(
    const MatrixXfR& centers, bool reset) {
  InProcessKMeansBackend focused(Focused());
  return focused.AddCenters(centers, reset);
}

absl::StatusOr<std::vector<std::vector<double>>> InProcessBisectingBackend::TrialPotentials(
    const MatrixXfR& candidates) {
  InProcessKMeansBackend focused(Focused());
  return focused.TrialPotentials(candidates);
}

absl::StatusOr<std::vector<ShardPoint>> InProcessBisectingBackend::Pick(
    const std::vector<ShardOffset>& offsets) {
  InProcessKMeansBackend focused(Focused());
  return focused.Pick(offsets);
}

absl::StatusOr<std::vector<LloydPartial>> InProcessBisectingBackend::LloydStep(
    const MatrixXfR& centroids, int num_farthest) {
  InProcessKMeansBackend focused(Focused());
  return focused.LloydStep(centroids, num_farthest);
}

absl::StatusOr<std::vector<ShardSum>> InProcessBisectingBackend::Focus(int node) {
  std::vector<ShardSum> rows;
  rows.reserve(shards_.size());
  for (BisectingShard* shard : shards_) {
    rows.push_back(ShardSum{shard->shard_id(), shard->Focus(node), 0.0});
  }
  return rows;
}

absl::StatusOr<std::vector<ShardAggregates>> InProcessBisectingBackend::Split(
    int node, const MatrixXfR& centroids, int left, int right) {
  if (centroids.rows() != 2 || centroids.cols() != dim()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "split centroids are %dx%d; expected 2x%d", centroids.rows(), centroids.cols(), dim()));
  }
  std::vector<ShardAggregates> aggregates;
  aggregates.reserve(shards_.size());
  for (BisectingShard* shard : shards_) {
    aggregates.push_back(
        ShardAggregates{shard->shard_id(), shard->Split(node, centroids, left, right)});
  }
  return aggregates;
}

absl::StatusOr<BisectingResult> RunBisectingKMeans(
    BisectingBackend& backend, const BisectingOptions& options,
    const std::function<void(const BisectingProgress&)>& progress) {
  COHORT_RETURN_IF_ERROR(options.Validate());
  const int d = backend.dim();
  if (d < 1) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "dataset has %d feature columns; bisecting K-means needs at least 1", d));
  }

  BisectingResult result;
  std::vector<BisectingNode>& nodes = result.nodes;
  nodes.emplace_back();
  COHORT_ASSIGN_OR_RETURN(const int64_t root_rows, FocusRows(backend, 0));
  if (root_rows == 0) return absl::FailedPreconditionError("dataset has no rows");
  COHORT_RETURN_IF_ERROR(FillRootStats(backend, &nodes[0]));
  if (nodes[0].weight <= 0) {
    return absl::FailedPreconditionError(
        "every row has sample weight 0, so no row can become a center; give some users a "
        "positive weight");
  }

  std::vector<LeafState> states(1, LeafState::kDivisible);
  int leaves = 1;
  while (leaves < options.k) {
    const int node = ChooseLeaf(nodes, states, options.split_rule,
                                options.min_divisible_size);
    if (node < 0) break;

    COHORT_ASSIGN_OR_RETURN(const int64_t focused_rows, FocusRows(backend, node));
    if (focused_rows != nodes[node].size) {
      return absl::InternalError(absl::StrFormat(
          "backend Focus found %d rows in node %d, whose size is %d", focused_rows, node,
          nodes[node].size));
    }

    KMeansOptions two_means = options.split;
    two_means.k = 2;
    two_means.seed = SplitSeed(options.split.seed, node);
    KMeansProgressCallback split_progress;
    if (progress) {
      split_progress = [&progress, leaves, node](const KMeansProgress& event) {
        progress(BisectingProgress{leaves, node, event});
      };
    }
    COHORT_ASSIGN_OR_RETURN(KMeansResult split, RunKMeans(backend, two_means, split_progress));
    if (split.effective_k < 2) {
      COHORT_LOG_DEBUG("bisecting: node {} ({} rows) has identical rows and stays a leaf",
                       node, nodes[node].size);
      states[node] = LeafState::kIdenticalRows;
      continue;
    }

    const int left = static_cast<int>(nodes.size());
    const int right = left + 1;
    COHORT_ASSIGN_OR_RETURN(std::vector<ShardAggregates> per_shard,
                            backend.Split(node, split.centroids, left, right));
    COHORT_ASSIGN_OR_RETURN(const ClusterAggregates merged, MergeSplitAggregates(per_shard, d));
    if (merged.counts[0] + merged.counts[1] != nodes[node].size) {
      return absl::InternalError(absl::StrFormat(
          "backend Split moved %d rows out of node %d, whose size is %d",
          merged.counts[0] + merged.counts[1], node, nodes[node].size));
    }
    if (SideWeight(merged, 0) <= 0 || SideWeight(merged, 1) <= 0) {
      // The 2-means assigns rows with the expanded distance ‖x‖² − 2x·c + ‖c‖² and Split
      // with exact differences. When they disagree on every row of one side, one child
      // would be empty, or hold only rows of weight 0. The rows go back to the node,
      // which then stays a leaf.
      for (int child : {left, right}) {
        const absl::Status undo = backend.Split(child, split.centroids, node, node).status();
        if (!undo.ok()) return undo;
      }
      COHORT_LOG_WARN("bisecting: splitting node {} ({} rows) left a child empty; it stays a leaf",
                      node, nodes[node].size);
      states[node] = LeafState::kEmptyChild;
      continue;
    }

    for (int side = 0; side < 2; ++side) {
      BisectingNode child;
      child.id = side == 0 ? left : right;
      child.parent = node;
      child.depth = nodes[node].depth + 1;
      child.size = merged.counts[side];
      child.weight = SideWeight(merged, side);
      const double* sum = merged.sums.data() + side * d;
      child.mean = MeanFromSums(child.weight, sum, d);
      child.inertia = InertiaFromSums(child.weight, merged.sq_norm_sums[side], sum, d);
      nodes.push_back(std::move(child));
      states.push_back(LeafState::kDivisible);
    }
    nodes[node].left = left;
    nodes[node].right = right;
    nodes[node].split_centroids = std::move(split.centroids);
    ++leaves;
    COHORT_LOG_DEBUG("bisecting: split node {} into {} ({} rows) and {} ({} rows); {} leaves",
                     node, left, merged.counts[0], right, merged.counts[1], leaves);
  }

  FinishResult(states, options, d, &result);
  return result;
}

int RouteToLeaf(const std::vector<BisectingNode>& nodes, const float* point) {
  int id = 0;
  while (nodes[id].left >= 0) {
    id = GoesRight(point, nodes[id].split_centroids) ? nodes[id].right : nodes[id].left;
  }
  return nodes[id].segment;
}

}  // namespace cohort
