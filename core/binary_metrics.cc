#include "core/binary_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace cohort {
namespace {

// The points of the ROC and precision–recall curves: cumulative true and false positives
// at each distinct score, scores in descending order (sklearn's _binary_clf_curve).
struct CurvePoints {
  std::vector<double> true_positives;
  std::vector<double> false_positives;
};

CurvePoints CumulativeCounts(const std::vector<uint8_t>& labels,
                             const std::vector<double>& scores) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&scores](size_t a, size_t b) { return scores[a] > scores[b]; });
  CurvePoints points;
  double true_positives = 0;
  double false_positives = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    if (labels[order[i]] != 0) {
      true_positives += 1;
    } else {
      false_positives += 1;
    }
    // A point is taken at the last row of each run of equal scores.
    if (i + 1 == order.size() || scores[order[i + 1]] != scores[order[i]]) {
      points.true_positives.push_back(true_positives);
      points.false_positives.push_back(false_positives);
    }
  }
  return points;
}

double Divide(double numerator, double denominator, ZeroDivision zero_division) {
  if (denominator == 0) return zero_division == ZeroDivision::kOne ? 1.0 : 0.0;
  return numerator / denominator;
}

}  // namespace

BinaryMetric RocAuc(const std::vector<uint8_t>& labels, const std::vector<double>& scores) {
  const CurvePoints points = CumulativeCounts(labels, scores);
  if (points.true_positives.empty()) return BinaryMetric::Undefined("the evaluation set is empty");
  const double positives = points.true_positives.back();
  const double negatives = points.false_positives.back();
  if (positives == 0 || negatives == 0) {
    return BinaryMetric::Undefined(absl::StrCat(
        "ROC-AUC needs both classes, but the evaluation set has only ",
        positives == 0 ? "negative" : "positive", " labels"));
  }
  // Trapezoids between consecutive points, starting at (0, 0) as sklearn's roc_curve does.
  double area = 0;
  double previous_fpr = 0;
  double previous_tpr = 0;
  for (size_t i = 0; i < points.true_positives.size(); ++i) {
    const double fpr = points.false_positives[i] / negatives;
    const double tpr = points.true_positives[i] / positives;
    area += (fpr - previous_fpr) * (tpr + previous_tpr) / 2;
    previous_fpr = fpr;
    previous_tpr = tpr;
  }
  return BinaryMetric::Of(area);
}

BinaryMetric AveragePrecision(const std::vector<uint8_t>& labels,
                             const std::vector<double>& scores) {
  const CurvePoints points = CumulativeCounts(labels, scores);
  if (points.true_positives.empty()) return BinaryMetric::Undefined("the evaluation set is empty");
  const double positives = points.true_positives.back();
  if (positives == 0) {
    return BinaryMetric::Undefined(
        "average precision needs a positive label, but the evaluation set has none");
  }
  double sum = 0;
  double previous_recall = 0;
  for (size_t i = 0; i < points.true_positives.size(); ++i) {
    const double recall = points.true_positives[i] / positives;
    const double precision =
        points.true_positives[i] / (points.true_positives[i] + points.false_positives[i]);
    sum += (recall - previous_recall) * precision;
    previous_recall = recall;
  }
  return BinaryMetric::Of(sum);
}

BinaryMetric LogLoss(const std::vector<uint8_t>& labels, const std::vector<double>& scores) {
  if (labels.empty()) return BinaryMetric::Undefined("the evaluation set is empty");
  const double eps = std::numeric_limits<double>::epsilon();
  double sum = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const double p = std::clamp(scores[i], eps, 1 - eps);
    sum += labels[i] != 0 ? -std::log(p) : -std::log(1 - p);
  }
  return BinaryMetric::Of(sum / static_cast<double>(labels.size()));
}

absl::StatusOr<BinaryMetrics> ComputeBinaryMetrics(const std::vector<uint8_t>& labels,
                                                   const std::vector<double>& scores,
                                                   const BinaryMetricsOptions& options) {
  if (labels.size() != scores.size()) {
    return absl::InvalidArgumentError(absl::StrCat("there are ", labels.size(), " labels but ",
                                                   scores.size(),
                                                   " scores; give one score per label"));
  }
  if (!(options.threshold >= 0 && options.threshold <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "threshold ", options.threshold, " is invalid; it must be in [0, 1]"));
  }
  BinaryMetrics metrics;
  metrics.rows = static_cast<int64_t>(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] > 1) {
      return absl::InvalidArgumentError(absl::StrCat("label of row ", i, " is ",
                                                     static_cast<int>(labels[i]),
                                                     "; labels must be 0 or 1"));
    }
    if (!(scores[i] >= 0 && scores[i] <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "score of row ", i, " is ", scores[i], "; scores must be probabilities in [0, 1]"));
    }
    const bool predicted = scores[i] > options.threshold;
    ConfusionMatrix& c = metrics.confusion;
    if (labels[i] != 0) {
      ++metrics.positives;
      ++(predicted ? c.true_positives : c.false_negatives);
    } else {
      ++(predicted ? c.false_positives : c.true_negatives);
    }
  }

  if (labels.empty()) {
    const std::string reason = "the evaluation set is empty";
    metrics.accuracy = BinaryMetric::Undefined(reason);
    metrics.precision = BinaryMetric::Undefined(reason);
    metrics.recall = BinaryMetric::Undefined(reason);
    metrics.f1 = BinaryMetric::Undefined(reason);
    metrics.roc_auc = BinaryMetric::Undefined(reason);
    metrics.pr_auc = BinaryMetric::Undefined(reason);
    metrics.log_loss = BinaryMetric::Undefined(reason);
    return metrics;
  }
  const ConfusionMatrix& c = metrics.confusion;
  const double tp = static_cast<double>(c.true_positives);
  const double fp = static_cast<double>(c.false_positives);
  const double fn = static_cast<double>(c.false_negatives);
  const double tn = static_cast<double>(c.true_negatives);
  metrics.accuracy = BinaryMetric::Of((tp + tn) / static_cast<double>(metrics.rows));
  const double precision = Divide(tp, tp + fp, options.zero_division);
  const double recall = Divide(tp, tp + fn, options.zero_division);
  metrics.precision = BinaryMetric::Of(precision);
  metrics.recall = BinaryMetric::Of(recall);
  const double denominator = precision + recall;
  metrics.f1 = BinaryMetric::Of(denominator == 0 ? 0.0 : 2 * precision * recall / denominator);
  metrics.roc_auc = RocAuc(labels, scores);
  metrics.pr_auc = AveragePrecision(labels, scores);
  metrics.log_loss = LogLoss(labels, scores);
  return metrics;
}

}  // namespace cohort
