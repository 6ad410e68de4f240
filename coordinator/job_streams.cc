#include "coordinator/job_streams.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "proto/convert.h"

namespace cohort {

absl::StatusOr<std::unique_ptr<JobStreams>> JobStreams::Open(const std::string& job_id,
                                                             const std::string& dataset_id,
                                                             std::vector<Member> members) {
  std::unique_ptr<JobStreams> streams(new JobStreams(job_id));
  for (Member& member : members) {
    if (member.shards.empty()) continue;
    Stream stream;
    stream.member = std::move(member);
    stream.context = std::make_unique<grpc::ClientContext>();
    stream.stream = stream.member.worker.stub->RunJob(stream.context.get());
    v1::JobCommand open;
    open.set_seq(0);
    open.mutable_open()->set_job_id(job_id);
    open.mutable_open()->set_dataset_id(dataset_id);
    for (int shard : stream.member.shards) open.mutable_open()->add_shards(shard);
    streams->num_shards_ += static_cast<int>(stream.member.shards.size());
    streams->streams_.push_back(std::move(stream));
    if (!streams->streams_.back().stream->Write(open)) {
      return streams->StreamError(streams->streams_.back(), "opening the job stream");
    }
  }
  return streams;
}

JobStreams::~JobStreams() { Close(); }

bool JobStreams::HasWorker(const std::string& worker_id) const {
  for (const Stream& stream : streams_) {
    if (stream.member.worker.worker_id == worker_id) return true;
  }
  return false;
}

void JobStreams::Cancel() {
  absl::MutexLock lock(&mutex_);
  cancelled_ = true;
  for (Stream& stream : streams_) stream.context->TryCancel();
}

void JobStreams::MarkLost(const std::string& worker_id) {
  absl::MutexLock lock(&mutex_);
  for (Stream& stream : streams_) {
    if (stream.member.worker.worker_id != worker_id) continue;
    lost_.push_back(worker_id);
    stream.context->TryCancel();
  }
}

absl::Status JobStreams::StreamError(Stream& stream, const std::string& action) {
  stream.closed = true;
  // A read can also fail on this side (a reply that does not parse) while the worker
  // still waits for commands; Finish() would then wait for the call's deadline. A status
  // the worker already sent is kept by the cancellation.
  stream.context->TryCancel();
  const grpc::Status finished = stream.stream->Finish();
  const WorkerHandle& worker = stream.member.worker;
  bool lost = false;
  bool cancelled = false;
  {
    absl::MutexLock lock(&mutex_);
    lost = std::find(lost_.begin(), lost_.end(), worker.worker_id) != lost_.end();
    cancelled = cancelled_;
  }
  if (cancelled) return absl::CancelledError(absl::StrCat("job ", job_id_, " was cancelled"));
  const std::string shards = absl::StrJoin(stream.member.shards, ",");
  if (lost || finished.error_code() == grpc::StatusCode::UNAVAILABLE ||
      finished.error_code() == grpc::StatusCode::CANCELLED || finished.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "worker ", worker.worker_id, " at ", worker.address, " was lost while ", action,
        " (shards ", shards, "): ", lost ? "it stopped answering probes" : finished.error_message(),
        "; load the data into a new dataset and rerun the job"));
  }
  return absl::Status(static_cast<absl::StatusCode>(finished.error_code()),
                      absl::StrCat("worker ", worker.worker_id, ": ", finished.error_message()));
}

absl::StatusOr<std::vector<v1::ShardResult>> JobStreams::Execute(v1::JobCommand command) {
  command.set_seq(next_seq_++);
  for (Stream& stream : streams_) {
    if (!stream.stream->Write(command)) return StreamError(stream, "sending a command");
  }
  std::vector<v1::ShardResult> results;
  results.reserve(num_shards_);
  for (Stream& stream : streams_) {
    for (size_t i = 0; i < stream.member.shards.size(); ++i) {
      v1::ShardResult result;
      if (!stream.stream->Read(&result)) return StreamError(stream, "computing a step");
      if (result.seq() != command.seq() || result.shard_id() != stream.member.shards[i]) {
        return absl::InternalError(absl::StrCat(
            "worker ", stream.member.worker.worker_id, " returned a result for command ", result.seq(),
            " shard ", result.shard_id(), " but command ", command.seq(), " shard ",
            stream.member.shards[i], " was expected"));
      }
      if (result.error_code() != 0) {
        return absl::Status(static_cast<absl::StatusCode>(result.error_code()),
                            absl::StrCat("worker ", stream.member.worker.worker_id, " shard ",
                                         result.shard_id(), ": ", result.error_message()));
      }
      results.push_back(std::move(result));
    }
  }
  std::sort(results.begin(), results.end(),
            [](const v1::ShardResult& a, const v1::ShardResult& b) {
              return a.shard_id() < b.shard_id();
            });
  return results;
}

void JobStreams::Close() {
  for (Stream& stream : streams_) {
    if (stream.closed) continue;
    stream.closed = true;
    stream.stream->WritesDone();
    // When a step failed on another worker, this worker's results of that step are still
    // unread. A worker blocked on flow control while writing them never sends its status,
    // and Finish() would wait for it for ever, so the results are drained first.
    v1::ShardResult unread;
    while (stream.stream->Read(&unread)) {
    }
    const grpc::Status status = stream.stream->Finish();
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
      COHORT_LOG_DEBUG("job {}: stream to worker {} ended with {}", job_id_,
                       stream.member.worker.worker_id, status.error_message());
    }
  }
}

absl::StatusOr<std::vector<ShardMoments>> GrpcKMeansBackend::Moments() {
  v1::JobCommand command;
  command.mutable_moments();
  COHORT_ASSIGN_OR_RETURN(auto results, streams_->Execute(std::move(command)));
  std::vector<ShardMoments> moments;
  for (const v1::ShardResult& result : results) {
    ShardMoments out;
    out.shard_id = result.shard_id();
    out.rows = result.rows();
    out.sum.assign(result.moments().sum().begin(), result.moments().sum().end());
    out.sum_sq.assign(result.moments().sum_sq().begin(), result.moments().sum_sq().end());
    moments.push_back(std::move(out));
  }
  return moments;
}

absl::StatusOr<std::vector<ShardSum>> GrpcKMeansBackend::AddCenters(const MatrixXfR& centers,
                                                                    bool reset) {
  v1::JobCommand command;
  ToProto(centers, command.mutable_add_centers()->mutable_centers());
  command.mutable_add_centers()->set_reset(reset);
  COHORT_ASSIGN_OR_RETURN(auto results, streams_->Execute(std::move(command)));
  std::vector<ShardSum> sums;
  for (const v1::ShardResult& result : results) {
    sums.push_back(ShardSum{result.shard_id(), result.rows(), result.sum()});
  }
  return sums;
}

absl::StatusOr<std::vector<std::vector<double>>> GrpcKMeansBackend::TrialPotentials(
    const MatrixXfR& candidates) {
  v1::JobCommand command;
  ToProto(candidates, command.mutable_trial_potentials()->mutable_candidates());
  COHORT_ASSIGN_OR_RETURN(auto results, streams_->Execute(std::move(command)));
  std::vector<std::vector<double>> potentials;
  for (const v1::ShardResult& result : results) {
    const auto& values = result.potentials().values();
    if (values.size() != candidates.rows()) {
      return absl::InternalError(absl::StrCat("shard ", result.shard_id(), " returned ",
                                              values.size(), " potentials for ",
                                              candidates.rows(), " candidates"));
    }
    potentials.emplace_back(values.begin(), values.end());
  }
  return potentials;
}

absl::StatusOr<std::vector<ShardPoint>> GrpcKMeansBackend::Pick(
    const std::vector<ShardOffset>& offsets) {
  v1::JobCommand command;
  for (const ShardOffset& offset : offsets) {
    v1::PickPoints::Offset* out = command.mutable_pick()->add_offsets();
    out->set_shard_id(offset.shard_id);
    out->set_offset(offset.offset);
  }
  COHORT_ASSIGN_OR_RETURN(auto results, streams_->Execute(std::move(command)));
  std::vector<ShardPoint> points(offsets.size());
  std::vector<bool> answered(offsets.size(), false);
  for (const v1::ShardResult& result : results) {
    for (const v1::PickedPoint& picked : result.picked().points()) {
      if (picked.index() < 0 || picked.index() >= static_cast<int>(offsets.size())) {
        return absl::InternalError(absl::StrCat("shard ", result.shard_id(),
                                                " answered pick index ", picked.index()));
      }
      ShardPoint& point = points[picked.index()];
      point.shard_id = result.shard_id();
      point.row = picked.row();
      point.values.assign(picked.values().begin(), picked.values().end());
      answered[picked.index()] = true;
    }
  }
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (!answered[i]) {
      return absl::InternalError(absl::StrCat("no worker returned the pick in shard ",
                                              offsets[i].shard_id));
    }
  }
  return points;
}

absl::StatusOr<std::vector<LloydPartial>> GrpcKMeansBackend::LloydStep(const MatrixXfR& centroids,
                                                                       int num_farthest) {
  v1::JobCommand command;
  ToProto(centroids, command.mutable_lloyd()->mutable_centroids());
  command.mutable_lloyd()->set_num_farthest(num_farthest);
  COHORT_ASSIGN_OR_RETURN(auto results, streams_->Execute(std::move(command)));
  std::vector<LloydPartial> partials;
  partials.reserve(results.size());
  for (const v1::ShardResult& result : results) {
    const v1::LloydPartialProto& in = result.lloyd();
    if (in.k() != centroids.rows() || in.d() != centroids.cols() ||
        in.sums_size() != int64_t{in.k()} * in.d() || in.counts_size() != in.k()) {
      return absl::InternalError(absl::StrCat("shard ", result.shard_id(),
                                              " returned a malformed Lloyd partial"));
    }
    LloydPartial partial;
    partial.shard_id = result.shard_id();
    partial.sums.resize(in.k(), in.d());
    std::copy(in.sums().begin(), in.sums().end(), partial.sums.data());
    partial.counts.assign(in.counts().begin(), in.counts().end());
    if (in.weighted_counts_size() != 0 && in.weighted_counts_size() != in.k()) {
      return absl::InternalError(absl::StrCat("shard ", result.shard_id(), " returned ",
                                              in.weighted_counts_size(),
                                              " weighted counts for ", in.k(), " centroids"));
    }
    partial.weighted_counts.assign(in.weighted_counts().begin(), in.weighted_counts().end());
    partial.inertia = in.inertia();
    for (const v1::FarPoint& far : in.farthest()) {
      ShardPoint point;
      point.shard_id = result.shard_id();
      point.row = far.row();
      point.sq_dist = far.sq_dist();
      point.values.assign(far.values().begin(), far.values().end());
      partial.farthest.push_back(std::move(point));
    }
    partials.push_back(std::move(partial));
  }
  return partials;
}

namespace {

ShardPoint PointFromProto(int shard_id, const v1::FarPoint& in) {
  ShardPoint point;
  point.shard_id = shard_id;
  point.row = in.row();
  point.sq_dist = in.sq_dist();
  point.values.assign(in.values().begin(), in.values().end());
  return point;
}

}  // namespace

absl::Status GrpcKMeansBackend::SetDistance(KMeansDistance distance) {
  v1::JobCommand command;
  command.mutable_set_distance()->set_distance(distance == KMeansDistance::kCosine
                                                   ? v1::DISTANCE_KIND_COSINE
                                                   : v1::DISTANCE_KIND_SQUARED_EUCLIDEAN);
  return streams_->Execute(std::move(command)).status();
}

absl::StatusOr<std::vector<ShardCandidates>> GrpcKMeansBackend::SampleCandidates(
    uint64_t seed, int run, int round, double oversampling, double potential) {
  v1::JobCommand command;
  v1::SampleCandidates* sample = command.mutable_sample_candidates();
  sample->set_seed(seed);
  sample->set_run(run);
  sample->set_round(round);
  sample->set_oversampling(oversampling);
  sample->set_potential(potential);
  COHORT_ASSIGN_OR_RETURN(auto results, streams_->Execute(std::move(command)));
  std::vector<ShardCandidates> picks;
  picks.reserve(results.size());
  for (const v1::ShardResult& result : results) {
    ShardCandidates shard;
    shard.shard_id = result.shard_id();
    for (const v1::FarPoint& point : result.candidates().points()) {
      if (point.values_size() != dim_) {
        return absl::InternalError(absl::StrCat("shard ", result.shard_id(),
                                                " returned a candidate with ",
                                                point.values_size(), " values for ", dim_,
                                                " features"));
      }
      shard.points.push_back(PointFromProto(result.shard_id(), point));
    }
    picks.push_back(std::move(shard));
  }
  return picks;
}

absl::StatusOr<std::vector<MiniBatchPartial>> GrpcKMeansBackend::MiniBatchStep(
    const MatrixXfR& centroids, uint64_t seed, int run, int64_t step,
    const std::vector<ShardBatchRows>& batch_rows, int num_points) {
  v1::JobCommand command;
  v1::MiniBatchStep* minibatch = command.mutable_minibatch();
  ToProto(centroids, minibatch->mutable_centroids());
  minibatch->set_seed(seed);
  minibatch->set_run(run);
  minibatch->set_step(step);
  minibatch->set_num_points(num_points);
  for (const ShardBatchRows& share : batch_rows) {
    v1::MiniBatchStep::Share* out = minibatch->add_shares();
    out->set_shard_id(share.shard_id);
    out->set_rows(share.rows);
  }
  COHORT_ASSIGN_OR_RETURN(auto results, streams_->Execute(std::move(command)));
  std::vector<MiniBatchPartial> partials;
  partials.reserve(results.size());
  for (const v1::ShardResult& result : results) {
    const v1::MiniBatchPartialProto& in = result.minibatch();
    if (in.k() != centroids.rows() || in.d() != centroids.cols() ||
        in.sums_size() != int64_t{in.k()} * in.d() || in.counts_size() != in.k() ||
        in.weighted_counts_size() != in.k()) {
      return absl::InternalError(absl::StrCat("shard ", result.shard_id(),
                                              " returned a malformed mini-batch partial"));
    }
    MiniBatchPartial partial;
    partial.shard_id = result.shard_id();
    partial.sums.resize(in.k(), in.d());
    std::copy(in.sums().begin(), in.sums().end(), partial.sums.data());
    partial.counts.assign(in.counts().begin(), in.counts().end());
    partial.weighted_counts.assign(in.weighted_counts().begin(), in.weighted_counts().end());
    partial.inertia = in.inertia();
    for (const v1::FarPoint& point : in.points()) {
      partial.points.push_back(PointFromProto(result.shard_id(), point));
    }
    partials.push_back(std::move(partial));
  }
  return partials;
}

absl::StatusOr<std::vector<ShardSum>> GrpcBisectingBackend::Focus(int node) {
  v1::JobCommand command;
  command.mutable_focus()->set_node(node);
  COHORT_ASSIGN_OR_RETURN(auto results, streams_->Execute(std::move(command)));
  std::vector<ShardSum> rows;
  for (const v1::ShardResult& result : results) {
    rows.push_back(ShardSum{result.shard_id(), result.rows(), static_cast<double>(result.rows())});
  }
  return rows;
}

absl::StatusOr<std::vector<ShardAggregates>> GrpcBisectingBackend::Split(int node,
                                                                        const MatrixXfR& centroids,
                                                                        int left, int right) {
  v1::JobCommand command;
  command.mutable_split()->set_node(node);
  ToProto(centroids, command.mutable_split()->mutable_centroids());
  command.mutable_split()->set_left(left);
  command.mutable_split()->set_right(right);
  COHORT_ASSIGN_OR_RETURN(auto results, streams_->Execute(std::move(command)));
  std::vector<ShardAggregates> aggregates;
  for (const v1::ShardResult& result : results) {
    COHORT_ASSIGN_OR_RETURN(ClusterAggregates shard, FromProto(result.aggregates()));
    aggregates.push_back(ShardAggregates{result.shard_id(), std::move(shard)});
  }
  return aggregates;
}

}  // namespace cohort
