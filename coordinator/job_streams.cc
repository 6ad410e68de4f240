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
                                                             std::vector<Member> members,
                                                             Options options) {
  std::unique_ptr<JobStreams> streams(new JobStreams(job_id, dataset_id, std::move(options)));
  for (Member& member : members) {
    if (member.shards.empty()) continue;
    streams->num_shards_ += static_cast<int>(member.shards.size());
    COHORT_RETURN_IF_ERROR(streams->OpenStream(std::move(member)).status());
  }
  if (streams->options_.step_timeout != absl::InfiniteDuration()) {
    streams->watchdog_ = std::thread(&JobStreams::WatchdogLoop, streams.get());
  }
  return streams;
}

absl::StatusOr<size_t> JobStreams::OpenStream(Member member) {
  auto stream = std::make_unique<Stream>();
  stream->member = std::move(member);
  stream->context = std::make_unique<grpc::ClientContext>();
  stream->stream = stream->member.worker.stub->RunJob(stream->context.get());
  v1::JobCommand open;
  open.set_seq(0);
  open.mutable_open()->set_job_id(job_id_);
  open.mutable_open()->set_dataset_id(dataset_id_);
  for (int shard : stream->member.shards) open.mutable_open()->add_shards(shard);
  Stream* raw = stream.get();
  size_t index = 0;
  {
    absl::MutexLock lock(&mutex_);
    streams_.push_back(std::move(stream));
    index = streams_.size() - 1;
    if (cancelled_) raw->context->TryCancel();
  }
  if (!raw->stream->Write(open)) return StreamError(*raw, "opening the job stream");
  return index;
}

JobStreams::~JobStreams() {
  Close();
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  if (watchdog_.joinable()) watchdog_.join();
}

bool JobStreams::HasWorker(const std::string& worker_id) const {
  absl::MutexLock lock(&mutex_);
  for (const auto& stream : streams_) {
    if (stream->member.worker.worker_id == worker_id) return true;
  }
  return false;
}

std::map<int, std::string> JobStreams::MovedShards() const { return moved_; }

void JobStreams::Cancel() {
  absl::MutexLock lock(&mutex_);
  cancelled_ = true;
  for (auto& stream : streams_) stream->context->TryCancel();
}

void JobStreams::MarkLost(const std::string& worker_id) {
  absl::MutexLock lock(&mutex_);
  for (auto& stream : streams_) {
    if (stream->member.worker.worker_id != worker_id) continue;
    lost_.push_back(worker_id);
    stream->context->TryCancel();
  }
}

void JobStreams::WatchStream(Stream* stream) {
  absl::MutexLock lock(&mutex_);
  watched_ = stream;
  watch_deadline_ = stream == nullptr || options_.step_timeout == absl::InfiniteDuration()
                        ? absl::InfiniteFuture()
                        : absl::Now() + options_.step_timeout;
}

void JobStreams::WatchdogLoop() {
  absl::MutexLock lock(&mutex_);
  while (!stopping_) {
    const absl::Time deadline = watch_deadline_;
    Stream* const watched = watched_;
    // Wakes at the deadline, or earlier when the job thread watches another stream.
    auto changed = [this, deadline, watched]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return stopping_ || watch_deadline_ != deadline || watched_ != watched;
    };
    if (mutex_.AwaitWithDeadline(absl::Condition(&changed), deadline)) continue;
    if (watched_ == nullptr) continue;
    // The step timed out: breaking the stream makes the job thread's read fail.
    timed_out_.push_back(watched_->member.worker.worker_id);
    COHORT_LOG_WARN("job {}: worker {} timed out after {} without results; declaring it lost", job_id_,
                    watched_->member.worker.worker_id,
                    absl::FormatDuration(options_.step_timeout));
    watched_->context->TryCancel();
    watched_ = nullptr;
    watch_deadline_ = absl::InfiniteFuture();
  }
}

absl::Status JobStreams::StreamError(Stream& stream, const std::string& action) {
  WatchStream(nullptr);
  stream.closed = true;
  // A read can also fail on this side (a reply that does not parse) while the worker
  // still waits for commands; Finish() would then wait for the call's deadline. A status
  // the worker already sent is kept by the cancellation.
  stream.context->TryCancel();
  const grpc::Status finished = stream.stream->Finish();
  const WorkerHandle& worker = stream.member.worker;
  bool lost = false;
  bool timed_out = false;
  bool cancelled = false;
  {
    absl::MutexLock lock(&mutex_);
    lost = std::find(lost_.begin(), lost_.end(), worker.worker_id) != lost_.end();
    timed_out =
        std::find(timed_out_.begin(), timed_out_.end(), worker.worker_id) != timed_out_.end();
    cancelled = cancelled_;
  }
  if (cancelled) return absl::CancelledError(absl::StrCat("job ", job_id_, " was cancelled"));
  const std::string shards = absl::StrJoin(stream.member.shards, ",");
  if (timed_out) {
    return absl::UnavailableError(absl::StrCat(
        "worker ", worker.worker_id, " at ", worker.address, " timed out while ", action,
        " (shards ", shards, "): no results within the step timeout of ",
        absl::FormatDuration(options_.step_timeout),
        ", so the process may be stopped, hung or overloaded"));
  }
  if (lost || finished.error_code() == grpc::StatusCode::UNAVAILABLE ||
      finished.error_code() == grpc::StatusCode::CANCELLED || finished.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "worker ", worker.worker_id, " at ", worker.address, " was lost while ", action,
        " (shards ", shards, "): ", lost ? "it stopped answering probes" : finished.error_message()));
  }
  return absl::Status(static_cast<absl::StatusCode>(finished.error_code()),
                      absl::StrCat("worker ", worker.worker_id, ": ", finished.error_message()));
}

absl::Status JobStreams::ReadResults(Stream& stream, int64_t seq,
                                     std::vector<v1::ShardResult>* results) {
  WatchStream(&stream);
  for (size_t i = 0; i < stream.member.shards.size(); ++i) {
    v1::ShardResult result;
    if (!stream.stream->Read(&result)) return StreamError(stream, "computing a step");
    if (result.seq() != seq || result.shard_id() != stream.member.shards[i]) {
      WatchStream(nullptr);
      return absl::InternalError(absl::StrCat(
          "worker ", stream.member.worker.worker_id, " returned a result for command ",
          result.seq(), " shard ", result.shard_id(), " but command ", seq, " shard ",
          stream.member.shards[i], " was expected"));
    }
    if (result.error_code() != 0) {
      WatchStream(nullptr);
      return absl::Status(static_cast<absl::StatusCode>(result.error_code()),
                          absl::StrCat("worker ", stream.member.worker.worker_id, " shard ",
                                       result.shard_id(), ": ", result.error_message()));
    }
    results->push_back(std::move(result));
  }
  WatchStream(nullptr);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::ShardResult>> JobStreams::Execute(v1::JobCommand command) {
  command.set_seq(next_seq_++);
  // Streams whose worker was lost during this step; the other streams are still read,
  // so that they stay in step with the commands.
  std::vector<size_t> failed;
  absl::Status first_loss;
  const size_t open_streams = streams_.size();
  for (size_t s = 0; s < open_streams; ++s) {
    Stream& stream = *streams_[s];
    if (stream.closed) continue;
    WatchStream(&stream);
    const bool written = stream.stream->Write(command);
    WatchStream(nullptr);
    if (written) continue;
    const absl::Status error = StreamError(stream, "sending a command");
    if (!absl::IsUnavailable(error)) return error;
    if (first_loss.ok()) first_loss = error;
    failed.push_back(s);
  }
  std::vector<v1::ShardResult> results;
  results.reserve(num_shards_);
  for (size_t s = 0; s < open_streams; ++s) {
    Stream& stream = *streams_[s];
    if (stream.closed) continue;
    std::vector<v1::ShardResult> part;
    const absl::Status read = ReadResults(stream, command.seq(), &part);
    if (read.ok()) {
      for (v1::ShardResult& result : part) results.push_back(std::move(result));
      continue;
    }
    if (!absl::IsUnavailable(read) || !stream.closed) return read;
    if (first_loss.ok()) first_loss = read;
    failed.push_back(s);
  }
  if (!failed.empty()) {
    if (!options_.move_shards) return first_loss;
    const absl::Status recovered = Recover(failed, command, &results);
    if (!recovered.ok()) {
      return absl::Status(recovered.code(),
                          absl::StrCat(first_loss.message(), "; ", recovered.message()));
    }
  }
  std::sort(results.begin(), results.end(),
            [](const v1::ShardResult& a, const v1::ShardResult& b) {
              return a.shard_id() < b.shard_id();
            });
  history_.push_back(std::move(command));
  return results;
}

absl::Status JobStreams::Recover(std::vector<size_t> failed, const v1::JobCommand& command,
                                 std::vector<v1::ShardResult>* results) {
  std::vector<std::string> lost;
  // Every failed stream is one lost worker. Each round moves the shards of the streams
  // that failed in the previous one, and there is at most one round per stream.
  for (size_t round = 0; !failed.empty(); ++round) {
    if (round > streams_.size()) {
      return absl::UnavailableError("workers kept failing while their shards moved");
    }
    std::vector<int> shards;
    for (size_t s : failed) {
      lost.push_back(streams_[s]->member.worker.worker_id);
      shards.insert(shards.end(), streams_[s]->member.shards.begin(),
                    streams_[s]->member.shards.end());
    }
    std::sort(shards.begin(), shards.end());
    COHORT_LOG_WARN("job {}: moving shards {} of lost workers {}", job_id_,
                    absl::StrJoin(shards, ","), absl::StrJoin(lost, ","));
    COHORT_ASSIGN_OR_RETURN(std::vector<Member> hosts, options_.move_shards(lost, shards));
    failed.clear();
    for (Member& host : hosts) {
      if (host.shards.empty()) continue;
      for (int shard : host.shards) moved_[shard] = host.worker.worker_id;
      absl::StatusOr<size_t> opened = OpenStream(std::move(host));
      if (!opened.ok()) {
        if (!absl::IsUnavailable(opened.status())) return opened.status();
        failed.push_back(streams_.size() - 1);
        continue;
      }
      Stream& stream = *streams_[*opened];
      // The new host rebuilds the shards' state (features, labels, seeding distances)
      // by replaying every earlier command, then computes the current one.
      absl::Status status;
      std::vector<v1::ShardResult> part;
      auto run = [&](const v1::JobCommand& step, const char* action) {
        part.clear();
        WatchStream(&stream);
        const bool written = stream.stream->Write(step);
        WatchStream(nullptr);
        return written ? ReadResults(stream, step.seq(), &part) : StreamError(stream, action);
      };
      for (const v1::JobCommand& earlier : history_) {
        status = run(earlier, "replaying the job on moved shards");
        if (!status.ok()) break;
      }
      if (status.ok()) status = run(command, "sending a command");
      if (status.ok()) {
        for (v1::ShardResult& result : part) results->push_back(std::move(result));
        continue;
      }
      if (!absl::IsUnavailable(status) || !stream.closed) return status;
      failed.push_back(*opened);
    }
  }
  return absl::OkStatus();
}

void JobStreams::Close() {
  WatchStream(nullptr);
  for (auto& owned : streams_) {
    Stream& stream = *owned;
    if (stream.closed) continue;
    stream.closed = true;
    // The step deadline also bounds the close, so a stopped worker cannot block it.
    WatchStream(&stream);
    stream.stream->WritesDone();
    // When a step failed on another worker, this worker's results of that step are still
    // unread. A worker blocked on flow control while writing them never sends its status,
    // and Finish() would wait for it for ever, so the results are drained first.
    v1::ShardResult unread;
    while (stream.stream->Read(&unread)) {
    }
    WatchStream(nullptr);
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
