// Binary logistic regression with an L2 penalty, an unpenalised intercept and class
// weights, trained by L-BFGS over a callback that sums per-shard loss and gradient.
//
// Objective, identical to scikit-learn 1.2.1 LogisticRegression(penalty="l2", C=C,
// solver="lbfgs") (sklearn/linear_model/_logistic.py with _linear_loss.py):
//   f(w, b) = (1 / S) · Σ_i s_i · c_{y_i} · ℓ(y_i, x_i·w + b) + ‖w‖² / (2 · C · S)
// where ℓ(y, z) = log(1 + exp(z)) − y·z, s_i is the sample weight (1 without weights),
// S = Σ_i s_i is the sum of sample weights before class weights, and c_y the class
// weight. "Balanced" class weights are n / (2 · n_y) with unweighted class counts n_y, as
// sklearn.utils.compute_class_weight computes them. The minimiser does not depend on
// the 1 / S factor; it is kept so that loss values match scikit-learn's.
//
// Determinism: ShardLossGradient sums in double in an order fixed by the row count, and
// callers merge shard partials in shard-id order, so a fit does not depend on worker
// count, placement or threads. A sharded fit equals a single-shard fit of the same rows
// up to rounding, because merging regroups the additions.
#ifndef COHORT_CORE_LOGISTIC_H_
#define COHORT_CORE_LOGISTIC_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/matrix.h"

namespace cohort {

struct LogisticOptions {
  // Inverse regularisation strength, as scikit-learn's C; > 0 and finite.
  double c = 1.0;
  bool fit_intercept = true;
  enum class ClassWeight {
    kNone,      // c_0 = c_1 = 1
    kExplicit,  // c_0 = negative_weight, c_1 = positive_weight
    kBalanced,  // c_y = n / (2 · n_y)
  };
  ClassWeight class_weight = ClassWeight::kNone;
  double negative_weight = 1.0;  // kExplicit only; finite and > 0
  double positive_weight = 1.0;
  // L-BFGS stops when ‖∇f‖∞ <= gradient_tolerance (scikit-learn's tol is the same
  // projected-gradient test in scipy's L-BFGS-B), or after max_iterations iterations.
  double gradient_tolerance = 1e-4;  // > 0
  int max_iterations = 100;          // in [1, 100000]
  int history = 10;                  // L-BFGS memory m, in [1, 100]

  // Errors: InvalidArgument naming the field and the value.
  [[nodiscard]] absl::Status Validate() const;
};

// Unweighted row counts per class, mergeable; feeds "balanced" class weights.
struct ClassCounts {
  std::array<int64_t, 2> rows = {0, 0};  // [negative, positive]
  double weight_sum = 0;                 // Σ s_i over both classes (S above)
  void Merge(const ClassCounts& other);
};

// Counts the labels of one shard. `labels`: n entries, each 0 or 1. `weights`: empty or n
// non-negative sample weights. REQUIRES: sizes as stated.
ClassCounts CountClasses(const std::vector<uint8_t>& labels, const std::vector<float>& weights);

// Class weights {c_0, c_1} for `options`. Errors: FailedPrecondition for kBalanced when a
// class has no row (naming it).
[[nodiscard]] absl::StatusOr<std::array<double, 2>> ClassWeights(const LogisticOptions& options,
                                                                 const ClassCounts& counts);

// Parameters laid out as [w_0 … w_{d−1}, b]; b is 0 and unused without an intercept.
// Unnormalised partial sums over some rows: loss = Σ s_i c_{y_i} ℓ_i and gradient =
// Σ s_i c_{y_i} (σ(z_i) − y_i) [x_i, 1]. The penalty and 1 / S are added by the optimiser.
struct LossGradient {
  double loss = 0;
  Eigen::VectorXd gradient;  // d + 1 entries; empty in a default-constructed value

  // Adds `other`; merging into a default-constructed value copies it.
  // REQUIRES: equal gradient sizes when both are non-empty.
  void Merge(const LossGradient& other);
};

// Computes the partial sums of rows of `x` (n×d, row-major) in double: rows are summed in
// order within fixed blocks of 4096 rows, and the block sums in block order, so the
// result does not depend on the OpenMP thread count. `labels`: n values 0/1; `weights`:
// empty or n sample weights; `params`: d + 1 values. The loss uses
// log1p(exp(−|z|)) + max(z, 0) − y·z, which is accurate for large |z|.
// REQUIRES: sizes as stated. Thread safety: reentrant; uses OpenMP above 8192 rows.
LossGradient ShardLossGradient(const MatrixXfR& x, const std::vector<uint8_t>& labels,
                               const std::vector<float>& weights,
                               const std::array<double, 2>& class_weights,
                               const Eigen::VectorXd& params);

// Returns the summed partial loss and gradient of all shards at `params`, merged in
// shard-id order. An error stops the fit and is returned by FitLogistic unchanged (for
// example UNAVAILABLE when a worker is gone).
using LossGradientFn = std::function<absl::StatusOr<LossGradient>(const Eigen::VectorXd& params)>;

// Objective value and gradient of f above from merged partial sums.
// REQUIRES: weight_sum > 0, summed.gradient has params.size() entries.
LossGradient Objective(const LossGradient& summed, const Eigen::VectorXd& params,
                       double weight_sum, const LogisticOptions& options);

struct LogisticModel {
  std::vector<double> coefficients;  // d
  double intercept = 0;
  int iterations = 0;        // L-BFGS iterations run
  int evaluations = 0;       // calls of the loss/gradient callback
  double objective = 0;      // f at the returned parameters
  double gradient_max = 0;   // ‖∇f‖∞ there
  bool converged = false;    // gradient_max <= options.gradient_tolerance
  // Why the fit stopped: the gradient test, max_iterations, or a failed line search. A
  // line search fails when the objective no longer decreases in double precision, and the
  // parameters are then the best point found.
  std::string stop_reason;

  // σ(x·w + b) for one row of d features.
  double Probability(const float* row) const;
  // Probabilities of every row of `x` (n×d). REQUIRES: x.cols() == coefficients.size().
  std::vector<double> PredictProbabilities(const MatrixXfR& x) const;
};

// Minimises f from zero parameters (as scikit-learn does) with LBFGSpp's L-BFGS.
// `dim` is d; `weight_sum` is S from the merged ClassCounts. The callback is called once
// per function evaluation, from the calling thread. Reaching max_iterations or a failed
// line search is not an error: the model then has converged = false and a stop_reason. Errors:
// InvalidArgument for bad options, dim < 1 or weight_sum <= 0; the callback's error,
// unchanged.
[[nodiscard]] absl::StatusOr<LogisticModel> FitLogistic(int dim, double weight_sum,
                                                        const LogisticOptions& options,
                                                        const LossGradientFn& loss_gradient);

// Fits on in-memory shards (x, labels, weights per shard, in shard-id order): computes
// the class counts, then runs FitLogistic over ShardLossGradient sums. The reference for
// the distributed fit. Errors: as CountClasses / ClassWeights / FitLogistic, and
// InvalidArgument when the shards disagree in width or sizes.
struct TrainingShard {
  const MatrixXfR* x = nullptr;
  const std::vector<uint8_t>* labels = nullptr;
  const std::vector<float>* weights = nullptr;  // null or empty: every weight is 1
};
[[nodiscard]] absl::StatusOr<LogisticModel> FitLogisticOnShards(
    const std::vector<TrainingShard>& shards, const LogisticOptions& options);

// Deterministic train/test split by user id: true when XXH64(user_id, seed) / 2^64 <
// test_fraction. The same id, seed and fraction give the same result on every machine.
bool InTestSplit(std::string_view user_id, double test_fraction, uint64_t seed);

}  // namespace cohort

#endif  // COHORT_CORE_LOGISTIC_H_
