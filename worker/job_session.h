// The worker side of one job stream: features and K-means state per hosted shard. The
// features are computed from the raw shards block by block as the steps read them.
// Internal to worker/.
#ifndef COHORT_WORKER_JOB_SESSION_H_
#define COHORT_WORKER_JOB_SESSION_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cohort/v1/worker.pb.h"
#include "core/bisecting.h"
#include "core/features.h"
#include "core/kmeans_kernels.h"
#include "core/matrix.h"
#include "worker/interaction_store.h"
#include "worker/neighbour_session.h"
#include "worker/profile_session.h"
#include "worker/shard_store.h"

namespace cohort {

// Thread safety: used by the one thread that serves its stream.
class JobSession {
 public:
  // `interactions` may be null on a worker without interaction datasets.
  JobSession(ShardStore* store, std::string worker_id, InteractionStore* interactions = nullptr);

  // Runs one command and appends one result per shard of the job, in shard-id order (or
  // hands them to the result writer, see set_result_writer).
  // Errors end the stream: InvalidArgument for a malformed command (wrong order, sizes
  // that do not match the data), NotFound for an unknown dataset.
  [[nodiscard]] absl::Status Handle(const v1::JobCommand& command,
                                    std::vector<v1::ShardResult>* results);

  // Sends one shard result to the coordinator. When set, commands whose results are large
  // (the segment statistics and sketches of StoreAssignments) hand each shard's result to
  // it as soon as it is built, instead of appending it to `results`. So the worker keeps
  // one shard's result in memory at a time. An error from it ends the command with that error.
  using ResultWriter = std::function<absl::Status(const v1::ShardResult&)>;
  void set_result_writer(ResultWriter writer) { result_writer_ = std::move(writer); }

  const std::string& job_id() const { return job_id_; }

 private:
  struct ShardState {
    int shard_id = 0;
    // Rows of the raw shard when the job read it; the ids stay in the raw shard.
    int64_t rows = 0;
    // The n×d features, read from the raw shard (or from `empty_raw` for a shard no row
    // hashed to) while the job holds the dataset's lock.
    std::unique_ptr<RawShard> empty_raw;
    std::unique_ptr<TransformedRowSource> features;
    // The features stored whole, only for a dense neighbour job.
    MatrixXfR dense;
    // Sample weight of every row, empty when the dataset has no weight column.
    std::vector<float> weights;
    std::unique_ptr<KMeansShard> kmeans;
    // Bisecting jobs: tree node of every row and the focused node's K-means state.
    std::unique_ptr<BisectingShard> bisect;
    // Segment of every row for the metrics passes (see Labels), and the number of segments.
    std::vector<int32_t> assigned_labels;
    std::shared_ptr<const ShardAssignments> stored;
    int num_labels = 0;

    // The labels of the last AssignLabels, or of StoreAssignments when it came later.
    const std::vector<int32_t>& Labels() const {
      return stored != nullptr ? stored->segments() : assigned_labels;
    }
  };

  // The K-means state the steps act on: the focused node's rows in a bisecting job,
  // else every row.
  static KMeansShard& Active(ShardState& shard);

  absl::Status Open(const v1::OpenJob& open, std::vector<v1::ShardResult>* results);
  // Runs the commands that read the features; the caller holds the dataset's lock for
  // commands other than StoreAssignments and Sample, which take it themselves.
  absl::Status HandleStep(const v1::JobCommand& command, std::vector<v1::ShardResult>* results);
  // Errors: Aborted when rows were appended to a shard since the job read it.
  absl::Status CheckRawUnchanged() const ABSL_SHARED_LOCKS_REQUIRED(dataset_->mutex);
  // Serves a neighbour job: every command of a job on an interaction dataset, and the
  // neighbour commands on the features this session built.
  absl::Status HandleNeighbours(const v1::JobCommand& command,
                                std::vector<v1::ShardResult>* results);
  absl::Status Stats(const v1::ComputeStats& command, int64_t seq,
                     std::vector<v1::ShardResult>* results);
  absl::Status SetDistance(const v1::SetDistance& command, int64_t seq,
                           std::vector<v1::ShardResult>* results);
  // Errors: InvalidArgument when a hosted shard has no batch share.
  absl::Status MiniBatchStep(const v1::MiniBatchStep& command, int64_t seq,
                             std::vector<v1::ShardResult>* results);
  absl::Status StoreAssignments(const MatrixXfR& centroids,
                                const google::protobuf::RepeatedField<int32_t>& node_segments,
                                int64_t seq, std::vector<v1::ShardResult>* results)
      ABSL_LOCKS_EXCLUDED(dataset_->mutex);
  absl::Status TreeAssign(const ShardState& shard, const MatrixXfR& centroids,
                          const google::protobuf::RepeatedField<int32_t>& node_segments,
                          std::vector<int32_t>* segments,
                          std::vector<float>* squared_distances) const;
  absl::Status Metrics(const v1::MetricsPass& command, int64_t seq,
                       std::vector<v1::ShardResult>* results);
  absl::Status Sample(const v1::SampleRows& command, int64_t seq,
                      std::vector<v1::ShardResult>* results) ABSL_LOCKS_EXCLUDED(dataset_->mutex);
  // The shard's raw rows (null for a shard no row hashed to). Errors: Aborted when
  // rows were appended since the job read the shard. Rows are only ever appended to a
  // held shard (a new load replaces the whole dataset), so comparing row counts finds
  // every change.
  absl::StatusOr<const RawShard*> CurrentRaw(const ShardState& shard) const
      ABSL_SHARED_LOCKS_REQUIRED(dataset_->mutex);
  absl::Status BuildFeatures(const v1::BuildFeatures& command, int64_t seq,
                             std::vector<v1::ShardResult>* results);
  absl::Status CheckFeaturesBuilt() const;
  absl::Status CheckDim(int cols, const char* what) const;
  v1::ShardResult NewResult(int64_t seq, const ShardState& shard) const;

  ShardStore* store_;
  const std::string worker_id_;
  std::string job_id_;
  ResultWriter result_writer_;  // may be empty
  std::shared_ptr<HostedDataset> dataset_;
  std::vector<ShardState> shards_;
  int dim_ = -1;
  InteractionStore* interactions_;
  std::unique_ptr<NeighbourSession> neighbours_;
  // Runs the profile commands (worker_profile.proto); created by the first one.
  std::unique_ptr<ProfileSession> profile_;
};

}  // namespace cohort

#endif  // COHORT_WORKER_JOB_SESSION_H_
