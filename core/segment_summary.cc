#include "core/segment_summary.h"

#include <algorithm>
#include <cmath>
#include <numeric>

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
  double strength;  // |standardized difference|
  std::string text;
  std::string phrase;  // for the description
};

std::string DisplayValue(const std::string& value) { return value.empty() ? "(missing)" : value; }

std::string Percent(double share) { return absl::StrFormat("%.0f%%", 100.0 * share); }

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
  if (magnitude >= 100) return absl::StrFormat("%.1f", value);
  if (magnitude >= 1) return absl::StrFormat("%.2f", value);
  return absl::StrFormat("%.3g", value);
}

std::vector<SegmentSummary> SummarizeSegments(const FeatureTransform& transform,
                                              const FeatureStats& stats,
                                              const MatrixXfR& centroids,
                                              const std::vector<int64_t>& sizes) {
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  std::vector<SegmentSummary> summaries;
  for (int s = 0; s < static_cast<int>(centroids.rows()); ++s) {
    SegmentSummary summary;
    summary.index = s;
    summary.size = sizes[s];
    summary.share = total > 0 ? static_cast<double>(sizes[s]) / static_cast<double>(total) : 0;
    const OriginalUnits units = ToOriginalUnits(transform, centroids.row(s).data());
    std::vector<Signal> signals;

    for (size_t c = 0; c < transform.numeric.size(); ++c) {
      const NumericTransform& column = transform.numeric[c];
      NumericSegmentStat stat;
      stat.column = column.name;
      stat.mean = units.numeric_means[c];
      stat.overall_mean = column.mean;
      stat.z = (stat.mean - column.mean) / column.scale;
      summary.numeric.push_back(stat);
      signals.push_back(Signal{
          std::fabs(stat.z), absl::StrFormat("%s %+.1fσ", column.name, stat.z),
          absl::StrCat(stat.z >= 0 ? "high " : "low ", column.name, " (",
                       FormatReadable(stat.mean), " vs ", FormatReadable(stat.overall_mean),
                       ")")});
    }

    for (size_t c = 0; c < transform.categorical.size(); ++c) {
      const CategoricalTransform& column = transform.categorical[c];
      const CategoricalStats& counts = stats.categorical[c];
      const double rows = static_cast<double>(std::max<int64_t>(stats.rows, 1));
      CategoricalSegmentStat stat;
      stat.column = column.name;
      double kept_share = 0;
      for (size_t v = 0; v < column.values.size(); ++v) {
        auto it = counts.counts.find(column.values[v]);
        const double overall = it == counts.counts.end() ? 0 : static_cast<double>(it->second) / rows;
        kept_share += overall;
        stat.top.push_back(
            CategoryShareStat{DisplayValue(column.values[v]), units.category_shares[c][v], overall});
      }
      if (column.has_other) {
        stat.top.push_back(CategoryShareStat{"(other)", units.category_shares[c].back(),
                                             std::max(0.0, 1.0 - kept_share)});
      }
      for (const CategoryShareStat& share : stat.top) {
        const double spread = std::sqrt(share.overall_share * (1 - share.overall_share));
        if (spread <= 0) continue;
        const double z = (share.share - share.overall_share) / spread;
        // Only over-represented values read naturally ("mostly app users").
        if (z <= 0) continue;
        signals.push_back(Signal{
            z, absl::StrCat(column.name, "=", share.value, " ", Percent(share.share), " vs ",
                            Percent(share.overall_share)),
            absl::StrCat("often ", column.name, "=", share.value, " (", Percent(share.share),
                         " vs ", Percent(share.overall_share), ")")});
      }
      std::stable_sort(stat.top.begin(), stat.top.end(),
                       [](const CategoryShareStat& a, const CategoryShareStat& b) {
                         return a.share > b.share;
                       });
      if (static_cast<int>(stat.top.size()) > kTopCategories) stat.top.resize(kTopCategories);
      summary.categorical.push_back(std::move(stat));
    }

    std::stable_sort(signals.begin(), signals.end(),
                     [](const Signal& a, const Signal& b) { return a.strength > b.strength; });
    std::vector<std::string> phrases;
    for (int i = 0; i < std::min<int>(kDistinguishingFeatures, signals.size()); ++i) {
      summary.distinguishing.push_back(signals[i].text);
      phrases.push_back(signals[i].phrase);
    }
    summary.description = absl::StrCat(FormatReadable(static_cast<double>(summary.size)),
                                       " users (", absl::StrFormat("%.1f%%", 100 * summary.share),
                                       ")");
    if (!phrases.empty()) absl::StrAppend(&summary.description, ": ", absl::StrJoin(phrases, ", "));
    summaries.push_back(std::move(summary));
  }
  return summaries;
}

}  // namespace cohort
