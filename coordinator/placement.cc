#include "coordinator/placement.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "core/shard_hash.h"

namespace cohort {

namespace {

// The index of the highest-weight worker for `shard` among `worker_ids`, skipping the
// worker named `excluded`; -1 when none is left.
int BestWorker(int shard, const std::vector<std::string>& worker_ids,
               const std::string* excluded) {
  int best = -1;
  uint64_t best_weight = 0;
  for (int w = 0; w < static_cast<int>(worker_ids.size()); ++w) {
    if (excluded != nullptr && worker_ids[w] == *excluded) continue;
    const uint64_t weight = HashUserId(absl::StrCat(worker_ids[w], "/", shard));
    // Ties (practically impossible) go to the smaller id so the result never depends
    // on list order.
    if (best < 0 || weight > best_weight ||
        (weight == best_weight && worker_ids[w] < worker_ids[best])) {
      best_weight = weight;
      best = w;
    }
  }
  return best;
}

}  // namespace

std::vector<int> PlaceShards(int num_shards, const std::vector<std::string>& worker_ids) {
  std::vector<int> owners(num_shards, 0);
  for (int shard = 0; shard < num_shards; ++shard) {
    owners[shard] = BestWorker(shard, worker_ids, nullptr);
  }
  return owners;
}

std::vector<int> PlaceReplicas(int num_shards, const std::vector<std::string>& worker_ids,
                               const std::vector<std::string>& owners) {
  std::vector<int> replicas(num_shards, -1);
  for (int shard = 0; shard < num_shards; ++shard) {
    replicas[shard] = BestWorker(shard, worker_ids, &owners[shard]);
  }
  return replicas;
}

}  // namespace cohort
