#include "core/kmeans.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/core/random_data.h"

namespace cohort {
namespace {

using ::cohort::testing::Normal;
using ::cohort::testing::Uniform;

struct Blobs {
  MatrixXfR x;
  std::vector<int> truth;  // blob of each row
};

// `per_blob` rows around each row of `means`, with noise `sigma`, rows shuffled. When
// `grid` is set, values are rounded to multiples of 1/256: then every double sum of
// them is exact, so the order in which shards merge sums cannot change a bit.
Blobs MakeBlobs(const MatrixXfR& means, int per_blob, double sigma, uint64_t seed, bool grid) {
  std::mt19937_64 engine(seed);
  const int64_t n = means.rows() * per_blob;
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(order[i], order[static_cast<int64_t>(Uniform(engine) * (i + 1))]);
  }
  Blobs blobs;
  blobs.x.resize(n, means.cols());
  blobs.truth.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const int blob = static_cast<int>(order[i] / per_blob);
    blobs.truth[i] = blob;
    for (int64_t j = 0; j < means.cols(); ++j) {
      double v = means(blob, j) + sigma * Normal(engine);
      if (grid) v = std::round(v * 256) / 256;
      blobs.x(i, j) = static_cast<float>(v);
    }
  }
  return blobs;
}

MatrixXfR RandomMeans(int k, int d, double spread, uint64_t seed) {
  std::mt19937_64 engine(seed);
  MatrixXfR means(k, d);
  for (int i = 0; i < k; ++i) {
    for (int j = 0; j < d; ++j) means(i, j) = static_cast<float>((2 * Uniform(engine) - 1) * spread);
  }
  return means;
}

// x split into `num_shards` contiguous row ranges (shard s gets rows
// [s·n/S, (s+1)·n/S)), so walking the shards in order visits the rows in their global
// order, as a single shard does.
class ShardedData {
 public:
  ShardedData(const MatrixXfR& x, int num_shards) {
    const int64_t n = x.rows();
    for (int s = 0; s < num_shards; ++s) {
      const int64_t begin = n * s / num_shards;
      const int64_t end = n * (s + 1) / num_shards;
      parts_.push_back(std::make_unique<MatrixXfR>(x.middleRows(begin, end - begin)));
    }
    std::vector<KMeansShard*> pointers;
    for (int s = 0; s < num_shards; ++s) {
      shards_.push_back(std::make_unique<KMeansShard>(s, parts_[s].get()));
      pointers.push_back(shards_.back().get());
    }
    backend_ = std::make_unique<InProcessKMeansBackend>(pointers);
  }

  KMeansBackend& backend() { return *backend_; }

  // Labels of all rows, in global order.
  std::vector<int32_t> Labels(const MatrixXfR& centroids) const {
    std::vector<int32_t> all;
    for (const auto& shard : shards_) {
      std::vector<int32_t> labels;
      std::vector<float> sq_dist;
      shard->Assign(centroids, &labels, &sq_dist);
      all.insert(all.end(), labels.begin(), labels.end());
    }
    return all;
  }

 private:
  std::vector<std::unique_ptr<MatrixXfR>> parts_;
  std::vector<std::unique_ptr<KMeansShard>> shards_;
  std::unique_ptr<InProcessKMeansBackend> backend_;
};

KMeansResult RunOrDie(const MatrixXfR& x, int num_shards, const KMeansOptions& options) {
  ShardedData data(x, num_shards);
  absl::StatusOr<KMeansResult> result = RunKMeans(data.backend(), options, nullptr);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *std::move(result) : KMeansResult{};
}

void ExpectIdenticalResults(const KMeansResult& a, const KMeansResult& b, const std::string& what) {
  EXPECT_EQ(a.effective_k, b.effective_k) << what;
  EXPECT_EQ(a.centroids, b.centroids) << what;
  EXPECT_EQ(a.sizes, b.sizes) << what;
  EXPECT_EQ(a.inertia, b.inertia) << what;
  EXPECT_EQ(a.iterations, b.iterations) << what;
  EXPECT_EQ(a.best_run, b.best_run) << what;
  EXPECT_EQ(a.data_scale, b.data_scale) << what;
}

int CountDistinctRows(const MatrixXfR& m) {
  std::set<std::vector<float>> rows;
  for (int64_t i = 0; i < m.rows(); ++i) rows.insert(std::vector<float>(m.row(i).begin(), m.row(i).end()));
  return static_cast<int>(rows.size());
}

TEST(RunKMeansTest, RecoversSeparatedClusters) {
  const MatrixXfR means = RandomMeans(5, 4, 20.0, 1);
  const Blobs blobs = MakeBlobs(means, 200, 0.5, 2, /*grid=*/false);
  KMeansOptions options;
  options.k = 5;
  ShardedData data(blobs.x, 3);
  absl::StatusOr<KMeansResult> result = RunKMeans(data.backend(), options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->effective_k, 5);
  EXPECT_FALSE(result->fewer_distinct_points);
  EXPECT_TRUE(result->converged);
  EXPECT_EQ(result->num_rows, 1000);

  // Labels equal the true blobs up to a permutation.
  const std::vector<int32_t> labels = data.Labels(result->centroids);
  std::map<int, int32_t> blob_to_label;
  std::set<int32_t> used;
  for (size_t i = 0; i < labels.size(); ++i) {
    auto [it, inserted] = blob_to_label.emplace(blobs.truth[i], labels[i]);
    ASSERT_EQ(it->second, labels[i]) << "row " << i << " of blob " << blobs.truth[i];
    if (inserted) used.insert(labels[i]);
  }
  EXPECT_EQ(used.size(), 5u);
  for (int64_t s : result->sizes) EXPECT_EQ(s, 200);
}

TEST(RunKMeansTest, ShardCountDoesNotChangeResult) {
  // Overlapping blobs and k different from their number, so Lloyd needs many iterations.
  const MatrixXfR means = RandomMeans(8, 6, 3.0, 3);
  const Blobs blobs = MakeBlobs(means, 300, 1.0, 4, /*grid=*/true);
  KMeansOptions options;
  options.k = 6;
  options.n_init = 2;
  options.seed = 7;
  const KMeansResult one = RunOrDie(blobs.x, 1, options);
  EXPECT_GT(one.iterations, 2);
  for (int shards : {3, 7}) {
    ExpectIdenticalResults(one, RunOrDie(blobs.x, shards, options),
                           "shards=" + std::to_string(shards));
  }
}

TEST(RunKMeansTest, ThreadCountDoesNotChangeResult) {
  // Off-grid values and more rows than kParallelMinRows per shard.
  const MatrixXfR means = RandomMeans(10, 12, 4.0, 5);
  const Blobs blobs = MakeBlobs(means, 1500, 1.5, 6, /*grid=*/false);
  KMeansOptions options;
  options.k = 12;
  options.seed = 11;
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const KMeansResult one = RunOrDie(blobs.x, 2, options);
  omp_set_num_threads(2);
  const KMeansResult two = RunOrDie(blobs.x, 2, options);
  omp_set_num_threads(saved_threads);
  ExpectIdenticalResults(one, two, "1 vs 2 threads");
}

TEST(RunKMeansTest, SameSeedSameResult) {
  const Blobs blobs = MakeBlobs(RandomMeans(4, 3, 5.0, 8), 100, 1.0, 9, /*grid=*/false);
  KMeansOptions options;
  options.k = 4;
  ExpectIdenticalResults(RunOrDie(blobs.x, 2, options), RunOrDie(blobs.x, 2, options), "rerun");
}

TEST(RunKMeansTest, FewerDistinctPointsThanK) {
  MatrixXfR distinct(3, 2);
  distinct << 0, 0, 1, 5, -2, 3;
  MatrixXfR x(30, 2);
  for (int i = 0; i < 30; ++i) x.row(i) = distinct.row(i % 3);
  KMeansOptions options;
  options.k = 5;
  const KMeansResult result = RunOrDie(x, 4, options);
  EXPECT_EQ(result.requested_k, 5);
  EXPECT_EQ(result.effective_k, 3);
  EXPECT_TRUE(result.fewer_distinct_points);
  ASSERT_EQ(result.centroids.rows(), 3);
  EXPECT_EQ(CountDistinctRows(result.centroids), 3);
  EXPECT_EQ(result.sizes, (std::vector<int64_t>{10, 10, 10}));
  EXPECT_EQ(result.inertia, 0.0);
  std::set<std::vector<float>> expected, got;
  for (int i = 0; i < 3; ++i) {
    expected.insert({distinct(i, 0), distinct(i, 1)});
    got.insert({result.centroids(i, 0), result.centroids(i, 1)});
  }
  EXPECT_EQ(got, expected);
}

TEST(RunKMeansTest, AllRowsIdenticalGiveOneCentroid) {
  const MatrixXfR x = MatrixXfR::Constant(50, 3, 2.5f);
  KMeansOptions options;
  options.k = 4;
  options.n_init = 3;
  const KMeansResult result = RunOrDie(x, 2, options);
  EXPECT_EQ(result.effective_k, 1);
  EXPECT_TRUE(result.fewer_distinct_points);
  EXPECT_EQ(result.centroids, MatrixXfR::Constant(1, 3, 2.5f));
  EXPECT_EQ(result.sizes, std::vector<int64_t>{50});
  EXPECT_EQ(result.inertia, 0.0);
  EXPECT_EQ(result.data_scale, 0.0);
  EXPECT_TRUE(result.converged);
}

TEST(RunKMeansTest, KEqualToDistinctRowCount) {
  const Blobs blobs = MakeBlobs(RandomMeans(1, 3, 1.0, 12), 20, 5.0, 13, /*grid=*/false);
  KMeansOptions options;
  options.k = 20;
  const KMeansResult result = RunOrDie(blobs.x, 3, options);
  EXPECT_EQ(result.effective_k, 20);
  EXPECT_FALSE(result.fewer_distinct_points);
  EXPECT_EQ(CountDistinctRows(result.centroids), 20);
  EXPECT_EQ(result.sizes, std::vector<int64_t>(20, 1));
  // Each row is its own centroid. The inertia comes from the norm expansion, whose float
  // rounding leaves a small positive value instead of exactly 0.
  EXPECT_LT(result.inertia, 1e-3);
}

TEST(RunKMeansTest, NInitKeepsLowestInertia) {
  const Blobs blobs = MakeBlobs(RandomMeans(9, 2, 6.0, 14), 40, 1.2, 15, /*grid=*/false);
  KMeansOptions options;
  options.k = 9;
  options.n_init = 6;
  options.seed = 3;
  std::vector<double> final_inertia;
  ShardedData data(blobs.x, 2);
  absl::StatusOr<KMeansResult> result =
      RunKMeans(data.backend(), options, [&final_inertia](const KMeansProgress& p) {
        if (p.phase == "final") final_inertia.push_back(p.inertia);
      });
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(final_inertia.size(), 6u);
  const auto best = std::min_element(final_inertia.begin(), final_inertia.end());
  EXPECT_EQ(result->inertia, *best);
  EXPECT_EQ(result->best_run, best - final_inertia.begin());
  EXPECT_GT(*std::max_element(final_inertia.begin(), final_inertia.end()), *best)
      << "every run found the same solution, so the choice was not exercised";

  // Run 0 alone is the first run of the n_init = 6 job.
  options.n_init = 1;
  EXPECT_EQ(RunOrDie(blobs.x, 2, options).inertia, final_inertia[0]);
}

TEST(RunKMeansTest, ReportsProgressPhases) {
  const Blobs blobs = MakeBlobs(RandomMeans(3, 2, 10.0, 16), 50, 0.5, 17, /*grid=*/false);
  KMeansOptions options;
  options.k = 3;
  std::vector<KMeansProgress> events;
  ShardedData data(blobs.x, 2);
  absl::StatusOr<KMeansResult> result = RunKMeans(
      data.backend(), options, [&events](const KMeansProgress& p) { events.push_back(p); });
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(events.size(), static_cast<size_t>(3 + result->iterations + 1));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(events[i].phase, "init");
    EXPECT_EQ(events[i].centers_chosen, i + 1);
  }
  for (int it = 1; it <= result->iterations; ++it) {
    EXPECT_EQ(events[2 + it].phase, "lloyd");
    EXPECT_EQ(events[2 + it].iteration, it);
  }
  EXPECT_EQ(events.back().phase, "final");
  EXPECT_EQ(events.back().inertia, result->inertia);
}

TEST(RunKMeansTest, MaxIterStopsWithoutConvergence) {
  const Blobs blobs = MakeBlobs(RandomMeans(6, 3, 2.0, 18), 100, 1.0, 19, /*grid=*/false);
  KMeansOptions options;
  options.k = 6;
  options.max_iter = 1;
  options.tol = 0;
  const KMeansResult result = RunOrDie(blobs.x, 1, options);
  EXPECT_EQ(result.iterations, 1);
  EXPECT_FALSE(result.converged);
}

TEST(RunKMeansTest, ZeroTolConvergesWhenCentroidsStop) {
  const Blobs blobs = MakeBlobs(RandomMeans(3, 2, 10.0, 20), 60, 0.5, 21, /*grid=*/false);
  KMeansOptions options;
  options.k = 3;
  options.tol = 0;
  const KMeansResult result = RunOrDie(blobs.x, 1, options);
  EXPECT_TRUE(result.converged);
  EXPECT_LT(result.iterations, options.max_iter);
}

// Plain Lloyd in double from the same start, for a fixed number of iterations.
double ReferenceLloydInertia(const MatrixXfR& x, MatrixXdR centroids, int iterations) {
  const int64_t n = x.rows();
  const int64_t k = centroids.rows();
  const MatrixXdR xd = x.cast<double>();
  std::vector<int64_t> labels(n);
  auto assign = [&]() {
    double inertia = 0;
    for (int64_t i = 0; i < n; ++i) {
      double best = INFINITY;
      for (int64_t j = 0; j < k; ++j) {
        const double dist = (xd.row(i) - centroids.row(j)).squaredNorm();
        if (dist < best) {
          best = dist;
          labels[i] = j;
        }
      }
      inertia += best;
    }
    return inertia;
  };
  for (int it = 0; it < iterations; ++it) {
    assign();
    MatrixXdR sums = MatrixXdR::Zero(k, x.cols());
    std::vector<int64_t> counts(k, 0);
    for (int64_t i = 0; i < n; ++i) {
      sums.row(labels[i]) += xd.row(i);
      ++counts[labels[i]];
    }
    for (int64_t j = 0; j < k; ++j) {
      if (counts[j] > 0) centroids.row(j) = sums.row(j) / static_cast<double>(counts[j]);
    }
  }
  return assign();
}

TEST(RunKMeansFromCentroidsTest, MatchesReferenceLloyd) {
  const Blobs blobs = MakeBlobs(RandomMeans(5, 4, 4.0, 22), 200, 1.0, 23, /*grid=*/false);
  MatrixXfR initial(5, 4);
  for (int j = 0; j < 5; ++j) initial.row(j) = blobs.x.row(j * 7);
  KMeansOptions options;
  options.max_iter = 8;
  options.tol = 0;
  ShardedData data(blobs.x, 3);
  absl::StatusOr<KMeansResult> result = RunLloyd(data.backend(), initial, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->effective_k, 5);
  const double expected =
      ReferenceLloydInertia(blobs.x, initial.cast<double>(), result->iterations);
  EXPECT_NEAR(result->inertia, expected, 1e-5 * expected) << "iterations=" << result->iterations;
}

TEST(RunKMeansFromCentroidsTest, EmptyClusterIsReseeded) {
  // Centroid 2 is far from every row, so no row picks it in the first iteration.
  const Blobs blobs = MakeBlobs(RandomMeans(3, 2, 10.0, 24), 50, 0.5, 25, /*grid=*/false);
  MatrixXfR initial(3, 2);
  initial << blobs.x(0, 0), blobs.x(0, 1), blobs.x(1, 0), blobs.x(1, 1), 1000, 1000;
  KMeansOptions options;
  ShardedData data(blobs.x, 2);
  absl::StatusOr<KMeansResult> result = RunLloyd(data.backend(), initial, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GE(result->reseeded_clusters, 1);
  for (int j = 0; j < 3; ++j) EXPECT_GT(result->sizes[j], 0) << "cluster " << j;
  EXPECT_LT(result->centroids.cwiseAbs().maxCoeff(), 100.0f);
}

TEST(RunKMeansFromCentroidsTest, MoreCentroidsThanRowsLeavesSomeEmpty) {
  MatrixXfR x(2, 1);
  x << 0, 1;
  MatrixXfR initial(4, 1);
  initial << 0, 1, 50, 60;
  KMeansOptions options;
  ShardedData data(x, 1);
  absl::StatusOr<KMeansResult> result = RunLloyd(data.backend(), initial, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->sizes, (std::vector<int64_t>{1, 1, 0, 0}));
  EXPECT_EQ(result->reseeded_clusters, 0);
  EXPECT_EQ(CountDistinctRows(result->centroids), 4);
}

TEST(RunKMeansFromCentroidsTest, RejectsBadInitialCentroids) {
  const MatrixXfR x = MatrixXfR::Ones(10, 3);
  ShardedData data(x, 1);
  const KMeansOptions options;

  absl::StatusOr<KMeansResult> none = RunLloyd(data.backend(), MatrixXfR(0, 3), options, nullptr);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("initial_centroids has 0 rows"), std::string::npos)
      << none.status();

  absl::StatusOr<KMeansResult> wide = RunLloyd(data.backend(), MatrixXfR::Ones(2, 4), options, nullptr);
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wide.status().message().find("4 columns; the dataset has 3 features"),
            std::string::npos)
      << wide.status();
}

TEST(RunKMeansFromCentroidsTest, MiniBatchLowersInertia) {
  const Blobs blobs = MakeBlobs(RandomMeans(4, 3, 5.0, 40), 300, 1.0, 41, /*grid=*/false);
  MatrixXfR initial(4, 3);
  for (int j = 0; j < 4; ++j) initial.row(j) = blobs.x.row(j);
  KMeansOptions options;
  options.batch_size = 100;
  options.max_iter = 5;
  ShardedData data(blobs.x, 3);
  absl::StatusOr<KMeansResult> result = RunMiniBatch(data.backend(), initial, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->effective_k, 4);
  EXPECT_GE(result->iterations, 1);
  EXPECT_LE(result->iterations, 5 * 12);  // max_iter × ceil(1200 / 100) steps
  const double start = ReferenceLloydInertia(blobs.x, initial.cast<double>(), 0);
  EXPECT_LT(result->inertia, start);
  // Within 5 % of full Lloyd iterations from the same centroids.
  ShardedData lloyd_data(blobs.x, 3);
  options.max_iter = 100;
  absl::StatusOr<KMeansResult> lloyd = RunLloyd(lloyd_data.backend(), initial, options, nullptr);
  ASSERT_TRUE(lloyd.ok()) << lloyd.status();
  EXPECT_LE(result->inertia, 1.05 * lloyd->inertia);
}

TEST(RunKMeansFromCentroidsTest, MiniBatchIsDeterministic) {
  const Blobs blobs = MakeBlobs(RandomMeans(3, 2, 5.0, 42), 200, 1.0, 43, /*grid=*/false);
  const MatrixXfR initial = blobs.x.topRows(3);
  KMeansOptions options;
  options.batch_size = 64;
  ShardedData first_data(blobs.x, 2);
  ShardedData second_data(blobs.x, 2);
  absl::StatusOr<KMeansResult> first = RunMiniBatch(first_data.backend(), initial, options, nullptr);
  absl::StatusOr<KMeansResult> second =
      RunMiniBatch(second_data.backend(), initial, options, nullptr);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(first->centroids, second->centroids);
  EXPECT_EQ(first->iterations, second->iterations);
}

TEST(RunKMeansFromCentroidsTest, MiniBatchRejectsBadInitialCentroids) {
  const MatrixXfR x = MatrixXfR::Ones(10, 3);
  ShardedData data(x, 1);
  absl::StatusOr<KMeansResult> wide =
      RunMiniBatch(data.backend(), MatrixXfR::Ones(2, 4), KMeansOptions(), nullptr);
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wide.status().message().find("4 columns; the dataset has 3 features"),
            std::string::npos)
      << wide.status();
}

TEST(RunKMeansFromCentroidsTest, ProgressCarriesCurrentCentroids) {
  const Blobs blobs = MakeBlobs(RandomMeans(3, 2, 5.0, 44), 100, 1.0, 45, /*grid=*/false);
  const MatrixXfR initial = blobs.x.topRows(3);
  for (const bool minibatch : {false, true}) {
    KMeansOptions options;
    options.max_iter = 4;
    options.tol = 0;
    options.batch_size = 50;
    ShardedData data(blobs.x, 2);
    MatrixXfR last_seen;
    int events_with_centroids = 0;
    int iteration_events = 0;
    auto on_progress = [&](const KMeansProgress& event) {
      if (event.phase == "lloyd" || event.phase == "minibatch") ++iteration_events;
      if (event.centroids == nullptr) return;
      ++events_with_centroids;
      last_seen = *event.centroids;
    };
    absl::StatusOr<KMeansResult> result =
        minibatch ? RunMiniBatch(data.backend(), initial, options, on_progress)
                  : RunLloyd(data.backend(), initial, options, on_progress);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(events_with_centroids, iteration_events) << "minibatch=" << minibatch;
    EXPECT_EQ(events_with_centroids, result->iterations) << "minibatch=" << minibatch;
    EXPECT_EQ(last_seen, result->centroids) << "minibatch=" << minibatch;
  }
}

struct BadOption {
  KMeansOptions options;
  std::string message;
};

TEST(KMeansOptionsTest, ValidateNamesFieldValueAndRange) {
  std::vector<BadOption> cases;
  auto add = [&cases](auto change, std::string message) {
    KMeansOptions options;
    change(options);
    cases.push_back({options, std::move(message)});
  };
  add([](KMeansOptions& o) { o.k = 0; }, "k = 0 is invalid; k must be in [1, 100000]");
  add([](KMeansOptions& o) { o.k = 100001; }, "k = 100001 is invalid; k must be in [1, 100000]");
  add([](KMeansOptions& o) { o.max_iter = 0; },
      "max_iter = 0 is invalid; max_iter must be in [1, 100000]");
  add([](KMeansOptions& o) { o.tol = -0.5; }, "tol = -0.5 is invalid; tol must be in [0, 1]");
  add([](KMeansOptions& o) { o.tol = 2; }, "tol = 2 is invalid; tol must be in [0, 1]");
  add([](KMeansOptions& o) { o.tol = NAN; }, "tol = nan is invalid");
  add([](KMeansOptions& o) { o.n_init = 0; }, "n_init = 0 is invalid; n_init must be in [1, 100]");
  add([](KMeansOptions& o) { o.n_init = 101; }, "n_init = 101 is invalid");
  add([](KMeansOptions& o) { o.local_trials = -1; },
      "local_trials = -1 is invalid; local_trials must be in [0, 1000]");
  add([](KMeansOptions& o) { o.local_trials = 1001; }, "local_trials = 1001 is invalid");

  for (const BadOption& c : cases) {
    const absl::Status status = c.options.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_NE(status.message().find(c.message), std::string::npos)
        << "got: " << status.message() << "\nexpected: " << c.message;
  }
  EXPECT_TRUE(KMeansOptions().Validate().ok());
}

TEST(RunKMeansTest, InvalidOptionsAreRejectedBeforeWork) {
  const MatrixXfR x = MatrixXfR::Ones(10, 3);
  ShardedData data(x, 1);
  KMeansOptions options;
  options.k = 0;
  absl::StatusOr<KMeansResult> result = RunKMeans(data.backend(), options, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RunKMeansTest, NoRowsIsFailedPrecondition) {
  const MatrixXfR empty(0, 3);
  ShardedData data(empty, 2);
  absl::StatusOr<KMeansResult> result = RunKMeans(data.backend(), KMeansOptions(), nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(result.status().message(), "dataset has no rows");
}

TEST(RunKMeansTest, EmptyShardsAreSkipped) {
  // 4 rows over 7 shards leaves 3 shards empty.
  MatrixXfR x(4, 1);
  x << 0, 1, 10, 11;
  KMeansOptions options;
  options.k = 2;
  const KMeansResult result = RunOrDie(x, 7, options);
  EXPECT_EQ(result.effective_k, 2);
  EXPECT_EQ(result.sizes, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(result.inertia, 1.0);
}

}  // namespace
}  // namespace cohort
