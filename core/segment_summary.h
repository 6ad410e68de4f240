// Readable per-segment summaries in original units, built from a fitted transform, the
// merged feature statistics and the final centroids.
#ifndef COHORT_CORE_SEGMENT_SUMMARY_H_
#define COHORT_CORE_SEGMENT_SUMMARY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/features.h"
#include "core/matrix.h"

namespace cohort {

struct NumericSegmentStat {
  std::string column;
  double mean = 0;          // segment mean, original units (missing cells imputed)
  double overall_mean = 0;
  double z = 0;             // (mean − overall_mean) / overall standard deviation
};

struct CategoryShareStat {
  std::string value;        // "(other)" and "(missing)" for the pooled and empty values
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

// Summarizes each row of centroids (k×d, feature space of `transform`).
// REQUIRES: sizes.size() == centroids.rows(); stats merged over all shards.
std::vector<SegmentSummary> SummarizeSegments(const FeatureTransform& transform,
                                              const FeatureStats& stats,
                                              const MatrixXfR& centroids,
                                              const std::vector<int64_t>& sizes);

// Formats a number for people: thousands separators, at most 3 significant decimals.
std::string FormatReadable(double value);

}  // namespace cohort

#endif  // COHORT_CORE_SEGMENT_SUMMARY_H_
