// Per-user propensity scores of finished profile jobs, kept on the worker for audience
// selection and profile lookups. Internal to worker/.
#ifndef COHORT_WORKER_SCORE_STORE_H_
#define COHORT_WORKER_SCORE_STORE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace cohort {

// The scores of one shard's users, in the shard's row order.
struct ShardScores {
  std::vector<std::string> user_ids;
  std::vector<double> scores;  // in [0, 1]
};

// Thread safety: all methods may be called concurrently.
class ScoreStore {
 public:
  // Replaces the scores of (job_id, shard_id).
  void Store(const std::string& job_id, int shard_id, ShardScores scores)
      ABSL_LOCKS_EXCLUDED(mutex_);

  // Errors: NotFound naming the job and shard when nothing is stored for them.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<const ShardScores>> Find(
      const std::string& job_id, int shard_id) const ABSL_LOCKS_EXCLUDED(mutex_);

  void Drop(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mutex_);

 private:
  mutable absl::Mutex mutex_;
  std::map<std::string, std::map<int, std::shared_ptr<const ShardScores>>> scores_
      ABSL_GUARDED_BY(mutex_);
};

}  // namespace cohort

#endif  // COHORT_WORKER_SCORE_STORE_H_
