// The datasets and finished-job assignments one worker holds. Internal to worker/.
#ifndef COHORT_WORKER_SHARD_STORE_H_
#define COHORT_WORKER_SHARD_STORE_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/sync_stream.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
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

// The labels of a finished job on one shard, kept for export.
//
// The user ids are not copied when the job stores its labels. Row i's id is row i of the
// hosted shard the job read: appended rows go after the job's rows, so those stay in
// place. Before the store replaces or empties that shard (a reload, a reset of streamed
// rows, a promoted replica) it calls DetachFrom, which copies the job's ids here. So the
// labels cost 8 bytes per user instead of 8 plus a copy of the id.
//
// Thread safety: all methods may be called concurrently. Lock order: a dataset's mutex,
// the store's mutex, then ids_mutex_, which is held only while ids are read or copied.
class ShardAssignments {
 public:
  // `source` contains the shard `shard_id` whose first segments.size() rows the job
  // labelled. With a null source there are no ids, so the assignments must be empty.
  // REQUIRES: segments.size() == squared_distances.size().
  ShardAssignments(std::shared_ptr<HostedDataset> source, int shard_id,
                   std::vector<int32_t> segments, std::vector<float> squared_distances);

  int64_t size() const { return static_cast<int64_t>(segments_.size()); }
  const std::vector<int32_t>& segments() const { return segments_; }
  const std::vector<float>& squared_distances() const { return squared_distances_; }

  // Calls fn(row, id) for each row in [begin, end), in order, while the ids cannot
  // change. fn must take no lock of the store or of a dataset.
  // REQUIRES: 0 <= begin <= end <= size(); the caller holds no dataset lock.
  // Errors: Internal when the hosted shard lost rows that were not copied first.
  [[nodiscard]] absl::Status ReadIds(
      int64_t begin, int64_t end,
      absl::FunctionRef<void(int64_t row, std::string_view id)> fn) const
      ABSL_LOCKS_EXCLUDED(ids_mutex_);

  // Copies the ids of the labelled rows when they are read from shard `shard_id` of
  // `dataset`, and from then on reads the copy. Does nothing otherwise.
  // REQUIRES: the caller holds dataset.mutex, in either mode.
  void DetachFrom(const HostedDataset& dataset, int shard_id) const
      ABSL_LOCKS_EXCLUDED(ids_mutex_);
  // Copies the ids from wherever they are read now.
  // REQUIRES: the caller holds the mutex of the dataset they are read from, in either mode.
  void DetachFromAll() const ABSL_LOCKS_EXCLUDED(ids_mutex_);
  // Whether the ids are read from a shard of `dataset`.
  bool ReadsFrom(const HostedDataset* dataset) const ABSL_LOCKS_EXCLUDED(ids_mutex_);

  // Whether the ids are still read from a hosted shard rather than from a copy.
  bool reads_hosted_ids() const ABSL_LOCKS_EXCLUDED(ids_mutex_);

 private:
  void CopyIdsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(ids_mutex_);
  absl::Status ReadOwnIdsLocked(int64_t begin, int64_t end,
                                absl::FunctionRef<void(int64_t, std::string_view)> fn) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(ids_mutex_);

  const int shard_id_;
  const std::vector<int32_t> segments_;
  const std::vector<float> squared_distances_;
  mutable absl::Mutex ids_mutex_;
  // Null once the ids are copied into own_ids_ (or when there are none).
  mutable std::shared_ptr<HostedDataset> source_ ABSL_GUARDED_BY(ids_mutex_);
  mutable IdColumn own_ids_ ABSL_GUARDED_BY(ids_mutex_);
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

  // Keeps a job's labels of one shard and returns them. When the dataset they read was
  // replaced meanwhile, their ids are copied at once.
  // REQUIRES: the caller holds the mutex of the assignments' dataset, in either mode.
  std::shared_ptr<const ShardAssignments> StoreAssignments(
      const std::string& job_id, int shard_id, std::unique_ptr<ShardAssignments> assignments)
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

  // Makes every stored assignment that reads ids from shard `shard_id` of `dataset`
  // (every shard, for -1) copy them, before that shard is replaced or emptied.
  void DetachAssignments(const HostedDataset& dataset, int shard_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dataset.mutex) ABSL_LOCKS_EXCLUDED(mutex_);

  using JobAssignments = std::map<int, std::shared_ptr<const ShardAssignments>>;

  mutable absl::Mutex mutex_;
  std::map<std::string, std::shared_ptr<HostedDataset>> datasets_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, JobAssignments> assignments_ ABSL_GUARDED_BY(mutex_);
  ScoreStore scores_;
};

}  // namespace cohort

#endif  // COHORT_WORKER_SHARD_STORE_H_
