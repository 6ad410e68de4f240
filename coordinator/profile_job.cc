#include "coordinator/profile_job.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "coordinator/job_events.h"
#include "core/log.h"
#include "core/logistic.h"
#include "core/pipeline.h"
#include "core/quantile_sketch.h"
#include "core/status_macros.h"
#include "proto/profile_convert.h"

namespace cohort {
namespace {

// Scores per shard and command when the test split is read back; 65536 doubles and
// flags stay far below the message size limit.
constexpr int64_t kScoreChunkRows = 65536;
constexpr int kDeciles = 10;

class ProfileEvents : public JobEvents {
 public:
  ProfileEvents(const ProfileJobInput& input, int shards)
      : JobEvents(input.job_id, input.on_event, shards) {}

  void Iteration(int evaluation, int max_iter, double loss, double gradient_norm) {
    CountPass();
    v1::JobEvent event;
    event.set_phase("lbfgs");
    event.set_iteration(evaluation);
    event.set_max_iter(max_iter);
    event.set_loss(loss);
    event.set_gradient_norm(gradient_norm);
    Emit(event, false);
  }
};

// Summary of the design pass, merged over the shards in shard order.
struct DesignSummary {
  int d = 0;
  int64_t train_rows = 0;
  int64_t test_rows = 0;
  ClassCounts train_counts;
  CleaningReport report;
};

// Round one and round two of the pipeline fit over the shards.
absl::StatusOr<PipelineModel> FitPipelineOnWorkers(const ProfileJobInput& input,
                                                   const PipelineSpec& spec, JobStreams* streams,
                                                   ProfileEvents& events) {
  events.Message("features", "computing pipeline statistics");
  v1::JobCommand stats_command;
  v1::ComputePipelineStats* stats_request = stats_command.mutable_pipeline_stats();
  ToProto(spec.columns, stats_request->mutable_pipeline());
  stats_request->set_label_column(spec.label_column);
  stats_request->set_positive_label(spec.positive_label);
  COHORT_ASSIGN_OR_RETURN(auto stats_results, streams->Execute(std::move(stats_command)));
  PipelineFirstPassStats stats;
  for (const v1::ShardResult& result : stats_results) {
    COHORT_ASSIGN_OR_RETURN(PipelineFirstPassStats shard, FromProto(result.pipeline_stats()));
    stats.Merge(shard);
  }
  if (stats.rows != input.expected_users) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the workers hold ", stats.rows, " users of dataset '", input.dataset_id, "' but it has ",
        input.expected_users,
        "; a worker was replaced or reloaded, so load the data into a new dataset"));
  }
  events.set_users(stats.rows);
  COHORT_ASSIGN_OR_RETURN(PipelineModel model, FitFirstPass(spec, input.schema, stats));

  v1::JobCommand moments_command;
  moments_command.mutable_pipeline_moments()->set_pipeline_model(model.Serialize());
  COHORT_ASSIGN_OR_RETURN(auto moment_results, streams->Execute(std::move(moments_command)));
  PipelineSecondPassStats moments;
  for (const v1::ShardResult& result : moment_results) {
    COHORT_ASSIGN_OR_RETURN(PipelineSecondPassStats shard, FromProto(result.pipeline_moments()));
    moments.Merge(shard);
  }
  COHORT_RETURN_IF_ERROR(FinishFit(moments, &model));
  COHORT_LOG_INFO("job {}: pipeline fitted on {} users, {} features", input.job_id, stats.rows,
                  model.dim());
  return model;
}

absl::StatusOr<DesignSummary> BuildDesignOnWorkers(const PipelineModel& model,
                                                   double test_fraction, uint64_t seed,
                                                   JobStreams* streams) {
  v1::JobCommand command;
  command.mutable_build_design()->set_pipeline_model(model.Serialize());
  command.mutable_build_design()->set_test_fraction(test_fraction);
  command.mutable_build_design()->set_seed(seed);
  COHORT_ASSIGN_OR_RETURN(auto results, streams->Execute(std::move(command)));
  DesignSummary summary;
  summary.d = model.dim();
  for (const v1::ShardResult& result : results) {
    const v1::DesignResult& design = result.design();
    if (design.d() != summary.d || design.train_class_rows_size() != 2) {
      return absl::InternalError(absl::StrCat("shard ", result.shard_id(),
                                              " returned a malformed design summary"));
    }
    summary.train_rows += design.train_rows();
    summary.test_rows += design.test_rows();
    ClassCounts counts;
    counts.rows = {design.train_class_rows(0), design.train_class_rows(1)};
    counts.weight_sum = design.train_weight_sum();
    summary.train_counts.Merge(counts);
    summary.report.Merge(FromProto(design.report()));
  }
  return summary;
}

// Fails the job when the training split cannot give a model.
absl::Status CheckTrainingSplit(const DesignSummary& design) {
  if (design.train_rows == 0) {
    return absl::FailedPreconditionError(
        "the training split has no users; lower options.test_fraction or load more users");
  }
  for (int label = 0; label < 2; ++label) {
    if (design.train_counts.rows[label] == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the training split has only ", label == 0 ? "positive" : "negative", " labels (",
          design.train_rows, " users); a model needs users of both classes"));
    }
  }
  if (!(design.train_counts.weight_sum > 0)) {
    return absl::FailedPreconditionError(
        "the sample weights of the training split sum to 0; give some users a positive weight");
  }
  return absl::OkStatus();
}

void SetParams(const LogisticModel& model, google::protobuf::RepeatedField<double>* out) {
  out->Assign(model.coefficients.begin(), model.coefficients.end());
  out->Add(model.intercept);
}

// Reads the test split's scores and labels back in chunks, in shard order.
absl::Status ReadTestScores(const LogisticModel& model, JobStreams* streams,
                            std::vector<double>* scores, std::vector<uint8_t>* labels) {
  std::vector<std::vector<double>> shard_scores;
  std::vector<std::vector<uint8_t>> shard_labels;
  bool done = false;
  for (int64_t offset = 0; !done; offset += kScoreChunkRows) {
    v1::JobCommand command;
    SetParams(model, command.mutable_split_scores()->mutable_weights());
    command.mutable_split_scores()->set_split(v1::SPLIT_KIND_TEST);
    command.mutable_split_scores()->set_offset(offset);
    command.mutable_split_scores()->set_max_rows(kScoreChunkRows);
    COHORT_ASSIGN_OR_RETURN(auto results, streams->Execute(std::move(command)));
    shard_scores.resize(results.size());
    shard_labels.resize(results.size());
    done = true;
    for (size_t s = 0; s < results.size(); ++s) {
      const v1::SplitScoresResult& chunk = results[s].split_scores();
      if (chunk.scores_size() != chunk.labels_size()) {
        return absl::InternalError(absl::StrCat("shard ", results[s].shard_id(),
                                                " returned scores and labels of different sizes"));
      }
      shard_scores[s].insert(shard_scores[s].end(), chunk.scores().begin(), chunk.scores().end());
      shard_labels[s].insert(shard_labels[s].end(), chunk.labels().begin(), chunk.labels().end());
      done = done && chunk.done();
    }
  }
  for (size_t s = 0; s < shard_scores.size(); ++s) {
    scores->insert(scores->end(), shard_scores[s].begin(), shard_scores[s].end());
    labels->insert(labels->end(), shard_labels[s].begin(), shard_labels[s].end());
  }
  return absl::OkStatus();
}

// Stores every user's score on the workers and returns the decile bounds of the scores.
absl::StatusOr<std::vector<double>> StoreScoresOnWorkers(const LogisticModel& model,
                                                         JobStreams* streams,
                                                         int64_t* scored_users) {
  v1::JobCommand command;
  SetParams(model, command.mutable_store_scores()->mutable_weights());
  COHORT_ASSIGN_OR_RETURN(auto results, streams->Execute(std::move(command)));
  QuantileSketch sketch;
  for (const v1::ShardResult& result : results) {
    COHORT_ASSIGN_OR_RETURN(QuantileSketch shard,
                            QuantileSketch::Deserialize(result.stored_scores().sketch()));
    sketch.Merge(shard);
  }
  *scored_users = sketch.count();
  std::vector<double> bounds;
  for (int i = 1; i < kDeciles; ++i) bounds.push_back(sketch.Quantile(i / double{kDeciles}));
  return bounds;
}

void FillModel(const PipelineModel& pipeline, const LogisticModel& logistic,
               const DesignSummary& design, v1::ProfileModel* model) {
  const std::vector<std::string> names = pipeline.FeatureNames();
  for (const std::string& name : names) model->add_feature_names(name);
  model->mutable_weights()->Assign(logistic.coefficients.begin(), logistic.coefficients.end());
  model->set_intercept(logistic.intercept);
  std::vector<size_t> order(names.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = j;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const double wa = std::abs(logistic.coefficients[a]);
    const double wb = std::abs(logistic.coefficients[b]);
    if (wa != wb) return wa > wb;
    return names[a] < names[b];
  });
  for (size_t j : order) {
    v1::Coefficient* coefficient = model->add_coefficients();
    coefficient->set_feature(names[j]);
    coefficient->set_weight(logistic.coefficients[j]);
  }
  model->set_train_users(design.train_rows);
  model->set_test_users(design.test_rows);
  model->set_iterations(logistic.iterations);
  model->set_converged(logistic.converged);
  model->set_loss(logistic.objective);
  // The load's counts (repeated ids, unparsable cells) are added by the caller, which
  // has the dataset record.
  std::map<std::string, v1::CleaningCount> cleaning;
  for (const auto& [column, count] : design.report.imputed_cells) {
    cleaning[column].set_imputed(count);
  }
  for (const auto& [column, count] : design.report.clipped_values) {
    cleaning[column].set_clipped(count);
  }
  for (auto& [column, count] : cleaning) {
    count.set_column(column);
    *model->add_cleaning() = count;
  }
  model->set_fitted_pipeline(pipeline.Serialize());
}

}  // namespace

absl::Status ValidateProfileOptions(const v1::ProfileOptions& options, const Schema& schema) {
  COHORT_RETURN_IF_ERROR(ProfilePipelineSpec(options, schema).status());
  COHORT_RETURN_IF_ERROR(ToLogisticOptions(options).status());
  return TestFraction(options).status();
}

absl::StatusOr<v1::ProfileModel> RunProfileJob(const ProfileJobInput& input,
                                               JobStreams* streams) {
  COHORT_ASSIGN_OR_RETURN(const PipelineSpec spec, ProfilePipelineSpec(input.options, input.schema));
  COHORT_ASSIGN_OR_RETURN(const LogisticOptions logistic, ToLogisticOptions(input.options));
  COHORT_ASSIGN_OR_RETURN(const double test_fraction, TestFraction(input.options));
  const uint64_t seed = ProfileSeed(input.options);
  ProfileEvents events(input, streams->num_shards());

  COHORT_ASSIGN_OR_RETURN(const PipelineModel pipeline,
                          FitPipelineOnWorkers(input, spec, streams, events));
  events.Message("design", absl::StrCat("building the design matrix: ", pipeline.dim(),
                                        " features"));
  COHORT_ASSIGN_OR_RETURN(const DesignSummary design,
                          BuildDesignOnWorkers(pipeline, test_fraction, seed, streams));
  COHORT_RETURN_IF_ERROR(CheckTrainingSplit(design));
  COHORT_ASSIGN_OR_RETURN(const auto class_weights, ClassWeights(logistic, design.train_counts));

  int evaluations = 0;
  const LossGradientFn loss_gradient =
      [&](const Eigen::VectorXd& params) -> absl::StatusOr<LossGradient> {
    v1::JobCommand command;
    v1::LossGradient* request = command.mutable_loss_gradient();
    request->mutable_weights()->Assign(params.data(), params.data() + params.size());
    request->set_negative_weight(class_weights[0]);
    request->set_positive_weight(class_weights[1]);
    COHORT_ASSIGN_OR_RETURN(auto results, streams->Execute(std::move(command)));
    LossGradient summed;
    for (const v1::ShardResult& result : results) {
      const v1::LossGradientResult& partial = result.loss_gradient();
      if (partial.gradient_size() == 0) continue;  // a shard without training rows
      if (partial.gradient_size() != params.size()) {
        return absl::InternalError(absl::StrCat("shard ", result.shard_id(), " returned ",
                                                partial.gradient_size(), " gradient values for ",
                                                params.size(), " parameters"));
      }
      LossGradient shard;
      shard.loss = partial.loss();
      shard.gradient = Eigen::Map<const Eigen::VectorXd>(partial.gradient().data(),
                                                         partial.gradient_size());
      summed.Merge(shard);
    }
    if (summed.gradient.size() == 0) summed.gradient = Eigen::VectorXd::Zero(params.size());
    const LossGradient objective =
        Objective(summed, params, design.train_counts.weight_sum, logistic);
    events.Iteration(++evaluations, logistic.max_iterations, objective.loss,
                     objective.gradient.lpNorm<Eigen::Infinity>());
    return summed;
  };
  COHORT_ASSIGN_OR_RETURN(const LogisticModel fitted,
                          FitLogistic(design.d, design.train_counts.weight_sum, logistic,
                                      loss_gradient));
  COHORT_LOG_INFO("job {}: L-BFGS {} after {} iterations, objective {:.6g}", input.job_id,
                  fitted.converged ? "converged" : "stopped", fitted.iterations, fitted.objective);

  events.Message("metrics", absl::StrCat("scoring ", design.test_rows, " test users"));
  std::vector<double> test_scores;
  std::vector<uint8_t> test_labels;
  COHORT_RETURN_IF_ERROR(ReadTestScores(fitted, streams, &test_scores, &test_labels));
  v1::ProfileModel model;
  COHORT_RETURN_IF_ERROR(
      ComputeBinaryMetricsProto(test_labels, test_scores, model.mutable_test_metrics()));

  events.Message("scores", "storing every user's score");
  int64_t scored_users = 0;
  COHORT_ASSIGN_OR_RETURN(const std::vector<double> bounds,
                          StoreScoresOnWorkers(fitted, streams, &scored_users));
  model.mutable_decile_bounds()->Assign(bounds.begin(), bounds.end());
  model.set_scored_users(scored_users);
  model.set_model_id(input.job_id);
  model.set_job_id(input.job_id);
  model.set_dataset_id(input.dataset_id);
  *model.mutable_options() = input.options;
  FillModel(pipeline, fitted, design, &model);
  model.set_class_weight_negative(class_weights[0]);
  model.set_class_weight_positive(class_weights[1]);
  model.set_c(logistic.c);
  return model;
}

int ScoreDecile(const v1::ProfileModel& model, double score) {
  const auto& bounds = model.decile_bounds();
  return 1 + static_cast<int>(std::upper_bound(bounds.begin(), bounds.end(), score) -
                              bounds.begin());
}

std::vector<v1::FeatureContribution> TopContributions(const v1::ProfileModel& model,
                                                      const std::vector<float>& features,
                                                      int count) {
  std::vector<v1::FeatureContribution> all;
  const int d = std::min<int>(model.weights_size(), static_cast<int>(features.size()));
  for (int j = 0; j < d; ++j) {
    v1::FeatureContribution contribution;
    contribution.set_feature(j < model.feature_names_size() ? model.feature_names(j) : "");
    contribution.set_value(features[j]);
    contribution.set_weight(model.weights(j));
    contribution.set_contribution(model.weights(j) * double{features[j]});
    all.push_back(std::move(contribution));
  }
  std::sort(all.begin(), all.end(),
            [](const v1::FeatureContribution& a, const v1::FeatureContribution& b) {
              const double ca = std::abs(a.contribution());
              const double cb = std::abs(b.contribution());
              if (ca != cb) return ca > cb;
              return a.feature() < b.feature();
            });
  if (static_cast<int>(all.size()) > count) all.resize(count);
  return all;
}

}  // namespace cohort
