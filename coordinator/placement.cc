#include "coordinator/placement.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "core/shard_hash.h"

namespace cohort {

std::vector<int> PlaceShards(int num_shards, const std::vector<std::string>& worker_ids) {
  std::vector<int> owners(num_shards, 0);
  for (int shard = 0; shard < num_shards; ++shard) {
    uint64_t best_weight = 0;
    for (int w = 0; w < static_cast<int>(worker_ids.size()); ++w) {
      const uint64_t weight = HashUserId(absl::StrCat(worker_ids[w], "/", shard));
      // Ties (practically impossible) go to the smaller id so the result never depends
      // on list order.
      if (w == 0 || weight > best_weight ||
          (weight == best_weight && worker_ids[w] < worker_ids[owners[shard]])) {
        best_weight = weight;
        owners[shard] = w;
      }
    }
  }
  return owners;
}

}  // namespace cohort
