#include "core/logistic.h"

#include <LBFGS.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"

namespace cohort {
namespace {

// Rows per block of ShardLossGradient. Each block's sums are one term of the shard's sum,
// so this constant fixes the summation order; changing it changes the last bits.
constexpr Eigen::Index kRowsPerBlock = 4096;
// Shards with at most this many rows are summed on one thread.
constexpr Eigen::Index kParallelMinRows = 2 * kRowsPerBlock;

double Sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

// Adapts a LossGradientFn to LBFGSpp's functor interface. A functor has no way to stop
// LBFGSpp, so after an error the functor stores it and returns NaN with a zero gradient.
// The line search then fails, and FitLogistic returns the stored error.
class ObjectiveFunctor {
 public:
  ObjectiveFunctor(const LossGradientFn& loss_gradient, double weight_sum,
                   const LogisticOptions& options)
      : loss_gradient_(loss_gradient), weight_sum_(weight_sum), options_(options) {}

  double operator()(const Eigen::VectorXd& params, Eigen::VectorXd& gradient) {
    if (!status_.ok()) {
      gradient.setZero();
      return std::numeric_limits<double>::quiet_NaN();
    }
    ++evaluations_;
    absl::StatusOr<LossGradient> summed = loss_gradient_(params);
    if (summed.ok() && summed->gradient.size() != params.size()) {
      summed = absl::InternalError(absl::StrCat("the loss callback returned a gradient of ",
                                                summed->gradient.size(), " entries for ",
                                                params.size(), " parameters"));
    }
    if (!summed.ok()) {
      status_ = summed.status();
      gradient.setZero();
      return std::numeric_limits<double>::quiet_NaN();
    }
    LossGradient objective = Objective(*summed, params, weight_sum_, options_);
    gradient = objective.gradient;
    return objective.loss;
  }

  const absl::Status& status() const { return status_; }
  int evaluations() const { return evaluations_; }

 private:
  const LossGradientFn& loss_gradient_;
  double weight_sum_;
  const LogisticOptions& options_;
  absl::Status status_;
  int evaluations_ = 0;
};

}  // namespace

absl::Status LogisticOptions::Validate() const {
  if (!(c > 0) || !std::isfinite(c)) {
    return absl::InvalidArgumentError(
        absl::StrCat("c is ", c, "; it must be a finite number > 0"));
  }
  if (class_weight == ClassWeight::kExplicit) {
    if (!(negative_weight > 0) || !std::isfinite(negative_weight)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "negative_weight is ", negative_weight, "; it must be a finite number > 0"));
    }
    if (!(positive_weight > 0) || !std::isfinite(positive_weight)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "positive_weight is ", positive_weight, "; it must be a finite number > 0"));
    }
  }
  if (!(gradient_tolerance > 0) || !std::isfinite(gradient_tolerance)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gradient_tolerance is ", gradient_tolerance, "; it must be a finite number > 0"));
  }
  if (max_iterations < 1 || max_iterations > 100000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_iterations is ", max_iterations, "; it must be in [1, 100000]"));
  }
  if (history < 1 || history > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("history is ", history, "; it must be in [1, 100]"));
  }
  return absl::OkStatus();
}

void ClassCounts::Merge(const ClassCounts& other) {
  rows[0] += other.rows[0];
  rows[1] += other.rows[1];
  weight_sum += other.weight_sum;
}

ClassCounts CountClasses(const std::vector<uint8_t>& labels, const std::vector<float>& weights) {
  ClassCounts counts;
  for (size_t i = 0; i < labels.size(); ++i) {
    ++counts.rows[labels[i] != 0 ? 1 : 0];
    counts.weight_sum += weights.empty() ? 1.0 : static_cast<double>(weights[i]);
  }
  return counts;
}

absl::StatusOr<std::array<double, 2>> ClassWeights(const LogisticOptions& options,
                                                   const ClassCounts& counts) {
  switch (options.class_weight) {
    case LogisticOptions::ClassWeight::kNone:
      return std::array<double, 2>{1.0, 1.0};
    case LogisticOptions::ClassWeight::kExplicit:
      return std::array<double, 2>{options.negative_weight, options.positive_weight};
    case LogisticOptions::ClassWeight::kBalanced:
      break;
  }
  for (int y = 0; y < 2; ++y) {
    if (counts.rows[y] == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "balanced class weights need rows of both classes, but the training set has no ",
          y == 1 ? "positive" : "negative", " row"));
    }
  }
  const double n = static_cast<double>(counts.rows[0] + counts.rows[1]);
  return std::array<double, 2>{n / (2.0 * static_cast<double>(counts.rows[0])),
                               n / (2.0 * static_cast<double>(counts.rows[1]))};
}

void LossGradient::Merge(const LossGradient& other) {
  if (gradient.size() == 0) {
    loss += other.loss;
    gradient = other.gradient;
    return;
  }
  loss += other.loss;
  if (other.gradient.size() != 0) gradient += other.gradient;
}

LossGradient ShardLossGradient(const MatrixXfR& x, const std::vector<uint8_t>& labels,
                               const std::vector<float>& weights,
                               const std::array<double, 2>& class_weights,
                               const Eigen::VectorXd& params) {
  const Eigen::Index n = x.rows();
  const Eigen::Index d = x.cols();
  const Eigen::Index num_blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  const Eigen::VectorXd coefficients = params.head(d);
  const double intercept = params[d];
  std::vector<LossGradient> partials(static_cast<size_t>(num_blocks));

  // Block boundaries depend only on n, and the block sums are added in block order below,
  // so the result is the same for any number of threads.
#pragma omp parallel for schedule(static) if (n > kParallelMinRows)
  for (Eigen::Index block = 0; block < num_blocks; ++block) {
    LossGradient& partial = partials[static_cast<size_t>(block)];
    const Eigen::Index begin = block * kRowsPerBlock;
    const Eigen::Index rows = std::min(n, begin + kRowsPerBlock) - begin;
    // The block in double, so z and the gradient are matrix–vector products.
    const MatrixXdR block_x = x.middleRows(begin, rows).cast<double>();
    const Eigen::VectorXd z = (block_x * coefficients).array() + intercept;
    Eigen::VectorXd residuals(rows);
    for (Eigen::Index k = 0; k < rows; ++k) {
      const size_t r = static_cast<size_t>(begin + k);
      const double y = labels[r] != 0 ? 1.0 : 0.0;
      const double sample_weight = weights.empty() ? 1.0 : static_cast<double>(weights[r]);
      const double weight = sample_weight * class_weights[labels[r] != 0 ? 1 : 0];
      // One exp serves both the loss and σ(z): with e = exp(−|z|), log(1 + exp(z)) =
      // max(z, 0) + log1p(e), and σ(z) = 1 / (1 + e) for z >= 0, else e / (1 + e).
      const double e = std::exp(-std::fabs(z[k]));
      const double softplus = std::max(z[k], 0.0) + std::log1p(e);
      const double sigmoid = z[k] >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
      partial.loss += weight * (softplus - y * z[k]);
      residuals[k] = weight * (sigmoid - y);
    }
    partial.gradient.resize(d + 1);
    partial.gradient.head(d).noalias() = block_x.transpose() * residuals;
    partial.gradient[d] = residuals.sum();
  }

  LossGradient result;
  result.gradient = Eigen::VectorXd::Zero(d + 1);
  for (const LossGradient& partial : partials) result.Merge(partial);
  return result;
}

LossGradient Objective(const LossGradient& summed, const Eigen::VectorXd& params,
                       double weight_sum, const LogisticOptions& options) {
  const Eigen::Index d = params.size() - 1;
  const double l2 = 1.0 / (options.c * weight_sum);
  LossGradient objective;
  objective.loss = summed.loss / weight_sum + 0.5 * l2 * params.head(d).squaredNorm();
  objective.gradient = summed.gradient / weight_sum;
  objective.gradient.head(d) += l2 * params.head(d);
  if (!options.fit_intercept) objective.gradient[d] = 0;
  return objective;
}

double LogisticModel::Probability(const float* row) const {
  double z = intercept;
  for (size_t j = 0; j < coefficients.size(); ++j) {
    z += coefficients[j] * static_cast<double>(row[j]);
  }
  return Sigmoid(z);
}

std::vector<double> LogisticModel::PredictProbabilities(const MatrixXfR& x) const {
  std::vector<double> probabilities(static_cast<size_t>(x.rows()));
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    probabilities[static_cast<size_t>(i)] = Probability(x.row(i).data());
  }
  return probabilities;
}

absl::StatusOr<LogisticModel> FitLogistic(int dim, double weight_sum,
                                          const LogisticOptions& options,
                                          const LossGradientFn& loss_gradient) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (dim < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("dim is ", dim, "; the model needs at least one feature"));
  }
  if (!(weight_sum > 0) || !std::isfinite(weight_sum)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the sample weights sum to ", weight_sum, "; training needs a positive total weight"));
  }

  LBFGSpp::LBFGSParam<double> param;
  param.m = options.history;
  // LBFGSpp stops on the 2-norm of the gradient, which bounds the ∞-norm of
  // scikit-learn's L-BFGS-B test from above, so the solver stops no earlier than that test.
  param.epsilon = options.gradient_tolerance;
  param.epsilon_rel = 0;
  param.max_iterations = options.max_iterations;
  param.max_linesearch = 50;
  param.linesearch = LBFGSpp::LBFGS_LINESEARCH_BACKTRACKING_STRONG_WOLFE;
  LBFGSpp::LBFGSSolver<double, LBFGSpp::LineSearchNocedalWright> solver(param);

  ObjectiveFunctor functor(loss_gradient, weight_sum, options);
  Eigen::VectorXd params = Eigen::VectorXd::Zero(dim + 1);
  double objective = 0;
  int iterations = 0;
  std::string solver_error;
  try {
    iterations = solver.minimize(functor, params, objective);
  } catch (const std::exception& e) {
    // LBFGSpp reports a failed line search by throwing; the last accepted point is
    // still in `params`.
    solver_error = e.what();
  }
  if (!functor.status().ok()) return functor.status();

  // The final gradient is evaluated once more at the returned point, so the reported
  // objective and convergence test belong to exactly these parameters.
  absl::StatusOr<LossGradient> summed = loss_gradient(params);
  if (!summed.ok()) return summed.status();
  const LossGradient final_objective = Objective(*summed, params, weight_sum, options);

  LogisticModel model;
  model.coefficients.assign(params.data(), params.data() + dim);
  model.intercept = options.fit_intercept ? params[dim] : 0.0;
  model.iterations = iterations;
  model.evaluations = functor.evaluations() + 1;
  model.objective = final_objective.loss;
  model.gradient_max = final_objective.gradient.cwiseAbs().maxCoeff();
  model.converged = model.gradient_max <= options.gradient_tolerance;
  if (model.converged) {
    model.stop_reason = "gradient below the tolerance";
  } else if (!solver_error.empty()) {
    // scipy's L-BFGS-B also ends on a failed line search (ABNORMAL_TERMINATION_IN_LNSRCH)
    // and scikit-learn then only warns, so this is a result, not an error.
    model.stop_reason = absl::StrCat("line search failed: ", solver_error);
  } else {
    model.stop_reason = "max_iterations reached";
  }
  return model;
}

absl::StatusOr<LogisticModel> FitLogisticOnShards(const std::vector<TrainingShard>& shards,
                                                  const LogisticOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (shards.empty()) return absl::InvalidArgumentError("no training shards given");
  const Eigen::Index dim = shards.front().x->cols();
  ClassCounts counts;
  for (size_t s = 0; s < shards.size(); ++s) {
    const TrainingShard& shard = shards[s];
    const size_t rows = static_cast<size_t>(shard.x->rows());
    const bool weighted = shard.weights != nullptr && !shard.weights->empty();
    if (shard.x->cols() != dim || shard.labels->size() != rows ||
        (weighted && shard.weights->size() != rows)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "training shard ", s, " has ", shard.x->rows(), "x", shard.x->cols(), " features, ",
          shard.labels->size(), " labels and ", weighted ? shard.weights->size() : 0,
          " weights; every shard needs ", dim, " columns and one label per row"));
    }
    counts.Merge(CountClasses(*shard.labels, weighted ? *shard.weights : std::vector<float>{}));
  }
  absl::StatusOr<std::array<double, 2>> class_weights = ClassWeights(options, counts);
  if (!class_weights.ok()) return class_weights.status();

  static const std::vector<float> kNoWeights;
  const LossGradientFn sum_shards =
      [&shards, &class_weights](const Eigen::VectorXd& params) -> absl::StatusOr<LossGradient> {
    LossGradient total;
    for (const TrainingShard& shard : shards) {
      const std::vector<float>& weights = shard.weights != nullptr ? *shard.weights : kNoWeights;
      total.Merge(ShardLossGradient(*shard.x, *shard.labels, weights, *class_weights, params));
    }
    return total;
  };
  return FitLogistic(static_cast<int>(dim), counts.weight_sum, options, sum_shards);
}

bool InTestSplit(std::string_view user_id, double test_fraction, uint64_t seed) {
  const uint64_t hash = XXH64(user_id.data(), user_id.size(), seed);
  // The top 53 bits as a double in [0, 1): exact, so the comparison does not depend on
  // rounding.
  const double u = static_cast<double>(hash >> 11) * 0x1.0p-53;
  return u < test_fraction;
}

}  // namespace cohort
