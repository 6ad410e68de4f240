// Collaborative filtering on public data: MovieLens 100k rating prediction (the five
// u1–u5 folds) and ranking, and Online Retail implicit purchases.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "core/cf_eval.h"
#include "core/interactions.h"
#include "core/recommend.h"
#include "core/shard_hash.h"
#include "core/similarity.h"
#include "tests/test_data.h"

namespace cohort {
namespace {

constexpr int kShards = 4;

InteractionLoadOptions MovieLensOptions(const std::string& path) {
  InteractionLoadOptions options;
  options.paths = {path};
  options.csv.delimiter = '\t';
  options.csv.has_header = false;
  options.user_column = "0";
  options.item_column = "1";
  options.value_column = "2";
  options.time_column = "3";
  options.num_shards = kShards;
  return options;
}

// Position of a user in a sharded dataset.
struct UserPosition {
  int shard = -1;
  int64_t row = -1;
};

UserPosition FindUser(const InteractionDataset& dataset, const std::string& user_id) {
  const int shard = ShardOfUser(user_id, kShards);
  const std::vector<std::string>& ids = dataset.shards[shard].user_ids;
  const auto it = std::lower_bound(ids.begin(), ids.end(), user_id);
  if (it == ids.end() || *it != user_id) return {};
  return {shard, it - ids.begin()};
}

// Every user's neighbours over all shards (result[shard][row]).
std::vector<std::vector<std::vector<Neighbor>>> AllUserNeighbors(const InteractionDataset& dataset,
                                                                 const SimilarityOptions& options) {
  std::vector<std::vector<std::vector<Neighbor>>> result;
  for (const InteractionMatrix& query_shard : dataset.shards) {
    UserQueryBlock block;
    block.rows = query_shard;
    for (int64_t r = 0; r < query_shard.num_users(); ++r) {
      block.global_ids.push_back(GlobalUserId(query_shard.shard_id, r));
    }
    std::vector<std::vector<std::vector<Neighbor>>> per_shard;
    for (const InteractionMatrix& shard : dataset.shards) {
      absl::StatusOr<std::vector<std::vector<Neighbor>>> local =
          UserNeighborsInShard(block, shard, {}, options);
      EXPECT_TRUE(local.ok()) << local.status();
      per_shard.push_back(*std::move(local));
    }
    std::vector<std::vector<Neighbor>> merged(static_cast<size_t>(query_shard.num_users()));
    for (int64_t r = 0; r < query_shard.num_users(); ++r) {
      std::vector<std::vector<Neighbor>> lists;
      for (const auto& shard_lists : per_shard) lists.push_back(shard_lists[r]);
      merged[r] = MergeTopK(lists, options.k, ScoreOrder::kLargerIsBetter);
    }
    result.push_back(std::move(merged));
  }
  return result;
}

// Rating of `item` by the user at global id `id`, or 0 when not rated.
float RatingOf(const InteractionDataset& dataset, int64_t id, int32_t item) {
  const InteractionMatrix& shard = dataset.shards[ShardOfGlobalUserId(id)];
  const int64_t row = RowOfGlobalUserId(id);
  const auto begin = shard.item_index.begin() + shard.row_ptr[row];
  const auto end = shard.item_index.begin() + shard.row_ptr[row + 1];
  const auto it = std::lower_bound(begin, end, item);
  if (it == end || *it != item) return 0.0f;
  return shard.values[it - shard.item_index.begin()];
}

struct FoldErrors {
  RatingErrorSums item_baseline;
  RatingErrorSums user_basic;
  RatingErrorSums user_baseline;
};

FoldErrors EvaluateFold(const std::string& base_path, const std::string& test_path) {
  FoldErrors errors;
  absl::StatusOr<InteractionDataset> train =
      LoadInteractionDataset(MovieLensOptions(base_path), DuplicateRule::kReject);
  EXPECT_TRUE(train.ok()) << train.status();
  InteractionLoadOptions test_options = MovieLensOptions(test_path);
  test_options.shards = {0, 1, 2, 3};
  absl::StatusOr<LoadedInteractions> test = LoadInteractionRows(test_options);
  EXPECT_TRUE(test.ok()) << test.status();
  if (!train.ok() || !test.ok()) return errors;

  absl::StatusOr<Baselines> baselines = FitBaselines(train->shards, BaselineOptions());
  EXPECT_TRUE(baselines.ok());

  SimilarityOptions item_options;
  item_options.measure = SimilarityMeasure::kPearson;
  item_options.shrinkage = 100;
  item_options.k = train->dictionary.size();
  absl::StatusOr<std::vector<std::vector<Neighbor>>> item_neighbors =
      ComputeAllItemNeighbors(train->shards, item_options);
  EXPECT_TRUE(item_neighbors.ok());

  // User-based: MSD for KNNBasic (Surprise's default) and shrunk Pearson for KNNBaseline.
  SimilarityOptions msd_options;
  msd_options.measure = SimilarityMeasure::kMsd;
  msd_options.k = 1000;
  const auto msd_neighbors = AllUserNeighbors(*train, msd_options);
  SimilarityOptions pearson_options;
  pearson_options.measure = SimilarityMeasure::kPearson;
  pearson_options.shrinkage = 100;
  pearson_options.k = 1000;
  const auto pearson_neighbors = AllUserNeighbors(*train, pearson_options);

  PredictionOptions prediction;
  for (const InteractionRows& shard_rows : test->shards) {
    for (const InteractionRow& row : shard_rows.rows) {
      const UserPosition user = FindUser(*train, row.user_id);
      const int32_t item = train->dictionary.Find(row.item_id);
      if (user.shard < 0) {
        // Every MovieLens test user has training ratings in u1–u5.
        ADD_FAILURE() << "test user " << row.user_id << " has no training ratings";
        continue;
      }
      const InteractionMatrix& shard = train->shards[user.shard];
      const double user_bias = baselines->user_bias[user.shard][user.row];
      const double item_bias = item >= 0 ? baselines->item_bias[item] : 0.0;
      const double baseline_ui = baselines->global_mean + user_bias + item_bias;

      errors.item_baseline.Add(PredictItemBased(RowRatings(shard, user.row), user_bias, item,
                                                *baselines, *item_neighbors, prediction),
                               row.value);

      // The user's neighbours who rated the item, in rank order.
      auto rated_neighbors = [&](const std::vector<std::vector<std::vector<Neighbor>>>& lists) {
        std::vector<RatedNeighbor> rated;
        if (item < 0) return rated;
        for (const Neighbor& n : lists[user.shard][user.row]) {
          const float rating = RatingOf(*train, n.id, item);
          if (rating == 0.0f) continue;
          const int neighbor_shard = ShardOfGlobalUserId(n.id);
          const double neighbor_bias = baselines->user_bias[neighbor_shard][RowOfGlobalUserId(n.id)];
          rated.push_back({n.score, rating, baselines->global_mean + neighbor_bias + item_bias});
        }
        return rated;
      };
      errors.user_basic.Add(
          PredictUserBasic(rated_neighbors(msd_neighbors), baselines->global_mean, prediction),
          row.value);
      errors.user_baseline.Add(
          PredictUserBaseline(rated_neighbors(pearson_neighbors), baseline_ui, prediction), row.value);
    }
  }
  return errors;
}

TEST(MovieLensTest, FiveFoldRmseReachesPublishedNeighborhoodResults) {
  COHORT_REQUIRE_DATA_FILE(first_base, "movielens-100k/u1.base");
  RatingErrorSums item_baseline, user_basic, user_baseline;
  double item_rmse_sum = 0, user_basic_rmse_sum = 0, user_baseline_rmse_sum = 0;
  for (int fold = 1; fold <= 5; ++fold) {
    const std::string prefix = ::cohort::testing::DataDir() + "/movielens-100k/u" + std::to_string(fold);
    const FoldErrors errors = EvaluateFold(prefix + ".base", prefix + ".test");
    ASSERT_EQ(errors.item_baseline.count, 20000) << "fold " << fold;
    item_rmse_sum += errors.item_baseline.Rmse();
    user_basic_rmse_sum += errors.user_basic.Rmse();
    user_baseline_rmse_sum += errors.user_baseline.Rmse();
    item_baseline.Merge(errors.item_baseline);
    user_basic.Merge(errors.user_basic);
    user_baseline.Merge(errors.user_baseline);
    std::printf("fold %d: item KNNBaseline RMSE %.4f, user KNNBasic RMSE %.4f, user KNNBaseline RMSE %.4f\n",
                fold, errors.item_baseline.Rmse(), errors.user_basic.Rmse(), errors.user_baseline.Rmse());
  }
  std::printf("mean over 5 folds: item KNNBaseline RMSE %.4f MAE %.4f; user KNNBasic RMSE %.4f MAE %.4f; "
              "user KNNBaseline RMSE %.4f MAE %.4f\n",
              item_rmse_sum / 5, item_baseline.Mae(), user_basic_rmse_sum / 5, user_basic.Mae(),
              user_baseline_rmse_sum / 5, user_baseline.Mae());
  // Surprise's README (MovieLens 100k, 5-fold): KNNBaseline 0.9306, KNNBasic 0.9789.
  // Surprise draws its own random folds; on u1–u5 KNNBasic with MSD measures 0.980, so
  // its bound leaves 0.01 for fold differences.
  EXPECT_LE(item_rmse_sum / 5, 0.93);
  EXPECT_LE(user_baseline_rmse_sum / 5, 0.98);
  EXPECT_LE(user_basic_rmse_sum / 5, 0.99);
}

// Top-10 ranking of item-based recommendations for every user of `train`, against the
// test interactions of `test` (same users and rows).
RankingMetrics RankItemBased(const std::vector<InteractionMatrix>& train,
                             const std::vector<InteractionMatrix>& test,
                             const std::vector<std::vector<Neighbor>>& item_neighbors, int k) {
  const int32_t num_items = train.front().num_items;
  std::vector<int64_t> popularity(static_cast<size_t>(num_items), 0);
  for (const InteractionMatrix& shard : train) {
    const std::vector<int64_t> counts = ItemPopularity(shard);
    for (int32_t i = 0; i < num_items; ++i) popularity[i] += counts[i];
  }
  RankingMetricSums sums;
  sums.recommended.assign(static_cast<size_t>(num_items), 0);
  RecommendOptions options;
  options.n = k;
  for (size_t s = 0; s < train.size(); ++s) {
    for (int64_t r = 0; r < train[s].num_users(); ++r) {
      const UserRatings seen = RowRatings(train[s], r);
      const std::vector<double> scores = ItemBasedScores(seen, item_neighbors, num_items);
      absl::StatusOr<RecommendationList> list = RankRecommendations(scores, seen, popularity, options);
      EXPECT_TRUE(list.ok());
      std::vector<int32_t> recommended;
      for (const Recommendation& rec : list->items) recommended.push_back(rec.item);
      const UserRatings relevant = RowRatings(test[s], r);
      AddUserRanking(recommended, relevant.items, k, &sums);
    }
  }
  return FinishRankingMetrics(sums);
}

void PrintRanking(const char* name, const RankingMetrics& m) {
  std::printf("%s: users %lld, precision@10 %.4f, recall@10 %.4f, NDCG@10 %.4f, hit rate %.4f, "
              "coverage %.4f\n",
              name, static_cast<long long>(m.users), m.precision_at_k, m.recall_at_k, m.ndcg_at_k,
              m.hit_rate, m.coverage);
}

TEST(MovieLensTest, ItemBasedTopTenRanking) {
  COHORT_REQUIRE_DATA_FILE(path, "movielens-100k/u.data");
  InteractionLoadOptions options = MovieLensOptions(path);
  absl::StatusOr<InteractionDataset> dataset = LoadInteractionDataset(options, DuplicateRule::kReject);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  ASSERT_EQ(dataset->build_counts.interactions, 100000);
  std::vector<InteractionMatrix> train, test;
  for (const InteractionMatrix& shard : dataset->shards) {
    absl::StatusOr<HoldoutSplit> split = SplitHoldout(shard, HoldoutOptions());
    ASSERT_TRUE(split.ok());
    train.push_back(std::move(split->train));
    test.push_back(std::move(split->test));
  }
  SimilarityOptions similarity;
  similarity.measure = SimilarityMeasure::kCosine;
  similarity.k = 50;
  absl::StatusOr<std::vector<std::vector<Neighbor>>> neighbors = ComputeAllItemNeighbors(train, similarity);
  ASSERT_TRUE(neighbors.ok());
  const RankingMetrics metrics = RankItemBased(train, test, *neighbors, 10);
  PrintRanking("MovieLens 100k, latest 20% per user held out, item-based cosine k=50", metrics);
  // Popularity alone: the same ranking with no neighbours.
  const std::vector<std::vector<Neighbor>> none(neighbors->size());
  const RankingMetrics popular = RankItemBased(train, test, none, 10);
  PrintRanking("MovieLens 100k, most popular", popular);
  EXPECT_EQ(metrics.users, 943);
  EXPECT_GT(metrics.hit_rate, 0.5);
  EXPECT_GT(metrics.coverage, popular.coverage);
}

TEST(OnlineRetailTest, ImplicitItemNeighborsAndTimeHoldout) {
  COHORT_REQUIRE_DATA_FILE(path, "online-retail/OnlineRetail.csv.gz");
  InteractionLoadOptions options;
  options.paths = {path};
  options.user_column = "CustomerID";
  options.item_column = "StockCode";
  options.value_column = "Quantity";
  options.time_column = "InvoiceDate";
  options.min_value = 0;  // cancellations and returns have Quantity <= 0
  options.binarize = true;
  options.num_shards = kShards;
  absl::StatusOr<InteractionDataset> dataset = LoadInteractionDataset(options, DuplicateRule::kMax);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->load_counts.rows_read, 541909);
  EXPECT_EQ(dataset->load_counts.empty_user_rows, 135080);
  std::printf("Online Retail: %lld rows kept, %lld duplicate (user, item) rows folded, %lld users, "
              "%d items, %lld interactions\n",
              static_cast<long long>(dataset->load_counts.kept_rows),
              static_cast<long long>(dataset->build_counts.duplicate_rows),
              static_cast<long long>(dataset->build_counts.users), dataset->dictionary.size(),
              static_cast<long long>(dataset->build_counts.interactions));

  std::vector<InteractionMatrix> train, test;
  for (const InteractionMatrix& shard : dataset->shards) {
    ASSERT_TRUE(shard.has_times());
    absl::StatusOr<HoldoutSplit> split = SplitHoldout(shard, HoldoutOptions());
    ASSERT_TRUE(split.ok());
    train.push_back(std::move(split->train));
    test.push_back(std::move(split->test));
  }
  SimilarityOptions similarity;
  similarity.measure = SimilarityMeasure::kCosine;
  similarity.k = 20;
  absl::StatusOr<std::vector<std::vector<Neighbor>>> neighbors = ComputeAllItemNeighbors(train, similarity);
  ASSERT_TRUE(neighbors.ok());
  int64_t with_neighbors = 0;
  for (const auto& list : *neighbors) {
    EXPECT_LE(list.size(), 20u);
    with_neighbors += !list.empty();
  }
  std::printf("Online Retail: %lld of %zu items have neighbours\n",
              static_cast<long long>(with_neighbors), neighbors->size());
  const RankingMetrics metrics = RankItemBased(train, test, *neighbors, 10);
  PrintRanking("Online Retail, latest 20% per customer held out, item-based cosine k=20", metrics);
  const std::vector<std::vector<Neighbor>> none(neighbors->size());
  const RankingMetrics popular = RankItemBased(train, test, none, 10);
  PrintRanking("Online Retail, most popular", popular);
  EXPECT_GT(metrics.users, 3000);
  EXPECT_GT(metrics.recall_at_k, popular.recall_at_k);
  EXPECT_GT(metrics.ndcg_at_k, popular.ndcg_at_k);
}

}  // namespace
}  // namespace cohort
