#include "worker/job_session.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include <algorithm>

#include "core/bisecting.h"
#include "core/cluster_metrics.h"
#include "core/features.h"
#include "core/kmeans.h"
#include "core/quantile_sketch.h"
#include "core/segment_summary.h"
#include "core/shard_hash.h"
#include "core/status_macros.h"
#include "proto/convert.h"

namespace cohort {
namespace {

// Rows per chunk of the metrics passes: the features of one chunk are stored at a time.
constexpr int64_t kMetricsChunkRows = 16 * kRowBlockRows;

void ToProto(const ShardPoint& point, v1::FarPoint* out) {
  out->set_row(point.row);
  out->set_sq_dist(point.sq_dist);
  out->mutable_values()->Assign(point.values.begin(), point.values.end());
}

}  // namespace

JobSession::JobSession(ShardStore* store, std::string worker_id, InteractionStore* interactions)
    : store_(store), worker_id_(std::move(worker_id)), interactions_(interactions) {}

absl::Status JobSession::HandleNeighbours(const v1::JobCommand& command,
                                          std::vector<v1::ShardResult>* results) {
  if (neighbours_ == nullptr && command.has_open()) {
    COHORT_ASSIGN_OR_RETURN(neighbours_,
                            NeighbourSession::OpenInteractions(*interactions_, command.open()));
    job_id_ = command.open().job_id();
    return absl::OkStatus();
  }
  if (neighbours_ == nullptr) {
    // A dense neighbour job on a users dataset: the features BuildFeatures made.
    COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
    std::vector<DenseShardView> views;
    absl::ReaderMutexLock lock(&dataset_->mutex);
    for (ShardState& shard : shards_) {
      // The neighbour search reads the features as one matrix.
      shard.dense.resize(shard.features->rows(), shard.features->cols());
      shard.features->CopyRows(0, shard.features->rows(), shard.dense.data());
      DenseShardView view{shard.shard_id, &shard.dense, {}};
      auto it = dataset_->shards.find(shard.shard_id);
      if (it != dataset_->shards.end()) {
        // Rows appended after the job read the shard are not part of its features.
        view.user_ids.reserve(shard.rows);
        for (int64_t row = 0; row < shard.rows; ++row) view.user_ids.emplace_back(it->second.ids[row]);
      }
      views.push_back(std::move(view));
    }
    neighbours_ = NeighbourSession::OpenDense(job_id_, std::move(views));
  }
  return neighbours_->Handle(command, results);
}

v1::ShardResult JobSession::NewResult(int64_t seq, const ShardState& shard) const {
  v1::ShardResult result;
  result.set_seq(seq);
  result.set_shard_id(shard.shard_id);
  result.set_rows(shard.rows);
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
  if (neighbours_ != nullptr || NeighbourSession::IsNeighbourCommand(command) ||
      (command.has_open() && interactions_ != nullptr &&
       interactions_->Holds(command.open().dataset_id()))) {
    return HandleNeighbours(command, results);
  }
  if (command.command_case() != v1::JobCommand::kOpen && dataset_ == nullptr) {
    return absl::FailedPreconditionError("the first command of a job stream must be OpenJob");
  }
  if (ProfileSession::Handles(command)) {
    if (profile_ == nullptr) {
      std::vector<int> shard_ids;
      for (const ShardState& shard : shards_) shard_ids.push_back(shard.shard_id);
      profile_ = std::make_unique<ProfileSession>(store_, dataset_, job_id_, std::move(shard_ids));
    }
    return profile_->Handle(command, results);
  }
  switch (command.command_case()) {
    case v1::JobCommand::kOpen:
      return Open(command.open(), results);
    case v1::JobCommand::kStats:
      return Stats(command.stats(), seq, results);
    case v1::JobCommand::kBuildFeatures:
      return BuildFeatures(command.build_features(), seq, results);
    case v1::JobCommand::kStoreAssignments:
    case v1::JobCommand::kSample:
      return HandleStep(command, results);
    default:
      break;
  }
  // The features are read from the raw shards, so rows appended during a step would be
  // a data race: appends wait until the step ends.
  absl::ReaderMutexLock lock(&dataset_->mutex);
  COHORT_RETURN_IF_ERROR(CheckRawUnchanged());
  return HandleStep(command, results);
}

absl::Status JobSession::CheckRawUnchanged() const {
  for (const ShardState& shard : shards_) {
    if (shard.features == nullptr) continue;
    COHORT_RETURN_IF_ERROR(CurrentRaw(shard).status());
  }
  return absl::OkStatus();
}

absl::Status JobSession::HandleStep(const v1::JobCommand& command,
                                    std::vector<v1::ShardResult>* results) {
  const int64_t seq = command.seq();
  switch (command.command_case()) {
    case v1::JobCommand::kMoments: {
      COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
      for (ShardState& shard : shards_) {
        v1::ShardResult result = NewResult(seq, shard);
        std::vector<double> sum, sum_sq;
        Active(shard).ColumnMoments(&sum, &sum_sq);
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
        if (command.add_centers().reset()) Active(shard).ResetMinDistances();
        v1::ShardResult result = NewResult(seq, shard);
        result.set_sum(Active(shard).AddCenters(centers));
        results->push_back(std::move(result));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::kTrialPotentials: {
      COHORT_ASSIGN_OR_RETURN(MatrixXfR candidates,
                              FromProto(command.trial_potentials().candidates()));
      COHORT_RETURN_IF_ERROR(CheckDim(candidates.cols(), "candidates"));
      for (ShardState& shard : shards_) {
        v1::ShardResult result = NewResult(seq, shard);
        std::vector<double> values = Active(shard).TrialPotentials(candidates);
        result.mutable_potentials()->mutable_values()->Assign(values.begin(), values.end());
        results->push_back(std::move(result));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::kPick: {
      COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
      for (ShardState& shard : shards_) {
        v1::ShardResult result = NewResult(seq, shard);
        v1::PickResult* picked = result.mutable_picked();
        const auto& offsets = command.pick().offsets();
        for (int i = 0; i < offsets.size(); ++i) {
          if (offsets[i].shard_id() != shard.shard_id) continue;
          ShardPoint point = Active(shard).PickByOffset(offsets[i].offset());
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
      for (ShardState& shard : shards_) {
        // Seeding is over once Lloyd steps start: its per-row state is freed. Seeding
        // for the next run starts with a reset.
        Active(shard).ResetMinDistances();
        v1::ShardResult result = NewResult(seq, shard);
        LloydPartial partial = Active(shard).LloydStep(centroids, command.lloyd().num_farthest());
        v1::LloydPartialProto* out = result.mutable_lloyd();
        out->set_k(static_cast<int32_t>(partial.sums.rows()));
        out->set_d(static_cast<int32_t>(partial.sums.cols()));
        out->mutable_sums()->Assign(partial.sums.data(),
                                    partial.sums.data() + partial.sums.size());
        out->mutable_counts()->Assign(partial.counts.begin(), partial.counts.end());
        out->mutable_weighted_counts()->Assign(partial.weighted_counts.begin(),
                                               partial.weighted_counts.end());
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
    case v1::JobCommand::kSetDistance:
      return SetDistance(command.set_distance(), seq, results);
    case v1::JobCommand::kSampleCandidates: {
      COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
      const v1::SampleCandidates& sample = command.sample_candidates();
      for (ShardState& shard : shards_) {
        v1::ShardResult result = NewResult(seq, shard);
        const std::vector<ShardPoint> picks =
            Active(shard).SampleCandidates(sample.seed(), sample.run(), sample.round(),
                                           sample.oversampling(), sample.potential());
        v1::CandidatesResult* out = result.mutable_candidates();
        for (const ShardPoint& point : picks) ToProto(point, out->add_points());
        results->push_back(std::move(result));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::kMinibatch:
      return MiniBatchStep(command.minibatch(), seq, results);
    case v1::JobCommand::kStoreAssignments: {
      COHORT_ASSIGN_OR_RETURN(MatrixXfR centroids,
                              FromProto(command.store_assignments().centroids()));
      COHORT_RETURN_IF_ERROR(CheckDim(centroids.cols(), "centroids"));
      if (centroids.rows() < 1) {
        return absl::InvalidArgumentError("StoreAssignments needs centroids");
      }
      return StoreAssignments(centroids, command.store_assignments().node_segments(), seq,
                              results);
    }
    case v1::JobCommand::kAssignLabels: {
      COHORT_ASSIGN_OR_RETURN(MatrixXfR centroids,
                              FromProto(command.assign_labels().centroids()));
      COHORT_RETURN_IF_ERROR(CheckDim(centroids.cols(), "centroids"));
      if (centroids.rows() < 1) return absl::InvalidArgumentError("AssignLabels needs centroids");
      for (ShardState& shard : shards_) {
        std::vector<float> unused;
        shard.stored = nullptr;
        shard.kmeans->Assign(centroids, &shard.assigned_labels, &unused);
        shard.num_labels = static_cast<int>(centroids.rows());
        results->push_back(NewResult(seq, shard));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::kMetrics:
      return Metrics(command.metrics(), seq, results);
    case v1::JobCommand::kSample:
      return Sample(command.sample(), seq, results);
    case v1::JobCommand::kFocus: {
      COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
      for (ShardState& shard : shards_) {
        if (shard.bisect == nullptr) {
          shard.bisect = std::make_unique<BisectingShard>(
              shard.shard_id, shard.features.get(),
              shard.weights.empty() ? nullptr : &shard.weights);
        }
        v1::ShardResult result = NewResult(seq, shard);
        result.set_rows(shard.bisect->Focus(command.focus().node()));
        results->push_back(std::move(result));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::kSplit: {
      COHORT_ASSIGN_OR_RETURN(MatrixXfR centroids, FromProto(command.split().centroids()));
      COHORT_RETURN_IF_ERROR(CheckDim(centroids.cols(), "split centroids"));
      if (centroids.rows() != 2) {
        return absl::InvalidArgumentError("SplitNode needs exactly 2 centroids");
      }
      for (ShardState& shard : shards_) {
        if (shard.bisect == nullptr) {
          return absl::FailedPreconditionError("SplitNode before any FocusNode");
        }
        v1::ShardResult result = NewResult(seq, shard);
        ToProto(shard.bisect->Split(command.split().node(), centroids, command.split().left(),
                                    command.split().right()),
                result.mutable_aggregates());
        results->push_back(std::move(result));
      }
      return absl::OkStatus();
    }
    case v1::JobCommand::COMMAND_NOT_SET:
      break;
    default:
      // Neighbour commands went to HandleNeighbours above.
      return absl::InvalidArgumentError(
          absl::StrCat("job command ", seq, " (field ", command.command_case(),
                       ") does not apply to a segmentation job"));
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
  (void)results;  // OpenJob has no per-shard result.
  return absl::OkStatus();
}

absl::Status JobSession::SetDistance(const v1::SetDistance& command, int64_t seq,
                                     std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
  KMeansDistance distance;
  switch (command.distance()) {
    case v1::DISTANCE_KIND_SQUARED_EUCLIDEAN:
      distance = KMeansDistance::kSquaredEuclidean;
      break;
    case v1::DISTANCE_KIND_COSINE:
      distance = KMeansDistance::kCosine;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("job ", job_id_, ": distance ", command.distance(), " is unknown"));
  }
  for (ShardState& shard : shards_) {
    COHORT_RETURN_IF_ERROR(SetShardDistance(Active(shard), distance));
    results->push_back(NewResult(seq, shard));
  }
  return absl::OkStatus();
}

absl::Status JobSession::MiniBatchStep(const v1::MiniBatchStep& command, int64_t seq,
                                       std::vector<v1::ShardResult>* results) {
  COHORT_ASSIGN_OR_RETURN(MatrixXfR centroids, FromProto(command.centroids()));
  COHORT_RETURN_IF_ERROR(CheckDim(centroids.cols(), "centroids"));
  if (centroids.rows() < 1) return absl::InvalidArgumentError("MiniBatchStep needs centroids");
  for (ShardState& shard : shards_) {
    Active(shard).ResetMinDistances();  // seeding is over, as for Lloyd steps
    const auto share = std::find_if(
        command.shares().begin(), command.shares().end(),
        [&shard](const v1::MiniBatchStep::Share& entry) {
          return entry.shard_id() == shard.shard_id;
        });
    if (share == command.shares().end() || share->rows() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "job ", job_id_, ": MiniBatchStep has no valid batch share for shard ",
          shard.shard_id));
    }
    const MiniBatchPartial partial =
        Active(shard).MiniBatchStep(centroids, command.seed(), command.run(), command.step(),
                                    share->rows(), command.num_points());
    v1::ShardResult result = NewResult(seq, shard);
    v1::MiniBatchPartialProto* out = result.mutable_minibatch();
    out->set_k(static_cast<int32_t>(partial.sums.rows()));
    out->set_d(static_cast<int32_t>(partial.sums.cols()));
    out->mutable_sums()->Assign(partial.sums.data(), partial.sums.data() + partial.sums.size());
    out->mutable_counts()->Assign(partial.counts.begin(), partial.counts.end());
    out->mutable_weighted_counts()->Assign(partial.weighted_counts.begin(),
                                           partial.weighted_counts.end());
    out->set_inertia(partial.inertia);
    for (const ShardPoint& point : partial.points) ToProto(point, out->add_points());
    results->push_back(std::move(result));
  }
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
    shard.rows = raw.num_rows();
    v1::ShardResult result = NewResult(seq, shard);
    ToProto(ComputeFeatureStats(raw, log1p), result.mutable_stats());
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status JobSession::StoreAssignments(
    const MatrixXfR& centroids, const google::protobuf::RepeatedField<int32_t>& node_segments,
    int64_t seq, std::vector<v1::ShardResult>* results) {
  const int k = static_cast<int>(centroids.rows());
  for (int segment : node_segments) {
    if (segment < -1 || segment >= k) {
      return absl::InvalidArgumentError(absl::StrCat("node segment ", segment,
                                                     " is outside [-1, ", k, ")"));
    }
  }
  absl::ReaderMutexLock lock(&dataset_->mutex);
  for (ShardState& shard : shards_) {
    COHORT_ASSIGN_OR_RETURN(const RawShard* raw, CurrentRaw(shard));
    std::vector<int32_t> segments;
    std::vector<float> squared_distances;
    if (node_segments.empty()) {
      shard.kmeans->Assign(centroids, &segments, &squared_distances);
    } else {
      COHORT_RETURN_IF_ERROR(
          TreeAssign(shard, centroids, node_segments, &segments, &squared_distances));
    }
    // The stored labels read their ids from the raw shard, and the metrics passes read
    // the stored segments, so neither is copied.
    shard.assigned_labels.clear();
    shard.assigned_labels.shrink_to_fit();
    shard.stored = store_->StoreAssignments(
        job_id_, shard.shard_id,
        std::make_unique<ShardAssignments>(raw != nullptr ? dataset_ : nullptr, shard.shard_id,
                                           std::move(segments), std::move(squared_distances)));
    shard.num_labels = k;
    const std::vector<int32_t>& labels = shard.stored->segments();
    v1::ShardResult result = NewResult(seq, shard);
    if (raw != nullptr) {
      const std::vector<FeatureStats> stats = ComputeGroupStats(*raw, labels.data(), k);
      std::vector<std::vector<std::string>> sketches =
          SerializeGroupSketches(*raw, labels.data(), k);
      for (int s = 0; s < k; ++s) {
        v1::FeatureStatsProto* out = result.add_segment_stats();
        ToProto(stats[s], out);
        for (std::string& sketch : sketches[s]) out->add_numeric_sketches(std::move(sketch));
      }
    }
    if (result_writer_) {
      COHORT_RETURN_IF_ERROR(result_writer_(result));
    } else {
      results->push_back(std::move(result));
    }
  }
  return absl::OkStatus();
}

absl::Status JobSession::TreeAssign(const ShardState& shard, const MatrixXfR& centroids,
                                    const google::protobuf::RepeatedField<int32_t>& node_segments,
                                    std::vector<int32_t>* segments,
                                    std::vector<float>* squared_distances) const {
  if (shard.bisect == nullptr) {
    return absl::FailedPreconditionError("tree assignments need a bisecting job");
  }
  const std::vector<int32_t>& nodes = shard.bisect->nodes();
  const int64_t n = shard.features->rows();
  const int64_t d = shard.features->cols();
  segments->resize(n);
  squared_distances->resize(n);
  MatrixXfR block;
  for (int64_t i = 0; i < n; ++i) {
    if (i % kRowBlockRows == 0) {
      shard.features->CopyBlock(i, std::min(kRowBlockRows, n - i), &block);
    }
    const int node = nodes[i];
    if (node < 0 || node >= node_segments.size() || node_segments[node] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("row ", i, " of shard ", shard.shard_id,
                                                     " is in node ", node,
                                                     ", which is not a leaf"));
    }
    const int segment = node_segments[node];
    double sum = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double diff = double{block(i % kRowBlockRows, j)} - centroids(segment, j);
      sum += diff * diff;
    }
    (*segments)[i] = segment;
    (*squared_distances)[i] = static_cast<float>(sum);
  }
  return absl::OkStatus();
}

absl::Status JobSession::Metrics(const v1::MetricsPass& command, int64_t seq,
                                 std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
  const bool second_pass = command.merged().k() > 0;
  ClusterAggregates merged;
  if (second_pass) {
    COHORT_ASSIGN_OR_RETURN(merged, FromProto(command.merged()));
  }
  for (ShardState& shard : shards_) {
    const int64_t n = shard.features->rows();
    if (static_cast<int64_t>(shard.Labels().size()) != n) {
      return absl::FailedPreconditionError(
          "metrics need labels; send AssignLabels or StoreAssignments first");
    }
    v1::ShardResult result = NewResult(seq, shard);
    if (second_pass) {
      if (merged.d != dim_ || merged.k != shard.num_labels) {
        return absl::InvalidArgumentError("merged aggregates do not match the labels");
      }
    }
    // The metrics are computed on chunks of rows stored one at a time, and merged in
    // chunk order as the coordinator merges shards.
    SpreadPartial spread;
    ClusterAggregates aggregates;
    MatrixXfR chunk;
    const int64_t num_chunks = std::max<int64_t>(1, (n + kMetricsChunkRows - 1) / kMetricsChunkRows);
    for (int64_t c = 0; c < num_chunks; ++c) {
      const int64_t begin = c * kMetricsChunkRows;
      const int64_t count = std::min(kMetricsChunkRows, n - begin);
      shard.features->CopyBlock(begin, count, &chunk);
      const int32_t* labels = shard.Labels().data() + begin;
      if (second_pass) {
        spread.Merge(ComputeSpreadPartial(chunk, labels, merged));
      } else {
        aggregates.Merge(ComputeClusterAggregates(chunk, labels, shard.num_labels));
      }
    }
    if (second_pass) {
      ToProto(spread, result.mutable_spread());
    } else {
      ToProto(aggregates, result.mutable_aggregates());
    }
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

absl::Status JobSession::Sample(const v1::SampleRows& command, int64_t seq,
                                std::vector<v1::ShardResult>* results) {
  COHORT_RETURN_IF_ERROR(CheckFeaturesBuilt());
  absl::ReaderMutexLock lock(&dataset_->mutex);
  for (ShardState& shard : shards_) {
    COHORT_ASSIGN_OR_RETURN(const RawShard* raw, CurrentRaw(shard));
    int64_t quota = 0;
    for (const v1::SampleRows::Quota& entry : command.quotas()) {
      if (entry.shard_id() == shard.shard_id) quota = entry.count();
    }
    const int64_t n = shard.features->rows();
    quota = std::clamp<int64_t>(quota, 0, n);
    // Rank rows by a seeded hash of the user id: the sample does not depend on where
    // the shard lives or on the row order. A max-heap keeps the `quota` smallest ranks,
    // so the memory follows the quota, not the shard's rows.
    std::vector<std::pair<uint64_t, int64_t>> ranked;
    ranked.reserve(static_cast<size_t>(quota));
    for (int64_t i = 0; i < n && quota > 0; ++i) {
      const std::string_view id = raw->ids[i];
      const std::pair<uint64_t, int64_t> rank = {
          HashUserId(absl::StrCat(command.seed(), "/", absl::string_view(id.data(), id.size()))),
          i};
      if (static_cast<int64_t>(ranked.size()) < quota) {
        ranked.push_back(rank);
        std::push_heap(ranked.begin(), ranked.end());
      } else if (rank < ranked.front()) {
        std::pop_heap(ranked.begin(), ranked.end());
        ranked.back() = rank;
        std::push_heap(ranked.begin(), ranked.end());
      }
    }
    std::sort_heap(ranked.begin(), ranked.end());
    v1::ShardResult result = NewResult(seq, shard);
    v1::SampleResult* sample = result.mutable_sample();
    sample->set_d(dim_);
    const bool labelled = static_cast<int64_t>(shard.Labels().size()) == n;
    std::vector<float> values(static_cast<size_t>(dim_));
    for (int64_t r = 0; r < quota; ++r) {
      const int64_t row = ranked[r].second;
      shard.features->CopyRows(row, 1, values.data());
      for (int j = 0; j < dim_; ++j) sample->add_values(values[j]);
      sample->add_labels(labelled ? shard.Labels()[row] : -1);
    }
    results->push_back(std::move(result));
  }
  return absl::OkStatus();
}

KMeansShard& JobSession::Active(ShardState& shard) {
  return shard.bisect != nullptr ? shard.bisect->focused() : *shard.kmeans;
}

absl::StatusOr<const RawShard*> JobSession::CurrentRaw(const ShardState& shard) const {
  auto it = dataset_->shards.find(shard.shard_id);
  const RawShard* raw = it == dataset_->shards.end() ? nullptr : &it->second;
  const int64_t rows = raw == nullptr ? 0 : raw->num_rows();
  if (rows != shard.rows) {
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
    if (current == nullptr) {
      shard.empty_raw =
          std::make_unique<RawShard>(MakeEmptyShard(dataset_->schema, shard.shard_id));
    }
    const RawShard& raw = current == nullptr ? *shard.empty_raw : *current;
    // The kernels transform the raw rows block by block as they read them, so the n×d
    // feature matrix is never stored (std::map nodes, and so `raw`, do not move).
    shard.bisect.reset();
    shard.kmeans.reset();
    shard.features = std::make_unique<TransformedRowSource>(transform, &raw);
    // The features leave out the weight column, which acts only through the KMeansShard.
    shard.weights = raw.weights;
    if (!shard.weights.empty()) {
      COHORT_RETURN_IF_ERROR(CheckSampleWeights(shard.features->rows(), shard.weights));
    }
    shard.kmeans = std::make_unique<KMeansShard>(
        shard.shard_id, shard.features.get(), shard.weights.empty() ? nullptr : &shard.weights);
    results->push_back(NewResult(seq, shard));
  }
  dim_ = transform.dim();
  return absl::OkStatus();
}

}  // namespace cohort
