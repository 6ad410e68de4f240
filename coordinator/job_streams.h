// The coordinator side of one job: a bidirectional stream to each worker that hosts
// shards of the job's dataset, and the K-means backend built on them. Internal to
// coordinator/.
#ifndef COHORT_COORDINATOR_JOB_STREAMS_H_
#define COHORT_COORDINATOR_JOB_STREAMS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
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

  // Opens one stream per member and sends OpenJob. Errors: Unavailable naming the worker.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<JobStreams>> Open(
      const std::string& job_id, const std::string& dataset_id, std::vector<Member> members);

  ~JobStreams();

  // Sends `command` (its seq is set here) to every worker and returns every shard's
  // result sorted by shard id. Errors: Unavailable when a worker's stream breaks (naming
  // the worker and its shards); a worker-reported error with the worker named.
  [[nodiscard]] absl::StatusOr<std::vector<v1::ShardResult>> Execute(v1::JobCommand command);

  // Breaks every stream; a running Execute() returns Cancelled or Unavailable.
  void Cancel() ABSL_LOCKS_EXCLUDED(mutex_);
  // Records that `worker_id` was declared lost and breaks its stream.
  void MarkLost(const std::string& worker_id) ABSL_LOCKS_EXCLUDED(mutex_);
  bool HasWorker(const std::string& worker_id) const;

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

  JobStreams(std::string job_id) : job_id_(std::move(job_id)) {}
  absl::Status StreamError(Stream& stream, const std::string& action);

  const std::string job_id_;
  std::vector<Stream> streams_;
  int num_shards_ = 0;
  int64_t next_seq_ = 1;
  mutable absl::Mutex mutex_;
  std::vector<std::string> lost_ ABSL_GUARDED_BY(mutex_);
  bool cancelled_ ABSL_GUARDED_BY(mutex_) = false;
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
