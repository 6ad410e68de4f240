#include "proto/profile_convert.h"

#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/binary_metrics.h"
#include "core/default_pipeline.h"

namespace cohort {
namespace {

constexpr int kDefaultTopN = 16;
constexpr double kDefaultTestFraction = 0.2;
constexpr double kMaxTestFraction = 0.9;
constexpr uint64_t kDefaultSeed = 42;
constexpr int kDefaultMaxIter = 100;
constexpr double kDefaultTolerance = 1e-4;
constexpr double kMaxC = 1e12;

absl::Status InvalidField(int index, const char* field, const std::string& value,
                          const char* accepted) {
  return absl::InvalidArgumentError(absl::StrCat("options.pipeline.columns[", index, "].", field,
                                                 " '", value, "' is invalid; use ", accepted));
}

const char* ImputeName(ImputeRule rule) {
  switch (rule) {
    case ImputeRule::kNone:
      return "";
    case ImputeRule::kMean:
      return "mean";
    case ImputeRule::kMedian:
      return "median";
    case ImputeRule::kMode:
      return "mode";
    case ImputeRule::kConstant:
      return "constant";
  }
  return "";
}

void ToProto(const BinaryMetric& metric, v1::BinaryMetricValue* proto) {
  proto->set_defined(metric.defined);
  proto->set_value(metric.value);
  proto->set_undefined_reason(metric.undefined_reason);
}

}  // namespace

absl::StatusOr<std::vector<ColumnPipeline>> FromProto(const v1::PipelineSpec& proto) {
  std::vector<ColumnPipeline> columns;
  for (int i = 0; i < proto.columns_size(); ++i) {
    const v1::ColumnPipelineSpec& in = proto.columns(i);
    ColumnPipeline out;
    out.column = in.column();
    if (in.has_valid_min()) out.valid_min = in.valid_min();
    if (in.has_valid_max()) out.valid_max = in.valid_max();
    if (in.impute().empty()) {
      out.impute = ImputeRule::kNone;
    } else if (in.impute() == "mean") {
      out.impute = ImputeRule::kMean;
    } else if (in.impute() == "median") {
      out.impute = ImputeRule::kMedian;
    } else if (in.impute() == "mode") {
      out.impute = ImputeRule::kMode;
    } else if (in.impute() == "constant") {
      out.impute = ImputeRule::kConstant;
    } else {
      return InvalidField(i, "impute", in.impute(), "mean, median, mode, constant or empty");
    }
    out.impute_constant = in.impute_constant();
    out.missing_indicator = in.missing_indicator();
    out.log1p = in.log1p();
    if (in.has_clip()) {
      out.clip_lower_quantile = in.clip_lower_quantile();
      out.clip_upper_quantile = in.clip_upper_quantile();
    }
    if (in.scale().empty() || in.scale() == "none") {
      out.scale = ScaleRule::kNone;
    } else if (in.scale() == "standardize") {
      out.scale = ScaleRule::kStandardize;
    } else if (in.scale() == "minmax") {
      out.scale = ScaleRule::kMinMax;
    } else {
      return InvalidField(i, "scale", in.scale(), "standardize, minmax, none or empty");
    }
    if (in.encoding().empty() || in.encoding() == "onehot") {
      out.encoding = CategoryEncoding::kOneHot;
    } else if (in.encoding() == "hash") {
      out.encoding = CategoryEncoding::kHash;
    } else {
      return InvalidField(i, "encoding", in.encoding(), "onehot, hash or empty");
    }
    out.top_n = in.top_n() == 0 ? kDefaultTopN : in.top_n();
    out.hash_buckets = in.hash_buckets();
    if (in.ngrams().empty()) {
      out.ngrams = NgramKind::kNone;
    } else if (in.ngrams() == "words") {
      out.ngrams = NgramKind::kWords;
    } else if (in.ngrams() == "chars") {
      out.ngrams = NgramKind::kChars;
    } else {
      return InvalidField(i, "ngrams", in.ngrams(), "words, chars or empty");
    }
    out.ngram_min = in.ngram_min() == 0 ? 1 : in.ngram_min();
    out.ngram_max = in.ngram_max() == 0 ? out.ngram_min : in.ngram_max();
    out.ngram_buckets = in.ngram_buckets();
    columns.push_back(std::move(out));
  }
  return columns;
}

void ToProto(const std::vector<ColumnPipeline>& columns, v1::PipelineSpec* proto) {
  proto->clear_columns();
  for (const ColumnPipeline& in : columns) {
    v1::ColumnPipelineSpec* out = proto->add_columns();
    out->set_column(in.column);
    if (in.valid_min.has_value()) {
      out->set_has_valid_min(true);
      out->set_valid_min(*in.valid_min);
    }
    if (in.valid_max.has_value()) {
      out->set_has_valid_max(true);
      out->set_valid_max(*in.valid_max);
    }
    out->set_impute(ImputeName(in.impute));
    out->set_impute_constant(in.impute_constant);
    out->set_missing_indicator(in.missing_indicator);
    out->set_log1p(in.log1p);
    if (in.clip_lower_quantile.has_value() || in.clip_upper_quantile.has_value()) {
      out->set_has_clip(true);
      out->set_clip_lower_quantile(in.clip_lower_quantile.value_or(0));
      out->set_clip_upper_quantile(in.clip_upper_quantile.value_or(1));
    }
    out->set_scale(in.scale == ScaleRule::kStandardize ? "standardize"
                   : in.scale == ScaleRule::kMinMax    ? "minmax"
                                                       : "");
    out->set_encoding(in.encoding == CategoryEncoding::kHash ? "hash" : "onehot");
    out->set_top_n(in.top_n);
    out->set_hash_buckets(in.hash_buckets);
    out->set_ngrams(in.ngrams == NgramKind::kWords   ? "words"
                    : in.ngrams == NgramKind::kChars ? "chars"
                                                     : "");
    out->set_ngram_min(in.ngram_min);
    out->set_ngram_max(in.ngram_max);
    out->set_ngram_buckets(in.ngram_buckets);
  }
}

absl::StatusOr<PipelineSpec> ProfilePipelineSpec(const v1::ProfileOptions& options,
                                                 const Schema& schema) {
  PipelineSpec spec;
  if (options.label_column().empty()) {
    const int label = schema.LabelIndex();
    if (label < 0) {
      return absl::InvalidArgumentError(
          "options.label_column is empty and the dataset has no LABEL column; load the label "
          "column with type COLUMN_TYPE_LABEL and name it here");
    }
    spec.label_column = schema.columns[label].name;
  } else {
    const int index = schema.IndexOf(options.label_column());
    if (index < 0) {
      std::vector<std::string> names;
      for (const ColumnSpec& column : schema.columns) {
        names.push_back(absl::StrCat("'", column.name, "'"));
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "options.label_column '", options.label_column(),
          "' is not a column of the dataset; its columns are ", absl::StrJoin(names, ", ")));
    }
    if (schema.columns[index].type != ColumnType::kLabel) {
      return absl::InvalidArgumentError(absl::StrCat(
          "options.label_column '", options.label_column(), "' has type ",
          std::string(ColumnTypeName(schema.columns[index].type)),
          "; load the dataset with this column overridden to COLUMN_TYPE_LABEL"));
    }
    spec.label_column = options.label_column();
  }
  if (options.positive_label().empty()) {
    return absl::InvalidArgumentError(
        "options.positive_label is empty; give the label value of the positive class");
  }
  spec.positive_label = options.positive_label();
  absl::StatusOr<std::vector<ColumnPipeline>> columns = FromProto(options.pipeline());
  if (!columns.ok()) return columns.status();
  spec.columns = columns->empty() ? DefaultPipelineColumns(schema) : *std::move(columns);
  if (spec.columns.empty()) {
    return absl::InvalidArgumentError(
        "options.pipeline.columns is empty and the dataset has no feature column");
  }
  const absl::Status valid = spec.Validate(schema);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("options.pipeline: ", valid.message()));
  }
  return spec;
}

absl::StatusOr<LogisticOptions> ToLogisticOptions(const v1::ProfileOptions& options) {
  LogisticOptions out;
  if (options.c() != 0 && options.l2() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("options.c = ", options.c(), " and options.l2 = ",
                                                   options.l2(), " are both set; set one"));
  }
  if (options.l2() != 0) {
    if (!std::isfinite(options.l2()) || options.l2() < 1 / kMaxC) {
      return absl::InvalidArgumentError(absl::StrCat("options.l2 = ", options.l2(),
                                                     " is invalid; use a value >= ", 1 / kMaxC));
    }
    out.c = 1 / options.l2();
  } else if (options.c() != 0) {
    if (!std::isfinite(options.c()) || options.c() < 0 || options.c() > kMaxC) {
      return absl::InvalidArgumentError(absl::StrCat("options.c = ", options.c(),
                                                     " is invalid; use a value in (0, 1e12]"));
    }
    out.c = options.c();
  }

  const bool weights_set = options.negative_weight() != 0 || options.positive_weight() != 0;
  if (options.class_weight().empty()) {
    out.class_weight = LogisticOptions::ClassWeight::kNone;
  } else if (options.class_weight() == "balanced") {
    out.class_weight = LogisticOptions::ClassWeight::kBalanced;
  } else if (options.class_weight() == "explicit") {
    out.class_weight = LogisticOptions::ClassWeight::kExplicit;
    for (const auto& [name, value] : {std::pair{"negative_weight", options.negative_weight()},
                                      std::pair{"positive_weight", options.positive_weight()}}) {
      if (!std::isfinite(value) || value <= 0) {
        return absl::InvalidArgumentError(absl::StrCat("options.", name, " = ", value,
                                                       " is invalid; use a finite value > 0"));
      }
    }
    out.negative_weight = options.negative_weight();
    out.positive_weight = options.positive_weight();
  } else {
    return absl::InvalidArgumentError(absl::StrCat("options.class_weight '", options.class_weight(),
                                                   "' is invalid; use balanced, explicit or empty"));
  }
  if (weights_set && out.class_weight != LogisticOptions::ClassWeight::kExplicit) {
    return absl::InvalidArgumentError(
        "options.negative_weight or options.positive_weight is set but options.class_weight is "
        "not 'explicit'; set class_weight to 'explicit'");
  }

  out.max_iterations = options.max_iter() == 0 ? kDefaultMaxIter : options.max_iter();
  if (options.tol() < 0 || !std::isfinite(options.tol())) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.tol = ", options.tol(), " is invalid; use a value > 0"));
  }
  out.gradient_tolerance = options.tol() == 0 ? kDefaultTolerance : options.tol();
  const absl::Status valid = out.Validate();
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("options: ", valid.message()));
  }
  return out;
}

absl::StatusOr<double> TestFraction(const v1::ProfileOptions& options) {
  if (options.no_test_split()) {
    if (options.test_fraction() != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "options.test_fraction = ", options.test_fraction(),
          " is set together with options.no_test_split; set one"));
    }
    return 0.0;
  }
  if (options.test_fraction() == 0) return kDefaultTestFraction;
  if (!(options.test_fraction() > 0 && options.test_fraction() <= kMaxTestFraction)) {
    return absl::InvalidArgumentError(absl::StrCat("options.test_fraction = ", options.test_fraction(),
                                                   " is invalid; use a value in (0, ",
                                                   kMaxTestFraction, "]"));
  }
  return options.test_fraction();
}

uint64_t ProfileSeed(const v1::ProfileOptions& options) {
  return options.seed() == 0 ? kDefaultSeed : options.seed();
}

void ToProto(const CleaningReport& report, v1::CleaningReportProto* proto) {
  proto->set_duplicate_rows_dropped(report.duplicate_rows_dropped);
  proto->mutable_unparsable_cells()->insert(report.unparsable_cells.begin(),
                                            report.unparsable_cells.end());
  proto->mutable_clipped_values()->insert(report.clipped_values.begin(),
                                          report.clipped_values.end());
  proto->mutable_imputed_cells()->insert(report.imputed_cells.begin(), report.imputed_cells.end());
}

CleaningReport FromProto(const v1::CleaningReportProto& proto) {
  CleaningReport report;
  report.duplicate_rows_dropped = proto.duplicate_rows_dropped();
  report.unparsable_cells.insert(proto.unparsable_cells().begin(), proto.unparsable_cells().end());
  report.clipped_values.insert(proto.clipped_values().begin(), proto.clipped_values().end());
  report.imputed_cells.insert(proto.imputed_cells().begin(), proto.imputed_cells().end());
  return report;
}

void ToProto(const PipelineFirstPassStats& stats, v1::PipelineFirstPassStatsProto* proto) {
  proto->set_rows(stats.rows);
  for (const ColumnFirstPassStats& column : stats.columns) {
    v1::ColumnFirstPassStatsProto* out = proto->add_columns();
    out->set_present(column.present);
    out->set_missing(column.missing);
    out->set_sum(column.sum);
    out->set_sum_sq(column.sum_sq);
    out->set_min(column.min);
    out->set_max(column.max);
    out->set_min_before_log1p(column.min_before_log1p);
    out->set_sketch(column.sketch.Serialize());
    out->mutable_value_counts()->insert(column.value_counts.begin(), column.value_counts.end());
    out->mutable_component_sums()->Assign(column.component_sums.begin(),
                                          column.component_sums.end());
  }
  ToProto(stats.report, proto->mutable_report());
  proto->mutable_label_counts()->insert(stats.label_counts.begin(), stats.label_counts.end());
}

absl::StatusOr<PipelineFirstPassStats> FromProto(const v1::PipelineFirstPassStatsProto& proto) {
  PipelineFirstPassStats stats;
  stats.rows = proto.rows();
  for (const v1::ColumnFirstPassStatsProto& in : proto.columns()) {
    ColumnFirstPassStats column;
    column.present = in.present();
    column.missing = in.missing();
    column.sum = in.sum();
    column.sum_sq = in.sum_sq();
    column.min = in.min();
    column.max = in.max();
    column.min_before_log1p = in.min_before_log1p();
    absl::StatusOr<QuantileSketch> sketch = QuantileSketch::Deserialize(in.sketch());
    if (!sketch.ok()) return sketch.status();
    column.sketch = *std::move(sketch);
    column.value_counts.insert(in.value_counts().begin(), in.value_counts().end());
    column.component_sums.assign(in.component_sums().begin(), in.component_sums().end());
    stats.columns.push_back(std::move(column));
  }
  stats.report = FromProto(proto.report());
  stats.label_counts.insert(proto.label_counts().begin(), proto.label_counts().end());
  return stats;
}

void ToProto(const PipelineSecondPassStats& stats, v1::PipelineSecondPassStatsProto* proto) {
  for (const PipelineSecondPassStats::Moments& column : stats.columns) {
    proto->add_count(column.count);
    proto->add_sum(column.sum);
    proto->add_sum_sq(column.sum_sq);
    proto->add_min(column.min);
    proto->add_max(column.max);
  }
}

absl::StatusOr<PipelineSecondPassStats> FromProto(const v1::PipelineSecondPassStatsProto& proto) {
  const int n = proto.count_size();
  if (proto.sum_size() != n || proto.sum_sq_size() != n || proto.min_size() != n ||
      proto.max_size() != n) {
    return absl::InvalidArgumentError("pipeline moments have arrays of different lengths");
  }
  PipelineSecondPassStats stats;
  for (int i = 0; i < n; ++i) {
    stats.columns.push_back(PipelineSecondPassStats::Moments{proto.count(i), proto.sum(i),
                                                             proto.sum_sq(i), proto.min(i),
                                                             proto.max(i)});
  }
  return stats;
}

absl::Status ComputeBinaryMetricsProto(const std::vector<uint8_t>& labels,
                                       const std::vector<double>& scores,
                                       v1::BinaryMetrics* proto) {
  absl::StatusOr<BinaryMetrics> computed = ComputeBinaryMetrics(labels, scores);
  if (!computed.ok()) return computed.status();
  const BinaryMetrics& metrics = *computed;
  proto->set_threshold(BinaryMetricsOptions().threshold);
  proto->set_users(metrics.rows);
  proto->set_positives(metrics.positives);
  ToProto(metrics.accuracy, proto->mutable_accuracy());
  ToProto(metrics.precision, proto->mutable_precision());
  ToProto(metrics.recall, proto->mutable_recall());
  ToProto(metrics.f1, proto->mutable_f1());
  ToProto(metrics.roc_auc, proto->mutable_roc_auc());
  ToProto(metrics.pr_auc, proto->mutable_pr_auc());
  ToProto(metrics.log_loss, proto->mutable_log_loss());
  v1::ConfusionMatrix* confusion = proto->mutable_confusion();
  confusion->set_true_positives(metrics.confusion.true_positives);
  confusion->set_false_positives(metrics.confusion.false_positives);
  confusion->set_true_negatives(metrics.confusion.true_negatives);
  confusion->set_false_negatives(metrics.confusion.false_negatives);
  return absl::OkStatus();
}

}  // namespace cohort
