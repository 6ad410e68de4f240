#include "core/cluster_metrics.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace cohort {
namespace {

// Reference values were printed by bench/reference_metrics.py with scikit-learn 1.2.1 and
// numpy 1.24.2 (Debian 12 python3-sklearn), on each matrix rounded to float32 and cast to
// float64:
//   inertia              ((X - means[labels]) ** 2).sum() with per-label row means
//   calinski_harabasz    sklearn.metrics.calinski_harabasz_score(X, labels)
//   davies_bouldin       sklearn.metrics.davies_bouldin_score(X, labels)
//   silhouette_<metric>  sklearn.metrics.silhouette_score(X, labels, metric="<metric>")
// The data sets here must stay identical to the ones in that script.

// |actual − expected| <= 1e-6 · max(1, |expected|): relative for large values, absolute
// near 0.
void ExpectMatchesReference(double actual, double expected, const std::string& what) {
  EXPECT_NEAR(actual, expected, 1e-6 * std::max(1.0, std::abs(expected))) << what;
}

MatrixXfR MakeMatrix(const std::vector<std::vector<double>>& rows) {
  MatrixXfR x(static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size()));
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t c = 0; c < rows[i].size(); ++c) x(i, c) = static_cast<float>(rows[i][c]);
  }
  return x;
}

MatrixXfR RowRange(const MatrixXfR& x, int64_t begin, int64_t end) {
  return x.middleRows(begin, end - begin);
}

// Runs both passes over the shards [boundaries[s], boundaries[s + 1]) of x, merging the
// partials in shard order as the coordinator does.
ClusterMetrics ShardedMetrics(const MatrixXfR& x, const std::vector<int32_t>& labels, int k,
                              const std::vector<int64_t>& boundaries) {
  ClusterAggregates merged;
  for (size_t s = 0; s + 1 < boundaries.size(); ++s) {
    const MatrixXfR shard = RowRange(x, boundaries[s], boundaries[s + 1]);
    merged.Merge(ComputeClusterAggregates(shard, labels.data() + boundaries[s], k));
  }
  SpreadPartial spread;
  for (size_t s = 0; s + 1 < boundaries.size(); ++s) {
    const MatrixXfR shard = RowRange(x, boundaries[s], boundaries[s + 1]);
    spread.Merge(ComputeSpreadPartial(shard, labels.data() + boundaries[s], merged));
  }
  return FinishClusterMetrics(merged, spread);
}

ClusterMetrics SingleShardMetrics(const MatrixXfR& x, const std::vector<int32_t>& labels,
                                  int k) {
  return ShardedMetrics(x, labels, k, {0, x.rows()});
}

struct Reference {
  double inertia;
  double calinski_harabasz;
  double davies_bouldin;
  double silhouette_sqeuclidean;
};

void ExpectMatchesSklearn(const ClusterMetrics& metrics, const Reference& expected) {
  ExpectMatchesReference(metrics.inertia, expected.inertia, "inertia");
  ASSERT_TRUE(metrics.calinski_harabasz.value.has_value())
      << metrics.calinski_harabasz.undefined_reason;
  ExpectMatchesReference(*metrics.calinski_harabasz.value, expected.calinski_harabasz,
                         "calinski_harabasz");
  ASSERT_TRUE(metrics.davies_bouldin.value.has_value()) << metrics.davies_bouldin.undefined_reason;
  ExpectMatchesReference(*metrics.davies_bouldin.value, expected.davies_bouldin,
                         "davies_bouldin");
  ASSERT_TRUE(metrics.silhouette.value.has_value()) << metrics.silhouette.undefined_reason;
  ExpectMatchesReference(*metrics.silhouette.value, expected.silhouette_sqeuclidean,
                         "silhouette");
}

// Four clusters in 3 dimensions, and cluster 3 has one row.
const std::vector<std::vector<double>> kFourWithSingletonX = {
    {0.1, 0.2, 0.3},    {0.4, -0.1, 0.2}, {0.2, 0.3, -0.2}, {3.1, 2.9, 3.3}, {2.7, 3.2, 2.8},
    {3.4, 3.0, 2.6},    {-2.2, 4.1, 0.5}, {-1.8, 3.7, 0.9}, {-2.5, 3.9, 1.2},
    {6.0, -5.0, 1.5},
};
const std::vector<int32_t> kFourWithSingletonLabels = {0, 0, 0, 1, 1, 1, 2, 2, 2, 3};

// Clusters 0 and 1 have the same mean (1, 1), and cluster 2 is three copies of one row.
const std::vector<std::vector<double>> kCoincidentX = {
    {0, 0}, {2, 2}, {0, 2}, {2, 0}, {5, 5}, {5, 5}, {5, 5}, {-3, 4}, {-4, 3}, {-3.5, 3.5},
};
const std::vector<int32_t> kCoincidentLabels = {0, 0, 1, 1, 2, 2, 2, 3, 3, 3};

// Six rows in five clusters: the largest number of clusters sklearn accepts for n = 6.
const std::vector<std::vector<double>> kNMinusOneX = {{0, 0},  {0.5, 0.25}, {3, 1},
                                                      {-2, 2}, {4, -3},     {1, 5}};
const std::vector<int32_t> kNMinusOneLabels = {0, 0, 1, 2, 3, 4};

// Every cluster is copies of one row: zero within-cluster dispersion.
const std::vector<std::vector<double>> kZeroSpreadX = {{0, 0}, {0, 0}, {1, 1}, {1, 1}, {1, 1}};
const std::vector<int32_t> kZeroSpreadLabels = {0, 0, 1, 1, 1};

// Rows for the cosine distance: rows 2, 5 and 7 are zero vectors.
const std::vector<std::vector<double>> kWithZeroRowsX = {
    {1, 0, 0}, {0.9, 0.1, 0}, {0, 0, 0}, {0, 1, 0.2}, {0.1, 0.8, 0}, {0, 0, 0}, {-1, -1, 1},
    {0, 0, 0},
};
const std::vector<int32_t> kWithZeroRowsLabels = {0, 0, 0, 1, 1, 1, 2, 2};

// 40 rows near 1000 in 5 dimensions with 4 labels, drawn by the 64-bit LCG of
// bench/reference_metrics.py (lcg_offset_data). Coordinates are 1000 + v / 64 with v an
// integer in [-1000, 1000], exact in float32, so the within-cluster spread is about
// 1 / 100 of the common offset.
struct LcgData {
  MatrixXfR x;
  std::vector<int32_t> labels;
};

LcgData MakeLcgOffsetData() {
  constexpr int kRows = 40;
  constexpr int kDims = 5;
  constexpr int kLabels = 4;
  uint64_t state = 12345;
  auto draw = [&state](uint64_t modulus) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int64_t>((state >> 33) % modulus);
  };
  LcgData data;
  data.x.resize(kRows, kDims);
  for (int i = 0; i < kRows; ++i) {
    for (int c = 0; c < kDims; ++c) {
      data.x(i, c) = static_cast<float>(1000.0 + static_cast<double>(draw(2001) - 1000) / 64.0);
    }
    data.labels.push_back(static_cast<int32_t>(draw(kLabels)));
  }
  return data;
}

// n rows with random labels in [0, k). Each row is its label's center plus uniform noise
// in [-2, 2). The values come from raw generator bits, so they are the same with every
// standard library.
LcgData MakeRandomClusters(int64_t n, int64_t d, int k, uint64_t seed) {
  std::mt19937_64 engine(seed);
  auto uniform = [&engine] { return static_cast<double>(engine() >> 11) * 0x1.0p-53; };
  LcgData data;
  data.x.resize(n, d);
  data.labels.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t label = static_cast<int32_t>(engine() % static_cast<uint64_t>(k));
    data.labels[i] = label;
    for (int64_t c = 0; c < d; ++c) {
      const double center = 3.0 * ((label * 7 + c * 3) % 5);
      data.x(i, c) = static_cast<float>(center + (2 * uniform() - 1) * 2.0);
    }
  }
  return data;
}

// Restores the OpenMP thread count that a test changes.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(omp_get_max_threads()) {}
  ~ThreadCountGuard() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

TEST(ClusterMetricsTest, MatchesSklearnWithSingletonCluster) {
  const MatrixXfR x = MakeMatrix(kFourWithSingletonX);
  const ClusterMetrics metrics = SingleShardMetrics(x, kFourWithSingletonLabels, 4);
  EXPECT_EQ(metrics.n, 10);
  EXPECT_EQ(metrics.k, 4);
  ExpectMatchesSklearn(metrics, {1.4000000660618674, 220.38427547709853, 0.13165987876842289,
                                 0.88092632156338058});
}

TEST(ClusterMetricsTest, MatchesSklearnWithCoincidentMeans) {
  const MatrixXfR x = MakeMatrix(kCoincidentX);
  const ClusterMetrics metrics = SingleShardMetrics(x, kCoincidentLabels, 4);
  ExpectMatchesSklearn(metrics, {9.0, 30.5, 0.33722112789737807, 0.38958372634094196});
}

TEST(ClusterMetricsTest, MatchesSklearnWithNMinusOneClusters) {
  const MatrixXfR x = MakeMatrix(kNMinusOneX);
  const ClusterMetrics metrics = SingleShardMetrics(x, kNMinusOneLabels, 5);
  ExpectMatchesSklearn(metrics,
                       {0.15625, 92.033333333333331, 0.080614193390010067, 0.31917765672782877});
}

TEST(ClusterMetricsTest, MatchesSklearnWithZeroSpread) {
  const MatrixXfR x = MakeMatrix(kZeroSpreadX);
  const ClusterMetrics metrics = SingleShardMetrics(x, kZeroSpreadLabels, 2);
  // sklearn returns calinski_harabasz 1.0 when the within-cluster dispersion is 0, and
  // davies_bouldin 0.0 when every intra-cluster distance is 0.
  EXPECT_EQ(metrics.inertia, 0.0);
  ExpectMatchesSklearn(metrics, {0.0, 1.0, 0.0, 1.0});
}

TEST(ClusterMetricsTest, MatchesSklearnOnLargeOffset) {
  const LcgData data = MakeLcgOffsetData();
  const std::vector<int32_t> printed_labels = {2, 1, 3, 3, 1, 3, 3, 1, 2, 0, 2, 0, 0, 3,
                                               0, 2, 3, 0, 2, 3, 2, 0, 1, 1, 3, 2, 0, 2,
                                               1, 2, 0, 1, 0, 3, 3, 0, 0, 1, 1, 3};
  ASSERT_EQ(data.labels, printed_labels) << "the LCG differs from bench/reference_metrics.py";
  const ClusterMetrics metrics = SingleShardMetrics(data.x, data.labels, 4);
  ExpectMatchesSklearn(metrics, {13960.101818970959, 1.1621403336878853, 5.2933639937895487,
                                 -0.1259011582977238});
}

TEST(ClusterMetricsTest, EmptyClustersAreIgnored) {
  const MatrixXfR x = MakeMatrix(kFourWithSingletonX);
  // Labels 0, 1, 2, 3 become 1, 3, 4, 6 of k = 8: clusters 0, 2, 5 and 7 are empty.
  const std::vector<int32_t> relabel = {1, 3, 4, 6};
  std::vector<int32_t> labels;
  for (int32_t label : kFourWithSingletonLabels) labels.push_back(relabel[label]);

  const ClusterMetrics metrics = SingleShardMetrics(x, labels, 8);
  EXPECT_EQ(metrics.k, 4);
  ExpectMatchesSklearn(metrics, {1.4000000660618674, 220.38427547709853, 0.13165987876842289,
                                 0.88092632156338058});
}

TEST(ClusterMetricsTest, OneClusterIsUndefined) {
  const MatrixXfR x = MakeMatrix(kFourWithSingletonX);
  const std::vector<int32_t> labels(10, 0);
  const ClusterMetrics metrics = SingleShardMetrics(x, labels, 1);
  EXPECT_EQ(metrics.k, 1);
  EXPECT_GT(metrics.inertia, 0.0);
  for (const MetricValue* value :
       {&metrics.calinski_harabasz, &metrics.davies_bouldin, &metrics.silhouette}) {
    EXPECT_FALSE(value->value.has_value());
    EXPECT_NE(value->undefined_reason.find("1 non-empty clusters and 10 rows"),
              std::string::npos)
        << value->undefined_reason;
  }
}

TEST(ClusterMetricsTest, AsManyClustersAsRowsIsUndefined) {
  const MatrixXfR x = MakeMatrix(kFourWithSingletonX);
  std::vector<int32_t> labels(10);
  for (int32_t i = 0; i < 10; ++i) labels[i] = i;
  const ClusterMetrics metrics = SingleShardMetrics(x, labels, 10);
  EXPECT_EQ(metrics.k, 10);
  EXPECT_EQ(metrics.inertia, 0.0);
  EXPECT_FALSE(metrics.calinski_harabasz.value.has_value());
  EXPECT_FALSE(metrics.davies_bouldin.value.has_value());
  EXPECT_FALSE(metrics.silhouette.value.has_value());
  EXPECT_NE(metrics.silhouette.undefined_reason.find("2 to n - 1"), std::string::npos)
      << metrics.silhouette.undefined_reason;
}

TEST(ClusterMetricsTest, NoRowsIsUndefined) {
  const MatrixXfR x(0, 3);
  const ClusterAggregates aggregates = ComputeClusterAggregates(x, nullptr, 2);
  const SpreadPartial spread = ComputeSpreadPartial(x, nullptr, aggregates);
  const ClusterMetrics metrics = FinishClusterMetrics(aggregates, spread);
  EXPECT_EQ(metrics.n, 0);
  EXPECT_EQ(metrics.inertia, 0.0);
  EXPECT_FALSE(metrics.silhouette.value.has_value());
}

TEST(ClusterMetricsTest, IncompleteSecondPassIsUndefined) {
  const MatrixXfR x = MakeMatrix(kFourWithSingletonX);
  const ClusterAggregates aggregates =
      ComputeClusterAggregates(x, kFourWithSingletonLabels.data(), 4);
  // Pass 2 over the first 6 rows only, as if one shard's partial were missing.
  const SpreadPartial spread =
      ComputeSpreadPartial(RowRange(x, 0, 6), kFourWithSingletonLabels.data(), aggregates);
  const ClusterMetrics metrics = FinishClusterMetrics(aggregates, spread);

  EXPECT_TRUE(metrics.calinski_harabasz.value.has_value());
  EXPECT_FALSE(metrics.davies_bouldin.value.has_value());
  EXPECT_FALSE(metrics.silhouette.value.has_value());
  EXPECT_NE(metrics.silhouette.undefined_reason.find("pass 2 covered 6 rows"), std::string::npos)
      << metrics.silhouette.undefined_reason;
}

// A brute-force O(n²) silhouette with exact squared differences, for inputs that span
// several row blocks of the kernel and a zero-padded last block.
double BruteForceSqEuclideanSilhouette(const MatrixXfR& x, const std::vector<int32_t>& labels,
                                       int k) {
  const int64_t n = x.rows();
  std::vector<int64_t> sizes(k, 0);
  for (int32_t label : labels) ++sizes[label];
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> sums(k, 0.0);
    for (int64_t j = 0; j < n; ++j) {
      double sq = 0;
      for (int64_t c = 0; c < x.cols(); ++c) {
        const double t = static_cast<double>(x(i, c)) - static_cast<double>(x(j, c));
        sq += t * t;
      }
      sums[labels[j]] += sq;
    }
    const int32_t own = labels[i];
    if (sizes[own] < 2) continue;
    const double a = sums[own] / static_cast<double>(sizes[own] - 1);
    double b = INFINITY;
    for (int q = 0; q < k; ++q) {
      if (q != own && sizes[q] > 0) b = std::min(b, sums[q] / static_cast<double>(sizes[q]));
    }
    total += (b - a) / std::max(a, b);
  }
  return total / static_cast<double>(n);
}

TEST(ClusterMetricsTest, SilhouetteMatchesBruteForceOverManyBlocks) {
  const LcgData data = MakeRandomClusters(/*n=*/700, /*d=*/6, /*k=*/5, /*seed=*/7);
  const ClusterMetrics metrics = SingleShardMetrics(data.x, data.labels, 5);
  ASSERT_TRUE(metrics.silhouette.value.has_value());
  const double expected = BruteForceSqEuclideanSilhouette(data.x, data.labels, 5);
  EXPECT_NEAR(*metrics.silhouette.value, expected, 1e-10 * std::abs(expected));
}

void ExpectRelativelyEqual(const MetricValue& a, const MetricValue& b, const std::string& what) {
  ASSERT_TRUE(a.value.has_value()) << what;
  ASSERT_TRUE(b.value.has_value()) << what;
  EXPECT_NEAR(*a.value, *b.value, 1e-12 * std::abs(*b.value)) << what;
}

TEST(ClusterMetricsTest, ShardedPassesMatchSinglePass) {
  const LcgData data = MakeRandomClusters(/*n=*/5000, /*d=*/7, /*k=*/6, /*seed=*/11);
  const ClusterMetrics single = SingleShardMetrics(data.x, data.labels, 6);
  const ClusterMetrics sharded = ShardedMetrics(data.x, data.labels, 6, {0, 1700, 3300, 5000});

  EXPECT_EQ(sharded.n, single.n);
  EXPECT_EQ(sharded.k, single.k);
  EXPECT_NEAR(sharded.inertia, single.inertia, 1e-12 * single.inertia);
  ExpectRelativelyEqual(sharded.calinski_harabasz, single.calinski_harabasz, "calinski_harabasz");
  ExpectRelativelyEqual(sharded.davies_bouldin, single.davies_bouldin, "davies_bouldin");
  ExpectRelativelyEqual(sharded.silhouette, single.silhouette, "silhouette");
}

TEST(ClusterMetricsTest, EmptyShardDoesNotChangeMetrics) {
  const MatrixXfR x = MakeMatrix(kFourWithSingletonX);
  const ClusterMetrics sharded = ShardedMetrics(x, kFourWithSingletonLabels, 4, {0, 4, 4, 10});
  ExpectMatchesSklearn(sharded, {1.4000000660618674, 220.38427547709853, 0.13165987876842289,
                                 0.88092632156338058});
}

TEST(ClusterMetricsTest, ThreadCountDoesNotChangePartials) {
  // More rows than the parallel threshold, so the loops run on 2 threads.
  const LcgData data = MakeRandomClusters(/*n=*/20000, /*d=*/9, /*k=*/7, /*seed=*/3);
  ThreadCountGuard guard;

  omp_set_num_threads(1);
  const ClusterAggregates aggregates_1 = ComputeClusterAggregates(data.x, data.labels.data(), 7);
  const SpreadPartial spread_1 = ComputeSpreadPartial(data.x, data.labels.data(), aggregates_1);

  omp_set_num_threads(2);
  const ClusterAggregates aggregates_2 = ComputeClusterAggregates(data.x, data.labels.data(), 7);
  const SpreadPartial spread_2 = ComputeSpreadPartial(data.x, data.labels.data(), aggregates_2);

  EXPECT_EQ(aggregates_1.counts, aggregates_2.counts);
  EXPECT_TRUE(aggregates_1.sums == aggregates_2.sums);
  EXPECT_EQ(aggregates_1.sq_norm_sums, aggregates_2.sq_norm_sums);
  EXPECT_EQ(aggregates_1.sq_deviation_sums, aggregates_2.sq_deviation_sums);
  EXPECT_EQ(spread_1.distance_sums, spread_2.distance_sums);
  EXPECT_EQ(spread_1.silhouette_sum, spread_2.silhouette_sum);
  EXPECT_EQ(spread_1.rows, spread_2.rows);
}

TEST(ClusterMetricsTest, AggregatesHoldSumsAndSquaredNorms) {
  const MatrixXfR x = MakeMatrix({{1, 2}, {3, 4}, {-1, 0}});
  const std::vector<int32_t> labels = {0, 0, 2};
  const ClusterAggregates aggregates = ComputeClusterAggregates(x, labels.data(), 3);
  EXPECT_EQ(aggregates.total(), 3);
  EXPECT_EQ(aggregates.counts, (std::vector<int64_t>{2, 0, 1}));
  EXPECT_EQ(aggregates.sums(0, 0), 4.0);
  EXPECT_EQ(aggregates.sums(0, 1), 6.0);
  EXPECT_EQ(aggregates.sums(2, 0), -1.0);
  EXPECT_EQ(aggregates.sq_norm_sums, (std::vector<double>{30.0, 0.0, 1.0}));
  // Cluster 0 has mean (2, 3); each row is at squared distance 2 from it.
  EXPECT_EQ(aggregates.sq_deviation_sums, (std::vector<double>{4.0, 0.0, 0.0}));
}

TEST(ClusterMetricsTest, ValidateLabelsRejectsOutOfRange) {
  const std::vector<int32_t> labels = {0, 2, 3, 1};
  EXPECT_TRUE(ValidateLabels(labels.data(), 4, 4).ok());

  const absl::Status too_large = ValidateLabels(labels.data(), 4, 3);
  EXPECT_EQ(too_large.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_large.message().find("label 3 in row 2"), std::string::npos)
      << too_large.message();

  const std::vector<int32_t> negative = {0, -1};
  EXPECT_EQ(ValidateLabels(negative.data(), 2, 3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateLabels(labels.data(), 0, 0).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SampledSilhouetteTest, MatchesSklearnEuclidean) {
  const MatrixXfR x = MakeMatrix(kFourWithSingletonX);
  const MetricValue four = SampledSilhouette(x, kFourWithSingletonLabels, "euclidean");
  ASSERT_TRUE(four.value.has_value()) << four.undefined_reason;
  ExpectMatchesReference(*four.value, 0.77078436887579382, "four_with_singleton");

  const MetricValue coincident =
      SampledSilhouette(MakeMatrix(kCoincidentX), kCoincidentLabels, "euclidean");
  ASSERT_TRUE(coincident.value.has_value()) << coincident.undefined_reason;
  ExpectMatchesReference(*coincident.value, 0.42836860634795793, "coincident");

  const LcgData data = MakeLcgOffsetData();
  const MetricValue lcg = SampledSilhouette(data.x, data.labels, "euclidean");
  ASSERT_TRUE(lcg.value.has_value()) << lcg.undefined_reason;
  ExpectMatchesReference(*lcg.value, -0.072237563071572877, "lcg_offset");
}

TEST(SampledSilhouetteTest, MatchesSklearnCosine) {
  const MetricValue four =
      SampledSilhouette(MakeMatrix(kFourWithSingletonX), kFourWithSingletonLabels, "cosine");
  ASSERT_TRUE(four.value.has_value()) << four.undefined_reason;
  ExpectMatchesReference(*four.value, 0.37823315955899484, "four_with_singleton");

  const LcgData data = MakeLcgOffsetData();
  const MetricValue lcg = SampledSilhouette(data.x, data.labels, "cosine");
  ASSERT_TRUE(lcg.value.has_value()) << lcg.undefined_reason;
  ExpectMatchesReference(*lcg.value, -0.12574745677815807, "lcg_offset");
}

TEST(SampledSilhouetteTest, CosineZeroRowsMatchSklearn) {
  // A zero row has cosine distance 1 to every other row, also to another zero row.
  const MetricValue value =
      SampledSilhouette(MakeMatrix(kWithZeroRowsX), kWithZeroRowsLabels, "cosine");
  ASSERT_TRUE(value.value.has_value()) << value.undefined_reason;
  ExpectMatchesReference(*value.value, 0.25748979958126395, "with_zero_rows");
}

TEST(SampledSilhouetteTest, AnyLabelValuesAreAccepted) {
  const MatrixXfR x = MakeMatrix(kFourWithSingletonX);
  const std::vector<int32_t> mapped = {100, -7, 3, 42};
  std::vector<int32_t> labels;
  for (int32_t label : kFourWithSingletonLabels) labels.push_back(mapped[label]);
  const MetricValue value = SampledSilhouette(x, labels, "euclidean");
  ASSERT_TRUE(value.value.has_value()) << value.undefined_reason;
  ExpectMatchesReference(*value.value, 0.77078436887579382, "relabelled four_with_singleton");
}

TEST(SampledSilhouetteTest, InvalidInputsAreUndefined) {
  const MatrixXfR x = MakeMatrix(kFourWithSingletonX);

  const MetricValue unknown = SampledSilhouette(x, kFourWithSingletonLabels, "manhattan");
  EXPECT_FALSE(unknown.value.has_value());
  EXPECT_NE(unknown.undefined_reason.find("\"manhattan\""), std::string::npos)
      << unknown.undefined_reason;

  const std::vector<int32_t> short_labels = {0, 1};
  const MetricValue mismatch = SampledSilhouette(x, short_labels, "euclidean");
  EXPECT_FALSE(mismatch.value.has_value());
  EXPECT_NE(mismatch.undefined_reason.find("2 entries"), std::string::npos)
      << mismatch.undefined_reason;

  const MetricValue one_label = SampledSilhouette(x, std::vector<int32_t>(10, 5), "cosine");
  EXPECT_FALSE(one_label.value.has_value());

  std::vector<int32_t> all_distinct(10);
  for (int32_t i = 0; i < 10; ++i) all_distinct[i] = i;
  EXPECT_FALSE(SampledSilhouette(x, all_distinct, "euclidean").value.has_value());

  const MetricValue one_row = SampledSilhouette(MakeMatrix({{1, 2}}), {0}, "euclidean");
  EXPECT_FALSE(one_row.value.has_value());
}

TEST(SampledSilhouetteTest, ThreadCountDoesNotChangeResult) {
  // More rows than the sample's parallel threshold.
  const LcgData data = MakeRandomClusters(/*n=*/600, /*d=*/4, /*k=*/3, /*seed=*/5);
  ThreadCountGuard guard;
  omp_set_num_threads(1);
  const MetricValue one = SampledSilhouette(data.x, data.labels, "cosine");
  omp_set_num_threads(2);
  const MetricValue two = SampledSilhouette(data.x, data.labels, "cosine");
  ASSERT_TRUE(one.value.has_value());
  ASSERT_TRUE(two.value.has_value());
  EXPECT_EQ(*one.value, *two.value);
}

// One row of weight w as weighted aggregates of one cluster (k = 1).
ClusterAggregates WeightedRow(const std::vector<double>& row, double w) {
  ClusterAggregates a;
  a.k = 1;
  a.d = static_cast<int>(row.size());
  a.counts = {1};
  a.weight_sums = {w};
  a.sums = MatrixXdR::Zero(1, a.d);
  double sq_norm = 0;
  for (int j = 0; j < a.d; ++j) {
    a.sums(0, j) = w * row[j];
    sq_norm += row[j] * row[j];
  }
  a.sq_norm_sums = {w * sq_norm};
  a.sq_deviation_sums = {0.0};
  return a;
}

TEST(ClusterAggregatesTest, WeightedMergePoolsByWeight) {
  // Rows a (weight 2) and b (weight 1) against the unweighted rows a, a, b.
  MatrixXfR x(3, 2);
  x << 1, 2,
       1, 2,
       4, -2;
  const std::vector<int32_t> labels = {0, 0, 0};
  const ClusterAggregates copies = ComputeClusterAggregates(x, labels.data(), 1);

  ClusterAggregates merged = WeightedRow({1, 2}, 2);
  merged.Merge(WeightedRow({4, -2}, 1));
  EXPECT_EQ(merged.counts, (std::vector<int64_t>{2}));
  EXPECT_EQ(merged.weight_sums, (std::vector<double>{3}));
  EXPECT_EQ(merged.sums(0, 0), copies.sums(0, 0));
  EXPECT_EQ(merged.sums(0, 1), copies.sums(0, 1));
  EXPECT_DOUBLE_EQ(merged.sq_norm_sums[0], copies.sq_norm_sums[0]);
  EXPECT_NEAR(merged.sq_deviation_sums[0], copies.sq_deviation_sums[0], 1e-12);
}

TEST(ClusterAggregatesTest, UnweightedSideMergesAsWeightOne) {
  ClusterAggregates merged = WeightedRow({1, 2}, 2);
  ClusterAggregates plain = WeightedRow({4, -2}, 1);
  plain.weight_sums.clear();
  merged.Merge(plain);
  EXPECT_EQ(merged.weight_sums, (std::vector<double>{3}));
  EXPECT_EQ(merged.counts, (std::vector<int64_t>{2}));
}

}  // namespace
}  // namespace cohort
