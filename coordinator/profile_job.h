// The driver of one profile job: the feature pipeline fitted over the workers' shards,
// logistic regression trained by L-BFGS over the workers' summed loss and gradient,
// metrics on the test split, and every user's score stored on the workers. Internal to
// coordinator/.
#ifndef COHORT_COORDINATOR_PROFILE_JOB_H_
#define COHORT_COORDINATOR_PROFILE_JOB_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cohort/v1/cohort.pb.h"
#include "cohort/v1/profile.pb.h"
#include "coordinator/job_streams.h"
#include "core/schema.h"

namespace cohort {

// Checks a StartProfileJob request's options against the dataset's schema. Errors:
// InvalidArgument naming the field (options.label_column, options.c, ...) and the value.
[[nodiscard]] absl::Status ValidateProfileOptions(const v1::ProfileOptions& options,
                                                  const Schema& schema);

struct ProfileJobInput {
  std::string job_id;
  std::string dataset_id;
  Schema schema;
  // Users the dataset holds; a job whose shards hold another number fails.
  int64_t expected_users = 0;
  v1::ProfileOptions options;
  // Called on the job thread for every progress event.
  std::function<void(const v1::JobEvent&)> on_event;
};

// Runs the job over `streams` and returns the finished model (model_id = job_id). The
// workers keep every user's score under the job id. Errors: InvalidArgument for options
// that do not suit the data, and FailedPrecondition from the data (a label value
// missing, a training split with one class or no user, a numeric column with no value).
// Unavailable when a worker is lost, and Cancelled when the streams were cancelled.
[[nodiscard]] absl::StatusOr<v1::ProfileModel> RunProfileJob(const ProfileJobInput& input,
                                                             JobStreams* streams);

// The decile (1..10) of `score` given the 9 ascending decile bounds of a model: the
// number of bounds <= score, plus 1.
int ScoreDecile(const v1::ProfileModel& model, double score);

// The `count` largest |weight × value| contributions of `features` (one value per
// feature of the model), largest first, ties by feature name.
std::vector<v1::FeatureContribution> TopContributions(const v1::ProfileModel& model,
                                                      const std::vector<float>& features,
                                                      int count);

}  // namespace cohort

#endif  // COHORT_COORDINATOR_PROFILE_JOB_H_
