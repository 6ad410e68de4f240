#include "core/default_pipeline.h"

#include <optional>

namespace cohort {
namespace {

// The default transform of a column of `type`, or nullopt for a type that is no feature.
std::optional<ColumnPipeline> DefaultColumnPipeline(const std::string& name, ColumnType type) {
  ColumnPipeline column;
  column.column = name;
  switch (type) {
    case ColumnType::kNumeric:
      column.impute = ImputeRule::kMean;
      column.scale = ScaleRule::kStandardize;
      return column;
    case ColumnType::kBoolean:
      column.impute = ImputeRule::kMode;
      return column;
    case ColumnType::kCategorical:
      column.encoding = CategoryEncoding::kOneHot;
      return column;
    case ColumnType::kText:
      column.ngrams = NgramKind::kChars;
      column.ngram_min = 1;
      column.ngram_max = 2;
      column.ngram_buckets = kDefaultTextBuckets;
      return column;
    case ColumnType::kEmbedding:
      column.impute = ImputeRule::kMean;
      return column;
    case ColumnType::kId:
    case ColumnType::kIgnore:
    case ColumnType::kWeight:
    case ColumnType::kLabel:
      break;
  }
  return std::nullopt;
}

}  // namespace

std::vector<ColumnPipeline> DefaultPipelineColumns(const Schema& schema) {
  std::vector<ColumnPipeline> columns;
  for (const ColumnSpec& spec : schema.columns) {
    std::optional<ColumnPipeline> column = DefaultColumnPipeline(spec.name, spec.type);
    if (column.has_value()) columns.push_back(*std::move(column));
  }
  return columns;
}

}  // namespace cohort
