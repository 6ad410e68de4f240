// The pipeline a profile model uses when its request declares no column: every feature
// column of the schema with a conventional transform.
#ifndef COHORT_CORE_DEFAULT_PIPELINE_H_
#define COHORT_CORE_DEFAULT_PIPELINE_H_

#include "core/pipeline.h"
#include "core/schema.h"

namespace cohort {

// Text n-grams of the default pipeline: character 1- and 2-grams (code points, so text in
// any script works without a tokenizer) hashed into this many buckets.
inline constexpr int kDefaultTextBuckets = 1024;

// Returns one ColumnPipeline per numeric, boolean, categorical, text and embedding column
// of `schema`, in file order. Numeric columns impute the mean and standardize, boolean
// columns impute the mode, and categorical columns are one-hot over the top 16 values
// ("" is a value of its own). Text columns get character 1–2-grams in
// kDefaultTextBuckets buckets, and embedding columns impute the mean. The id, weight,
// label and ignored columns are left out.
std::vector<ColumnPipeline> DefaultPipelineColumns(const Schema& schema);

}  // namespace cohort

#endif  // COHORT_CORE_DEFAULT_PIPELINE_H_
