// Conversions between the profiling protobuf messages (profile.proto, worker_profile.proto)
// and core's pipeline, logistic-regression and metric types. The worker and the
// coordinator use them at their edges, and nothing in core/ depends on this file.
#ifndef COHORT_PROTO_PROFILE_CONVERT_H_
#define COHORT_PROTO_PROFILE_CONVERT_H_

#include "absl/status/statusor.h"
#include "cohort/v1/profile.pb.h"
#include "cohort/v1/worker_profile.pb.h"
#include "core/cleaning.h"
#include "core/logistic.h"
#include "core/pipeline.h"
#include "core/schema.h"

namespace cohort {

// The column pipelines of `proto` (0 and empty fields take the documented defaults).
// Errors: InvalidArgument naming the field (pipeline.columns[i].<field>) and value for an
// unknown rule, encoding or n-gram kind.
[[nodiscard]] absl::StatusOr<std::vector<ColumnPipeline>> FromProto(const v1::PipelineSpec& proto);
void ToProto(const std::vector<ColumnPipeline>& columns, v1::PipelineSpec* proto);

// The full pipeline spec of a profile job over `schema`: the declared columns, or the
// default pipeline when none is declared, and the label. Errors: InvalidArgument naming
// the options field (options.label_column, options.positive_label,
// options.pipeline.columns[i]...) and the value, including PipelineSpec::Validate's.
[[nodiscard]] absl::StatusOr<PipelineSpec> ProfilePipelineSpec(const v1::ProfileOptions& options,
                                                               const Schema& schema);

// Logistic options of a profile job (0 = default). Errors: InvalidArgument naming the
// options field and value.
[[nodiscard]] absl::StatusOr<LogisticOptions> ToLogisticOptions(const v1::ProfileOptions& options);

// Returns the test fraction of a profile job: 0 with no_test_split, and 0.2 for 0.
// Errors: InvalidArgument for a value outside (0, 0.9] or one set with no_test_split.
[[nodiscard]] absl::StatusOr<double> TestFraction(const v1::ProfileOptions& options);
// Returns the split seed, 42 for 0.
uint64_t ProfileSeed(const v1::ProfileOptions& options);

void ToProto(const CleaningReport& report, v1::CleaningReportProto* proto);
CleaningReport FromProto(const v1::CleaningReportProto& proto);

void ToProto(const PipelineFirstPassStats& stats, v1::PipelineFirstPassStatsProto* proto);
// Errors: InvalidArgument when a quantile sketch does not deserialize.
[[nodiscard]] absl::StatusOr<PipelineFirstPassStats> FromProto(
    const v1::PipelineFirstPassStatsProto& proto);

void ToProto(const PipelineSecondPassStats& stats, v1::PipelineSecondPassStatsProto* proto);
// Errors: InvalidArgument when the arrays differ in length.
[[nodiscard]] absl::StatusOr<PipelineSecondPassStats> FromProto(
    const v1::PipelineSecondPassStatsProto& proto);

// Computes the binary metrics of `scores` against `labels` (core/binary_metrics.h) at
// threshold 0.5 into `proto`. Errors: as ComputeBinaryMetrics.
[[nodiscard]] absl::Status ComputeBinaryMetricsProto(const std::vector<uint8_t>& labels,
                                                     const std::vector<double>& scores,
                                                     v1::BinaryMetrics* proto);

}  // namespace cohort

#endif  // COHORT_PROTO_PROFILE_CONVERT_H_
