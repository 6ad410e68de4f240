#include "proto/convert.h"

#include <cstddef>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace cohort {
namespace {

// Maximum length in bytes of the status message ToGrpcStatus sends. gRPC carries the
// message in the grpc-message trailer and percent-encodes every non-ASCII byte into 3
// bytes. A receiver rejects metadata above its 8 KiB default limit with RESOURCE_EXHAUSTED,
// which hides the real error and its code.
constexpr size_t kMaxGrpcStatusMessageBytes = 2000;

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  absl::string_view message = status.message();
  if (message.size() <= kMaxGrpcStatusMessageBytes) {
    return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(message));
  }
  // Cut at a UTF-8 character boundary: continuation bytes have the bit pattern 10xxxxxx.
  size_t kept_bytes = kMaxGrpcStatusMessageBytes;
  while (kept_bytes > 0 && (static_cast<unsigned char>(message[kept_bytes]) & 0xC0) == 0x80) {
    --kept_bytes;
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      absl::StrCat(message.substr(0, kept_bytes), "... (message cut, ",
                                   message.size() - kept_bytes, " more bytes)"));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

void ToProto(const MatrixXfR& matrix, v1::Matrix* proto) {
  proto->set_rows(static_cast<int32_t>(matrix.rows()));
  proto->set_cols(static_cast<int32_t>(matrix.cols()));
  proto->mutable_values()->Assign(matrix.data(), matrix.data() + matrix.size());
}

absl::StatusOr<MatrixXfR> FromProto(const v1::Matrix& proto) {
  if (proto.rows() < 0 || proto.cols() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("matrix has negative size ", proto.rows(), "x", proto.cols()));
  }
  const int64_t expected = int64_t{proto.rows()} * proto.cols();
  if (proto.values_size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("matrix ", proto.rows(), "x", proto.cols(),
                                                   " needs ", expected, " values, got ",
                                                   proto.values_size()));
  }
  MatrixXfR matrix(proto.rows(), proto.cols());
  std::copy(proto.values().begin(), proto.values().end(), matrix.data());
  return matrix;
}

v1::ColumnType ToProto(ColumnType type) {
  switch (type) {
    case ColumnType::kId:
      return v1::COLUMN_TYPE_ID;
    case ColumnType::kNumeric:
      return v1::COLUMN_TYPE_NUMERIC;
    case ColumnType::kCategorical:
      return v1::COLUMN_TYPE_CATEGORICAL;
    case ColumnType::kIgnore:
      return v1::COLUMN_TYPE_IGNORE;
    case ColumnType::kWeight:
      return v1::COLUMN_TYPE_WEIGHT;
    case ColumnType::kBoolean:
      return v1::COLUMN_TYPE_BOOLEAN;
    case ColumnType::kText:
      return v1::COLUMN_TYPE_TEXT;
    case ColumnType::kEmbedding:
      return v1::COLUMN_TYPE_EMBEDDING;
    case ColumnType::kLabel:
      return v1::COLUMN_TYPE_LABEL;
  }
  return v1::COLUMN_TYPE_UNSPECIFIED;
}

absl::StatusOr<ColumnType> FromProto(v1::ColumnType type) {
  switch (type) {
    case v1::COLUMN_TYPE_ID:
      return ColumnType::kId;
    case v1::COLUMN_TYPE_NUMERIC:
      return ColumnType::kNumeric;
    case v1::COLUMN_TYPE_CATEGORICAL:
      return ColumnType::kCategorical;
    case v1::COLUMN_TYPE_IGNORE:
      return ColumnType::kIgnore;
    case v1::COLUMN_TYPE_WEIGHT:
      return ColumnType::kWeight;
    case v1::COLUMN_TYPE_BOOLEAN:
      return ColumnType::kBoolean;
    case v1::COLUMN_TYPE_TEXT:
      return ColumnType::kText;
    case v1::COLUMN_TYPE_EMBEDDING:
      return ColumnType::kEmbedding;
    case v1::COLUMN_TYPE_LABEL:
      return ColumnType::kLabel;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "column type ", static_cast<int>(type),
          " is invalid; use COLUMN_TYPE_ID, _NUMERIC, _CATEGORICAL, _IGNORE, _WEIGHT, _BOOLEAN, "
          "_TEXT, _EMBEDDING or _LABEL"));
  }
}

absl::StatusOr<DuplicateIdRule> FromProto(v1::DuplicateIdRule rule) {
  switch (rule) {
    case v1::DUPLICATE_ID_RULE_UNSPECIFIED:
    case v1::DUPLICATE_ID_RULE_REJECT:
      return DuplicateIdRule::kReject;
    case v1::DUPLICATE_ID_RULE_KEEP_FIRST:
      return DuplicateIdRule::kKeepFirst;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("duplicate_ids is ", static_cast<int>(rule),
                       "; use DUPLICATE_ID_RULE_REJECT or DUPLICATE_ID_RULE_KEEP_FIRST"));
  }
}

void ToProto(const Schema& schema, v1::Schema* proto) {
  proto->clear_columns();
  for (const ColumnSpec& column : schema.columns) {
    v1::Column* out = proto->add_columns();
    out->set_name(column.name);
    out->set_type(ToProto(column.type));
    out->set_embedding_dim(column.embedding_dim);
  }
}

absl::StatusOr<Schema> FromProto(const v1::Schema& proto) {
  Schema schema;
  for (const v1::Column& column : proto.columns()) {
    absl::StatusOr<ColumnType> type = FromProto(column.type());
    if (!type.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("schema column '", column.name(), "': ", type.status().message()));
    }
    schema.columns.push_back(ColumnSpec{column.name(), *type, column.embedding_dim()});
  }
  absl::Status valid = schema.Validate();
  if (!valid.ok()) return valid;
  return schema;
}

absl::StatusOr<CsvOptions> FromProto(const v1::CsvOptions& proto) {
  CsvOptions options;
  if (!proto.delimiter().empty()) {
    if (proto.delimiter().size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "csv.delimiter '", proto.delimiter(), "' is invalid; use a single character"));
    }
    options.delimiter = proto.delimiter()[0];
  }
  options.has_header = !proto.no_header();
  absl::Status valid = options.Validate();
  if (!valid.ok()) return valid;
  return options;
}

absl::StatusOr<TransactionOptions> FromProto(const v1::TransactionColumns& proto,
                                             const v1::CsvOptions& csv) {
  TransactionOptions options;
  auto set_if = [](const std::string& value, std::string* field) {
    if (!value.empty()) *field = value;
  };
  set_if(proto.user(), &options.user_column);
  set_if(proto.invoice(), &options.invoice_column);
  set_if(proto.item(), &options.item_column);
  set_if(proto.quantity(), &options.quantity_column);
  set_if(proto.price(), &options.price_column);
  set_if(proto.time(), &options.time_column);
  set_if(proto.cancel_prefix(), &options.cancel_prefix);
  if (proto.keep_cancelled()) options.cancel_prefix.clear();
  absl::StatusOr<CsvOptions> csv_options = FromProto(csv);
  if (!csv_options.ok()) return csv_options.status();
  options.csv = *csv_options;
  absl::Status valid = options.Validate();
  if (!valid.ok()) return valid;
  return options;
}

void ToProto(const FeatureStats& stats, v1::FeatureStatsProto* proto) {
  proto->set_rows(stats.rows);
  for (const NumericStats& numeric : stats.numeric) {
    v1::NumericColumnStats* out = proto->add_numeric();
    out->set_count(numeric.count);
    out->set_missing(numeric.missing);
    out->set_sum(numeric.sum);
    out->set_sum_sq(numeric.sum_sq);
    out->set_min(numeric.min);
    out->set_max(numeric.max);
  }
  for (const CategoricalStats& categorical : stats.categorical) {
    auto* counts = proto->add_categorical()->mutable_counts();
    for (const auto& [value, count] : categorical.counts) (*counts)[value] = count;
  }
}

FeatureStats FromProto(const v1::FeatureStatsProto& proto) {
  FeatureStats stats;
  stats.rows = proto.rows();
  for (const v1::NumericColumnStats& numeric : proto.numeric()) {
    stats.numeric.push_back(NumericStats{numeric.count(), numeric.missing(), numeric.sum(),
                                         numeric.sum_sq(), numeric.min(), numeric.max()});
  }
  for (const v1::CategoricalColumnStats& categorical : proto.categorical()) {
    CategoricalStats out;
    for (const auto& [value, count] : categorical.counts()) out.counts[value] = count;
    stats.categorical.push_back(std::move(out));
  }
  return stats;
}

void ToProto(const FeatureTransform& transform, v1::FeatureTransform* proto) {
  for (const NumericTransform& numeric : transform.numeric) {
    v1::NumericFeature* out = proto->add_numeric();
    out->set_name(numeric.name);
    out->set_mean(numeric.mean);
    out->set_scale(numeric.scale);
    out->set_log1p(numeric.log1p);
  }
  for (const CategoricalTransform& categorical : transform.categorical) {
    v1::CategoricalFeature* out = proto->add_categorical();
    out->set_name(categorical.name);
    for (const std::string& value : categorical.values) out->add_values(value);
    out->set_has_other(categorical.has_other);
  }
}

FeatureTransform FromProto(const v1::FeatureTransform& proto) {
  FeatureTransform transform;
  for (const v1::NumericFeature& numeric : proto.numeric()) {
    transform.numeric.push_back(
        NumericTransform{numeric.name(), numeric.log1p(), numeric.mean(), numeric.scale()});
  }
  for (const v1::CategoricalFeature& categorical : proto.categorical()) {
    CategoricalTransform out;
    out.name = categorical.name();
    out.values.assign(categorical.values().begin(), categorical.values().end());
    out.has_other = categorical.has_other();
    transform.categorical.push_back(std::move(out));
  }
  return transform;
}

void ToProto(const ClusterAggregates& aggregates, v1::ClusterAggregatesProto* proto) {
  proto->set_k(aggregates.k);
  proto->set_d(aggregates.d);
  proto->mutable_counts()->Assign(aggregates.counts.begin(), aggregates.counts.end());
  proto->mutable_sums()->Assign(aggregates.sums.data(),
                                aggregates.sums.data() + aggregates.sums.size());
  proto->mutable_sq_norm_sums()->Assign(aggregates.sq_norm_sums.begin(),
                                        aggregates.sq_norm_sums.end());
  proto->mutable_sq_deviation_sums()->Assign(aggregates.sq_deviation_sums.begin(),
                                             aggregates.sq_deviation_sums.end());
  proto->mutable_weight_sums()->Assign(aggregates.weight_sums.begin(),
                                       aggregates.weight_sums.end());
}

absl::StatusOr<ClusterAggregates> FromProto(const v1::ClusterAggregatesProto& proto) {
  const int64_t k = proto.k();
  const int64_t d = proto.d();
  if (k < 0 || d < 0 || proto.counts_size() != k || proto.sums_size() != k * d ||
      proto.sq_norm_sums_size() != k || proto.sq_deviation_sums_size() != k ||
      (proto.weight_sums_size() != 0 && proto.weight_sums_size() != k)) {
    return absl::InvalidArgumentError(absl::StrCat("cluster aggregates of k = ", k, ", d = ", d,
                                                   " have arrays of the wrong size"));
  }
  ClusterAggregates aggregates;
  aggregates.k = static_cast<int>(k);
  aggregates.d = static_cast<int>(d);
  aggregates.counts.assign(proto.counts().begin(), proto.counts().end());
  aggregates.sums.resize(k, d);
  std::copy(proto.sums().begin(), proto.sums().end(), aggregates.sums.data());
  aggregates.sq_norm_sums.assign(proto.sq_norm_sums().begin(), proto.sq_norm_sums().end());
  aggregates.sq_deviation_sums.assign(proto.sq_deviation_sums().begin(),
                                      proto.sq_deviation_sums().end());
  aggregates.weight_sums.assign(proto.weight_sums().begin(), proto.weight_sums().end());
  return aggregates;
}

void ToProto(const SpreadPartial& spread, v1::SpreadProto* proto) {
  proto->mutable_distance_sums()->Assign(spread.distance_sums.begin(),
                                         spread.distance_sums.end());
  proto->set_silhouette_sum(spread.silhouette_sum);
  proto->set_rows(spread.rows);
}

SpreadPartial FromProto(const v1::SpreadProto& proto) {
  SpreadPartial spread;
  spread.distance_sums.assign(proto.distance_sums().begin(), proto.distance_sums().end());
  spread.silhouette_sum = proto.silhouette_sum();
  spread.rows = proto.rows();
  return spread;
}

void ToProto(const MetricValue& metric, v1::MetricValue* proto) {
  proto->set_defined(metric.value.has_value());
  if (metric.value.has_value()) {
    proto->set_value(*metric.value);
  } else {
    proto->set_undefined_reason(metric.undefined_reason);
  }
}

void ToProto(const ClusterMetrics& metrics, v1::ClusterMetrics* proto) {
  proto->set_num_users(metrics.n);
  proto->set_num_segments(metrics.k);
  proto->set_inertia(metrics.inertia);
  ToProto(metrics.calinski_harabasz, proto->mutable_calinski_harabasz());
  ToProto(metrics.davies_bouldin, proto->mutable_davies_bouldin());
  ToProto(metrics.silhouette, proto->mutable_silhouette());
}

namespace {
MetricValue FromProto(const v1::MetricValue& proto) {
  MetricValue metric;
  if (proto.defined()) {
    metric.value = proto.value();
  } else {
    metric.undefined_reason = proto.undefined_reason();
  }
  return metric;
}
}  // namespace

ClusterMetrics FromProto(const v1::ClusterMetrics& proto) {
  ClusterMetrics metrics;
  metrics.n = proto.num_users();
  metrics.k = proto.num_segments();
  metrics.inertia = proto.inertia();
  metrics.calinski_harabasz = FromProto(proto.calinski_harabasz());
  metrics.davies_bouldin = FromProto(proto.davies_bouldin());
  metrics.silhouette = FromProto(proto.silhouette());
  return metrics;
}

}  // namespace cohort
