// Tests of the K-means options beyond the defaults: k-means‖ seeding, mini-batch
// iterations, the cosine distance and per-row sample weights.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/kmeans.h"

#include "tests/core/random_data.h"

namespace cohort {
namespace {

using ::cohort::testing::Normal;
using ::cohort::testing::Uniform;

// `per_blob` rows around each of k random means in [-spread, spread]^d, noise `sigma`,
// rows in random order.
MatrixXfR MakeBlobs(int k, int d, int per_blob, double spread, double sigma, uint64_t seed) {
  std::mt19937_64 engine(seed);
  MatrixXfR means(k, d);
  for (int i = 0; i < k; ++i) {
    for (int j = 0; j < d; ++j) means(i, j) = static_cast<float>((2 * Uniform(engine) - 1) * spread);
  }
  const int64_t n = static_cast<int64_t>(k) * per_blob;
  MatrixXfR x(n, d);
  for (int64_t i = 0; i < n; ++i) {
    const int blob = static_cast<int>(Uniform(engine) * k);
    for (int j = 0; j < d; ++j) x(i, j) = static_cast<float>(means(blob, j) + sigma * Normal(engine));
  }
  return x;
}

// x split into `num_shards` contiguous row ranges, with optional per-row weights.
class ShardedData {
 public:
  ShardedData(const MatrixXfR& x, int num_shards, const std::vector<float>* weights = nullptr) {
    const int64_t n = x.rows();
    std::vector<KMeansShard*> pointers;
    for (int s = 0; s < num_shards; ++s) {
      const int64_t begin = n * s / num_shards;
      const int64_t end = n * (s + 1) / num_shards;
      parts_.push_back(std::make_unique<MatrixXfR>(x.middleRows(begin, end - begin)));
      if (weights != nullptr) {
        weights_.push_back(std::make_unique<std::vector<float>>(weights->begin() + begin,
                                                                weights->begin() + end));
      }
      shards_.push_back(std::make_unique<KMeansShard>(
          s, parts_.back().get(), weights == nullptr ? nullptr : weights_.back().get()));
      pointers.push_back(shards_.back().get());
    }
    backend_ = std::make_unique<InProcessKMeansBackend>(pointers);
  }

  KMeansBackend& backend() { return *backend_; }
  KMeansShard& shard(int s) { return *shards_[s]; }

 private:
  std::vector<std::unique_ptr<MatrixXfR>> parts_;
  std::vector<std::unique_ptr<std::vector<float>>> weights_;
  std::vector<std::unique_ptr<KMeansShard>> shards_;
  std::unique_ptr<InProcessKMeansBackend> backend_;
};

KMeansResult RunOrDie(const MatrixXfR& x, int num_shards, const KMeansOptions& options,
                      const std::vector<float>* weights = nullptr) {
  ShardedData data(x, num_shards, weights);
  absl::StatusOr<KMeansResult> result = RunKMeans(data.backend(), options, nullptr);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *std::move(result) : KMeansResult{};
}

void ExpectIdentical(const KMeansResult& a, const KMeansResult& b, const std::string& what) {
  EXPECT_EQ(a.effective_k, b.effective_k) << what;
  EXPECT_EQ(a.centroids, b.centroids) << what;
  EXPECT_EQ(a.sizes, b.sizes) << what;
  EXPECT_EQ(a.inertia, b.inertia) << what;
  EXPECT_EQ(a.iterations, b.iterations) << what;
}

void ExpectCentroidsNear(const MatrixXfR& a, const MatrixXfR& b, double tolerance,
                         const std::string& what) {
  ASSERT_EQ(a.rows(), b.rows()) << what;
  ASSERT_EQ(a.cols(), b.cols()) << what;
  for (int64_t i = 0; i < a.rows(); ++i) {
    for (int64_t j = 0; j < a.cols(); ++j) {
      EXPECT_NEAR(a(i, j), b(i, j), tolerance) << what << " centroid " << i << " column " << j;
    }
  }
}

// The option sets besides the default (k-means++ and Lloyd).
std::vector<std::pair<std::string, KMeansOptions>> VariantOptions(int k) {
  KMeansOptions parallel;
  parallel.k = k;
  parallel.init = KMeansInit::kKMeansParallel;
  KMeansOptions minibatch;
  minibatch.k = k;
  minibatch.algorithm = KMeansAlgorithm::kMiniBatch;
  minibatch.batch_size = 256;
  KMeansOptions both = minibatch;
  both.init = KMeansInit::kKMeansParallel;
  return {{"k-means||", parallel}, {"mini-batch", minibatch}, {"k-means|| + mini-batch", both}};
}

TEST(KMeansVariantsTest, InertiaWithinTwoPercentOfLloyd) {
  for (uint64_t seed : {1, 2, 3}) {
    const MatrixXfR x = MakeBlobs(6, 5, 400, 10.0, 1.0, seed);
    KMeansOptions reference;
    reference.k = 6;
    reference.seed = seed;
    const KMeansResult lloyd = RunOrDie(x, 3, reference);
    for (auto [name, options] : VariantOptions(6)) {
      options.seed = seed;
      const KMeansResult result = RunOrDie(x, 3, options);
      EXPECT_EQ(result.effective_k, 6) << name << " seed " << seed;
      EXPECT_LE(result.inertia, 1.02 * lloyd.inertia) << name << " seed " << seed;
    }
  }
}

TEST(KMeansVariantsTest, ThreadCountDoesNotChangeResult) {
  // More rows than kParallelMinRows per shard, so the kernels run in parallel.
  const MatrixXfR x = MakeBlobs(8, 6, 1200, 10.0, 2.0, 7);
  std::vector<std::pair<std::string, KMeansOptions>> variants = VariantOptions(8);
  KMeansOptions cosine;
  cosine.k = 8;
  cosine.distance = KMeansDistance::kCosine;
  cosine.init = KMeansInit::kKMeansParallel;
  variants.emplace_back("cosine", cosine);
  const int saved = omp_get_max_threads();
  for (const auto& [name, options] : variants) {
    omp_set_num_threads(1);
    const KMeansResult one = RunOrDie(x, 2, options);
    omp_set_num_threads(2);
    const KMeansResult two = RunOrDie(x, 2, options);
    ExpectIdentical(one, two, name);
  }
  omp_set_num_threads(saved);
}

TEST(KMeansVariantsTest, SeparateShardObjectsGiveIdenticalResult) {
  const MatrixXfR x = MakeBlobs(5, 4, 300, 10.0, 1.5, 11);
  for (const auto& [name, options] : VariantOptions(5)) {
    const KMeansResult first = RunOrDie(x, 4, options);
    const KMeansResult second = RunOrDie(x, 4, options);
    ExpectIdentical(first, second, name);

    // The same four shard objects behind a backend built separately from the one that
    // created them, as when other workers host the same shards.
    ShardedData data(x, 4);
    InProcessKMeansBackend all({&data.shard(0), &data.shard(1), &data.shard(2), &data.shard(3)});
    absl::StatusOr<KMeansResult> regrouped = RunKMeans(all, options, nullptr);
    ASSERT_TRUE(regrouped.ok()) << regrouped.status();
    ExpectIdentical(first, *regrouped, name + " regrouped");
  }
}

TEST(KMeansVariantsTest, KEqualToRowCount) {
  MatrixXfR x(6, 2);
  x << 0, 0, 1, 0, 0, 1, 5, 5, 6, 5, 5, 6;
  for (auto [name, options] : VariantOptions(6)) {
    const KMeansResult result = RunOrDie(x, 2, options);
    EXPECT_EQ(result.effective_k, 6) << name;
    EXPECT_FALSE(result.fewer_distinct_points) << name;
    EXPECT_EQ(result.inertia, 0.0) << name;
  }
}

TEST(KMeansVariantsTest, AllRowsIdenticalGiveOneCentroid) {
  const MatrixXfR x = MatrixXfR::Constant(50, 3, 2.5f);
  for (auto [name, options] : VariantOptions(4)) {
    const KMeansResult result = RunOrDie(x, 3, options);
    EXPECT_EQ(result.effective_k, 1) << name;
    EXPECT_TRUE(result.fewer_distinct_points) << name;
    EXPECT_EQ(result.inertia, 0.0) << name;
    EXPECT_EQ(result.sizes, (std::vector<int64_t>{50})) << name;
  }
}

TEST(KMeansVariantsTest, EmptyShardIsSkipped) {
  // 4 rows over 5 shards leaves one shard empty.
  MatrixXfR x(4, 1);
  x << 0, 1, 10, 11;
  for (auto [name, options] : VariantOptions(2)) {
    options.batch_size = 4;
    const KMeansResult result = RunOrDie(x, 5, options);
    EXPECT_EQ(result.effective_k, 2) << name;
    EXPECT_EQ(result.sizes, (std::vector<int64_t>{2, 2})) << name;
    EXPECT_EQ(result.inertia, 1.0) << name;
  }
}

TEST(KMeansVariantsTest, ValidateNamesField) {
  struct Case {
    std::string field;
    KMeansOptions options;
  };
  std::vector<Case> cases(7);
  cases[0].field = "oversampling";
  cases[0].options.oversampling = -1;
  cases[1].field = "init_rounds";
  cases[1].options.init_rounds = 0;
  cases[2].field = "batch_size";
  cases[2].options.batch_size = 0;
  cases[3].field = "max_no_improvement";
  cases[3].options.max_no_improvement = -1;
  cases[4].field = "reassignment_ratio";
  cases[4].options.reassignment_ratio = std::nan("");
  cases[5].field = "distance";
  cases[5].options.distance = static_cast<KMeansDistance>(7);
  cases[6].field = "init";
  cases[6].options.init = static_cast<KMeansInit>(-1);
  for (const Case& c : cases) {
    const absl::Status status = c.options.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_EQ(status.message().rfind(c.field + " = ", 0), 0u) << status.message();
  }
}

TEST(NormalizeRowsTest, UnitRowsAndZeroRowsStayZero) {
  MatrixXfR x(3, 2);
  x << 3, 4, 0, 0, -1, 0;
  EXPECT_EQ(NormalizeRows(&x), 1);
  EXPECT_FLOAT_EQ(x(0, 0), 0.6f);
  EXPECT_FLOAT_EQ(x(0, 1), 0.8f);
  EXPECT_EQ(x(1, 0), 0.0f);
  EXPECT_EQ(x(1, 1), 0.0f);
  EXPECT_EQ(x(2, 0), -1.0f);
}

TEST(CosineKMeansTest, CentroidsHaveUnitNorm) {
  const MatrixXfR x = MakeBlobs(5, 6, 300, 10.0, 2.0, 5);
  std::vector<std::pair<std::string, KMeansOptions>> variants = VariantOptions(5);
  variants.emplace_back("default", KMeansOptions{});
  for (auto [name, options] : variants) {
    options.k = 5;
    options.distance = KMeansDistance::kCosine;
    const KMeansResult result = RunOrDie(x, 3, options);
    ASSERT_EQ(result.centroids.rows(), 5) << name;
    for (int64_t j = 0; j < result.centroids.rows(); ++j) {
      EXPECT_LT(std::abs(result.centroids.row(j).cast<double>().norm() - 1.0), 1e-6)
          << name << " centroid " << j;
    }
    EXPECT_GE(result.inertia, 0.0) << name;
  }
}

TEST(CosineKMeansTest, ScaledRowsGiveSameClusters) {
  MatrixXfR x(4, 2);
  x << 1, 0, 100, 1, 0, 1, 1, 50;
  KMeansOptions options;
  options.k = 2;
  options.distance = KMeansDistance::kCosine;
  const KMeansResult result = RunOrDie(x, 1, options);
  EXPECT_EQ(result.sizes, (std::vector<int64_t>{2, 2}));
  EXPECT_LT(result.inertia, 1e-3);
}

TEST(CosineKMeansTest, ZeroRowsFollowTheRule) {
  MatrixXfR with_zeros(6, 2);
  with_zeros << 1, 0, 0, 0, 2, 0.1f, 0, 3, 0, 0, 0.1f, 1;
  MatrixXfR without(4, 2);
  without << 1, 0, 2, 0.1f, 0, 3, 0.1f, 1;
  KMeansOptions options;
  options.k = 2;
  options.tol = 0;
  options.distance = KMeansDistance::kCosine;
  const KMeansResult a = RunOrDie(with_zeros, 1, options);
  const KMeansResult b = RunOrDie(without, 1, options);
  // Zero rows have weight 0 in training: same centroids, sizes and inertia as without.
  ExpectCentroidsNear(a.centroids, b.centroids, 1e-6, "zero rows");
  EXPECT_EQ(a.sizes, b.sizes);
  EXPECT_NEAR(a.inertia, b.inertia, 1e-9);

  // Serving: label 0 and cosine distance 1.
  MatrixXfR served = with_zeros;
  NormalizeRows(&served);
  std::vector<int32_t> labels(6);
  std::vector<float> distances(6);
  AssignNearestCosine(served, a.centroids, labels.data(), distances.data());
  EXPECT_EQ(labels[1], 0);
  EXPECT_EQ(distances[1], 1.0f);
  EXPECT_EQ(labels[4], 0);
  EXPECT_EQ(distances[4], 1.0f);
  EXPECT_LT(distances[0], 0.01f);

  // The shard's Assign applies the same rule.
  ShardedData data(with_zeros, 1);
  data.shard(0).UseCosineDistance();
  std::vector<int32_t> shard_labels;
  std::vector<float> shard_distances;
  data.shard(0).Assign(a.centroids, &shard_labels, &shard_distances);
  EXPECT_EQ(shard_labels, labels);
  EXPECT_EQ(shard_distances, distances);
}

TEST(CosineKMeansTest, RunLloydRejectsZeroInitialCentroid) {
  MatrixXfR x(2, 2);
  x << 1, 0, 0, 1;
  ShardedData data(x, 1);
  KMeansOptions options;
  options.distance = KMeansDistance::kCosine;
  const MatrixXfR initial = MatrixXfR::Zero(1, 2);
  absl::StatusOr<KMeansResult> result = RunLloyd(data.backend(), initial, options, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SampleWeightsTest, WeightTwoEqualsDuplicateRow) {
  const MatrixXfR x = MakeBlobs(3, 3, 40, 5.0, 1.0, 21);
  const int64_t n = x.rows();
  std::vector<float> weights(n, 1.0f);
  weights[5] = 2.0f;
  weights[17] = 2.0f;
  // The duplicates sit right after their originals, so the running sums of the sampling
  // weights match those of the weighted rows.
  MatrixXfR duplicated(n + 2, x.cols());
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    duplicated.row(next++) = x.row(i);
    if (weights[i] == 2.0f) duplicated.row(next++) = x.row(i);
  }
  KMeansOptions options;
  options.k = 3;
  options.tol = 0;
  const KMeansResult weighted = RunOrDie(x, 1, options, &weights);
  const KMeansResult copies = RunOrDie(duplicated, 1, options);
  ExpectCentroidsNear(weighted.centroids, copies.centroids, 1e-6, "weight 2");
  EXPECT_NEAR(weighted.inertia, copies.inertia, 1e-6 * copies.inertia);
}

TEST(SampleWeightsTest, WeightZeroEqualsDroppedRow) {
  const MatrixXfR x = MakeBlobs(3, 3, 40, 5.0, 1.0, 22);
  const int64_t n = x.rows();
  std::vector<float> weights(n, 1.0f);
  weights[3] = 0.0f;
  weights[50] = 0.0f;
  MatrixXfR dropped(n - 2, x.cols());
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (weights[i] != 0) dropped.row(next++) = x.row(i);
  }
  KMeansOptions options;
  options.k = 3;
  options.tol = 0;
  const KMeansResult weighted = RunOrDie(x, 1, options, &weights);
  const KMeansResult without = RunOrDie(dropped, 1, options);
  ExpectCentroidsNear(weighted.centroids, without.centroids, 1e-6, "weight 0");
  EXPECT_EQ(weighted.sizes, without.sizes);
  EXPECT_NEAR(weighted.inertia, without.inertia, 1e-6 * without.inertia);
}

TEST(SampleWeightsTest, ZeroWeightRowNeverSeeds) {
  // The far row at 100 has weight 0, so with k = 2 no centroid goes there.
  MatrixXfR x(5, 1);
  x << 0, 1, 10, 11, 100;
  const std::vector<float> weights = {1, 1, 1, 1, 0};
  for (auto [name, options] : VariantOptions(2)) {
    const KMeansResult result = RunOrDie(x, 2, options, &weights);
    ASSERT_EQ(result.effective_k, 2) << name;
    EXPECT_LT(result.centroids.maxCoeff(), 50.0f) << name;
    // Mini-batch centroids are running means of the draws, so they end near the means.
    EXPECT_NEAR(result.inertia, 1.0, 0.05) << name;
  }
}

TEST(SampleWeightsTest, CheckRejectsBadWeights) {
  const MatrixXfR x = MatrixXfR::Zero(2, 1);
  EXPECT_TRUE(CheckSampleWeights(x, {1.0f, 0.0f}).ok());
  EXPECT_EQ(CheckSampleWeights(x, {1.0f}).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status negative = CheckSampleWeights(x, {1.0f, -1.0f});
  EXPECT_EQ(negative.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(negative.message().rfind("weights[1]", 0), 0u) << negative.message();
  EXPECT_FALSE(CheckSampleWeights(x, {1.0f, std::nanf("")}).ok());
}

}  // namespace
}  // namespace cohort
