#include "core/logistic.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace cohort {
namespace {

// The data of bench/reference_logistic.py.
MatrixXfR SmallX() {
  MatrixXfR x(12, 2);
  x << 0.5f, 1.2f, 1.5f, -0.3f, -0.7f, 0.8f, 2.2f, 1.1f, -1.3f, -0.4f, 0.1f, 0.0f, 1.9f, 2.5f,
      -0.2f, -1.7f, 0.8f, 0.9f, -1.6f, 1.4f, 2.8f, -0.6f, 0.3f, 0.4f;
  return x;
}
const std::vector<uint8_t> kSmallY = {1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 1};
const std::vector<float> kSmallWeights = {1.0f, 2.0f, 0.5f, 1.0f, 1.0f, 3.0f,
                                          1.0f, 0.5f, 1.0f, 2.0f, 1.0f, 1.0f};

struct Reference {
  const char* name;
  LogisticOptions options;
  bool sample_weights;
  double coef0;
  double coef1;
  double intercept;
};

LogisticOptions Options(double c, LogisticOptions::ClassWeight class_weight, double w0 = 1,
                        double w1 = 1, bool intercept = true) {
  LogisticOptions options;
  options.c = c;
  options.class_weight = class_weight;
  options.negative_weight = w0;
  options.positive_weight = w1;
  options.fit_intercept = intercept;
  options.gradient_tolerance = 1e-8;
  options.max_iterations = 10000;
  return options;
}

TEST(LogisticTest, FitMatchesScikitLearnOnSmallData) {
  using CW = LogisticOptions::ClassWeight;
  // The "optimum" lines of bench/reference_logistic.py (scikit-learn 1.2.1): the minimum of
  // scikit-learn's objective, polished to a gradient below 1e-9, because scikit-learn's own
  // fit stops up to 2e-5 short of it.
  const std::vector<Reference> references = {
      {"c1", Options(1.0, CW::kNone), false, 1.4159472068502699, 0.5718652422430257,
       -0.3318937734379926},
      {"c1_sample_weights", Options(1.0, CW::kNone), true, 1.567117339275605, 0.5682354474112238,
       -0.6728388521677114},
      {"c0_1_balanced", Options(0.1, CW::kBalanced), false, 0.42995933861790075,
       0.15079701592853745, -0.19985502813859024},
      {"c0_1_balanced_sample_weights", Options(0.1, CW::kBalanced), true, 0.49652887621273845,
       0.10885143623246203, -0.4037899345473795},
      {"c2_explicit_weights", Options(2.0, CW::kExplicit, 3.0, 0.5), false, 1.9425080036936209,
       0.8334197116956514, -1.7559422049004227},
      {"c2_explicit_weights_sample_weights", Options(2.0, CW::kExplicit, 3.0, 0.5), true,
       2.163222390152512, 0.9246896963279754, -2.245568530898551},
      {"c1_no_intercept", Options(1.0, CW::kNone, 1, 1, false), false, 1.3939890767536993,
       0.501476312325484, 0.0},
      {"c1_no_intercept_sample_weights", Options(1.0, CW::kNone, 1, 1, false), true,
       1.4537817526966221, 0.3681717099611464, 0.0},
  };
  const MatrixXfR x = SmallX();
  const std::vector<float> no_weights;
  for (const Reference& r : references) {
    const TrainingShard shard{&x, &kSmallY, r.sample_weights ? &kSmallWeights : &no_weights};
    absl::StatusOr<LogisticModel> model = FitLogisticOnShards({shard}, r.options);
    ASSERT_TRUE(model.ok()) << r.name << ": " << model.status();
    EXPECT_TRUE(model->converged) << r.name;
    EXPECT_NEAR(model->coefficients[0], r.coef0, 1e-6) << r.name;
    EXPECT_NEAR(model->coefficients[1], r.coef1, 1e-6) << r.name;
    EXPECT_NEAR(model->intercept, r.intercept, 1e-6) << r.name;
  }
}

// Random data of n rows and d features with labels from a noisy linear rule.
struct RandomData {
  MatrixXfR x;
  std::vector<uint8_t> labels;
  std::vector<float> weights;
};

RandomData MakeData(int n, int d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  RandomData data;
  data.x.resize(n, d);
  for (int i = 0; i < n; ++i) {
    double z = 0.3;
    for (int j = 0; j < d; ++j) {
      data.x(i, j) = normal(rng);
      z += (j % 2 == 0 ? 1.0 : -0.5) * data.x(i, j);
    }
    data.labels.push_back(uniform(rng) < 1.0 / (1.0 + std::exp(-z)) ? 1 : 0);
    data.weights.push_back(0.5f + uniform(rng));
  }
  return data;
}

TEST(LogisticTest, GradientMatchesFiniteDifferences) {
  const RandomData data = MakeData(200, 5, 3);
  LogisticOptions options;
  options.c = 0.7;
  const std::array<double, 2> class_weights = {1.3, 0.6};
  const ClassCounts counts = CountClasses(data.labels, data.weights);
  auto objective = [&](const Eigen::VectorXd& params) {
    return Objective(ShardLossGradient(data.x, data.labels, data.weights, class_weights, params),
                     params, counts.weight_sum, options);
  };
  Eigen::VectorXd params(6);
  params << 0.4, -0.2, 0.9, 0.1, -0.7, 0.25;
  const LossGradient at = objective(params);
  const double h = 1e-6;
  for (int k = 0; k < params.size(); ++k) {
    Eigen::VectorXd plus = params;
    Eigen::VectorXd minus = params;
    plus[k] += h;
    minus[k] -= h;
    const double numeric = (objective(plus).loss - objective(minus).loss) / (2 * h);
    EXPECT_NEAR(at.gradient[k], numeric, 1e-7) << "parameter " << k;
  }
}

TEST(LogisticTest, LossIsStableForLargeMargins) {
  MatrixXfR x(2, 1);
  x << 1000.0f, -1000.0f;
  const std::vector<uint8_t> labels = {1, 1};
  Eigen::VectorXd params(2);
  params << 1.0, 0.0;
  const LossGradient result = ShardLossGradient(x, labels, {}, {1.0, 1.0}, params);
  // Row 0: log(1 + e^-1000) ≈ 0; row 1: log(1 + e^1000) ≈ 1000.
  EXPECT_NEAR(result.loss, 1000.0, 1e-9);
  EXPECT_TRUE(std::isfinite(result.gradient[0]));
}

TEST(LogisticTest, ShardedSumsEqualSingleShardSums) {
  const RandomData data = MakeData(1000, 4, 5);
  Eigen::VectorXd params(5);
  params << 0.3, -0.1, 0.2, 0.05, -0.4;
  const std::array<double, 2> class_weights = {1.0, 2.0};
  const LossGradient whole = ShardLossGradient(data.x, data.labels, data.weights, class_weights, params);

  // Shards are consecutive row blocks. Merging their partials regroups the additions, so
  // the merged sums equal the single-shard sums to rounding, and merging the same partials
  // in the same order again gives the same bits.
  const std::vector<int> bounds = {0, 137, 400, 401, 733, 1000};
  LossGradient merged;
  LossGradient merged_again;
  for (size_t s = 0; s + 1 < bounds.size(); ++s) {
    const int begin = bounds[s];
    const int rows = bounds[s + 1] - bounds[s];
    const MatrixXfR x = data.x.middleRows(begin, rows);
    const std::vector<uint8_t> labels(data.labels.begin() + begin, data.labels.begin() + begin + rows);
    const std::vector<float> weights(data.weights.begin() + begin, data.weights.begin() + begin + rows);
    merged.Merge(ShardLossGradient(x, labels, weights, class_weights, params));
    merged_again.Merge(ShardLossGradient(x, labels, weights, class_weights, params));
  }
  EXPECT_EQ(merged.loss, merged_again.loss);
  EXPECT_EQ(merged.gradient, merged_again.gradient);
  EXPECT_NEAR(merged.loss, whole.loss, 1e-9 * std::fabs(whole.loss));
  for (int k = 0; k < params.size(); ++k) {
    EXPECT_NEAR(merged.gradient[k], whole.gradient[k], 1e-9) << "parameter " << k;
  }
}

TEST(LogisticTest, ShardedFitIsReproducible) {
  const RandomData data = MakeData(600, 3, 9);
  LogisticOptions options;
  options.c = 0.5;
  options.class_weight = LogisticOptions::ClassWeight::kBalanced;
  std::vector<MatrixXfR> xs;
  std::vector<std::vector<uint8_t>> labels;
  std::vector<std::vector<float>> weights;
  for (int s = 0; s < 4; ++s) {
    xs.push_back(data.x.middleRows(s * 150, 150));
    labels.emplace_back(data.labels.begin() + s * 150, data.labels.begin() + (s + 1) * 150);
    weights.emplace_back(data.weights.begin() + s * 150, data.weights.begin() + (s + 1) * 150);
  }
  std::vector<TrainingShard> shards;
  for (int s = 0; s < 4; ++s) shards.push_back({&xs[s], &labels[s], &weights[s]});
  absl::StatusOr<LogisticModel> first = FitLogisticOnShards(shards, options);
  absl::StatusOr<LogisticModel> second = FitLogisticOnShards(shards, options);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(first->coefficients, second->coefficients);
  EXPECT_EQ(first->intercept, second->intercept);

  // A fit driven through the callback, as the coordinator drives workers, gives the
  // same model as FitLogisticOnShards.
  ClassCounts counts;
  for (int s = 0; s < 4; ++s) counts.Merge(CountClasses(labels[s], weights[s]));
  absl::StatusOr<std::array<double, 2>> class_weights = ClassWeights(options, counts);
  ASSERT_TRUE(class_weights.ok());
  int calls = 0;
  absl::StatusOr<LogisticModel> driven = FitLogistic(
      3, counts.weight_sum, options,
      [&](const Eigen::VectorXd& params) -> absl::StatusOr<LossGradient> {
        ++calls;
        LossGradient total;
        for (int s = 0; s < 4; ++s) {
          total.Merge(ShardLossGradient(xs[s], labels[s], weights[s], *class_weights, params));
        }
        return total;
      });
  ASSERT_TRUE(driven.ok()) << driven.status();
  EXPECT_EQ(driven->coefficients, first->coefficients);
  EXPECT_EQ(driven->evaluations, calls);
}

TEST(LogisticTest, ThreadCountDoesNotChangeSums) {
  const RandomData data = MakeData(30000, 6, 13);
  Eigen::VectorXd params = Eigen::VectorXd::LinSpaced(7, -0.5, 0.5);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const LossGradient one = ShardLossGradient(data.x, data.labels, data.weights, {1.0, 1.5}, params);
  omp_set_num_threads(std::max(2, threads));
  const LossGradient many = ShardLossGradient(data.x, data.labels, data.weights, {1.0, 1.5}, params);
  omp_set_num_threads(threads);
  EXPECT_EQ(one.loss, many.loss);
  EXPECT_EQ(one.gradient, many.gradient);
}

TEST(LogisticTest, CallbackErrorIsReturnedUnchanged) {
  LogisticOptions options;
  int calls = 0;
  absl::StatusOr<LogisticModel> model =
      FitLogistic(2, 10.0, options, [&](const Eigen::VectorXd&) -> absl::StatusOr<LossGradient> {
        if (++calls == 3) return absl::UnavailableError("worker w1 is gone");
        LossGradient result;
        result.loss = 5.0 - calls;
        result.gradient = Eigen::VectorXd::Constant(3, 1.0);
        return result;
      });
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(model.status().message(), "worker w1 is gone");
}

TEST(LogisticTest, BalancedWeightsNeedBothClasses) {
  LogisticOptions options;
  options.class_weight = LogisticOptions::ClassWeight::kBalanced;
  ClassCounts counts;
  counts.rows = {5, 0};
  const absl::StatusOr<std::array<double, 2>> weights = ClassWeights(options, counts);
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kFailedPrecondition);
  counts.rows = {30, 10};
  ASSERT_TRUE(ClassWeights(options, counts).ok());
  EXPECT_DOUBLE_EQ((*ClassWeights(options, counts))[0], 40.0 / 60.0);
  EXPECT_DOUBLE_EQ((*ClassWeights(options, counts))[1], 40.0 / 20.0);
}

TEST(LogisticTest, InvalidOptionsNameTheField) {
  LogisticOptions options;
  options.c = 0;
  EXPECT_NE(options.Validate().message().find("c is 0"), std::string::npos);
  options = LogisticOptions{};
  options.max_iterations = 0;
  EXPECT_NE(options.Validate().message().find("max_iterations"), std::string::npos);
  options = LogisticOptions{};
  options.class_weight = LogisticOptions::ClassWeight::kExplicit;
  options.positive_weight = -1;
  EXPECT_NE(options.Validate().message().find("positive_weight"), std::string::npos);
}

TEST(LogisticTest, TestSplitIsDeterministicAndNearTheFraction) {
  int in_test = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string id = absl::StrCat("user-", i);
    const bool split = InTestSplit(id, 0.25, 42);
    EXPECT_EQ(split, InTestSplit(id, 0.25, 42));
    in_test += split ? 1 : 0;
  }
  EXPECT_NEAR(in_test / 20000.0, 0.25, 0.01);
  // The split is nested: a user in the 10 % test split is also in the 25 % one.
  for (int i = 0; i < 1000; ++i) {
    const std::string id = absl::StrCat("user-", i);
    if (InTestSplit(id, 0.10, 42)) {
      EXPECT_TRUE(InTestSplit(id, 0.25, 42)) << id;
    }
  }
  EXPECT_FALSE(InTestSplit("anyone", 0.0, 1));
  EXPECT_TRUE(InTestSplit("anyone", 1.0, 1));
}

}  // namespace
}  // namespace cohort
