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
// of `schema`, in file order: numeric impute mean + standardize, boolean impute mode,
// categorical one-hot of the top 16 values ("" is a value of its own), text character
// 1–2-grams into kDefaultTextBuckets buckets, embedding impute mean. The id, weight,
// label and ignored columns are left out.
std::vector<ColumnPipeline> DefaultPipelineColumns(const Schema& schema);

}  // namespace cohort

#endif  // COHORT_CORE_DEFAULT_PIPELINE_H_
