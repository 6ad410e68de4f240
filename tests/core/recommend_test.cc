#include "core/recommend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "core/cf_eval.h"
#include "core/interactions.h"
#include "core/similarity.h"
#include "tests/core/cf_reference.h"

namespace cohort {
namespace {

using ::cohort::testing::RandomRatings;
using ::cohort::testing::RatingTable;
using ::cohort::testing::TableRows;

// Surprise's ALS baselines written directly on the dense table.
void NaiveBaselines(const RatingTable& table, int epochs, double reg_item, double reg_user,
                    double* mean, std::vector<double>* item_bias, std::vector<double>* user_bias) {
  const size_t users = table.size();
  const size_t items = table.front().size();
  double sum = 0;
  int count = 0;
  for (const auto& row : table) {
    for (double v : row) {
      if (v != 0) {
        sum += v;
        ++count;
      }
    }
  }
  *mean = sum / count;
  item_bias->assign(items, 0);
  user_bias->assign(users, 0);
  for (int epoch = 0; epoch < epochs; ++epoch) {
    for (size_t i = 0; i < items; ++i) {
      double dev = 0;
      int n = 0;
      for (size_t u = 0; u < users; ++u) {
        if (table[u][i] != 0) {
          dev += table[u][i] - *mean - (*user_bias)[u];
          ++n;
        }
      }
      (*item_bias)[i] = dev / (reg_item + n);
    }
    for (size_t u = 0; u < users; ++u) {
      double dev = 0;
      int n = 0;
      for (size_t i = 0; i < items; ++i) {
        if (table[u][i] != 0) {
          dev += table[u][i] - *mean - (*item_bias)[i];
          ++n;
        }
      }
      (*user_bias)[u] = dev / (reg_user + n);
    }
  }
}

TEST(BaselinesTest, ShardedFitEqualsNaiveAls) {
  const RatingTable table = RandomRatings(30, 10, 0.4, 17);
  absl::StatusOr<InteractionDataset> dataset = BuildInteractionDataset(TableRows(table), 3, DuplicateRule::kReject);
  ASSERT_TRUE(dataset.ok());
  BaselineOptions options;
  absl::StatusOr<Baselines> fitted = FitBaselines(dataset->shards, options);
  ASSERT_TRUE(fitted.ok()) << fitted.status();

  double mean = 0;
  std::vector<double> item_bias, user_bias;
  NaiveBaselines(table, options.epochs, options.reg_item, options.reg_user, &mean, &item_bias, &user_bias);
  EXPECT_NEAR(fitted->global_mean, mean, 1e-12);
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(fitted->item_bias[i], item_bias[i], 1e-9);
  for (size_t s = 0; s < dataset->shards.size(); ++s) {
    const InteractionMatrix& shard = dataset->shards[s];
    for (int64_t r = 0; r < shard.num_users(); ++r) {
      const int u = std::stoi(shard.user_ids[r].substr(1));
      EXPECT_NEAR(fitted->user_bias[s][r], user_bias[u], 1e-9);
    }
  }
  BaselineOptions bad;
  bad.reg_item = -1;
  EXPECT_EQ(FitBaselines(dataset->shards, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PredictionTest, ItemBasedAroundBaseline) {
  Baselines baselines;
  baselines.global_mean = 3.0;
  baselines.item_bias = {0.5, -0.5, 0.0, 0.2};
  // Neighbours of item 0: item 3 (unrated by the user), 1, 2 and a negative one.
  const std::vector<std::vector<Neighbor>> neighbors = {
      {{3, 0.9f}, {1, 0.8f}, {2, 0.4f}}, {}, {}, {}};
  UserRatings user;
  user.items = {1, 2};
  user.values = {4.0f, 2.0f};
  PredictionOptions options;
  const double user_bias = 0.25;
  const double b1 = 3.0 + 0.25 - 0.5;
  const double b2 = 3.0 + 0.25 + 0.0;
  const double expected = 3.0 + 0.25 + 0.5 + (0.8 * (4 - b1) + 0.4 * (2 - b2)) / (0.8 + 0.4);
  EXPECT_NEAR(PredictItemBased(user, user_bias, 0, baselines, neighbors, options), expected, 1e-6);

  // With k = 1 only the most similar rated item (1) counts.
  options.k = 1;
  EXPECT_NEAR(PredictItemBased(user, user_bias, 0, baselines, neighbors, options),
              3.0 + 0.25 + 0.5 + (4 - b1), 1e-6);
  // With min_k above the usable count the prediction is the baseline.
  options.k = 40;
  options.min_k = 3;
  EXPECT_NEAR(PredictItemBased(user, user_bias, 0, baselines, neighbors, options), 3.75, 1e-9);
  // An unknown item gets the user's baseline, clamped to the rating range.
  options.min_k = 1;
  EXPECT_NEAR(PredictItemBased(user, user_bias, -1, baselines, neighbors, options), 3.25, 1e-9);
}

TEST(PredictionTest, UserBasedBasicAndBaseline) {
  const std::vector<RatedNeighbor> neighbors = {{0.5f, 4.0f, 3.5}, {0.25f, 2.0f, 3.0}, {-0.3f, 5.0f, 3.0}};
  PredictionOptions options;
  EXPECT_NEAR(PredictUserBasic(neighbors, 3.5, options), (0.5 * 4 + 0.25 * 2) / 0.75, 1e-6);
  EXPECT_NEAR(PredictUserBaseline(neighbors, 3.2, options),
              3.2 + (0.5 * 0.5 + 0.25 * -1.0) / 0.75, 1e-6);
  options.min_k = 3;
  EXPECT_NEAR(PredictUserBasic(neighbors, 3.5, options), 3.5, 1e-9);
  EXPECT_NEAR(PredictUserBaseline({}, 6.0, options), 5.0, 1e-9);
}

TEST(RecommendTest, FiltersSeenAndExcludedAndFillsFromPopularity) {
  const std::vector<double> scores = {0.0, 0.9, 0.5, 0.0, 0.7, 0.0};
  const std::vector<int64_t> popularity = {5, 1, 1, 9, 1, 9};
  UserRatings seen;
  seen.items = {4};
  seen.values = {1};
  RecommendOptions options;
  options.n = 4;
  options.excluded_items = {2};
  absl::StatusOr<RecommendationList> list = RankRecommendations(scores, seen, popularity, options);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->items.size(), 4u);
  EXPECT_FALSE(list->fewer_than_requested);
  EXPECT_EQ(list->items[0].item, 1);
  EXPECT_TRUE(list->items[0].from_neighbors);
  // Popularity fill: items 3 and 5 (count 9, ties by index), then 0.
  EXPECT_EQ(list->items[1].item, 3);
  EXPECT_FALSE(list->items[1].from_neighbors);
  EXPECT_EQ(list->items[2].item, 5);
  EXPECT_EQ(list->items[3].item, 0);
}

TEST(RecommendTest, LargerNThanCatalogueReturnsEveryEligibleItem) {
  const std::vector<double> scores = {0.2, 0.1, 0.0};
  UserRatings seen;
  seen.items = {1};
  seen.values = {3};
  RecommendOptions options;
  options.n = 50;
  absl::StatusOr<RecommendationList> list = RankRecommendations(scores, seen, {1, 1, 1}, options);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->items.size(), 2u);
  EXPECT_TRUE(list->fewer_than_requested);
}

TEST(RecommendTest, UserWhoSawEverythingGetsNothing) {
  UserRatings seen;
  seen.items = {0, 1, 2};
  seen.values = {1, 1, 1};
  RecommendOptions options;
  absl::StatusOr<RecommendationList> list = RankRecommendations({0.5, 0.5, 0.5}, seen, {1, 2, 3}, options);
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->items.empty());
  EXPECT_TRUE(list->fewer_than_requested);
  options.excluded_items = {7};
  EXPECT_EQ(RankRecommendations({0.5, 0.5, 0.5}, seen, {1, 2, 3}, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RecommendTest, UserBasedScoresSumOverShards) {
  const RatingTable table = RandomRatings(40, 12, 0.3, 8);
  absl::StatusOr<InteractionDataset> dataset = BuildInteractionDataset(TableRows(table), 4, DuplicateRule::kReject);
  ASSERT_TRUE(dataset.ok());
  // Neighbours: every user of every shard with weight 1/(row + 1).
  std::vector<Neighbor> neighbors;
  std::vector<double> expected(12, 0.0);
  for (const InteractionMatrix& shard : dataset->shards) {
    for (int64_t r = 0; r < shard.num_users(); ++r) {
      const float weight = 1.0f / static_cast<float>(r + 1);
      neighbors.push_back({GlobalUserId(shard.shard_id, r), weight});
      const int u = std::stoi(shard.user_ids[r].substr(1));
      for (int i = 0; i < 12; ++i) expected[i] += weight * table[u][i];
    }
  }
  std::vector<double> total(12, 0.0);
  for (const InteractionMatrix& shard : dataset->shards) {
    const std::vector<double> partial = UserBasedScoresInShard(neighbors, shard);
    for (int i = 0; i < 12; ++i) total[i] += partial[i];
  }
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(total[i], expected[i], 1e-9);
}

TEST(RecommendTest, ContentAndHybridScores) {
  MatrixXfR features(4, 2);
  features << 1, 0, 0, 1, 1, 1, 0, 0;  // item 3 is an all-zero row
  UserRatings user;
  user.items = {0};
  user.values = {2};
  absl::StatusOr<std::vector<double>> content = ContentScores(user, features);
  ASSERT_TRUE(content.ok());
  EXPECT_NEAR((*content)[0], 1.0, 1e-9);
  EXPECT_NEAR((*content)[1], 0.0, 1e-9);
  EXPECT_NEAR((*content)[2], std::sqrt(0.5), 1e-6);
  EXPECT_EQ((*content)[3], 0.0);

  absl::StatusOr<std::vector<double>> hybrid = HybridScores({0.0, 2.0, 1.0, -1.0}, *content, 0.5);
  ASSERT_TRUE(hybrid.ok());
  EXPECT_NEAR((*hybrid)[0], 0.5, 1e-9);
  EXPECT_NEAR((*hybrid)[1], 0.5, 1e-9);
  EXPECT_NEAR((*hybrid)[2], 0.25 + 0.5 * std::sqrt(0.5), 1e-6);
  EXPECT_EQ((*hybrid)[3], 0.0);
  EXPECT_EQ(HybridScores({1.0}, {1.0, 2.0}, 0.5).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------
// Evaluation.

TEST(HoldoutTest, TimeSplitHoldsOutLatest) {
  std::vector<InteractionRow> rows;
  for (int i = 0; i < 10; ++i) rows.push_back({"u", "i" + std::to_string(i), 1.0, 1000 - i});
  rows.push_back({"single", "i0", 1.0, 5});
  absl::StatusOr<InteractionDataset> dataset = BuildInteractionDataset(rows, 1, DuplicateRule::kReject);
  ASSERT_TRUE(dataset.ok());
  HoldoutOptions options;
  options.test_fraction = 0.3;
  absl::StatusOr<HoldoutSplit> split = SplitHoldout(dataset->shards[0], options);
  ASSERT_TRUE(split.ok());
  // Users sorted: "single" (row 0), "u" (row 1). Items i0..i2 are the latest.
  EXPECT_EQ(split->test.row_ptr, (std::vector<int64_t>{0, 0, 3}));
  EXPECT_EQ(split->test.item_index, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(split->train.num_entries(), 8);
  EXPECT_EQ(split->train.row_ptr[1], 1);
}

TEST(HoldoutTest, HashSplitDoesNotDependOnShards) {
  const RatingTable table = RandomRatings(50, 20, 0.5, 2);
  absl::StatusOr<InteractionDataset> one = BuildInteractionDataset(TableRows(table), 1, DuplicateRule::kReject);
  absl::StatusOr<InteractionDataset> many = BuildInteractionDataset(TableRows(table), 6, DuplicateRule::kReject);
  ASSERT_TRUE(one.ok());
  ASSERT_TRUE(many.ok());
  HoldoutOptions options;
  auto held_out = [&](const InteractionDataset& dataset) {
    std::map<std::string, std::vector<int32_t>> test;
    for (const InteractionMatrix& shard : dataset.shards) {
      absl::StatusOr<HoldoutSplit> split = SplitHoldout(shard, options);
      EXPECT_TRUE(split.ok());
      for (int64_t r = 0; r < shard.num_users(); ++r) {
        const int64_t m = shard.row_ptr[r + 1] - shard.row_ptr[r];
        const int64_t held = split->test.row_ptr[r + 1] - split->test.row_ptr[r];
        EXPECT_EQ(held, std::min<int64_t>(static_cast<int64_t>(0.2 * m), std::max<int64_t>(m - 1, 0)));
        test[shard.user_ids[r]].assign(split->test.item_index.begin() + split->test.row_ptr[r],
                                       split->test.item_index.begin() + split->test.row_ptr[r + 1]);
      }
    }
    return test;
  };
  EXPECT_EQ(held_out(*one), held_out(*many));
  options.test_fraction = 1.0;
  EXPECT_EQ(SplitHoldout(one->shards[0], options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RankingMetricsTest, MatchHandComputedValues) {
  RankingMetricSums sums;
  sums.recommended.assign(10, 0);
  // User 1: hits at ranks 1 and 3 of 3 relevant items, k = 4.
  AddUserRanking({2, 5, 7, 9}, {2, 7, 8}, 4, &sums);
  // User 2: no hit.
  AddUserRanking({1, 3}, {4}, 4, &sums);
  // User 3: no test items, not counted.
  AddUserRanking({0}, {}, 4, &sums);
  const RankingMetrics metrics = FinishRankingMetrics(sums);
  EXPECT_EQ(metrics.users, 2);
  EXPECT_NEAR(metrics.precision_at_k, (2.0 / 4 + 0) / 2, 1e-12);
  EXPECT_NEAR(metrics.recall_at_k, (2.0 / 3 + 0) / 2, 1e-12);
  const double dcg = 1.0 + 1.0 / std::log2(4.0);
  const double idcg = 1.0 + 1.0 / std::log2(3.0) + 1.0 / std::log2(4.0);
  EXPECT_NEAR(metrics.ndcg_at_k, (dcg / idcg) / 2, 1e-12);
  EXPECT_NEAR(metrics.hit_rate, 0.5, 1e-12);
  EXPECT_NEAR(metrics.coverage, 6.0 / 10, 1e-12);
}

TEST(RatingErrorTest, RmseAndMae) {
  RatingErrorSums a;
  a.Add(3.0, 4.0);
  a.Add(5.0, 3.0);
  RatingErrorSums b;
  b.Add(2.0, 2.0);
  a.Merge(b);
  EXPECT_NEAR(a.Rmse(), std::sqrt(5.0 / 3), 1e-12);
  EXPECT_NEAR(a.Mae(), 1.0, 1e-12);
  EXPECT_EQ(RatingErrorSums().Rmse(), 0.0);
}

}  // namespace
}  // namespace cohort
