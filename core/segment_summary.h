// Readable per-segment summaries in original units, built from the raw-value statistics
// of each segment's users.
#ifndef COHORT_CORE_SEGMENT_SUMMARY_H_
#define COHORT_CORE_SEGMENT_SUMMARY_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "core/features.h"
#include "core/quantile_sketch.h"
#include "core/raw_table.h"

namespace cohort {

struct NumericSegmentStat {
  std::string column;
  double mean = 0;          // mean of the segment's non-missing values (0 when none)
  double overall_mean = 0;
  double z = 0;             // (mean − overall_mean) / overall standard deviation
  double min = 0;
  double max = 0;
  int64_t missing = 0;
  double median = std::numeric_limits<double>::quiet_NaN();  // NaN: no sketch given
};

struct CategoryShareStat {
  std::string value;        // "(missing)" for empty cells
  double share = 0;         // within the segment
  double overall_share = 0;
};

struct CategoricalSegmentStat {
  std::string column;
  std::vector<CategoryShareStat> top;  // by share within the segment, descending
};

struct SegmentSummary {
  int index = 0;
  int64_t size = 0;
  double share = 0;  // size / all users
  std::vector<NumericSegmentStat> numeric;
  std::vector<CategoricalSegmentStat> categorical;
  // Up to three features that most distinguish the segment, strongest first, as text
  // such as "monetary +2.1σ" or "channel=app 72% vs 31%".
  std::vector<std::string> distinguishing;
  // One sentence built from the facts above.
  std::string description;
};

// Summarizes every segment. segment_stats[s] holds the raw-value statistics of segment
// s's users (ComputeGroupStats merged over all shards); column names come from
// `transform`, whose columns are in the same order.
// segment_sketches, when not empty, holds per segment one QuantileSketch per numeric
// column (SerializeGroupSketches merged over all shards) for the medians. Segments are
// compared with `overall`, or, when it is null, with the merge of all segment_stats
// (pass it when the groups overlap, as the nodes of a segment tree do).
std::vector<SegmentSummary> SummarizeSegments(
    const FeatureTransform& transform, const std::vector<FeatureStats>& segment_stats,
    const std::vector<std::vector<QuantileSketch>>& segment_sketches = {},
    const FeatureStats* overall = nullptr);

// Per group g and numeric column c, result[g][c] is the Serialize() form of a sketch of
// the raw non-missing values (labels[i] in [0, num_groups) is the group of row i). Each
// column's values are sorted by group and value, and each group's run becomes one
// QuantileSketch::FromSorted. So the result depends only on the rows, not on the OpenMP
// thread count that sketches the columns in parallel. Only the columns in progress are
// held as sketches, so a shard's sketches cost about their serialized size.
std::vector<std::vector<std::string>> SerializeGroupSketches(const RawShard& shard,
                                                             const int32_t* labels,
                                                             int num_groups);

// Formats a number for people: thousands separators, at most 3 significant decimals.
std::string FormatReadable(double value);

}  // namespace cohort

#endif  // COHORT_CORE_SEGMENT_SUMMARY_H_
