// Metrics of a binary classifier on an evaluation set, matching scikit-learn 1.2.1
// (sklearn.metrics) on the same inputs.
#ifndef COHORT_CORE_BINARY_METRICS_H_
#define COHORT_CORE_BINARY_METRICS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort {

// The value of precision, recall and F1 when their denominator is 0, as scikit-learn's
// zero_division argument ("warn" behaves as kZero).
enum class ZeroDivision { kZero, kOne };

// A metric value, or the reason it is undefined on this evaluation set (for example
// ROC-AUC when every label is the same). An undefined value is a result, not an error.
struct BinaryMetric {
  bool defined = false;
  double value = 0;        // meaningful only when defined
  std::string undefined_reason;

  static BinaryMetric Of(double value) { return BinaryMetric{true, value, ""}; }
  static BinaryMetric Undefined(std::string reason) {
    return BinaryMetric{false, 0, std::move(reason)};
  }
};

struct ConfusionMatrix {
  int64_t true_negatives = 0;
  int64_t false_positives = 0;
  int64_t false_negatives = 0;
  int64_t true_positives = 0;
};

struct BinaryMetricsOptions {
  // A row is predicted positive when its score > threshold, as scikit-learn's
  // LogisticRegression.predict does for 0.5 (it predicts 1 when the decision function is
  // > 0), so a score of exactly 0.5 is predicted negative.
  double threshold = 0.5;
  ZeroDivision zero_division = ZeroDivision::kZero;
};

struct BinaryMetrics {
  int64_t rows = 0;
  int64_t positives = 0;
  ConfusionMatrix confusion;
  BinaryMetric accuracy;   // undefined only for an empty set
  BinaryMetric precision;  // tp / (tp + fp), zero_division when no positive prediction
  BinaryMetric recall;     // tp / (tp + fn), zero_division when no positive label
  // 2 P R / (P + R) from the precision and recall above (after zero_division), 0 when
  // P + R = 0, as scikit-learn computes it.
  BinaryMetric f1;
  BinaryMetric roc_auc;    // undefined when one class is absent
  BinaryMetric pr_auc;     // average precision; undefined when there is no positive
  BinaryMetric log_loss;   // mean of −log p of the true class, p clipped to [ε, 1 − ε]
};

// Computes every metric of `scores` (probabilities of the positive class, in [0, 1])
// against `labels` (0 or 1). Rows may come in any order; the result does not depend on
// it. Errors: InvalidArgument when the sizes differ, a label is not 0/1, a score is NaN or
// outside [0, 1] (naming the row), or the threshold is not in [0, 1].
[[nodiscard]] absl::StatusOr<BinaryMetrics> ComputeBinaryMetrics(
    const std::vector<uint8_t>& labels, const std::vector<double>& scores,
    const BinaryMetricsOptions& options = {});

// Area under the ROC curve (trapezoidal, ties between scores as one step), as
// sklearn.metrics.roc_auc_score. Undefined when a class is absent.
BinaryMetric RocAuc(const std::vector<uint8_t>& labels, const std::vector<double>& scores);

// Average precision Σ_n (R_n − R_{n−1}) P_n over the distinct score thresholds in
// descending order, as sklearn.metrics.average_precision_score (not the trapezoidal
// area). Undefined when there is no positive label.
BinaryMetric AveragePrecision(const std::vector<uint8_t>& labels, const std::vector<double>& scores);

// Mean log loss with probabilities clipped to [ε, 1 − ε], ε the double epsilon, as
// sklearn.metrics.log_loss(eps="auto") for float64 input. Undefined for an empty set.
BinaryMetric LogLoss(const std::vector<uint8_t>& labels, const std::vector<double>& scores);

}  // namespace cohort

#endif  // COHORT_CORE_BINARY_METRICS_H_
