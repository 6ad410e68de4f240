// Conversions between protobuf messages and core types, used by the worker and the
// coordinator at their edges. Nothing in core/ depends on this file.
#ifndef COHORT_PROTO_CONVERT_H_
#define COHORT_PROTO_CONVERT_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cohort/v1/cohort.pb.h"
#include "cohort/v1/worker.pb.h"
#include "core/cluster_metrics.h"
#include "core/csv.h"
#include "core/features.h"
#include "core/matrix.h"
#include "core/schema.h"
#include "core/transactions.h"

namespace cohort {

// Converts an absl status to a gRPC status with the same code (absl and gRPC status codes
// share their numbers). A message longer than 2000 bytes is cut there and ends with
// "... (message cut, N more bytes)", so it stays within gRPC's 8 KiB metadata limit.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

void ToProto(const MatrixXfR& matrix, v1::Matrix* proto);
// Errors: InvalidArgument when values.size() != rows × cols or a size is negative.
[[nodiscard]] absl::StatusOr<MatrixXfR> FromProto(const v1::Matrix& proto);

v1::ColumnType ToProto(ColumnType type);
// Errors: InvalidArgument for COLUMN_TYPE_UNSPECIFIED or an unknown value.
[[nodiscard]] absl::StatusOr<ColumnType> FromProto(v1::ColumnType type);

// UNSPECIFIED maps to kReject. Errors: InvalidArgument for an unknown value.
[[nodiscard]] absl::StatusOr<DuplicateIdRule> FromProto(v1::DuplicateIdRule rule);

void ToProto(const Schema& schema, v1::Schema* proto);
// Errors: InvalidArgument from the column types or from Schema::Validate().
[[nodiscard]] absl::StatusOr<Schema> FromProto(const v1::Schema& proto);

// Errors: InvalidArgument when the delimiter is not exactly one character.
[[nodiscard]] absl::StatusOr<CsvOptions> FromProto(const v1::CsvOptions& proto);
// Applies the defaults of TransactionOptions to empty fields.
[[nodiscard]] absl::StatusOr<TransactionOptions> FromProto(const v1::TransactionColumns& proto,
                                                           const v1::CsvOptions& csv);

void ToProto(const FeatureStats& stats, v1::FeatureStatsProto* proto);
FeatureStats FromProto(const v1::FeatureStatsProto& proto);

void ToProto(const FeatureTransform& transform, v1::FeatureTransform* proto);
FeatureTransform FromProto(const v1::FeatureTransform& proto);

void ToProto(const ClusterAggregates& aggregates, v1::ClusterAggregatesProto* proto);
// Errors: InvalidArgument when the array sizes do not match k and d.
[[nodiscard]] absl::StatusOr<ClusterAggregates> FromProto(const v1::ClusterAggregatesProto& proto);

void ToProto(const SpreadPartial& spread, v1::SpreadProto* proto);
SpreadPartial FromProto(const v1::SpreadProto& proto);

void ToProto(const MetricValue& metric, v1::MetricValue* proto);
void ToProto(const ClusterMetrics& metrics, v1::ClusterMetrics* proto);
ClusterMetrics FromProto(const v1::ClusterMetrics& proto);

}  // namespace cohort

#endif  // COHORT_PROTO_CONVERT_H_
