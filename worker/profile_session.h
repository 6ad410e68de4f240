// The worker side of profile jobs, audience selection and profile lookups: the commands of
// worker_profile.proto on one job stream. Internal to worker/.
#ifndef COHORT_WORKER_PROFILE_SESSION_H_
#define COHORT_WORKER_PROFILE_SESSION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cohort/v1/worker.pb.h"
#include "core/matrix.h"
#include "core/pipeline.h"
#include "worker/shard_store.h"

namespace cohort {

// Thread safety: used by the one thread that serves its stream, like JobSession.
class ProfileSession {
 public:
  // `shard_ids`: the job's shards on this worker, ascending.
  ProfileSession(ShardStore* store, std::shared_ptr<HostedDataset> dataset, std::string job_id,
                 std::vector<int> shard_ids);

  // True for the commands this class runs.
  static bool Handles(const v1::JobCommand& command);

  // Runs one command and appends one result per shard, in shard-id order. Errors end the
  // stream. They are InvalidArgument for a malformed command or one whose sizes do not
  // match the design matrix, and FailedPrecondition for a command sent before the one it
  // needs (for example LossGradient before BuildDesign). NotFound means this worker has
  // no such scores or assignments, and Aborted that rows were appended to a shard during
  // the job.
  [[nodiscard]] absl::Status Handle(const v1::JobCommand& command,
                                    std::vector<v1::ShardResult>* results);

 private:
  // One shard's design matrix, split into the training and test rows in row order.
  struct ShardDesign {
    int shard_id = 0;
    std::vector<std::string> user_ids;  // every row, as read by the first command
    std::vector<uint8_t> in_test;       // per row
    MatrixXfR x_train;                  // n_train×d
    MatrixXfR x_test;                   // n_test×d
    std::vector<uint8_t> y_train;
    std::vector<uint8_t> y_test;
    std::vector<float> weights_train;   // empty when the dataset has no weight column
  };

  absl::Status PipelineStats(const v1::ComputePipelineStats& command, int64_t seq,
                             std::vector<v1::ShardResult>* results);
  absl::Status PipelineMoments(const v1::ComputePipelineMoments& command, int64_t seq,
                               std::vector<v1::ShardResult>* results);
  absl::Status BuildDesign(const v1::BuildDesign& command, int64_t seq,
                           std::vector<v1::ShardResult>* results);
  absl::Status LossGradient(const v1::LossGradient& command, int64_t seq,
                            std::vector<v1::ShardResult>* results);
  absl::Status SplitScores(const v1::SplitScores& command, int64_t seq,
                           std::vector<v1::ShardResult>* results);
  absl::Status StoreScores(const v1::StoreScores& command, int64_t seq,
                           std::vector<v1::ShardResult>* results);
  absl::Status SelectAudience(const v1::SelectAudienceShard& command, int64_t seq,
                              std::vector<v1::ShardResult>* results);
  absl::Status LookupUser(const v1::LookupUser& command, int64_t seq,
                          std::vector<v1::ShardResult>* results);

  // The shard's raw rows (an empty shard when no row hashed to it). Records the ids on
  // the first call. Errors: Aborted when the rows changed since then.
  absl::StatusOr<const RawShard*> CurrentRaw(ShardDesign& shard, RawShard* empty) const
      ABSL_SHARED_LOCKS_REQUIRED(dataset_->mutex);
  // Errors: FailedPrecondition before BuildDesign; InvalidArgument when `params` does
  // not have d + 1 values.
  absl::Status CheckParams(int size) const;
  v1::ShardResult NewResult(int64_t seq, int shard_id, int64_t rows) const;

  ShardStore* store_;
  std::shared_ptr<HostedDataset> dataset_;
  const std::string job_id_;
  std::vector<ShardDesign> shards_;
  int dim_ = -1;  // set by BuildDesign
};

}  // namespace cohort

#endif  // COHORT_WORKER_PROFILE_SESSION_H_
