#include "core/shard_hash.h"

#include <xxhash.h>

namespace cohort {

uint64_t HashUserId(std::string_view user_id) {
  return XXH64(user_id.data(), user_id.size(), /*seed=*/0);
}

int ShardOfUser(std::string_view user_id, int num_shards) {
  return static_cast<int>(HashUserId(user_id) % static_cast<uint64_t>(num_shards));
}

}  // namespace cohort
