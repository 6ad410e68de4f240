// Item–item and user–user similarity on sparse interactions, and user–user top-k on dense
// vectors (exact, and approximate through an inverted file over segmentation centroids).
// Only top-k neighbour lists are kept; no function builds a dense n×n similarity matrix.
//
// Measures on interactions. For items i and j, U_ij is the set of users who interacted
// with both (the co-raters), n = |U_ij| the support, x = r_ui and y = r_uj:
//   cosine           Σ_{U_ij} xy / sqrt(Σ_{U_i} x² · Σ_{U_j} y²), norms over all entries
//                    of each item (the cosine of the two sparse columns)
//   Pearson          the correlation of x and y over U_ij, centred by the means over U_ij
//   adjusted cosine  Σ_{U_ij} x'y' / sqrt(Σ_{U_ij} x'² · Σ_{U_ij} y'²), x' = x − mean of u
//   Jaccard          n / (|U_i| + |U_j| − n)
//   MSD              1 / (Σ_{U_ij} (x − y)² / n + 1), the mean squared difference
//                    similarity of Surprise (its default for KNNBasic), in (0, 1]
// User–user swaps the roles: co-rated items, and adjusted cosine centres by item means.
// Shrinkage λ ≥ 0 multiplies a similarity by n / (n + λ). Pairs with n < min_support
// (and always pairs with n = 0) are never neighbours.
//
// Zero rule, the same for every measure, sparse and dense: a similarity whose
// denominator is 0 (an item or user without entries, an all-zero vector, Pearson with a
// constant side or n = 1) is 0, never NaN. Every similarity is clamped to [−1, 1], so a
// non-zero vector has similarity 1 with itself. Neighbour lists never contain the query
// itself.
#ifndef COHORT_CORE_SIMILARITY_H_
#define COHORT_CORE_SIMILARITY_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/interactions.h"
#include "core/matrix.h"
#include "core/topk.h"

namespace cohort {

enum class SimilarityMeasure { kCosine, kPearson, kAdjustedCosine, kJaccard, kMsd };

// Parses "cosine", "pearson", "adjusted_cosine", "jaccard" or "msd". Errors: InvalidArgument
// naming the value and the accepted names.
[[nodiscard]] absl::StatusOr<SimilarityMeasure> ParseSimilarityMeasure(std::string_view name);
std::string_view SimilarityMeasureName(SimilarityMeasure measure);

struct SimilarityOptions {
  SimilarityMeasure measure = SimilarityMeasure::kCosine;
  // Neighbours kept per item or user, >= 1.
  int k = 20;
  // λ >= 0 (finite); 0 disables shrinkage.
  double shrinkage = 0;
  // Minimum co-rating count n of a neighbour, >= 1.
  int min_support = 1;

  // Errors: InvalidArgument naming the field and value.
  [[nodiscard]] absl::Status Validate() const;
};

// Sums over the co-raters of one pair, in double. Additive over shards.
struct PairSums {
  int64_t n = 0;       // co-rating count
  double sum_x = 0;    // Σ x over co-raters
  double sum_y = 0;
  double sum_xy = 0;
  double sum_xx = 0;
  double sum_yy = 0;
  double sum_xy_centred = 0;  // Σ x'y' (adjusted cosine)
  double sum_xx_centred = 0;
  double sum_yy_centred = 0;

  void Add(const PairSums& other);
};
// Per item (or user) totals over all its entries.
struct VectorTotals {
  int64_t count = 0;
  double sum_sq = 0;  // Σ x²
};

// Finishes one pair from its sums: the similarity after shrinkage, or 0 by the zero rule
// (also for n < min_support). Every sparse path calls it, so all of them agree exactly.
double FinishSimilarity(const PairSums& pair, const VectorTotals& a, const VectorTotals& b,
                        const SimilarityOptions& options);

// ---------------------------------------------------------------------------------------
// Item–item, distributed form. The coordinator splits the items into anchor blocks
// [first_item, end_item). For a block, every shard computes ItemPairPartial; the
// coordinator adds the shards' partials in shard id order (MergeItemPairPartial) and
// finishes each anchor's top-k (FinishItemNeighbors). Item totals are computed once per
// job (ComputeItemTotals, merged by MergeItemTotals). The result does not depend on the
// number of shards, their placement or the thread count.

// Sums of one anchor block over one shard's users: for each anchor item a, the partner
// items j ≠ a co-rated with a by at least one user of the shard, ascending, with the sums.
struct ItemPairPartial {
  int32_t first_item = 0;
  int32_t end_item = 0;
  std::vector<int64_t> anchor_ptr;  // [anchor − first_item + 1]
  std::vector<int32_t> partner;     // [entry], ascending within an anchor
  std::vector<PairSums> sums;       // [entry]
};

// Per-item totals of one shard, indexed by dictionary index (num_items entries).
std::vector<VectorTotals> ComputeItemTotals(const InteractionMatrix& shard);
// Adds `shard_totals` into `total`. REQUIRES: equal sizes.
void MergeItemTotals(const std::vector<VectorTotals>& shard_totals,
                     std::vector<VectorTotals>* total);

// Computes the pair sums of anchors [first_item, end_item) over the users of `shard`.
// Only the sums the measure needs are filled (the others stay 0). Parallel over anchors
// with OpenMP; deterministic. Errors: InvalidArgument for an empty or out-of-range block.
[[nodiscard]] absl::StatusOr<ItemPairPartial> ComputeItemPairPartial(
    const InteractionMatrix& shard, SimilarityMeasure measure, int32_t first_item,
    int32_t end_item);

// Adds `shard_partial` into `merged` (an empty `merged` takes the block of the first
// partial). Errors: InvalidArgument when the blocks differ.
[[nodiscard]] absl::Status MergeItemPairPartial(const ItemPairPartial& shard_partial,
                                                ItemPairPartial* merged);

// Top-k neighbours of each anchor of `merged`, best first, ties by item id:
// result[a − first_item]. `totals` are the merged item totals (num_items entries).
// Errors: InvalidArgument for bad options or a totals size that does not cover the block.
[[nodiscard]] absl::StatusOr<std::vector<std::vector<Neighbor>>> FinishItemNeighbors(
    const ItemPairPartial& merged, const std::vector<VectorTotals>& totals,
    const SimilarityOptions& options);

// Anchors per block of the distributed item–item steps: a suggestion for the caller that
// splits the items. A block's pair sums take about 80 bytes per co-rated pair (the
// PairSums and the partner index), so the block bounds the memory of one step.
inline constexpr int32_t kDefaultItemBlock = 1024;

// One process: the top-k neighbours of every item over all shards (result[item]). Each
// anchor's sums are accumulated over the shards in shard id order and finished at once,
// without building ItemPairPartial. The result equals the distributed one up to the
// rounding of the sums, because the distributed form groups them per shard. With integer
// ratings every sum except the centred ones is exact, so the results are equal. Parallel over
// items; deterministic. Errors: InvalidArgument for bad options or shards whose
// num_items differ.
[[nodiscard]] absl::StatusOr<std::vector<std::vector<Neighbor>>> ComputeAllItemNeighbors(
    const std::vector<InteractionMatrix>& shards, const SimilarityOptions& options);

// ---------------------------------------------------------------------------------------
// User–user on sparse interactions. The query users come from any shard as a block: rows
// of an InteractionMatrix with their global ids. Every shard computes their local top-k
// among its own users (UserNeighborsInShard). The coordinator merges the per-shard lists
// with MergeTopK in shard order.

struct UserQueryBlock {
  // The query users' interactions: columns are dictionary indices, as in a shard.
  InteractionMatrix rows;
  // [row] global id of each query user (excluded from its own neighbours).
  std::vector<int64_t> global_ids;
};

// For each query row q, the top-k users of `shard` by similarity (global ids).
// `item_means` (num_items entries: each item's mean value over all shards) is required
// for kAdjustedCosine and ignored otherwise. Parallel over query rows; deterministic.
// Errors: InvalidArgument for bad options, mismatched num_items, a global_ids size that
// differs from the query rows, or missing item_means for adjusted cosine.
[[nodiscard]] absl::StatusOr<std::vector<std::vector<Neighbor>>> UserNeighborsInShard(
    const UserQueryBlock& queries, const InteractionMatrix& shard,
    const std::vector<double>& item_means, const SimilarityOptions& options);

// Per-item mean values over all shards (num_items entries; 0 for an item without
// entries), from additive per-shard sums. For adjusted-cosine user–user.
std::vector<double> ComputeItemMeans(const std::vector<VectorTotals>& totals,
                                     const std::vector<double>& item_sums);
// Per-item Σ value of one shard (num_items entries), additive over shards.
std::vector<double> ComputeItemSums(const InteractionMatrix& shard);

// ---------------------------------------------------------------------------------------
// Dense vectors (n×d row-major float32, e.g. feature or embedding rows of users).

enum class DenseMetric {
  // x·y of the unit rows; the zero rule applies (a zero row has similarity 0).
  kCosine,
  // Cosine of the rows after subtracting each row's mean (the Pearson correlation of the
  // two rows' coordinates); a constant row has similarity 0.
  kPearson,
  // Raw x·y, unbounded (FAISS IndexFlatIP's score).
  kInnerProduct,
};

// First pass of the exact search, which finds the rows that may be among a query's
// top-k before their exact scores are computed. Every kernel gives the same result.
enum class DenseKernel {
  // kInt8 on a CPU with AVX-512 VNNI when there are enough queries to repay quantizing
  // the base rows (and d <= 16,384); kFloat otherwise.
  kAuto,
  // float32 matrix products (AVX2).
  kFloat,
  // int8 dot products of quantized rows with error bounds (AVX-512 VNNI). Fails with
  // FailedPrecondition on a CPU without it.
  kInt8,
};

struct DenseSearchOptions {
  DenseMetric metric = DenseMetric::kCosine;
  int k = 10;  // >= 1
  // Rows of `base` whose id equals the query's id are skipped (user–user on one set).
  bool exclude_self = true;
  // First pass of ExactDenseTopK and ExactDenseAllPairsTopK (IvfIndex ignores it).
  DenseKernel kernel = DenseKernel::kAuto;

  [[nodiscard]] absl::Status Validate() const;
};

// Rows prepared for the metric: unit rows for cosine, centred unit rows for Pearson, the
// rows unchanged for inner product. Zero rows stay zero (the zero rule).
[[nodiscard]] MatrixXfR PrepareDenseRows(const MatrixXfR& x, DenseMetric metric);

// Exact top-k of each query row (queries: q×d) among base rows (base: n×d). Both
// matrices must already be prepared with PrepareDenseRows. The score of a pair is its
// dot product summed in double and rounded once to float (clamped to [−1, 1] for the
// bounded metrics), so it depends only on the two rows, never on their positions,
// blocks, shards, kernel or thread count. Ties are broken by id.
//
// A first pass (options.kernel) scores every pair approximately in blocks, with a
// rigorous bound on its error, and keeps per query only the rows whose upper bound
// reaches the k-th best lower bound; those rows are then scored exactly. No q×n matrix
// is ever materialised. The int8 kernel quantizes the base per call (n · d bytes).
// base_ids[r] is the global id of base row r; query_ids[i] that of query i (used only
// with exclude_self; may be empty otherwise). Parallel over query blocks; deterministic.
// Errors: InvalidArgument for bad options, d mismatch, id arrays of the wrong size or
// non-finite values; FailedPrecondition for kInt8 on a CPU without AVX-512 VNNI.
[[nodiscard]] absl::StatusOr<std::vector<std::vector<Neighbor>>> ExactDenseTopK(
    const MatrixXfR& queries, const std::vector<int64_t>& query_ids, const MatrixXfR& base,
    const std::vector<int64_t>& base_ids, const DenseSearchOptions& options);

// Exact top-k of every row of x (n×d, prepared with PrepareDenseRows) among the other
// rows of x: user–user neighbours within one set, equal to ExactDenseTopK(x, ids, x,
// ids) with exclude_self. A row is never its own neighbour (options.exclude_self is
// ignored). ids[r] is the global id of row r. The int8 kernel runs that search. The
// float kernel uses the symmetry of the score matrix instead: it multiplies each pair of
// row blocks once and scans the product in both directions (half the flops). It runs in
// parallel over block pairs and merges per-thread lists per row, so the result does not
// depend on the thread count. Memory of the float kernel: one candidate list per row and thread.
// Errors: as ExactDenseTopK.
[[nodiscard]] absl::StatusOr<std::vector<std::vector<Neighbor>>> ExactDenseAllPairsTopK(
    const MatrixXfR& x, const std::vector<int64_t>& ids, const DenseSearchOptions& options);

// Inverted file over a segmentation model: list c contains the base rows assigned to
// centroid c (the model's labels). A query probes the nprobe centroids nearest to it and
// scans only their lists, scoring pairs as ExactDenseTopK does. With nprobe = k (the centroid count) the result equals
// ExactDenseTopK. Each shard builds its own index over its rows with the same model, so
// per-shard results merge with MergeTopK like the exact ones.
//
// Thread safety: immutable after Build, so any thread may search.
class IvfIndex {
 public:
  // `centroids` (k×d) are the model's centroids and `assignments` (n entries in [0, k))
  // the model's label of each base row. `cosine_centroids` selects the model's distance,
  // by which probes rank the centroids for the raw query: cosine distance (true) or
  // squared Euclidean distance (false). base (n×d) is prepared with
  // PrepareDenseRows for `metric`. Errors: InvalidArgument for shape mismatches, a label
  // outside [0, k) or an id array of the wrong size.
  [[nodiscard]] static absl::StatusOr<IvfIndex> Build(const MatrixXfR& centroids,
                                                      bool cosine_centroids,
                                                      const std::vector<int32_t>& assignments,
                                                      const MatrixXfR& base,
                                                      const std::vector<int64_t>& base_ids,
                                                      DenseMetric metric);

  // Approximate top-k of each query. `raw_queries` (q×d) are the queries as given (used
  // to rank centroids); `prepared_queries` are the same rows after PrepareDenseRows.
  // Errors: InvalidArgument for bad options, nprobe < 1, d mismatch, or a metric other
  // than the one the index was built for.
  [[nodiscard]] absl::StatusOr<std::vector<std::vector<Neighbor>>> Search(
      const MatrixXfR& raw_queries, const MatrixXfR& prepared_queries,
      const std::vector<int64_t>& query_ids, const DenseSearchOptions& options,
      int nprobe) const;

  int num_lists() const { return static_cast<int>(centroids_.rows()); }
  int64_t num_rows() const { return static_cast<int64_t>(ids_.size()); }

 private:
  IvfIndex() = default;

  MatrixXfR centroids_;   // k×d, unit rows when cosine_centroids_
  bool cosine_centroids_ = false;
  DenseMetric metric_ = DenseMetric::kCosine;
  std::vector<int64_t> list_ptr_;  // [list + 1]
  MatrixXfR rows_;                 // n×d, base rows grouped by list
  std::vector<int64_t> ids_;       // [n] global id of each row of rows_
  std::vector<float> norms_;       // [n] ‖row‖ of each row of rows_, rounded up
};

}  // namespace cohort

#endif  // COHORT_CORE_SIMILARITY_H_
