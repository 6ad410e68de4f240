#include "worker/score_store.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace cohort {

void ScoreStore::Store(const std::string& job_id, int shard_id, ShardScores scores) {
  auto stored = std::make_shared<const ShardScores>(std::move(scores));
  absl::MutexLock lock(&mutex_);
  scores_[job_id][shard_id] = std::move(stored);
}

absl::StatusOr<std::shared_ptr<const ShardScores>> ScoreStore::Find(const std::string& job_id,
                                                                   int shard_id) const {
  absl::MutexLock lock(&mutex_);
  auto job = scores_.find(job_id);
  if (job == scores_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "profile job '", job_id,
        "' has no stored scores on this worker; the worker may have restarted, so rerun the job"));
  }
  auto shard = job->second.find(shard_id);
  if (shard == job->second.end()) {
    return absl::NotFoundError(absl::StrCat("profile job '", job_id,
                                            "' has no stored scores for shard ", shard_id,
                                            " on this worker"));
  }
  return shard->second;
}

void ScoreStore::Drop(const std::string& job_id) {
  absl::MutexLock lock(&mutex_);
  scores_.erase(job_id);
}

}  // namespace cohort
