#include "worker/job_session.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/features.h"
#include "core/status_macros.h"
#include "proto/convert.h"

namespace cohort {

JobSession::JobSession(ShardStore* store, std::string worker_id)
    : store_(store), worker_id_(std::move(worker_id)) {}

v1::ShardResult JobSession::NewResult(int64_t seq, const ShardState& shard) const {
  v1::ShardResult result;
  result.set_seq(seq);
  result.set_shard_id(shard.shard_id);
  result.set_rows(static_cast<int64_t>(shard.user_ids.size()));
  return result;
}

absl::Status JobSession::CheckFeaturesBuilt() const {
  if (dim_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id_, ": features are not built yet; send BuildFeatures first"));
  }
  return absl::OkStatus();
}

absl::Status JobSession::CheckDim(int cols, const char* what) const {
  COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
  if (cols != dim_) {
    return absl::InvalidArgumentError(absl::StrCat("job ", job_id_, ": ", what, " have ", cols,
                                                   " columns but the features have ", dim_));
  }
  return absl::OkStatus();
}

absl::Status JobSession::Handle(const v1::JobCommand& command,
                                std::vector<v1::ShardResult>* results) {
  const int64_t seq = command.seq();
  if (command.command_case() != v1::JobCommand::kOpen && dataset_ == nullptr) {
    return absl::FailedPreconditionError("the first command of a job stream must be OpenJob");
  }
  switch (command.command_case()) {
    case v1::JobCommand::kOpen:
      return Open(command.open(), results);
    case v1::JobCommand::kStats:
      return Stats(command.stats(), seq, results);
    case v1::JobCommand::kBuildFeatures:
      return BuildFeatures(command.build_features(), seq, results);
    case v1::JobCommand::kMoments: {
      COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
      for (const ShardState& shard : shards_) {
        v1::ShardResult result = NewResult(seq, shard);
        std::vector<double> sum, sum_sq;
        shard.kmeans->ColumnMoments(&sum, &sum_sq);
        result.mutable_moments()->mutable_sum()->Assign(sum.begin(), sum.end());
        result.mutable_moments()->mutable_sum_sq()->Assign(sum_sq.begin(), sum_sq.end());
        results->push_back(std::move(result));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::kAddCenters: {
      COHORT_ASSIGN_OR_RETURN(MatrixXfR centers, FromProto(command.add_centers().centers()));
      if (centers.rows() > 0) COHORT_RETURN_IF_ERROR(CheckDim(centers.cols(), "centers"));
      COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
      for (ShardState& shard : shards_) {
        if (command.add_centers().reset()) shard.kmeans->ResetMinDistances();
        v1::ShardResult result = NewResult(seq, shard);
        result.set_sum(shard.kmeans->AddCenters(centers));
        results->push_back(std::move(result));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::kTrialPotentials: {
      COHORT_ASSIGN_OR_RETURN(MatrixXfR candidates,
                              FromProto(command.trial_potentials().candidates()));
      COHORT_RETURN_IF_ERROR(CheckDim(candidates.cols(), "candidates"));
      for (const ShardState& shard : shards_) {
        v1::ShardResult result = NewResult(seq, shard);
        std::vector<double> values = shard.kmeans->TrialPotentials(candidates);
        result.mutable_potentials()->mutable_values()->Assign(values.begin(), values.end());
        results->push_back(std::move(result));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::kPick: {
      COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
      for (const ShardState& shard : shards_) {
        v1::ShardResult result = NewResult(seq, shard);
        v1::PickResult* picked = result.mutable_picked();
        const auto& offsets = command.pick().offsets();
        for (int i = 0; i < offsets.size(); ++i) {
          if (offsets[i].shard_id() != shard.shard_id) continue;
          ShardPoint point = shard.kmeans->PickByOffset(offsets[i].offset());
          v1::PickedPoint* out = picked->add_points();
          out->set_index(i);
          out->set_row(point.row);
          out->mutable_values()->Assign(point.values.begin(), point.values.end());
        }
        results->push_back(std::move(result));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::kLloyd: {
      COHORT_ASSIGN_OR_RETURN(MatrixXfR centroids, FromProto(command.lloyd().centroids()));
      COHORT_RETURN_IF_ERROR(CheckDim(centroids.cols(), "centroids"));
      if (centroids.rows() < 1) return absl::InvalidArgumentError("LloydStep needs centroids");
      for (const ShardState& shard : shards_) {
        v1::ShardResult result = NewResult(seq, shard);
        LloydPartial partial = shard.kmeans->LloydStep(centroids, command.lloyd().num_farthest());
        v1::LloydPartialProto* out = result.mutable_lloyd();
        out->set_k(static_cast<int32_t>(partial.sums.rows()));
        out->set_d(static_cast<int32_t>(partial.sums.cols()));
        out->mutable_sums()->Assign(partial.sums.data(),
                                    partial.sums.data() + partial.sums.size());
        out->mutable_counts()->Assign(partial.counts.begin(), partial.counts.end());
        out->set_inertia(partial.inertia);
        for (const ShardPoint& point : partial.farthest) {
          v1::FarPoint* far = out->add_farthest();
          far->set_row(point.row);
          far->set_sq_dist(point.sq_dist);
          far->mutable_values()->Assign(point.values.begin(), point.values.end());
        }
        results->push_back(std::move(result));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::kStoreAssignments: {
      COHORT_ASSIGN_OR_RETURN(MatrixXfR centroids,
                              FromProto(command.store_assignments().centroids()));
      COHORT_RETURN_IF_ERROR(CheckDim(centroids.cols(), "centroids"));
      if (centroids.rows() < 1) {
        return absl::InvalidArgumentError("StoreAssignments needs centroids");
      }
      return StoreAssignments(centroids, seq, results);
    }
    case v1::JobCommand::COMMAND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("job command ", seq, " has no command set"));
}

absl::Status JobSession::Open(const v1::OpenJob& open, std::vector<v1::ShardResult>* results) {
  if (dataset_ != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id_, " is already open"));
  }
  COHORT_ASSIGN_OR_RETURN(dataset_, store_->Dataset(open.dataset_id()));
  job_id_ = open.job_id();
  absl::ReaderMutexLock lock(&dataset_->mutex);
  for (int shard_id : open.shards()) {
    if (shard_id < 0 || shard_id >= dataset_->num_shards) {
      return absl::InvalidArgumentError(absl::StrCat("job ", job_id_, ": shard ", shard_id,
                                                     " is outside [0, ", dataset_->num_shards,
                                                     ")"));
    }
    ShardState state;
    state.shard_id = shard_id;
    shards_.push_back(std::move(state));
  }
  (void)results;  // OpenJob has no per-shard answer.
  return absl::OkStatus();
}

absl::Status JobSession::Stats(const v1::ComputeStats& command, int64_t seq,
                              std::vector<v1::ShardResult>* results) {
  FeatureOptions options;
  options.log1p_columns.assign(command.log1p_columns().begin(), command.log1p_columns().end());
  COHORT_ASSIGN_OR_RETURN(std::vector<bool> log1p, Log1pFlags(dataset_->schema, options));
  absl::ReaderMutexLock lock(&dataset_->mutex);
  for (ShardState& shard : shards_) {
    auto it = dataset_->shards.find(shard.shard_id);
    // A shard that no row hashed to is held as empty.
    RawShard empty = MakeEmptyShard(dataset_->schema, shard.shard_id);
    const RawShard& raw = it == dataset_->shards.end() ? empty : it->second;
    shard.user_ids = raw.ids;
    v1::ShardResult result = NewResult(seq, shard);
    ToProto(ComputeFeatureStats(raw, log1p), result.mutable_stats());
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status JobSession::StoreAssignments(const MatrixXfR& centroids, int64_t seq,
                                          std::vector<v1::ShardResult>* results) {
  const int k = static_cast<int>(centroids.rows());
  absl::ReaderMutexLock lock(&dataset_->mutex);
  for (const ShardState& shard : shards_) {
    COHORT_ASSIGN_OR_RETURN(const RawShard* raw, CurrentRaw(shard));
    ShardAssignments assignments;
    assignments.user_ids = shard.user_ids;
    shard.kmeans->Assign(centroids, &assignments.segments, &assignments.squared_distances);
    v1::ShardResult result = NewResult(seq, shard);
    if (raw != nullptr) {
      for (const FeatureStats& stats : ComputeGroupStats(*raw, assignments.segments.data(), k)) {
        ToProto(stats, result.add_segment_stats());
      }
    }
    store_->StoreAssignments(job_id_, shard.shard_id, std::move(assignments));
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::StatusOr<const RawShard*> JobSession::CurrentRaw(const ShardState& shard) const {
  auto it = dataset_->shards.find(shard.shard_id);
  const RawShard* raw = it == dataset_->shards.end() ? nullptr : &it->second;
  const int64_t rows = raw == nullptr ? 0 : raw->num_rows();
  if (rows != static_cast<int64_t>(shard.user_ids.size()) ||
      (raw != nullptr && raw->ids != shard.user_ids)) {
    // Rows were streamed in after the job read the shard; its statistics and features
    // no longer describe the data.
    return absl::AbortedError(absl::StrCat("job ", job_id_, ": shard ", shard.shard_id,
                                           " changed while the job ran; rerun the job"));
  }
  return raw;
}

absl::Status JobSession::BuildFeatures(const v1::BuildFeatures& command, int64_t seq,
                                       std::vector<v1::ShardResult>* results) {
  const FeatureTransform transform = FromProto(command.transform());
  if (static_cast<int>(transform.numeric.size()) != static_cast<int>(dataset_->schema.NumericNames().size()) ||
      static_cast<int>(transform.categorical.size()) !=
          static_cast<int>(dataset_->schema.CategoricalNames().size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job ", job_id_, ": the feature transform does not match the dataset's columns"));
  }
  absl::ReaderMutexLock lock(&dataset_->mutex);
  for (ShardState& shard : shards_) {
    COHORT_ASSIGN_OR_RETURN(const RawShard* current, CurrentRaw(shard));
    RawShard empty = MakeEmptyShard(dataset_->schema, shard.shard_id);
    const RawShard& raw = current == nullptr ? empty : *current;
    TransformShard(transform, raw, &shard.x);
    shard.kmeans = std::make_unique<KMeansShard>(shard.shard_id, &shard.x);
    results->push_back(NewResult(seq, shard));
  }
  dim_ = transform.dim();
  return absl::OkStatus();
}

}  // namespace cohort
