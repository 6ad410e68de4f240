// Recommendations and rating prediction on interactions: item-based, user-based and a
// weighted hybrid with content (dense item features); baseline estimates and
// neighbourhood rating prediction around them.
#ifndef COHORT_CORE_RECOMMEND_H_
#define COHORT_CORE_RECOMMEND_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/interactions.h"
#include "core/matrix.h"
#include "core/topk.h"

namespace cohort {

// ---------------------------------------------------------------------------------------
// Baselines: r̂_ui = μ + b_u + b_i, fitted by alternating least squares as Surprise's
// BaselineOnly (method "als") does: each epoch sets every item bias
//   b_i = Σ_{u∈U_i} (r_ui − μ − b_u) / (reg_item + |U_i|)
// and then every user bias
//   b_u = Σ_{i∈I_u} (r_ui − μ − b_i) / (reg_user + |I_u|).
// Distributed: μ and the item step need sums over all shards (ItemBiasSums, added in
// shard order). The user step is local to a shard, because all rows of a user are in
// one shard.

// A user's ratings as (dictionary index, value), ascending by index.
struct UserRatings {
  std::vector<int32_t> items;
  std::vector<float> values;
};

struct BaselineOptions {
  int epochs = 10;          // >= 1
  double reg_item = 10.0;   // >= 0
  double reg_user = 15.0;   // >= 0

  [[nodiscard]] absl::Status Validate() const;
};

struct Baselines {
  double global_mean = 0;
  std::vector<double> item_bias;               // [dictionary index]
  std::vector<std::vector<double>> user_bias;  // [shard position][row], shards as given
};

// Per-item Σ (r − μ − b_u) and count of one shard (num_items entries each).
struct ItemBiasSums {
  std::vector<double> residual_sum;
  std::vector<int64_t> count;
};
// The item-step sums of one shard for the given user biases (one per row).
ItemBiasSums ComputeItemBiasSums(const InteractionMatrix& shard, double global_mean,
                                 const std::vector<double>& user_bias);
// The user step for one shard: one bias per row.
std::vector<double> ComputeUserBiases(const InteractionMatrix& shard, double global_mean,
                                      const std::vector<double>& item_bias, double reg_user);
// The user step for one user: the bias ComputeUserBiases sets for a row with these
// ratings. REQUIRES: every item of `user` indexes `item_bias`.
double ComputeUserBias(const UserRatings& user, double global_mean,
                       const std::vector<double>& item_bias, double reg_user);

// One process: fits the baselines over all shards with the steps above.
// Errors: InvalidArgument for bad options, no entries at all, or shards whose num_items
// differ.
[[nodiscard]] absl::StatusOr<Baselines> FitBaselines(const std::vector<InteractionMatrix>& shards,
                                                     const BaselineOptions& options);

// ---------------------------------------------------------------------------------------
// Rating prediction.

struct PredictionOptions {
  // Neighbours used per prediction (Surprise's k), >= 1.
  int k = 40;
  // Minimum number of usable neighbours (Surprise's min_k), >= 0. With fewer, the
  // prediction is the baseline (KNNBaseline) or the global mean (KNNBasic).
  int min_k = 1;
  // Predictions are clamped to [min_rating, max_rating].
  double min_rating = 1.0;
  double max_rating = 5.0;

  [[nodiscard]] absl::Status Validate() const;
};

UserRatings RowRatings(const InteractionMatrix& shard, int64_t row);

// Item-based KNNBaseline: r̂_ui = b_ui + Σ_j s_ij (r_uj − b_uj) / Σ_j s_ij over the k
// items j most similar to i that u rated, with s_ij > 0, taken in order from
// item_neighbors[i] (which must therefore be long enough: keep more neighbours than k).
// b_ui = μ + b_u + b_i; `user_bias` is u's bias. An item outside the dictionary (index
// −1) gets b_i = 0 and no neighbours.
double PredictItemBased(const UserRatings& user, double user_bias, int32_t item,
                        const Baselines& baselines,
                        const std::vector<std::vector<Neighbor>>& item_neighbors,
                        const PredictionOptions& options);

// One neighbour of a user-based prediction: a similar user's similarity, their rating of
// the item and their baseline for it (μ + b_v + b_i).
struct RatedNeighbor {
  float similarity = 0;
  float rating = 0;
  double baseline = 0;
};

// User-based predictions from the neighbours (of u, in rank order) who rated i; only
// the first k with similarity > 0 are used.
//   KNNBasic:    r̂_ui = Σ s_uv r_vi / Σ s_uv, or the global mean with fewer than min_k.
//   KNNBaseline: r̂_ui = b_ui + Σ s_uv (r_vi − b_vi) / Σ s_uv, or b_ui with fewer than min_k.
double PredictUserBasic(const std::vector<RatedNeighbor>& neighbors, double global_mean,
                        const PredictionOptions& options);
double PredictUserBaseline(const std::vector<RatedNeighbor>& neighbors, double baseline_ui,
                           const PredictionOptions& options);

// ---------------------------------------------------------------------------------------
// Top-N recommendations.

struct RecommendOptions {
  // Items returned, >= 1.
  int n = 10;
  // Items never returned (dictionary indices), besides the items the user has seen.
  std::vector<int32_t> excluded_items;
  // Hybrid only: final score = cf_weight · CF score / max CF score of the user
  // + (1 − cf_weight) · content score. In [0, 1].
  double cf_weight = 0.7;

  [[nodiscard]] absl::Status Validate(int32_t num_items) const;
};

struct Recommendation {
  int32_t item = 0;  // dictionary index
  float score = 0;
  // False for an item added from popularity because the neighbourhood scored fewer
  // than n eligible items.
  bool from_neighbors = true;
};

// Exactly min(n, eligible) recommendations, where eligible = catalogue items the user has
// not seen and that are not excluded.
struct RecommendationList {
  std::vector<Recommendation> items;
  // True when fewer than n items were eligible, so items.size() < n.
  bool fewer_than_requested = false;
};

// Ranks `scores` (num_items entries; NaN or <= 0 means unscored) into the final list:
// seen and excluded items are removed; scored items first by score (ties by index),
// then unscored eligible items by `popularity` descending (ties by index) until
// min(n, eligible) items are listed. Errors: InvalidArgument for bad options or sizes.
[[nodiscard]] absl::StatusOr<RecommendationList> RankRecommendations(
    const std::vector<double>& scores, const UserRatings& seen,
    const std::vector<int64_t>& popularity, const RecommendOptions& options);

// Item-based scores of a user: score_i = Σ_{j seen} s_ji · r_uj over the neighbour lists
// of the seen items (num_items entries).
std::vector<double> ItemBasedScores(const UserRatings& user,
                                    const std::vector<std::vector<Neighbor>>& item_neighbors,
                                    int32_t num_items);

// User-based partial scores of one shard: score_i = Σ_v s_uv · r_vi over the neighbours v
// (global ids) that live in `shard`. Sums over shards, added in shard order, give the
// user-based scores. Neighbours of other shards are ignored.
std::vector<double> UserBasedScoresInShard(const std::vector<Neighbor>& user_neighbors,
                                           const InteractionMatrix& shard);

// Content scores of a user: cosine of the user's profile (Σ r_uj · unit(f_j) over seen
// items) with each item's feature row. item_features: num_items×d; a zero row scores 0.
// Errors: InvalidArgument when item_features has a different number of rows.
[[nodiscard]] absl::StatusOr<std::vector<double>> ContentScores(const UserRatings& user,
                                                                const MatrixXfR& item_features);

// Hybrid scores: cf_weight · cf / max(cf) + (1 − cf_weight) · content, per item, where
// cf <= 0 counts as 0. Errors: InvalidArgument for sizes that differ.
[[nodiscard]] absl::StatusOr<std::vector<double>> HybridScores(const std::vector<double>& cf_scores,
                                                               const std::vector<double>& content_scores,
                                                               double cf_weight);

// Per-item interaction counts of one shard (num_items entries), additive over shards.
std::vector<int64_t> ItemPopularity(const InteractionMatrix& shard);

}  // namespace cohort

#endif  // COHORT_CORE_RECOMMEND_H_
