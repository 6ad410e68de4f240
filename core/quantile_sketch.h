// A mergeable quantile sketch for per-column medians and quantiles computed per shard.
#ifndef COHORT_CORE_QUANTILE_SKETCH_H_
#define COHORT_CORE_QUANTILE_SKETCH_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort {

// A KLL-style compactor sketch (Karnin, Lang and Liberty 2016) with a deterministic
// compaction rule (the kept half of each level alternates with that level's compaction
// count, not a coin), so the same inputs added and merged in the same order return the
// same quantiles on every machine. Level capacities are k at the top level and shrink by
// 2/3 per level below it, down to 8.
// Rank error: the tests check that the true rank of Quantile(q) is within 0.01 · n of
// q · n for k = 256 on 1e5 to 1e6 uniform, skewed, sorted and reverse-sorted values and
// on a merge of 8 sketches. With 20 seeds of 1e6 values and 11 quantiles the largest
// error was 0.57 % of n.
// NOTE: the bound is measured, not proven. A deterministic compactor has no
// probabilistic guarantee, and an input order built against the rule can exceed it.
//
// Thread safety: not thread-safe.
class QuantileSketch {
 public:
  // `capacity` (k) is the size of the largest compactor, in [16, 65536]. A value outside
  // that range is clamped to it.
  explicit QuantileSketch(int capacity = 256);

  void Add(double value);  // NaN is ignored

  // A sketch of `sorted` (ascending, no NaN) built at once: the values form level 0,
  // which is compacted as Add would compact a full level, level by level up. Cheaper than
  // n calls to Add on values already sorted, and within the same rank error bound. The
  // result depends only on the values, so equal inputs give equal sketches.
  static QuantileSketch FromSorted(const std::vector<double>& sorted, int capacity = 256);
  // Adds the items of `other`, which may have another capacity. This sketch keeps its
  // own capacity. Merging the same sketches in the same order gives the same result.
  void Merge(const QuantileSketch& other);

  int64_t count() const { return count_; }
  // The exact minimum and maximum of the values added, or NaN when empty.
  double min() const { return min_; }
  double max() const { return max_; }

  // The q-quantile: the smallest stored value whose cumulative weight reaches q · count,
  // so before any compaction (count <= capacity) it is the value of rank ceil(q · n) of
  // the sorted input. Quantile(0) and Quantile(1) are the exact min and max. NaN when
  // empty or when q is outside [0, 1].
  double Quantile(double q) const;

  // Compact binary encoding, for shipping between processes: little-endian, with a
  // magic and a format version in the header.
  std::string Serialize() const;
  // Errors: InvalidArgument when the bytes are truncated, carry another magic or
  // version, or describe an inconsistent sketch (weights that do not sum to the count,
  // items outside [min, max], more items than the capacities allow).
  [[nodiscard]] static absl::StatusOr<QuantileSketch> Deserialize(const std::string& bytes);

 private:
  void Compact();
  // Sets level_capacities_ and total_capacity_ for the current number of levels.
  void UpdateCapacities();

  int capacity_;
  int64_t count_ = 0;
  double min_ = std::numeric_limits<double>::quiet_NaN();
  double max_ = std::numeric_limits<double>::quiet_NaN();
  // Bit h is the parity of the number of compactions of level h so far.
  uint64_t compaction_parities_ = 0;
  std::vector<std::vector<double>> levels_;  // level h holds items of weight 2^h
  // Kept in step with levels_, so Add compacts only when the items exceed the capacity.
  int64_t num_items_ = 0;
  int64_t total_capacity_ = 0;
  std::vector<int64_t> level_capacities_;
};

}  // namespace cohort

#endif  // COHORT_CORE_QUANTILE_SKETCH_H_
