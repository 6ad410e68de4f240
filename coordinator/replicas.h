// Replicas of streamed datasets: every shard of a dataset filled by IngestUsers or
// IngestInteractions has a primary worker, which jobs compute on, and a replica worker,
// which stores a copy that jobs never read. When the primary is lost, the replica is
// promoted and a new replica is copied from it. Internal to coordinator/.
//
// NOTE: a worker that restarts under the same id registers as live with empty memory,
// but the coordinator still counts the replica copies it had. Promoting one of them
// then fails with Unavailable. A worker that comes back after a job declared it lost
// keeps its old copies in memory, unused, until it restarts.
#ifndef COHORT_COORDINATOR_REPLICAS_H_
#define COHORT_COORDINATOR_REPLICAS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cohort/v1/cohort.pb.h"
#include "coordinator/job_streams.h"
#include "coordinator/worker_registry.h"

namespace cohort {

// The workers that store each shard of a streamed dataset, by shard id.
struct StreamedPlacement {
  std::vector<std::string> owners;    // the primary worker, which jobs compute on
  std::vector<std::string> replicas;  // the replica worker; empty when the shard has none
};

// Promotes the replicas of `shards`, whose owners are lost, and then gives every shard
// of the dataset without a live replica a new one (see RestoreReplicas). `placement` is
// updated to match what the workers hold. Returns the new owners with their promoted
// shards (ascending). Errors: Unavailable when a shard's replica holder is lost too or
// not live (naming both workers), or when a promotion or copy call fails.
[[nodiscard]] absl::StatusOr<std::vector<JobStreams::Member>> PromoteReplicas(
    const v1::Dataset& info, const std::vector<WorkerHandle>& live,
    const std::vector<std::string>& lost, const std::vector<int>& shards,
    StreamedPlacement* placement, absl::Duration call_timeout);

// Gives every shard whose replica is missing or not live a new replica on the
// highest-ranked live worker other than its owner (PlaceReplicas), copying the owner's
// rows there. Shards whose owner is not live keep their replica entry; shards with no
// other live worker are left without a replica. `placement` is updated for the shards
// copied or left without a replica. Errors:
// Unavailable when a read or copy call fails; the shards copied before stay recorded.
[[nodiscard]] absl::Status RestoreReplicas(const v1::Dataset& info,
                                           const std::vector<WorkerHandle>& live,
                                           StreamedPlacement* placement,
                                           absl::Duration call_timeout);

}  // namespace cohort

#endif  // COHORT_COORDINATOR_REPLICAS_H_
