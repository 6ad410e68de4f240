// The datasets and finished-job assignments one worker holds. Internal to worker/.
#ifndef COHORT_WORKER_SHARD_STORE_H_
#define COHORT_WORKER_SHARD_STORE_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/sync_stream.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cohort/v1/worker.pb.h"
#include "core/columns.h"
#include "core/raw_table.h"
#include "core/schema.h"
#include "worker/score_store.h"

namespace cohort {

// The shards of one dataset on this worker. Jobs read the shards under a reader lock;
// streamed rows are appended under the writer lock.
struct HostedDataset {
  v1::DatasetKind kind = v1::DATASET_KIND_USERS;
  Schema schema;
  int num_shards = 0;

  mutable absl::Mutex mutex;
  std::map<int, RawShard> shards ABSL_GUARDED_BY(mutex);
  // Rows per shard by user id, for finding duplicates among streamed rows. A shard's set
  // is built on its first append and points at the ids of its entry in `shards`, which
  // stays at the same address (std::map nodes do not move).
  std::map<int, std::unique_ptr<UserIdSet>> id_sets ABSL_GUARDED_BY(mutex);
  // Replica copies of streamed shards that another worker hosts, with their id sets as
  // above. Jobs never read them; PromoteReplicas moves them into `shards` when their
  // host is lost.
  std::map<int, RawShard> replicas ABSL_GUARDED_BY(mutex);
  std::map<int, std::unique_ptr<UserIdSet>> replica_id_sets ABSL_GUARDED_BY(mutex);
};

// Per-shard labels of a finished job, kept for export.
struct ShardAssignments {
  IdColumn user_ids;
  std::vector<int32_t> segments;
  std::vector<float> squared_distances;
};

// Thread safety: all methods may be called concurrently. Lock order: a dataset's mutex
// may be held while the store's mutex_ is taken, never the other way round.
class ShardStore {
 public:
  int HostedShardCount() const ABSL_LOCKS_EXCLUDED(mutex_);

  // Loads the request's shards from its files, replacing what was held for the dataset,
  // or, with add_shards, adding them to it.
  [[nodiscard]] absl::Status Load(const v1::LoadShardsRequest& request,
                                  v1::LoadShardsResponse* response) ABSL_LOCKS_EXCLUDED(mutex_);

  // Appends streamed rows, to the replica copies of their shards when request.replica
  // is set. A row whose user id is already held, or appeared earlier in the request,
  // fails the request under DUPLICATE_ID_RULE_REJECT, and is dropped and counted in
  // response->duplicate_rows under DUPLICATE_ID_RULE_KEEP_FIRST. The copies named in
  // reset_shards are emptied first, even when the rows are then rejected. Errors:
  // InvalidArgument naming the row and cell; the rows are then stored not at all.
  [[nodiscard]] absl::Status Append(const v1::AppendRowsRequest& request,
                                    v1::AppendRowsResponse* response) ABSL_LOCKS_EXCLUDED(mutex_);

  // Moves the replica copies of request.shards into the hosted shards, replacing any
  // hosted copy. Errors: NotFound for an unknown dataset; FailedPrecondition naming a
  // shard without a replica copy, and then nothing is promoted.
  [[nodiscard]] absl::Status PromoteReplicas(const v1::PromoteReplicasRequest& request,
                                             v1::PromoteReplicasResponse* response)
      ABSL_LOCKS_EXCLUDED(mutex_);

  // Streams the hosted rows of request.shards as cells (see UserRowCells), about 1 MB
  // a message. Errors: NotFound for an unknown dataset; Cancelled
  // when the caller goes away.
  [[nodiscard]] absl::Status ReadShards(const v1::ReadShardsRequest& request,
                                        grpc::ServerContext* context,
                                        grpc::ServerWriter<v1::ShardRowsChunk>* writer)
      ABSL_LOCKS_EXCLUDED(mutex_);

  // Errors: NotFound when this worker holds no shard of the dataset.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<HostedDataset>> Dataset(
      const std::string& dataset_id) const ABSL_LOCKS_EXCLUDED(mutex_);

  void StoreAssignments(const std::string& job_id, int shard_id, ShardAssignments assignments)
      ABSL_LOCKS_EXCLUDED(mutex_);

  // Streams the stored assignments of the requested shards in the order asked.
  // Errors: NotFound for an unknown job or shard.
  [[nodiscard]] absl::Status ExportAssignments(const v1::ExportRequest& request,
                                               grpc::ServerContext* context,
                                               grpc::ServerWriter<v1::ExportChunk>* writer)
      ABSL_LOCKS_EXCLUDED(mutex_);

  // The stored assignments of one shard of a finished job. Errors: NotFound for an
  // unknown job or shard.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<const ShardAssignments>> FindAssignments(
      const std::string& job_id, int shard_id) const ABSL_LOCKS_EXCLUDED(mutex_);

  // Frees the job's stored assignments and scores.
  void DropJob(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mutex_);

  // The per-user scores of profile jobs.
  ScoreStore& scores() { return scores_; }

 private:
  // The id set of the hosted shard (or, with `replica`, of the replica copy), creating
  // the shard (empty) and the set when missing.
  static UserIdSet& IdsOfShard(HostedDataset& dataset, int shard_id, bool replica)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dataset.mutex);

  using JobAssignments = std::map<int, std::shared_ptr<const ShardAssignments>>;

  mutable absl::Mutex mutex_;
  std::map<std::string, std::shared_ptr<HostedDataset>> datasets_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, JobAssignments> assignments_ ABSL_GUARDED_BY(mutex_);
  ScoreStore scores_;
};

}  // namespace cohort

#endif  // COHORT_WORKER_SHARD_STORE_H_
