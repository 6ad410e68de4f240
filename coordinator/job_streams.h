// The coordinator side of one job: a bidirectional stream to each worker that hosts
// shards of the job's dataset, and the K-means backend built on them. Internal to
// coordinator/.
#ifndef COHORT_COORDINATOR_JOB_STREAMS_H_
#define COHORT_COORDINATOR_JOB_STREAMS_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cohort/v1/worker.grpc.pb.h"
#include "coordinator/worker_registry.h"
#include "core/bisecting.h"
#include "core/kmeans.h"

namespace cohort {

// Thread safety: Execute() and Close() are called by the one job thread; Cancel() and
// MarkLost() may be called from any thread.
class JobStreams {
 public:
  struct Member {
    WorkerHandle worker;
    std::vector<int> shards;  // ascending
  };

  // Moves the shards of lost workers (their ids in `lost`, every worker lost so far in
  // the job) to live workers, which load them, and returns the new hosts with their
  // shards. Errors: Unavailable saying why the shards cannot move.
  using MoveShards = std::function<absl::StatusOr<std::vector<Member>>(
      const std::vector<std::string>& lost, const std::vector<int>& shards)>;

  struct Options {
    // Time a worker has to return the results of all its shards for one command before
    // it is declared lost. InfiniteDuration: no limit.
    absl::Duration step_timeout = absl::InfiniteDuration();
    // Called when a worker is lost; null: the job fails with Unavailable.
    MoveShards move_shards;
  };

  // Opens one stream per member and sends OpenJob. Errors: Unavailable naming the worker.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<JobStreams>> Open(
      const std::string& job_id, const std::string& dataset_id, std::vector<Member> members,
      Options options);

  ~JobStreams();

  // Sends `command` (its seq is set here) to every worker and returns every shard's
  // result sorted by shard id. A worker whose stream breaks, or that returns no results
  // within the step timeout, is lost. With move_shards, its shards move to other
  // workers, which replay the job's earlier commands on them and then compute this one,
  // so the results equal those of a run without the loss. Errors: Unavailable when a
  // worker is lost and its shards cannot move (naming the worker and its shards); a
  // worker-reported error with the worker named.
  [[nodiscard]] absl::StatusOr<std::vector<v1::ShardResult>> Execute(v1::JobCommand command);

  // The worker id of every shard that moved during the job, by shard id.
  std::map<int, std::string> MovedShards() const;

  // Breaks every stream; a running Execute() returns Cancelled or Unavailable.
  void Cancel() ABSL_LOCKS_EXCLUDED(mutex_);
  // Records that `worker_id` was declared lost and breaks its stream.
  void MarkLost(const std::string& worker_id) ABSL_LOCKS_EXCLUDED(mutex_);
  bool HasWorker(const std::string& worker_id) const ABSL_LOCKS_EXCLUDED(mutex_);

  // Ends the streams cleanly.
  void Close();

  int num_shards() const { return num_shards_; }

 private:
  struct Stream {
    Member member;
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::JobCommand, v1::ShardResult>> stream;
    bool closed = false;
  };

  JobStreams(std::string job_id, std::string dataset_id, Options options)
      : job_id_(std::move(job_id)),
        dataset_id_(std::move(dataset_id)),
        options_(std::move(options)) {}
  // Opens a stream to `member` and sends OpenJob; the stream is appended to streams_.
  // Returns its index, or the status of a failed open.
  absl::StatusOr<size_t> OpenStream(Member member);
  absl::Status StreamError(Stream& stream, const std::string& action);
  // Reads the results of command `seq` from every shard of `stream` into `results`.
  // Errors: as StreamError, or the worker-reported error; `results` may then hold some.
  absl::Status ReadResults(Stream& stream, int64_t seq, std::vector<v1::ShardResult>* results);
  // Moves the shards of the failed streams (indices into streams_) to other workers,
  // replays history_ on them and runs `command` there, appending the results.
  absl::Status Recover(std::vector<size_t> failed, const v1::JobCommand& command,
                       std::vector<v1::ShardResult>* results);
  // Starts the step-timeout clock for `stream` (null stops it).
  void WatchStream(Stream* stream) ABSL_LOCKS_EXCLUDED(mutex_);
  void WatchdogLoop() ABSL_LOCKS_EXCLUDED(mutex_);

  const std::string job_id_;
  const std::string dataset_id_;
  const Options options_;
  // Streams are appended (by the job thread, under mutex_) when shards move, and failed
  // ones stay closed in place. Pointers to them stay valid.
  std::vector<std::unique_ptr<Stream>> streams_;
  int num_shards_ = 0;
  int64_t next_seq_ = 1;
  // Every command that succeeded, in order, replayed on shards that move.
  std::vector<v1::JobCommand> history_;
  std::map<int, std::string> moved_;
  mutable absl::Mutex mutex_;
  std::vector<std::string> lost_ ABSL_GUARDED_BY(mutex_);
  // Workers whose step timed out.
  std::vector<std::string> timed_out_ ABSL_GUARDED_BY(mutex_);
  bool cancelled_ ABSL_GUARDED_BY(mutex_) = false;
  // The stream the job thread waits on and when its step times out.
  Stream* watched_ ABSL_GUARDED_BY(mutex_) = nullptr;
  absl::Time watch_deadline_ ABSL_GUARDED_BY(mutex_) = absl::InfiniteFuture();
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread watchdog_;
};

// KMeansBackend over a job's worker streams.
class GrpcKMeansBackend final : public KMeansBackend {
 public:
  // REQUIRES: features were built on every worker with `dim` columns.
  GrpcKMeansBackend(JobStreams* streams, int dim) : streams_(streams), dim_(dim) {}

  int dim() const override { return dim_; }
  absl::StatusOr<std::vector<ShardMoments>> Moments() override;
  absl::StatusOr<std::vector<ShardSum>> AddCenters(const MatrixXfR& centers, bool reset) override;
  absl::StatusOr<std::vector<std::vector<double>>> TrialPotentials(
      const MatrixXfR& candidates) override;
  absl::StatusOr<std::vector<ShardPoint>> Pick(const std::vector<ShardOffset>& offsets) override;
  absl::StatusOr<std::vector<LloydPartial>> LloydStep(const MatrixXfR& centroids,
                                                      int num_farthest) override;
  // Sends SetDistance to every worker; each applies it with SetShardDistance.
  absl::Status SetDistance(KMeansDistance distance) override;
  absl::StatusOr<std::vector<ShardCandidates>> SampleCandidates(uint64_t seed, int run,
                                                                int round, double oversampling,
                                                                double potential) override;
  absl::StatusOr<std::vector<MiniBatchPartial>> MiniBatchStep(
      const MatrixXfR& centroids, uint64_t seed, int run, int64_t step,
      const std::vector<ShardBatchRows>& batch_rows, int num_points) override;

 private:
  JobStreams* streams_;
  const int dim_;
};

// BisectingBackend over a job's worker streams: the K-means steps act on the rows of the
// node last focused on each worker.
class GrpcBisectingBackend final : public BisectingBackend {
 public:
  GrpcBisectingBackend(JobStreams* streams, int dim) : streams_(streams), kmeans_(streams, dim) {}

  int dim() const override { return kmeans_.dim(); }
  absl::StatusOr<std::vector<ShardMoments>> Moments() override { return kmeans_.Moments(); }
  absl::StatusOr<std::vector<ShardSum>> AddCenters(const MatrixXfR& centers, bool reset) override {
    return kmeans_.AddCenters(centers, reset);
  }
  absl::StatusOr<std::vector<std::vector<double>>> TrialPotentials(
      const MatrixXfR& candidates) override {
    return kmeans_.TrialPotentials(candidates);
  }
  absl::StatusOr<std::vector<ShardPoint>> Pick(const std::vector<ShardOffset>& offsets) override {
    return kmeans_.Pick(offsets);
  }
  absl::StatusOr<std::vector<LloydPartial>> LloydStep(const MatrixXfR& centroids,
                                                      int num_farthest) override {
    return kmeans_.LloydStep(centroids, num_farthest);
  }
  absl::StatusOr<std::vector<ShardCandidates>> SampleCandidates(uint64_t seed, int run,
                                                                int round, double oversampling,
                                                                double potential) override {
    return kmeans_.SampleCandidates(seed, run, round, oversampling, potential);
  }
  absl::StatusOr<std::vector<MiniBatchPartial>> MiniBatchStep(
      const MatrixXfR& centroids, uint64_t seed, int run, int64_t step,
      const std::vector<ShardBatchRows>& batch_rows, int num_points) override {
    return kmeans_.MiniBatchStep(centroids, seed, run, step, batch_rows, num_points);
  }
  absl::StatusOr<std::vector<ShardSum>> Focus(int node) override;
  absl::StatusOr<std::vector<ShardAggregates>> Split(int node, const MatrixXfR& centroids, int left,
                                                     int right) override;

 private:
  JobStreams* streams_;
  GrpcKMeansBackend kmeans_;
};

}  // namespace cohort

#endif  // COHORT_COORDINATOR_JOB_STREAMS_H_
