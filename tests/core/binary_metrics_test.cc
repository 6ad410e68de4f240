#include "core/binary_metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

namespace cohort {
namespace {

// Inputs and expected values from bench/reference_binary_metrics.py (scikit-learn 1.2.1).
struct Case {
  const char* name;
  std::vector<uint8_t> labels;
  std::vector<double> scores;
};

const Case kMixed{"mixed",
                  {1, 0, 1, 1, 0, 0, 1, 0, 1, 0},
                  {0.9, 0.8, 0.8, 0.6, 0.55, 0.4, 0.4, 0.2, 0.1, 0.05}};
const Case kNoPositivePrediction{"no_positive_prediction", {1, 0, 1, 0}, {0.4, 0.3, 0.2, 0.1}};
const Case kOnlyNegatives{"only_negatives", {0, 0, 0, 0}, {0.9, 0.2, 0.6, 0.1}};
const Case kOnlyPositives{"only_positives", {1, 1, 1}, {0.9, 0.2, 0.7}};
const Case kExtremeScores{"extreme_scores", {1, 0, 1, 0, 1}, {1.0, 0.0, 0.0, 1.0, 0.5}};

constexpr double kTolerance = 1e-12;

BinaryMetrics Compute(const Case& c, ZeroDivision zero_division = ZeroDivision::kZero) {
  BinaryMetricsOptions options;
  options.zero_division = zero_division;
  absl::StatusOr<BinaryMetrics> metrics = ComputeBinaryMetrics(c.labels, c.scores, options);
  EXPECT_TRUE(metrics.ok()) << c.name << ": " << metrics.status();
  return metrics.ok() ? *metrics : BinaryMetrics{};
}

TEST(BinaryMetricsTest, MixedLabelsMatchScikitLearn) {
  const BinaryMetrics m = Compute(kMixed);
  EXPECT_NEAR(m.accuracy.value, 0.6, kTolerance);
  EXPECT_NEAR(m.precision.value, 0.6, kTolerance);
  EXPECT_NEAR(m.recall.value, 0.6, kTolerance);
  EXPECT_NEAR(m.f1.value, 0.6, kTolerance);
  ASSERT_TRUE(m.roc_auc.defined);
  EXPECT_NEAR(m.roc_auc.value, 0.6799999999999999, kTolerance);
  ASSERT_TRUE(m.pr_auc.defined);
  EXPECT_NEAR(m.pr_auc.value, 0.7087301587301588, kTolerance);
  EXPECT_NEAR(m.log_loss.value, 0.7251413593725851, kTolerance);
  EXPECT_EQ(m.confusion.true_positives, 3);
  EXPECT_EQ(m.confusion.false_positives, 2);
  EXPECT_EQ(m.confusion.false_negatives, 2);
  EXPECT_EQ(m.confusion.true_negatives, 3);
}

TEST(BinaryMetricsTest, NoPositivePredictionUsesZeroDivision) {
  const BinaryMetrics zero = Compute(kNoPositivePrediction, ZeroDivision::kZero);
  EXPECT_EQ(zero.precision.value, 0.0);
  EXPECT_EQ(zero.recall.value, 0.0);
  EXPECT_EQ(zero.f1.value, 0.0);
  const BinaryMetrics one = Compute(kNoPositivePrediction, ZeroDivision::kOne);
  EXPECT_EQ(one.precision.value, 1.0);
  EXPECT_EQ(one.recall.value, 0.0);
  EXPECT_EQ(one.f1.value, 0.0);
  EXPECT_NEAR(one.accuracy.value, 0.5, kTolerance);
  EXPECT_NEAR(one.roc_auc.value, 0.75, kTolerance);
  EXPECT_NEAR(one.pr_auc.value, 0.8333333333333333, kTolerance);
  EXPECT_NEAR(one.log_loss.value, 0.7469410259762036, kTolerance);
}

TEST(BinaryMetricsTest, OnlyNegativesGiveUndefinedAucs) {
  const BinaryMetrics zero = Compute(kOnlyNegatives, ZeroDivision::kZero);
  EXPECT_FALSE(zero.roc_auc.defined);
  EXPECT_NE(zero.roc_auc.undefined_reason.find("only negative"), std::string::npos)
      << zero.roc_auc.undefined_reason;
  // scikit-learn returns -0.0 with a warning here; cohort reports the value as undefined.
  EXPECT_FALSE(zero.pr_auc.defined);
  EXPECT_EQ(zero.recall.value, 0.0);
  EXPECT_NEAR(zero.accuracy.value, 0.5, kTolerance);
  EXPECT_NEAR(zero.log_loss.value, 0.8868449729600593, kTolerance);
  const BinaryMetrics one = Compute(kOnlyNegatives, ZeroDivision::kOne);
  EXPECT_EQ(one.precision.value, 0.0);
  EXPECT_EQ(one.recall.value, 1.0);
  EXPECT_EQ(one.f1.value, 0.0);
}

TEST(BinaryMetricsTest, OnlyPositivesGiveUndefinedRocAuc) {
  const BinaryMetrics m = Compute(kOnlyPositives);
  EXPECT_FALSE(m.roc_auc.defined);
  ASSERT_TRUE(m.pr_auc.defined);
  EXPECT_NEAR(m.pr_auc.value, 1.0, kTolerance);
  EXPECT_NEAR(m.recall.value, 0.6666666666666666, kTolerance);
  EXPECT_NEAR(m.f1.value, 0.8, kTolerance);
  EXPECT_NEAR(m.log_loss.value, 0.6904911240102196, kTolerance);
}

TEST(BinaryMetricsTest, ExtremeScoresAreClippedInLogLoss) {
  const BinaryMetrics m = Compute(kExtremeScores);
  EXPECT_NEAR(m.accuracy.value, 0.4, kTolerance);
  EXPECT_NEAR(m.precision.value, 0.5, kTolerance);
  EXPECT_NEAR(m.recall.value, 0.3333333333333333, kTolerance);
  EXPECT_NEAR(m.f1.value, 0.4, kTolerance);
  EXPECT_NEAR(m.roc_auc.value, 0.49999999999999994, kTolerance);
  EXPECT_NEAR(m.pr_auc.value, 0.5888888888888889, kTolerance);
  EXPECT_NEAR(m.log_loss.value, 14.556090791758852, 1e-9);
}

TEST(BinaryMetricsTest, EmptySetIsUndefinedNotAnError) {
  absl::StatusOr<BinaryMetrics> m = ComputeBinaryMetrics({}, {});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 0);
  EXPECT_FALSE(m->accuracy.defined);
  EXPECT_FALSE(m->roc_auc.defined);
  EXPECT_FALSE(m->log_loss.defined);
}

TEST(BinaryMetricsTest, RowOrderDoesNotChangeResults) {
  std::vector<size_t> order(kMixed.labels.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937 rng(7);
  std::shuffle(order.begin(), order.end(), rng);
  Case shuffled{"shuffled", {}, {}};
  for (size_t i : order) {
    shuffled.labels.push_back(kMixed.labels[i]);
    shuffled.scores.push_back(kMixed.scores[i]);
  }
  const BinaryMetrics a = Compute(kMixed);
  const BinaryMetrics b = Compute(shuffled);
  EXPECT_NEAR(a.roc_auc.value, b.roc_auc.value, kTolerance);
  EXPECT_NEAR(a.pr_auc.value, b.pr_auc.value, kTolerance);
  EXPECT_NEAR(a.log_loss.value, b.log_loss.value, kTolerance);
}

TEST(BinaryMetricsTest, RocAucMatchesPairCountingReference) {
  // ROC-AUC is the share of (positive, negative) pairs ranked correctly, ties counting 1/2.
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> label(0, 1);
  std::uniform_int_distribution<int> score(0, 20);
  std::vector<uint8_t> labels;
  std::vector<double> scores;
  for (int i = 0; i < 300; ++i) {
    labels.push_back(static_cast<uint8_t>(label(rng)));
    scores.push_back(score(rng) / 20.0);
  }
  double correct = 0;
  double pairs = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    for (size_t j = 0; j < labels.size(); ++j) {
      if (labels[i] != 1 || labels[j] != 0) continue;
      pairs += 1;
      if (scores[i] > scores[j]) correct += 1;
      if (scores[i] == scores[j]) correct += 0.5;
    }
  }
  const BinaryMetric auc = RocAuc(labels, scores);
  ASSERT_TRUE(auc.defined);
  EXPECT_NEAR(auc.value, correct / pairs, 1e-12);
}

TEST(BinaryMetricsTest, InvalidInputIsRejected) {
  EXPECT_EQ(ComputeBinaryMetrics({1, 0}, {0.5}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ComputeBinaryMetrics({2}, {0.5}).status().code(), absl::StatusCode::kInvalidArgument);
  const absl::Status nan = ComputeBinaryMetrics({1}, {std::nan("")}).status();
  EXPECT_EQ(nan.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(nan.message().find("row 0"), std::string::npos) << nan;
  EXPECT_EQ(ComputeBinaryMetrics({1}, {1.5}).status().code(), absl::StatusCode::kInvalidArgument);
  BinaryMetricsOptions options;
  options.threshold = 2;
  EXPECT_EQ(ComputeBinaryMetrics({1}, {0.5}, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cohort
