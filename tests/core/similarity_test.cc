#include "core/similarity.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/interactions.h"
#include "tests/core/cf_reference.h"

namespace cohort {
namespace {

using ::cohort::testing::Column;
using ::cohort::testing::ColumnMeans;
using ::cohort::testing::HasSupport;
using ::cohort::testing::NaiveSimilarity;
using ::cohort::testing::RandomRatings;
using ::cohort::testing::RatingTable;
using ::cohort::testing::RowMeans;
using ::cohort::testing::TableRows;

constexpr double kTolerance = 1e-5;

MatrixXfR RandomMatrix(int64_t rows, int64_t cols, uint64_t seed);

const SimilarityMeasure kAllMeasures[] = {SimilarityMeasure::kCosine, SimilarityMeasure::kPearson,
                                          SimilarityMeasure::kAdjustedCosine,
                                          SimilarityMeasure::kJaccard, SimilarityMeasure::kMsd};

// The naive top-k of `query` among `count` candidates: every candidate with support,
// best first, ties by id.
std::vector<Neighbor> NaiveTopK(int query, int count, int k,
                                const std::function<bool(int)>& supported,
                                const std::function<double(int)>& similarity) {
  std::vector<Neighbor> all;
  for (int c = 0; c < count; ++c) {
    if (c == query || !supported(c)) continue;
    all.push_back({c, static_cast<float>(similarity(c))});
  }
  std::sort(all.begin(), all.end(), [](const Neighbor& a, const Neighbor& b) {
    return RanksBefore(a, b, ScoreOrder::kLargerIsBetter);
  });
  if (static_cast<int>(all.size()) > k) all.resize(k);
  return all;
}

// Checks `actual` against the naive list rank by rank (scores within kTolerance) and each
// returned id against the naive similarity of that pair, so ties within rounding may
// come in either order.
void ExpectSameNeighbors(const std::vector<Neighbor>& actual, const std::vector<Neighbor>& expected,
                         const std::function<int(int64_t)>& index_of,
                         const std::function<double(int)>& similarity, const std::string& context) {
  ASSERT_EQ(actual.size(), expected.size()) << context;
  for (size_t r = 0; r < actual.size(); ++r) {
    EXPECT_NEAR(actual[r].score, expected[r].score, kTolerance) << context << " rank " << r;
    EXPECT_NEAR(actual[r].score, similarity(index_of(actual[r].id)), kTolerance)
        << context << " rank " << r << " id " << actual[r].id;
  }
}

std::string Describe(const SimilarityOptions& options) {
  return std::string(SimilarityMeasureName(options.measure)) + " k=" + std::to_string(options.k) +
         " shrinkage=" + std::to_string(options.shrinkage) +
         " min_support=" + std::to_string(options.min_support);
}

std::vector<SimilarityOptions> OptionGrid() {
  std::vector<SimilarityOptions> grid;
  for (SimilarityMeasure measure : kAllMeasures) {
    for (double shrinkage : {0.0, 5.0}) {
      for (int min_support : {1, 3}) {
        SimilarityOptions options;
        options.measure = measure;
        options.k = 5;
        options.shrinkage = shrinkage;
        options.min_support = min_support;
        grid.push_back(options);
      }
    }
  }
  return grid;
}

TEST(ItemSimilarityTest, NeighborsEqualNaiveReferenceForEveryMeasure) {
  for (bool fractional : {false, true}) {
    const RatingTable table = RandomRatings(40, 15, 0.35, 7, fractional);
    absl::StatusOr<InteractionDataset> dataset =
        BuildInteractionDataset(TableRows(table), 1, DuplicateRule::kReject);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    ASSERT_EQ(dataset->dictionary.size(), 15);
    // Shard rows are sorted by user id ("u0", "u1", "u10", ...), which changes no sum.
    const std::vector<double> user_means = RowMeans(table);

    for (const SimilarityOptions& options : OptionGrid()) {
      absl::StatusOr<std::vector<std::vector<Neighbor>>> neighbors =
          ComputeAllItemNeighbors(dataset->shards, options);
      ASSERT_TRUE(neighbors.ok()) << neighbors.status();
      ASSERT_EQ(neighbors->size(), 15u);
      for (int i = 0; i < 15; ++i) {
        const std::vector<double> column_i = Column(table, i);
        auto similarity = [&](int j) {
          return NaiveSimilarity(column_i, Column(table, j), user_means, options);
        };
        auto supported = [&](int j) { return HasSupport(column_i, Column(table, j), options.min_support); };
        const std::vector<Neighbor> expected = NaiveTopK(i, 15, options.k, supported, similarity);
        ExpectSameNeighbors((*neighbors)[i], expected, [](int64_t id) { return static_cast<int>(id); },
                            similarity,
                            Describe(options) + " item " + std::to_string(i) +
                                (fractional ? " fractional" : " integer"));
      }
    }
  }
}

TEST(ItemSimilarityTest, ShardedPartialsMergeToSingleShardResult) {
  const RatingTable table = RandomRatings(60, 20, 0.3, 11, true);
  absl::StatusOr<InteractionDataset> one = BuildInteractionDataset(TableRows(table), 1, DuplicateRule::kReject);
  absl::StatusOr<InteractionDataset> many = BuildInteractionDataset(TableRows(table), 7, DuplicateRule::kReject);
  ASSERT_TRUE(one.ok());
  ASSERT_TRUE(many.ok());
  for (const SimilarityOptions& options : OptionGrid()) {
    // The distributed steps by hand, shards merged in shard id order.
    std::vector<VectorTotals> totals;
    for (const InteractionMatrix& shard : many->shards) MergeItemTotals(ComputeItemTotals(shard), &totals);
    ItemPairPartial merged;
    for (const InteractionMatrix& shard : many->shards) {
      absl::StatusOr<ItemPairPartial> partial = ComputeItemPairPartial(shard, options.measure, 0, 20);
      ASSERT_TRUE(partial.ok()) << partial.status();
      ASSERT_TRUE(MergeItemPairPartial(*partial, &merged).ok());
    }
    absl::StatusOr<std::vector<std::vector<Neighbor>>> distributed =
        FinishItemNeighbors(merged, totals, options);
    absl::StatusOr<std::vector<std::vector<Neighbor>>> single =
        ComputeAllItemNeighbors(one->shards, options);
    ASSERT_TRUE(distributed.ok());
    ASSERT_TRUE(single.ok());
    for (int i = 0; i < 20; ++i) {
      const std::vector<Neighbor>& a = (*distributed)[i];
      const std::vector<Neighbor>& b = (*single)[i];
      ASSERT_EQ(a.size(), b.size()) << Describe(options) << " item " << i;
      for (size_t r = 0; r < a.size(); ++r) {
        EXPECT_NEAR(a[r].score, b[r].score, 1e-6) << Describe(options) << " item " << i;
        // Only a tie within rounding may swap two ids.
        const bool tied = (r > 0 && std::abs(a[r].score - a[r - 1].score) < 1e-6) ||
                          (r + 1 < a.size() && std::abs(a[r].score - a[r + 1].score) < 1e-6);
        if (!tied) {
          EXPECT_EQ(a[r].id, b[r].id) << Describe(options) << " item " << i;
        }
      }
    }
  }
}

TEST(ItemSimilarityTest, IntegerRatingsMergeExactly) {
  // Integer ratings make every sum except the centred ones exact, so shard count cannot
  // change a cosine, Pearson or Jaccard neighbour list at all.
  const RatingTable table = RandomRatings(50, 12, 0.4, 3);
  absl::StatusOr<InteractionDataset> one = BuildInteractionDataset(TableRows(table), 1, DuplicateRule::kReject);
  absl::StatusOr<InteractionDataset> many = BuildInteractionDataset(TableRows(table), 5, DuplicateRule::kReject);
  ASSERT_TRUE(one.ok());
  ASSERT_TRUE(many.ok());
  for (SimilarityMeasure measure : {SimilarityMeasure::kCosine, SimilarityMeasure::kPearson,
                                    SimilarityMeasure::kJaccard, SimilarityMeasure::kMsd}) {
    SimilarityOptions options;
    options.measure = measure;
    options.k = 6;
    options.shrinkage = 2;
    absl::StatusOr<std::vector<std::vector<Neighbor>>> a = ComputeAllItemNeighbors(one->shards, options);
    absl::StatusOr<std::vector<std::vector<Neighbor>>> b = ComputeAllItemNeighbors(many->shards, options);
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(*a, *b) << SimilarityMeasureName(measure);
  }
}

TEST(UserSimilarityTest, ShardNeighborsMergedEqualNaiveReference) {
  const RatingTable table = RandomRatings(45, 14, 0.35, 21, true);
  absl::StatusOr<InteractionDataset> dataset =
      BuildInteractionDataset(TableRows(table), 4, DuplicateRule::kReject);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const std::vector<double> item_means = ColumnMeans(table);

  // Maps a global user id back to its table row through the user id "u<index>".
  auto table_row = [&](int64_t global_id) {
    const InteractionMatrix& shard = dataset->shards[ShardOfGlobalUserId(global_id)];
    return std::stoi(shard.user_ids[RowOfGlobalUserId(global_id)].substr(1));
  };

  std::vector<VectorTotals> totals;
  std::vector<double> item_sums(14, 0.0);
  for (const InteractionMatrix& shard : dataset->shards) {
    MergeItemTotals(ComputeItemTotals(shard), &totals);
    const std::vector<double> sums = ComputeItemSums(shard);
    for (size_t i = 0; i < sums.size(); ++i) item_sums[i] += sums[i];
  }
  const std::vector<double> means = ComputeItemMeans(totals, item_sums);
  for (int i = 0; i < 14; ++i) ASSERT_NEAR(means[i], item_means[i], 1e-12);

  for (const SimilarityOptions& options : OptionGrid()) {
    for (const InteractionMatrix& query_shard : dataset->shards) {
      UserQueryBlock block;
      block.rows = query_shard;
      for (int64_t r = 0; r < query_shard.num_users(); ++r) {
        block.global_ids.push_back(GlobalUserId(query_shard.shard_id, r));
      }
      std::vector<std::vector<std::vector<Neighbor>>> per_shard;
      for (const InteractionMatrix& shard : dataset->shards) {
        absl::StatusOr<std::vector<std::vector<Neighbor>>> local =
            UserNeighborsInShard(block, shard, means, options);
        ASSERT_TRUE(local.ok()) << local.status();
        per_shard.push_back(*std::move(local));
      }
      for (int64_t r = 0; r < query_shard.num_users(); ++r) {
        std::vector<std::vector<Neighbor>> lists;
        for (const auto& shard_lists : per_shard) lists.push_back(shard_lists[r]);
        const std::vector<Neighbor> merged = MergeTopK(lists, options.k, ScoreOrder::kLargerIsBetter);

        const int u = table_row(block.global_ids[r]);
        auto similarity = [&](int v) { return NaiveSimilarity(table[u], table[v], item_means, options); };
        auto supported = [&](int v) { return HasSupport(table[u], table[v], options.min_support); };
        const std::vector<Neighbor> expected =
            NaiveTopK(u, static_cast<int>(table.size()), options.k, supported, similarity);
        ExpectSameNeighbors(merged, expected, table_row, similarity,
                            Describe(options) + " user " + std::to_string(u));
      }
    }
  }
}

TEST(SimilarityEdgeTest, PearsonOnOneSharedItemIsZero) {
  const std::vector<InteractionRow> rows = {
      {"a", "x", 5, kNoTime}, {"a", "y", 1, kNoTime}, {"b", "x", 2, kNoTime}, {"b", "z", 4, kNoTime}};
  absl::StatusOr<InteractionDataset> dataset = BuildInteractionDataset(rows, 1, DuplicateRule::kReject);
  ASSERT_TRUE(dataset.ok());
  SimilarityOptions options;
  options.measure = SimilarityMeasure::kPearson;
  UserQueryBlock block;
  block.rows = dataset->shards[0];
  block.global_ids = {GlobalUserId(0, 0), GlobalUserId(0, 1)};
  absl::StatusOr<std::vector<std::vector<Neighbor>>> neighbors =
      UserNeighborsInShard(block, dataset->shards[0], {}, options);
  ASSERT_TRUE(neighbors.ok()) << neighbors.status();
  ASSERT_EQ((*neighbors)[0].size(), 1u);
  EXPECT_EQ((*neighbors)[0][0].id, GlobalUserId(0, 1));
  EXPECT_EQ((*neighbors)[0][0].score, 0.0f);
  EXPECT_FALSE(std::isnan((*neighbors)[1][0].score));
}

TEST(SimilarityEdgeTest, IdenticalItemsScoreOne) {
  // Items 0 and 1 have the same ratings, so every measure gives them 1, the value of
  // self-similarity. All other similarities stay in [−1, 1].
  RatingTable table = RandomRatings(30, 8, 0.6, 5, true);
  for (auto& row : table) row[1] = row[0];
  absl::StatusOr<InteractionDataset> dataset = BuildInteractionDataset(TableRows(table), 3, DuplicateRule::kReject);
  ASSERT_TRUE(dataset.ok());
  for (SimilarityMeasure measure : kAllMeasures) {
    SimilarityOptions options;
    options.measure = measure;
    options.k = 8;
    absl::StatusOr<std::vector<std::vector<Neighbor>>> neighbors =
        ComputeAllItemNeighbors(dataset->shards, options);
    ASSERT_TRUE(neighbors.ok());
    ASSERT_FALSE((*neighbors)[0].empty());
    EXPECT_EQ((*neighbors)[0][0].id, 1) << SimilarityMeasureName(measure);
    EXPECT_FLOAT_EQ((*neighbors)[0][0].score, 1.0f) << SimilarityMeasureName(measure);
    for (const auto& list : *neighbors) {
      for (const Neighbor& n : list) {
        EXPECT_LE(std::abs(n.score), 1.0f);
        EXPECT_FALSE(std::isnan(n.score));
      }
    }
  }
}

TEST(SimilarityEdgeTest, AllZeroSparseVectorHasSimilarityZero) {
  // User "z" rated both items 0, so its vector is all zero: cosine and adjusted cosine
  // have a zero denominator and give 0, never NaN.
  const std::vector<InteractionRow> rows = {{"a", "x", 4, kNoTime}, {"a", "y", 2, kNoTime},
                                            {"z", "x", 0, kNoTime}, {"z", "y", 0, kNoTime}};
  absl::StatusOr<InteractionDataset> dataset = BuildInteractionDataset(rows, 1, DuplicateRule::kReject);
  ASSERT_TRUE(dataset.ok());
  const std::vector<double> item_means = {0.0, 0.0};
  for (SimilarityMeasure measure : kAllMeasures) {
    SimilarityOptions options;
    options.measure = measure;
    UserQueryBlock block;
    block.rows = dataset->shards[0];
    block.global_ids = {GlobalUserId(0, 0), GlobalUserId(0, 1)};
    absl::StatusOr<std::vector<std::vector<Neighbor>>> neighbors =
        UserNeighborsInShard(block, dataset->shards[0], item_means, options);
    ASSERT_TRUE(neighbors.ok()) << neighbors.status();
    ASSERT_EQ((*neighbors)[1].size(), 1u);
    const float score = (*neighbors)[1][0].score;
    EXPECT_FALSE(std::isnan(score)) << SimilarityMeasureName(measure);
    if (measure == SimilarityMeasure::kCosine || measure == SimilarityMeasure::kAdjustedCosine) {
      EXPECT_EQ(score, 0.0f) << SimilarityMeasureName(measure);
    }
  }
}

TEST(SimilarityDeterminismTest, ResultsDoNotDependOnThreadCount) {
  const RatingTable table = RandomRatings(300, 120, 0.2, 31, true);
  absl::StatusOr<InteractionDataset> dataset = BuildInteractionDataset(TableRows(table), 3, DuplicateRule::kReject);
  ASSERT_TRUE(dataset.ok());
  SimilarityOptions options;
  options.measure = SimilarityMeasure::kAdjustedCosine;
  options.k = 7;
  const MatrixXfR x = PrepareDenseRows(RandomMatrix(1500, 16, 3), DenseMetric::kCosine);
  std::vector<int64_t> ids(1500);
  for (int64_t i = 0; i < 1500; ++i) ids[i] = i;
  DenseSearchOptions dense;

  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto items_one = ComputeAllItemNeighbors(dataset->shards, options);
  const auto partial_one = ComputeItemPairPartial(dataset->shards[0], options.measure, 0, 120);
  const auto dense_one = ExactDenseTopK(x, ids, x, ids, dense);
  omp_set_num_threads(std::max(2, threads));
  const auto items_many = ComputeAllItemNeighbors(dataset->shards, options);
  const auto partial_many = ComputeItemPairPartial(dataset->shards[0], options.measure, 0, 120);
  const auto dense_many = ExactDenseTopK(x, ids, x, ids, dense);
  omp_set_num_threads(threads);

  ASSERT_TRUE(items_one.ok());
  ASSERT_TRUE(items_many.ok());
  ASSERT_TRUE(partial_one.ok());
  ASSERT_TRUE(partial_many.ok());
  ASSERT_TRUE(dense_one.ok());
  ASSERT_TRUE(dense_many.ok());
  EXPECT_EQ(*items_one, *items_many);
  EXPECT_EQ(partial_one->partner, partial_many->partner);
  for (size_t e = 0; e < partial_one->sums.size(); ++e) {
    EXPECT_EQ(partial_one->sums[e].sum_xy_centred, partial_many->sums[e].sum_xy_centred);
  }
  EXPECT_EQ(*dense_one, *dense_many);
}

TEST(SimilarityEdgeTest, BadOptionsAreRejected) {
  SimilarityOptions options;
  options.k = 0;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  options = SimilarityOptions();
  options.shrinkage = -1;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  options = SimilarityOptions();
  options.min_support = 0;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSimilarityMeasure("euclidean").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseSimilarityMeasure("adjusted_cosine"), SimilarityMeasure::kAdjustedCosine);
}

// ---------------------------------------------------------------------------------------
// Dense.

MatrixXfR RandomMatrix(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 engine(seed);
  MatrixXfR x(rows, cols);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) x(i, j) = static_cast<float>(::cohort::testing::Normal(engine));
  }
  return x;
}

double NaiveDense(const MatrixXfR& x, int64_t a, int64_t b, DenseMetric metric) {
  Eigen::VectorXd u = x.row(a).cast<double>().transpose();
  Eigen::VectorXd v = x.row(b).cast<double>().transpose();
  if (metric == DenseMetric::kInnerProduct) return u.dot(v);
  if (metric == DenseMetric::kPearson) {
    u.array() -= u.mean();
    v.array() -= v.mean();
  }
  const double norms = u.norm() * v.norm();
  return norms > 1e-12 ? std::clamp(u.dot(v) / norms, -1.0, 1.0) : 0.0;
}

TEST(DenseSimilarityTest, ExactTopKEqualsNaiveReference) {
  // 2,500 rows span several base blocks and query blocks; row 7 is all zero.
  MatrixXfR x = RandomMatrix(2500, 24, 9);
  x.row(7).setZero();
  x.row(11) = x.row(12);  // a duplicate pair
  std::vector<int64_t> ids(2500);
  for (int64_t i = 0; i < 2500; ++i) ids[i] = 1000 + i;
  for (DenseMetric metric : {DenseMetric::kCosine, DenseMetric::kPearson, DenseMetric::kInnerProduct}) {
    const MatrixXfR prepared = PrepareDenseRows(x, metric);
    ASSERT_TRUE(prepared.allFinite());
    DenseSearchOptions options;
    options.metric = metric;
    options.k = 10;
    const MatrixXfR queries = prepared.topRows(150);
    const std::vector<int64_t> query_ids(ids.begin(), ids.begin() + 150);
    absl::StatusOr<std::vector<std::vector<Neighbor>>> result =
        ExactDenseTopK(queries, query_ids, prepared, ids, options);
    ASSERT_TRUE(result.ok()) << result.status();
    for (int64_t q = 0; q < 150; ++q) {
      std::vector<Neighbor> expected;
      for (int64_t b = 0; b < 2500; ++b) {
        if (b != q) expected.push_back({ids[b], static_cast<float>(NaiveDense(x, q, b, metric))});
      }
      std::sort(expected.begin(), expected.end(), [](const Neighbor& a, const Neighbor& b) {
        return RanksBefore(a, b, ScoreOrder::kLargerIsBetter);
      });
      expected.resize(10);
      ExpectSameNeighbors((*result)[q], expected, [](int64_t id) { return static_cast<int>(id - 1000); },
                          [&](int b) { return NaiveDense(x, q, b, metric); },
                          "query " + std::to_string(q));
      for (const Neighbor& n : (*result)[q]) EXPECT_NE(n.id, ids[q]);
    }
    if (metric != DenseMetric::kInnerProduct) {
      // The zero row: similarity 0 to everything, never NaN.
      for (const Neighbor& n : (*result)[7]) EXPECT_EQ(n.score, 0.0f);
      // A duplicate row scores exactly 1 (self-similarity).
      EXPECT_EQ((*result)[11][0].id, ids[12]);
      EXPECT_FLOAT_EQ((*result)[11][0].score, 1.0f);
      for (const auto& list : *result) {
        for (const Neighbor& n : list) EXPECT_LE(std::abs(n.score), 1.0f);
      }
    }
  }
}

TEST(DenseSimilarityTest, AllPairsEqualsExactSearch) {
  // 1,300 rows span three all-pairs blocks, so diagonal and off-diagonal blocks are used.
  MatrixXfR raw = RandomMatrix(1300, 12, 8);
  raw.row(5).setZero();
  const MatrixXfR x = PrepareDenseRows(raw, DenseMetric::kCosine);
  std::vector<int64_t> ids(1300);
  for (int64_t i = 0; i < 1300; ++i) ids[i] = 7 * i + 3;
  DenseSearchOptions options;
  options.k = 9;
  absl::StatusOr<std::vector<std::vector<Neighbor>>> exact = ExactDenseTopK(x, ids, x, ids, options);
  ASSERT_TRUE(exact.ok()) << exact.status();

  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  absl::StatusOr<std::vector<std::vector<Neighbor>>> one = ExactDenseAllPairsTopK(x, ids, options);
  omp_set_num_threads(std::max(2, threads));
  absl::StatusOr<std::vector<std::vector<Neighbor>>> many = ExactDenseAllPairsTopK(x, ids, options);
  omp_set_num_threads(threads);
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(many.ok()) << many.status();
  EXPECT_EQ(*one, *many);

  for (int64_t q = 0; q < 1300; ++q) {
    ExpectSameNeighbors((*many)[q], (*exact)[q], [](int64_t id) { return static_cast<int>((id - 3) / 7); },
                        [&](int b) { return NaiveDense(raw, q, b, DenseMetric::kCosine); },
                        "row " + std::to_string(q));
    for (const Neighbor& n : (*many)[q]) EXPECT_NE(n.id, ids[q]);
  }
  EXPECT_EQ(ExactDenseAllPairsTopK(x, {1, 2}, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DenseSimilarityTest, IvfWithEveryListProbedEqualsExact) {
  const MatrixXfR x = RandomMatrix(3000, 16, 4);
  const MatrixXfR centroids = RandomMatrix(12, 16, 5);
  std::vector<int32_t> labels(3000);
  for (int64_t i = 0; i < 3000; ++i) {
    Eigen::Index best = 0;
    (centroids.rowwise() - x.row(i)).rowwise().squaredNorm().minCoeff(&best);
    labels[i] = static_cast<int32_t>(best);
  }
  std::vector<int64_t> ids(3000);
  for (int64_t i = 0; i < 3000; ++i) ids[i] = i;
  const MatrixXfR prepared = PrepareDenseRows(x, DenseMetric::kCosine);
  absl::StatusOr<IvfIndex> index =
      IvfIndex::Build(centroids, false, labels, prepared, ids, DenseMetric::kCosine);
  ASSERT_TRUE(index.ok()) << index.status();
  DenseSearchOptions options;
  options.k = 10;
  const std::vector<int64_t> query_ids(ids.begin(), ids.begin() + 700);
  absl::StatusOr<std::vector<std::vector<Neighbor>>> exact =
      ExactDenseTopK(prepared.topRows(700), query_ids, prepared, ids, options);
  absl::StatusOr<std::vector<std::vector<Neighbor>>> full =
      index->Search(x.topRows(700), prepared.topRows(700), query_ids, options, 12);
  absl::StatusOr<std::vector<std::vector<Neighbor>>> probed =
      index->Search(x.topRows(700), prepared.topRows(700), query_ids, options, 3);
  ASSERT_TRUE(exact.ok());
  ASSERT_TRUE(full.ok());
  ASSERT_TRUE(probed.ok());
  int64_t found = 0;
  for (int64_t q = 0; q < 700; ++q) {
    ASSERT_EQ((*full)[q].size(), (*exact)[q].size());
    for (size_t r = 0; r < (*exact)[q].size(); ++r) {
      EXPECT_EQ((*full)[q][r].id, (*exact)[q][r].id) << "query " << q;
      EXPECT_NEAR((*full)[q][r].score, (*exact)[q][r].score, 1e-6);
    }
    for (const Neighbor& n : (*probed)[q]) {
      found += std::count_if((*exact)[q].begin(), (*exact)[q].end(),
                             [&](const Neighbor& e) { return e.id == n.id; });
    }
  }
  // Probing 3 of 12 lists finds a part of the exact neighbours, never more.
  EXPECT_GT(found, 700 * 10 / 10);
  EXPECT_LE(found, 700 * 10);
}

TEST(DenseSimilarityTest, BadInputsAreRejected) {
  const MatrixXfR x = RandomMatrix(10, 4, 1);
  std::vector<int64_t> ids(10, 0);
  DenseSearchOptions options;
  EXPECT_EQ(ExactDenseTopK(x, ids, RandomMatrix(10, 5, 2), ids, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExactDenseTopK(x, {}, x, ids, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  MatrixXfR bad = x;
  bad(3, 2) = std::nanf("");
  EXPECT_EQ(ExactDenseTopK(bad, ids, x, ids, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IvfIndex::Build(x.topRows(2), false, std::vector<int32_t>(10, 2), x, ids,
                            DenseMetric::kCosine)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cohort
