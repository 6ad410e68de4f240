// Shard → worker placement by rendezvous (highest random weight) hashing: each shard
// goes to the worker with the largest XXH64("<worker id>/<shard>"), so adding or
// removing a worker moves only the shards it gains or loses.
#ifndef COHORT_COORDINATOR_PLACEMENT_H_
#define COHORT_COORDINATOR_PLACEMENT_H_

#include <string>
#include <vector>

namespace cohort {

// Returns the owner's index in `worker_ids` for each shard in [0, num_shards).
// REQUIRES: worker_ids is not empty.
std::vector<int> PlaceShards(int num_shards, const std::vector<std::string>& worker_ids);

// Returns, for each shard in [0, num_shards), the index in `worker_ids` of its replica
// worker: the highest-weight worker of the same ranking other than
// `owners[shard]` (a worker id). For owners placed by PlaceShards over the same ids this
// is the second choice. -1 when no other worker exists.
// REQUIRES: owners.size() == num_shards.
std::vector<int> PlaceReplicas(int num_shards, const std::vector<std::string>& worker_ids,
                               const std::vector<std::string>& owners);

}  // namespace cohort

#endif  // COHORT_COORDINATOR_PLACEMENT_H_
