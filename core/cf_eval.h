// Evaluation of recommendations and rating predictions on held-out interactions.
#ifndef COHORT_CORE_CF_EVAL_H_
#define COHORT_CORE_CF_EVAL_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/interactions.h"

namespace cohort {

struct HoldoutOptions {
  // Fraction of each user's interactions held out, in (0, 1). A user keeps at least one
  // training interaction: a user with m entries holds out floor(fraction · m), at most
  // m − 1.
  double test_fraction = 0.2;
  // Seed of the hash split (used when the shard has no times).
  uint64_t seed = 42;

  [[nodiscard]] absl::Status Validate() const;
};

struct HoldoutSplit {
  InteractionMatrix train;  // same users (rows) and num_items as the input
  InteractionMatrix test;   // same users; a row may be empty
};

// Splits each user's interactions. With times: the latest ones are held out (among equal
// times, the larger item index first). Without times: entries are ordered by
// KeyedUniform(seed, XXH64 of the user id, dictionary index of the item, 0, 0) and the
// first ones are held out. The split of a user therefore depends neither on the shard, on other users nor on
// the thread count. Errors: InvalidArgument for bad options.
[[nodiscard]] absl::StatusOr<HoldoutSplit> SplitHoldout(const InteractionMatrix& shard,
                                                        const HoldoutOptions& options);

// Ranking metric sums, additive over users and shards (merge in shard order).
// Binary relevance: a recommended item is relevant when it is in the user's test set.
struct RankingMetricSums {
  int64_t users = 0;           // users with at least one test item
  double precision = 0;        // Σ hits@k / k
  double recall = 0;           // Σ hits@k / |test|
  double ndcg = 0;             // Σ DCG@k / IDCG@k, DCG = Σ 1/log2(rank + 1), rank from 1
  double hit_rate = 0;         // Σ [hits@k > 0]
  std::vector<uint8_t> recommended;  // [item] 1 when recommended to any evaluated user

  void Add(const RankingMetricSums& other);
};

// Adds one user's list to `sums`. `recommended` is the list in rank order (dictionary
// indices), `relevant` the user's test items (ascending). A user without test items is
// not counted. REQUIRES: k >= 1, sums->recommended has num_items entries.
void AddUserRanking(const std::vector<int32_t>& recommended, const std::vector<int32_t>& relevant,
                    int k, RankingMetricSums* sums);

struct RankingMetrics {
  int64_t users = 0;
  double precision_at_k = 0;
  double recall_at_k = 0;
  double ndcg_at_k = 0;
  double hit_rate = 0;
  // Distinct recommended items / catalogue size.
  double coverage = 0;
};
// Means over users (0 when no user was counted).
RankingMetrics FinishRankingMetrics(const RankingMetricSums& sums);

// Rating error sums, additive over shards.
struct RatingErrorSums {
  int64_t count = 0;
  double sum_sq = 0;   // Σ (r̂ − r)²
  double sum_abs = 0;  // Σ |r̂ − r|

  void Add(double predicted, double actual);
  void Merge(const RatingErrorSums& other);
  double Rmse() const;  // 0 when count = 0
  double Mae() const;
};

}  // namespace cohort

#endif  // COHORT_CORE_CF_EVAL_H_
