// Moving the shards of lost workers during a job: rendezvous placement over the live
// workers and an additive load from the dataset's source files. Internal to coordinator/.
#ifndef COHORT_COORDINATOR_SHARD_MOVES_H_
#define COHORT_COORDINATOR_SHARD_MOVES_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cohort/v1/cohort.pb.h"
#include "coordinator/job_streams.h"
#include "coordinator/worker_registry.h"

namespace cohort {

// The load request of a dataset and its rows per shard at load time, which moving its
// shards needs.
struct ShardSource {
  v1::Dataset info;
  // The request that loaded the dataset; its source is empty for streamed rows.
  v1::LoadDatasetRequest load;
  std::vector<int64_t> shard_rows;  // by shard id; empty when unknown
};

// Places `shards` on the workers of `live` that are not in `lost` by rendezvous hashing
// (PlaceShards over their ids) and has each load its new shards from the source files,
// next to the shards it holds. Returns the new hosts with their shards (ascending).
// Errors: FailedPrecondition when the dataset was filled by streamed rows (they move by
// PromoteReplicas); Unavailable when no live worker is left, or when a load call fails. FailedPrecondition
// when a reloaded shard has another row count than at load time (the source changed).
[[nodiscard]] absl::StatusOr<std::vector<JobStreams::Member>> MoveShards(
    const ShardSource& source, const std::vector<WorkerHandle>& live,
    const std::vector<std::string>& lost, const std::vector<int>& shards,
    absl::Duration call_timeout);

}  // namespace cohort

#endif  // COHORT_COORDINATOR_SHARD_MOVES_H_
