// The interaction datasets one worker stores: per hosted shard, the users' interactions as
// CSR over a shard-local item dictionary. Jobs map the local item indices to the global
// dictionary (see NeighbourSession). Internal to worker/.
#ifndef COHORT_WORKER_INTERACTION_STORE_H_
#define COHORT_WORKER_INTERACTION_STORE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cohort/v1/worker.pb.h"
#include "core/interactions.h"

namespace cohort {

// One shard's interactions. Immutable once stored: an append replaces the whole value,
// so a job that keeps a reference reads a consistent snapshot.
struct ShardInteractions {
  ItemDictionary items;       // the shard's distinct item ids, sorted
  InteractionMatrix matrix;   // columns are indices into `items`
};

struct HostedInteractions {
  int num_shards = 0;
  DuplicateRule rule = DuplicateRule::kKeepLatest;

  mutable absl::Mutex mutex;
  std::map<int, std::shared_ptr<const ShardInteractions>> shards ABSL_GUARDED_BY(mutex);
  // Replica copies of streamed shards that another worker hosts. Jobs never read them;
  // PromoteReplicas moves them into `shards` when their host is lost.
  std::map<int, std::shared_ptr<const ShardInteractions>> replicas ABSL_GUARDED_BY(mutex);
};

// Thread safety: all methods may be called concurrently.
class InteractionStore {
 public:
  // Loads the request's shards (kind INTERACTIONS) from its files, replacing what was
  // held for the dataset. Errors: InvalidArgument for bad columns or a malformed file
  // (file, line, column and value named); NotFound when no file matches.
  [[nodiscard]] absl::Status Load(const v1::LoadShardsRequest& request,
                                  v1::LoadShardsResponse* response) ABSL_LOCKS_EXCLUDED(mutex_);

  // Adds streamed interactions to their shards, applying the dataset's duplicate rule
  // across old and new entries. Each touched shard's CSR is rebuilt, so an append costs
  // time linear in the size of the shards it touches. Errors: InvalidArgument naming the
  // interaction (its position in the request) for an empty id or a non-finite value, or
  // for times on some entries of a shard only; nothing of the request is stored then.
  // With request.replica the interactions go to the replica copies of their shards, and
  // the copies named in reset_shards are emptied first.
  [[nodiscard]] absl::Status Append(const v1::AppendInteractionsRequest& request,
                                    v1::AppendInteractionsResponse* response)
      ABSL_LOCKS_EXCLUDED(mutex_);

  // Moves the replica copies of request.shards into the hosted shards. Errors: NotFound
  // for an unknown dataset; FailedPrecondition naming a shard without a replica copy,
  // and then nothing is promoted.
  [[nodiscard]] absl::Status PromoteReplicas(const v1::PromoteReplicasRequest& request,
                                             v1::PromoteReplicasResponse* response)
      ABSL_LOCKS_EXCLUDED(mutex_);

  // The hosted entries of `shard_id` as interactions, users in CSR order, which
  // Append rebuilds into the same shard. Empty for a shard without entries.
  // Errors: NotFound for an unknown dataset.
  [[nodiscard]] absl::StatusOr<std::vector<v1::Interaction>> ShardInteractionRows(
      const std::string& dataset_id, int shard_id) const ABSL_LOCKS_EXCLUDED(mutex_);

  // Errors: NotFound when this worker has no shard of the dataset.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<HostedInteractions>> Dataset(
      const std::string& dataset_id) const ABSL_LOCKS_EXCLUDED(mutex_);

  bool Holds(const std::string& dataset_id) const ABSL_LOCKS_EXCLUDED(mutex_);
  int HostedShardCount() const ABSL_LOCKS_EXCLUDED(mutex_);

 private:
  mutable absl::Mutex mutex_;
  std::map<std::string, std::shared_ptr<HostedInteractions>> datasets_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace cohort

#endif  // COHORT_WORKER_INTERACTION_STORE_H_
