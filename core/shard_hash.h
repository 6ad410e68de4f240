// The user → virtual shard mapping. It must be identical on every machine and every
// version, so it uses XXH64 (seed 0) of the id's bytes, never std::hash or absl::Hash.
#ifndef COHORT_CORE_SHARD_HASH_H_
#define COHORT_CORE_SHARD_HASH_H_

#include <cstdint>
#include <string_view>

namespace cohort {

// Returns XXH64 of the bytes of `user_id` with seed 0.
uint64_t HashUserId(std::string_view user_id);

// Returns the virtual shard of `user_id`: HashUserId(user_id) mod num_shards.
// REQUIRES: num_shards >= 1.
int ShardOfUser(std::string_view user_id, int num_shards);

}  // namespace cohort

#endif  // COHORT_CORE_SHARD_HASH_H_
