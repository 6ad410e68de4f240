// The driver of one segmentation job: features, K-means over the workers, final
// assignments and the readable model. Internal to coordinator/.
#ifndef COHORT_COORDINATOR_SEGMENTATION_JOB_H_
#define COHORT_COORDINATOR_SEGMENTATION_JOB_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cohort/v1/cohort.pb.h"
#include "coordinator/job_streams.h"
#include "core/bisecting.h"
#include "core/features.h"
#include "core/kmeans.h"
#include "core/schema.h"

namespace cohort {

// Bisecting options from API options (k and the 2-means options from `kmeans`).
// Errors: InvalidArgument naming the field, the value and the accepted values.
[[nodiscard]] absl::StatusOr<BisectingOptions> ToBisectingOptions(
    const v1::SegmentationOptions& options, const KMeansOptions& kmeans);

// Converts API options (0 or unset = default) to validated core options.
// Errors: InvalidArgument naming the field, the value and the accepted range.
[[nodiscard]] absl::StatusOr<KMeansOptions> ToKMeansOptions(const v1::SegmentationOptions& options);
// The feature options of a job: max_categories and the log1p columns, which default
// to every RFM column for TRANSACTIONS datasets.
FeatureOptions ToFeatureOptions(const v1::SegmentationOptions& options, v1::DatasetKind kind);

struct SegmentationJobInput {
  std::string job_id;
  std::string dataset_id;
  v1::DatasetKind kind = v1::DATASET_KIND_USERS;
  Schema schema;
  // Users the dataset holds; a job whose shards hold another number fails rather than
  // segment part of the data.
  int64_t expected_users = 0;
  v1::SegmentationOptions options;
  // Called on the job thread for every progress event.
  std::function<void(const v1::JobEvent&)> on_event;
};

// Runs the job over `streams` and returns the finished model (model_id = job_id).
// Errors: InvalidArgument or FailedPrecondition from the data (e.g. a numeric column
// with no value); Unavailable when a worker is lost; Cancelled when the streams were
// cancelled.
[[nodiscard]] absl::StatusOr<v1::SegmentModel> RunSegmentationJob(const SegmentationJobInput& input,
                                                                  JobStreams* streams);

// Runs one K-means per k over the same features and returns the metrics per k and the
// suggested k. Errors: as RunSegmentationJob; InvalidArgument for a k above the number
// of users.
[[nodiscard]] absl::StatusOr<v1::Sweep> RunSweepJob(const SegmentationJobInput& input,
                                                    const std::vector<int>& ks,
                                                    JobStreams* streams);

}  // namespace cohort

#endif  // COHORT_COORDINATOR_SEGMENTATION_JOB_H_
