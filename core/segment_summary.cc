#include "core/segment_summary.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace cohort {
namespace {

// How many distinguishing features a summary names.
constexpr int kDistinguishingFeatures = 3;
// Categories listed per categorical column.
constexpr int kTopCategories = 3;

struct Signal {
  double strength;     // |standardized difference|
  std::string text;    // for the distinguishing list
  std::string phrase;  // for the description
};

std::string DisplayValue(const std::string& value) { return value.empty() ? "(missing)" : value; }

std::string Percent(double share) { return absl::StrFormat("%.0f%%", 100.0 * share); }

double Mean(const NumericStats& stats) {
  return stats.count > 0 ? stats.sum / static_cast<double>(stats.count) : 0;
}

double StdDev(const NumericStats& stats) {
  if (stats.count == 0 || stats.min == stats.max) return 0;
  const double n = static_cast<double>(stats.count);
  const double mean = stats.sum / n;
  return std::sqrt(std::max(0.0, stats.sum_sq / n - mean * mean));
}

}  // namespace

std::string FormatReadable(double value) {
  if (!std::isfinite(value)) return absl::StrCat(value);
  const double magnitude = std::fabs(value);
  if (magnitude >= 1000) {
    const std::string digits = absl::StrFormat("%.0f", std::round(magnitude));
    // Thousands separators: a comma before every group of three digits from the right.
    std::string text = value < 0 ? "-" : "";
    for (size_t i = 0; i < digits.size(); ++i) {
      if (i > 0 && (digits.size() - i) % 3 == 0) text.push_back(',');
      text.push_back(digits[i]);
    }
    return text;
  }
  if (value == std::round(value)) return absl::StrFormat("%.0f", value);
  if (magnitude >= 100) return absl::StrFormat("%.1f", value);
  if (magnitude >= 1) return absl::StrFormat("%.2f", value);
  return absl::StrFormat("%.3g", value);
}

namespace {

// Maps a float to an unsigned key with the same order (NaN excluded): negative values
// have all bits flipped, others only the sign bit.
uint32_t OrderedBits(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
}

float FromOrderedBits(uint32_t key) {
  const uint32_t bits = (key & 0x80000000u) != 0 ? key & 0x7fffffffu : ~key;
  float value = 0;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Bits per pass of RadixSort: 3 passes for a float and up to 128 groups, with counts
// that fit the L1 and L2 caches.
constexpr int kRadixBits = 13;

// Sorts `keys` by an LSD radix sort on their low `key_bits` bits.
void RadixSort(std::vector<uint64_t>& keys, std::vector<uint64_t>& scratch,
               std::vector<size_t>& counts, int key_bits) {
  constexpr uint64_t kMask = (uint64_t{1} << kRadixBits) - 1;
  scratch.resize(keys.size());
  for (int shift = 0; shift < key_bits; shift += kRadixBits) {
    counts.assign(kMask + 2, 0);
    for (uint64_t key : keys) ++counts[((key >> shift) & kMask) + 1];
    for (uint64_t digit = 0; digit <= kMask; ++digit) counts[digit + 1] += counts[digit];
    for (uint64_t key : keys) scratch[counts[(key >> shift) & kMask]++] = key;
    keys.swap(scratch);
  }
}

}  // namespace

std::vector<std::vector<std::string>> SerializeGroupSketches(const RawShard& shard,
                                                             const int32_t* labels,
                                                             int num_groups) {
  const int cols = shard.numeric.cols();
  const int64_t n = shard.num_rows();
  int group_bits = 0;
  while ((int64_t{1} << group_bits) < num_groups) ++group_bits;
  const int key_bits = 32 + group_bits;
  std::vector<std::vector<std::string>> serialized(
      num_groups, std::vector<std::string>(static_cast<size_t>(cols)));
  // Nothing here throws, apart from allocation failure, which ends the process as it
  // would outside the region.
#pragma omp parallel for schedule(dynamic, 1) if (n * cols > 65536)
  for (int c = 0; c < cols; ++c) {
    std::vector<uint64_t> keys;
    std::vector<uint64_t> scratch;
    std::vector<size_t> counts;
    keys.reserve(static_cast<size_t>(n));
    for (int64_t row = 0; row < n; ++row) {
      const float value = shard.numeric(row, c);
      if (std::isnan(value)) continue;  // missing
      keys.push_back((static_cast<uint64_t>(labels[row]) << 32) | OrderedBits(value));
    }
    RadixSort(keys, scratch, counts, key_bits);

    // An empty group keeps the serialized empty sketch.
    for (int g = 0; g < num_groups; ++g) serialized[g][c] = QuantileSketch().Serialize();
    std::vector<double> values;
    size_t begin = 0;
    while (begin < keys.size()) {
      const uint64_t group = keys[begin] >> 32;
      size_t end = begin;
      values.clear();
      while (end < keys.size() && (keys[end] >> 32) == group) {
        values.push_back(FromOrderedBits(static_cast<uint32_t>(keys[end])));
        ++end;
      }
      serialized[group][c] = QuantileSketch::FromSorted(values).Serialize();
      begin = end;
    }
  }
  return serialized;
}

std::vector<SegmentSummary> SummarizeSegments(
    const FeatureTransform& transform, const std::vector<FeatureStats>& segment_stats,
    const std::vector<std::vector<QuantileSketch>>& segment_sketches,
    const FeatureStats* overall_stats) {
  FeatureStats overall;
  if (overall_stats != nullptr) {
    overall = *overall_stats;
  } else {
    for (const FeatureStats& stats : segment_stats) overall.Merge(stats);
  }
  const double total_rows = static_cast<double>(std::max<int64_t>(overall.rows, 1));

  std::vector<SegmentSummary> summaries;
  for (size_t s = 0; s < segment_stats.size(); ++s) {
    const FeatureStats& stats = segment_stats[s];
    SegmentSummary summary;
    summary.index = static_cast<int>(s);
    summary.size = stats.rows;
    summary.share = static_cast<double>(stats.rows) / total_rows;
    std::vector<Signal> signals;

    for (size_t c = 0; c < transform.numeric.size() && c < stats.numeric.size(); ++c) {
      const std::string& name = transform.numeric[c].name;
      const NumericStats& column = stats.numeric[c];
      NumericSegmentStat stat;
      stat.column = name;
      stat.mean = Mean(column);
      stat.overall_mean = Mean(overall.numeric[c]);
      const double spread = StdDev(overall.numeric[c]);
      stat.z = spread > 0 && column.count > 0 ? (stat.mean - stat.overall_mean) / spread : 0;
      stat.min = column.min;
      stat.max = column.max;
      stat.missing = column.missing;
      stat.median = s < segment_sketches.size() && c < segment_sketches[s].size()
                        ? segment_sketches[s][c].Quantile(0.5)
                        : std::nan("");
      summary.numeric.push_back(stat);
      if (column.count == 0) continue;
      signals.push_back(Signal{
          std::fabs(stat.z), absl::StrFormat("%s %+.1fσ", name, stat.z),
          absl::StrCat(stat.z >= 0 ? "high " : "low ", name, " (", FormatReadable(stat.mean),
                       " vs ", FormatReadable(stat.overall_mean), ")")});
    }

    for (size_t c = 0; c < transform.categorical.size() && c < stats.categorical.size(); ++c) {
      const std::string& name = transform.categorical[c].name;
      CategoricalSegmentStat stat;
      stat.column = name;
      const double rows = static_cast<double>(std::max<int64_t>(stats.rows, 1));
      for (const auto& [value, count] : stats.categorical[c].counts) {
        auto it = overall.categorical[c].counts.find(value);
        const double overall_share =
            it == overall.categorical[c].counts.end() ? 0 : static_cast<double>(it->second) / total_rows;
        const double share = static_cast<double>(count) / rows;
        stat.top.push_back(CategoryShareStat{DisplayValue(value), share, overall_share});
        const double spread = std::sqrt(overall_share * (1 - overall_share));
        // Only over-represented values read naturally ("often channel=app").
        if (spread <= 0 || share <= overall_share) continue;
        const double z = (share - overall_share) / spread;
        signals.push_back(Signal{
            z,
            absl::StrCat(name, "=", DisplayValue(value), " ", Percent(share), " vs ",
                         Percent(overall_share)),
            absl::StrCat("often ", name, "=", DisplayValue(value), " (", Percent(share), " vs ",
                         Percent(overall_share), ")")});
      }
      std::stable_sort(stat.top.begin(), stat.top.end(),
                       [](const CategoryShareStat& a, const CategoryShareStat& b) {
                         return a.share > b.share;
                       });
      if (static_cast<int>(stat.top.size()) > kTopCategories) stat.top.resize(kTopCategories);
      summary.categorical.push_back(std::move(stat));
    }

    // Strongest first; equal strengths keep column order, so the text is deterministic.
    std::stable_sort(signals.begin(), signals.end(),
                     [](const Signal& a, const Signal& b) { return a.strength > b.strength; });
    std::vector<std::string> phrases;
    for (int i = 0; i < std::min<int>(kDistinguishingFeatures, signals.size()); ++i) {
      summary.distinguishing.push_back(signals[i].text);
      phrases.push_back(signals[i].phrase);
    }
    summary.description =
        absl::StrCat(FormatReadable(static_cast<double>(summary.size)), " users (",
                     absl::StrFormat("%.1f%%", 100 * summary.share), ")");
    if (!phrases.empty()) absl::StrAppend(&summary.description, ": ", absl::StrJoin(phrases, ", "));
    summaries.push_back(std::move(summary));
  }
  return summaries;
}

}  // namespace cohort
