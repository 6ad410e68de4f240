#include "core/similarity.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace cohort {
namespace {

// Below this many anchors or query rows, the kernels stay on the calling thread.
constexpr int64_t kParallelMinRows = 64;

// A variance below this fraction of Σx² is rounding noise of a constant side, so the
// correlation is 0 by the zero rule rather than the ratio of two rounding errors.
constexpr double kRelativeVarianceFloor = 1e-12;

// Item → rows index of one shard (the transpose of its CSR).
struct ColumnIndex {
  std::vector<int64_t> col_ptr;  // [item + 1]
  std::vector<int32_t> row;      // [entry] shard row, ascending within an item
  std::vector<float> value;      // [entry]
};

ColumnIndex BuildColumnIndex(const InteractionMatrix& m) {
  ColumnIndex index;
  index.col_ptr.assign(static_cast<size_t>(m.num_items) + 1, 0);
  for (int32_t item : m.item_index) ++index.col_ptr[static_cast<size_t>(item) + 1];
  for (int32_t i = 0; i < m.num_items; ++i) index.col_ptr[i + 1] += index.col_ptr[i];
  index.row.resize(m.item_index.size());
  index.value.resize(m.item_index.size());
  std::vector<int64_t> next(index.col_ptr.begin(), index.col_ptr.end() - 1);
  for (int64_t r = 0; r < m.num_users(); ++r) {
    for (int64_t e = m.row_ptr[r]; e < m.row_ptr[r + 1]; ++e) {
      const int64_t slot = next[m.item_index[e]]++;
      index.row[slot] = static_cast<int32_t>(r);
      index.value[slot] = m.values[e];
    }
  }
  return index;
}

// Adds one co-rating (x, y) with centred values (xc, yc) to `sums`, filling only the
// fields `kMeasure` needs.
template <SimilarityMeasure kMeasure>
inline void AddCoRating(double x, double y, double xc, double yc, PairSums* sums) {
  ++sums->n;
  if constexpr (kMeasure == SimilarityMeasure::kCosine) {
    sums->sum_xy += x * y;
  } else if constexpr (kMeasure == SimilarityMeasure::kMsd) {
    sums->sum_xy += x * y;
    sums->sum_xx += x * x;
    sums->sum_yy += y * y;
  } else if constexpr (kMeasure == SimilarityMeasure::kPearson) {
    sums->sum_x += x;
    sums->sum_y += y;
    sums->sum_xy += x * y;
    sums->sum_xx += x * x;
    sums->sum_yy += y * y;
  } else if constexpr (kMeasure == SimilarityMeasure::kAdjustedCosine) {
    sums->sum_xy_centred += xc * yc;
    sums->sum_xx_centred += xc * xc;
    sums->sum_yy_centred += yc * yc;
  }
}

// Cosine of two centred or raw vectors from Σxy, Σx², Σy², with the zero rule.
double CosineFromSums(double sum_xy, double sum_xx, double sum_yy) {
  const double denominator = std::sqrt(sum_xx * sum_yy);
  if (!(denominator > 0)) return 0.0;
  return sum_xy / denominator;
}

// Sums of one anchor item against every partner item, with one dense array per sum the
// measure needs (one for cosine, five for Pearson), so the arrays stay small enough to
// remain in cache. Only touched partners are read back and reset.
template <SimilarityMeasure kMeasure>
class PairAccumulator {
 public:
  explicit PairAccumulator(int32_t num_items) : count_(static_cast<size_t>(num_items), 0) {
    for (int f = 0; f < kFields; ++f) sums_[f].assign(static_cast<size_t>(num_items), 0.0);
  }

  // Adds the co-ratings of one user who rated `anchor` with value x: every other entry
  // (partner j, value y) of the user's row. `mean` is the user's mean (adjusted cosine).
  void AddUser(const InteractionMatrix& shard, int64_t row, int32_t anchor, double x, double mean) {
    const double xc = x - mean;
    for (int64_t e = shard.row_ptr[row]; e < shard.row_ptr[row + 1]; ++e) {
      const int32_t j = shard.item_index[e];
      if (j == anchor) continue;
      if (count_[j]++ == 0) touched_.push_back(j);
      const double y = shard.values[e];
      if constexpr (kMeasure == SimilarityMeasure::kCosine) {
        sums_[0][j] += x * y;
      } else if constexpr (kMeasure == SimilarityMeasure::kPearson) {
        sums_[0][j] += x;
        sums_[1][j] += y;
        sums_[2][j] += x * y;
        sums_[3][j] += x * x;
        sums_[4][j] += y * y;
      } else if constexpr (kMeasure == SimilarityMeasure::kAdjustedCosine) {
        const double yc = y - mean;
        sums_[0][j] += xc * yc;
        sums_[1][j] += xc * xc;
        sums_[2][j] += yc * yc;
      } else if constexpr (kMeasure == SimilarityMeasure::kMsd) {
        sums_[0][j] += x * y;
        sums_[1][j] += x * x;
        sums_[2][j] += y * y;
      }
    }
  }

  // Partners touched since the last Clear, in first-touch order.
  std::vector<int32_t>& touched() { return touched_; }

  // Returns the sums of partner j and resets them to zero.
  PairSums Take(int32_t j) {
    PairSums pair;
    pair.n = count_[j];
    count_[j] = 0;
    if constexpr (kMeasure == SimilarityMeasure::kCosine) {
      pair.sum_xy = sums_[0][j];
    } else if constexpr (kMeasure == SimilarityMeasure::kPearson) {
      pair.sum_x = sums_[0][j];
      pair.sum_y = sums_[1][j];
      pair.sum_xy = sums_[2][j];
      pair.sum_xx = sums_[3][j];
      pair.sum_yy = sums_[4][j];
    } else if constexpr (kMeasure == SimilarityMeasure::kAdjustedCosine) {
      pair.sum_xy_centred = sums_[0][j];
      pair.sum_xx_centred = sums_[1][j];
      pair.sum_yy_centred = sums_[2][j];
    } else if constexpr (kMeasure == SimilarityMeasure::kMsd) {
      pair.sum_xy = sums_[0][j];
      pair.sum_xx = sums_[1][j];
      pair.sum_yy = sums_[2][j];
    }
    for (int f = 0; f < kFields; ++f) sums_[f][j] = 0.0;
    return pair;
  }

  // Forgets the touched list. REQUIRES: every touched partner was taken.
  void Clear() { touched_.clear(); }

 private:
  static constexpr int kFields = kMeasure == SimilarityMeasure::kCosine         ? 1
                                 : kMeasure == SimilarityMeasure::kPearson      ? 5
                                 : kMeasure == SimilarityMeasure::kJaccard      ? 0
                                                                                : 3;
  std::vector<int64_t> count_;
  std::array<std::vector<double>, 5> sums_;
  std::vector<int32_t> touched_;
};

std::vector<double> UserMeans(const InteractionMatrix& shard, SimilarityMeasure measure) {
  std::vector<double> means;
  if (measure != SimilarityMeasure::kAdjustedCosine) return means;
  means.resize(static_cast<size_t>(shard.num_users()));
  for (int64_t r = 0; r < shard.num_users(); ++r) means[r] = shard.UserMean(r);
  return means;
}

// Per-anchor pair sums over one shard for the anchors [first, end), partners ascending.
template <SimilarityMeasure kMeasure>
void ComputePairs(const InteractionMatrix& shard, const ColumnIndex& columns,
                  const std::vector<double>& user_means, int32_t first, int32_t end,
                  std::vector<std::vector<int32_t>>* partners,
                  std::vector<std::vector<PairSums>>* sums) {
  const int64_t num_anchors = end - first;
#pragma omp parallel if (num_anchors >= kParallelMinRows)
  {
    PairAccumulator<kMeasure> accumulator(shard.num_items);
#pragma omp for schedule(dynamic, 16)
    for (int64_t a = 0; a < num_anchors; ++a) {
      const int32_t anchor = first + static_cast<int32_t>(a);
      for (int64_t c = columns.col_ptr[anchor]; c < columns.col_ptr[anchor + 1]; ++c) {
        const int32_t row = columns.row[c];
        const double mean = user_means.empty() ? 0.0 : user_means[row];
        accumulator.AddUser(shard, row, anchor, columns.value[c], mean);
      }
      std::vector<int32_t>& touched = accumulator.touched();
      std::sort(touched.begin(), touched.end());
      (*partners)[a] = touched;
      std::vector<PairSums>& anchor_sums = (*sums)[a];
      anchor_sums.resize(touched.size());
      for (size_t t = 0; t < touched.size(); ++t) anchor_sums[t] = accumulator.Take(touched[t]);
      accumulator.Clear();
    }
  }
}

// The top-k of every item over all shards in one pass, without pair-sum partials: each
// anchor's sums are accumulated over the shards in shard order and finished at once.
template <SimilarityMeasure kMeasure>
void FusedItemNeighbors(const std::vector<InteractionMatrix>& shards,
                        const std::vector<ColumnIndex>& columns,
                        const std::vector<std::vector<double>>& user_means,
                        const std::vector<VectorTotals>& totals, const SimilarityOptions& options,
                        std::vector<std::vector<Neighbor>>* result) {
  const int32_t num_items = shards.front().num_items;
#pragma omp parallel if (num_items >= kParallelMinRows)
  {
    PairAccumulator<kMeasure> accumulator(num_items);
#pragma omp for schedule(dynamic, 16)
    for (int32_t anchor = 0; anchor < num_items; ++anchor) {
      for (size_t s = 0; s < shards.size(); ++s) {
        const ColumnIndex& index = columns[s];
        for (int64_t c = index.col_ptr[anchor]; c < index.col_ptr[anchor + 1]; ++c) {
          const int32_t row = index.row[c];
          const double mean = user_means[s].empty() ? 0.0 : user_means[s][row];
          accumulator.AddUser(shards[s], row, anchor, index.value[c], mean);
        }
      }
      TopKAccumulator top(options.k, ScoreOrder::kLargerIsBetter);
      for (int32_t partner : accumulator.touched()) {
        const PairSums pair = accumulator.Take(partner);
        if (pair.n < options.min_support) continue;
        top.Push(partner,
                 static_cast<float>(FinishSimilarity(pair, totals[anchor], totals[partner], options)));
      }
      accumulator.Clear();
      (*result)[anchor] = top.TakeSorted();
    }
  }
}

}  // namespace

absl::StatusOr<SimilarityMeasure> ParseSimilarityMeasure(std::string_view name) {
  if (name == "cosine") return SimilarityMeasure::kCosine;
  if (name == "pearson") return SimilarityMeasure::kPearson;
  if (name == "adjusted_cosine") return SimilarityMeasure::kAdjustedCosine;
  if (name == "jaccard") return SimilarityMeasure::kJaccard;
  if (name == "msd") return SimilarityMeasure::kMsd;
  return absl::InvalidArgumentError(
      absl::StrCat("similarity measure '", absl::string_view(name.data(), name.size()),
                   "' is unknown; use cosine, pearson, adjusted_cosine, jaccard or msd"));
}

std::string_view SimilarityMeasureName(SimilarityMeasure measure) {
  switch (measure) {
    case SimilarityMeasure::kCosine:
      return "cosine";
    case SimilarityMeasure::kPearson:
      return "pearson";
    case SimilarityMeasure::kAdjustedCosine:
      return "adjusted_cosine";
    case SimilarityMeasure::kJaccard:
      return "jaccard";
    case SimilarityMeasure::kMsd:
      return "msd";
  }
  return "unknown";
}

absl::Status SimilarityOptions::Validate() const {
  if (k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("k is ", k, "; it must be at least 1"));
  }
  if (!std::isfinite(shrinkage) || shrinkage < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shrinkage is ", shrinkage, "; it must be a finite number >= 0"));
  }
  if (min_support < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_support is ", min_support, "; it must be at least 1"));
  }
  return absl::OkStatus();
}

void PairSums::Add(const PairSums& other) {
  n += other.n;
  sum_x += other.sum_x;
  sum_y += other.sum_y;
  sum_xy += other.sum_xy;
  sum_xx += other.sum_xx;
  sum_yy += other.sum_yy;
  sum_xy_centred += other.sum_xy_centred;
  sum_xx_centred += other.sum_xx_centred;
  sum_yy_centred += other.sum_yy_centred;
}

double FinishSimilarity(const PairSums& pair, const VectorTotals& a, const VectorTotals& b,
                        const SimilarityOptions& options) {
  if (pair.n < std::max(1, options.min_support)) return 0.0;
  const double n = static_cast<double>(pair.n);
  double similarity = 0.0;
  switch (options.measure) {
    case SimilarityMeasure::kCosine:
      similarity = CosineFromSums(pair.sum_xy, a.sum_sq, b.sum_sq);
      break;
    case SimilarityMeasure::kPearson: {
      const double covariance = pair.sum_xy - pair.sum_x * pair.sum_y / n;
      double variance_x = pair.sum_xx - pair.sum_x * pair.sum_x / n;
      double variance_y = pair.sum_yy - pair.sum_y * pair.sum_y / n;
      if (variance_x <= kRelativeVarianceFloor * pair.sum_xx) variance_x = 0;
      if (variance_y <= kRelativeVarianceFloor * pair.sum_yy) variance_y = 0;
      similarity = CosineFromSums(covariance, variance_x, variance_y);
      break;
    }
    case SimilarityMeasure::kAdjustedCosine:
      similarity = CosineFromSums(pair.sum_xy_centred, pair.sum_xx_centred, pair.sum_yy_centred);
      break;
    case SimilarityMeasure::kJaccard: {
      const double union_size = static_cast<double>(a.count + b.count) - n;
      similarity = union_size > 0 ? n / union_size : 0.0;
      break;
    }
    case SimilarityMeasure::kMsd: {
      // Σ (x − y)² from the expanded sums; rounding may make it slightly negative.
      const double squared_difference =
          std::max(0.0, pair.sum_xx + pair.sum_yy - 2.0 * pair.sum_xy);
      similarity = 1.0 / (squared_difference / n + 1.0);
      break;
    }
  }
  similarity = std::clamp(similarity, -1.0, 1.0);
  if (options.shrinkage > 0) similarity *= n / (n + options.shrinkage);
  return similarity;
}

// ----------------------------------------------------------------------------------------
// Item–item.

std::vector<VectorTotals> ComputeItemTotals(const InteractionMatrix& shard) {
  std::vector<VectorTotals> totals(static_cast<size_t>(shard.num_items));
  for (int64_t e = 0; e < shard.num_entries(); ++e) {
    VectorTotals& item = totals[shard.item_index[e]];
    ++item.count;
    item.sum_sq += static_cast<double>(shard.values[e]) * shard.values[e];
  }
  return totals;
}

void MergeItemTotals(const std::vector<VectorTotals>& shard_totals,
                     std::vector<VectorTotals>* total) {
  if (total->empty()) total->resize(shard_totals.size());
  for (size_t i = 0; i < shard_totals.size() && i < total->size(); ++i) {
    (*total)[i].count += shard_totals[i].count;
    (*total)[i].sum_sq += shard_totals[i].sum_sq;
  }
}

absl::StatusOr<ItemPairPartial> ComputeItemPairPartial(const InteractionMatrix& shard,
                                                       SimilarityMeasure measure,
                                                       int32_t first_item, int32_t end_item) {
  if (first_item < 0 || end_item <= first_item || end_item > shard.num_items) {
    return absl::InvalidArgumentError(
        absl::StrCat("anchor block [", first_item, ", ", end_item, ") is empty or outside [0, ",
                     shard.num_items, ")"));
  }
  const ColumnIndex columns = BuildColumnIndex(shard);
  const std::vector<double> user_means = UserMeans(shard, measure);
  const size_t num_anchors = static_cast<size_t>(end_item - first_item);
  std::vector<std::vector<int32_t>> partners(num_anchors);
  std::vector<std::vector<PairSums>> sums(num_anchors);
  switch (measure) {
    case SimilarityMeasure::kCosine:
      ComputePairs<SimilarityMeasure::kCosine>(shard, columns, user_means, first_item, end_item,
                                               &partners, &sums);
      break;
    case SimilarityMeasure::kPearson:
      ComputePairs<SimilarityMeasure::kPearson>(shard, columns, user_means, first_item, end_item,
                                                &partners, &sums);
      break;
    case SimilarityMeasure::kAdjustedCosine:
      ComputePairs<SimilarityMeasure::kAdjustedCosine>(shard, columns, user_means, first_item,
                                                       end_item, &partners, &sums);
      break;
    case SimilarityMeasure::kJaccard:
      ComputePairs<SimilarityMeasure::kJaccard>(shard, columns, user_means, first_item, end_item,
                                                &partners, &sums);
      break;
    case SimilarityMeasure::kMsd:
      ComputePairs<SimilarityMeasure::kMsd>(shard, columns, user_means, first_item, end_item,
                                            &partners, &sums);
      break;
  }

  ItemPairPartial partial;
  partial.first_item = first_item;
  partial.end_item = end_item;
  partial.anchor_ptr.assign(num_anchors + 1, 0);
  for (size_t a = 0; a < num_anchors; ++a) {
    partial.anchor_ptr[a + 1] = partial.anchor_ptr[a] + static_cast<int64_t>(partners[a].size());
  }
  partial.partner.reserve(static_cast<size_t>(partial.anchor_ptr.back()));
  partial.sums.reserve(static_cast<size_t>(partial.anchor_ptr.back()));
  for (size_t a = 0; a < num_anchors; ++a) {
    partial.partner.insert(partial.partner.end(), partners[a].begin(), partners[a].end());
    partial.sums.insert(partial.sums.end(), sums[a].begin(), sums[a].end());
  }
  return partial;
}

absl::Status MergeItemPairPartial(const ItemPairPartial& shard_partial, ItemPairPartial* merged) {
  if (merged->anchor_ptr.empty()) {
    *merged = shard_partial;
    return absl::OkStatus();
  }
  if (merged->first_item != shard_partial.first_item ||
      merged->end_item != shard_partial.end_item ||
      shard_partial.anchor_ptr.size() != merged->anchor_ptr.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot merge the pair sums of anchors [", shard_partial.first_item, ", ",
        shard_partial.end_item, ") into those of [", merged->first_item, ", ", merged->end_item,
        "); merge partials of one block"));
  }
  const size_t num_anchors = merged->anchor_ptr.size() - 1;
  ItemPairPartial out;
  out.first_item = merged->first_item;
  out.end_item = merged->end_item;
  out.anchor_ptr.assign(num_anchors + 1, 0);
  out.partner.reserve(merged->partner.size() + shard_partial.partner.size());
  out.sums.reserve(merged->partner.size() + shard_partial.partner.size());
  for (size_t a = 0; a < num_anchors; ++a) {
    int64_t i = merged->anchor_ptr[a];
    int64_t j = shard_partial.anchor_ptr[a];
    const int64_t i_end = merged->anchor_ptr[a + 1];
    const int64_t j_end = shard_partial.anchor_ptr[a + 1];
    while (i < i_end || j < j_end) {
      if (j == j_end || (i < i_end && merged->partner[i] < shard_partial.partner[j])) {
        out.partner.push_back(merged->partner[i]);
        out.sums.push_back(merged->sums[i]);
        ++i;
      } else if (i == i_end || shard_partial.partner[j] < merged->partner[i]) {
        out.partner.push_back(shard_partial.partner[j]);
        out.sums.push_back(shard_partial.sums[j]);
        ++j;
      } else {
        out.partner.push_back(merged->partner[i]);
        PairSums sum = merged->sums[i];
        sum.Add(shard_partial.sums[j]);
        out.sums.push_back(sum);
        ++i;
        ++j;
      }
    }
    out.anchor_ptr[a + 1] = static_cast<int64_t>(out.partner.size());
  }
  *merged = std::move(out);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<Neighbor>>> FinishItemNeighbors(
    const ItemPairPartial& merged, const std::vector<VectorTotals>& totals,
    const SimilarityOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (merged.anchor_ptr.empty() || merged.end_item <= merged.first_item ||
      merged.anchor_ptr.size() != static_cast<size_t>(merged.end_item - merged.first_item) + 1) {
    return absl::InvalidArgumentError("the merged pair sums are empty; merge at least one partial");
  }
  if (static_cast<int64_t>(totals.size()) < merged.end_item) {
    return absl::InvalidArgumentError(
        absl::StrCat("item totals cover ", totals.size(), " items but the block ends at item ",
                     merged.end_item, "; pass the merged totals of every item"));
  }
  for (int32_t partner : merged.partner) {
    if (partner < 0 || static_cast<size_t>(partner) >= totals.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "partner item ", partner, " is outside the ", totals.size(), " item totals"));
    }
  }
  const int64_t num_anchors = merged.end_item - merged.first_item;
  std::vector<std::vector<Neighbor>> result(static_cast<size_t>(num_anchors));
#pragma omp parallel for schedule(dynamic, 16) if (num_anchors >= kParallelMinRows)
  for (int64_t a = 0; a < num_anchors; ++a) {
    const VectorTotals& anchor_totals = totals[merged.first_item + a];
    TopKAccumulator top(options.k, ScoreOrder::kLargerIsBetter);
    for (int64_t e = merged.anchor_ptr[a]; e < merged.anchor_ptr[a + 1]; ++e) {
      if (merged.sums[e].n < options.min_support) continue;
      const int32_t partner = merged.partner[e];
      const double similarity =
          FinishSimilarity(merged.sums[e], anchor_totals, totals[partner], options);
      top.Push(partner, static_cast<float>(similarity));
    }
    result[a] = top.TakeSorted();
  }
  return result;
}

absl::StatusOr<std::vector<std::vector<Neighbor>>> ComputeAllItemNeighbors(
    const std::vector<InteractionMatrix>& shards, const SimilarityOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (shards.empty()) return std::vector<std::vector<Neighbor>>();
  if (absl::Status status = CheckSameItemCount(shards); !status.ok()) return status;
  const int32_t num_items = shards.front().num_items;

  std::vector<VectorTotals> totals(static_cast<size_t>(num_items));
  std::vector<ColumnIndex> columns;
  std::vector<std::vector<double>> user_means;
  for (const InteractionMatrix& shard : shards) {
    MergeItemTotals(ComputeItemTotals(shard), &totals);
    columns.push_back(BuildColumnIndex(shard));
    user_means.push_back(UserMeans(shard, options.measure));
  }

  std::vector<std::vector<Neighbor>> result(static_cast<size_t>(num_items));
  switch (options.measure) {
    case SimilarityMeasure::kCosine:
      FusedItemNeighbors<SimilarityMeasure::kCosine>(shards, columns, user_means, totals, options,
                                                     &result);
      break;
    case SimilarityMeasure::kPearson:
      FusedItemNeighbors<SimilarityMeasure::kPearson>(shards, columns, user_means, totals, options,
                                                      &result);
      break;
    case SimilarityMeasure::kAdjustedCosine:
      FusedItemNeighbors<SimilarityMeasure::kAdjustedCosine>(shards, columns, user_means, totals,
                                                             options, &result);
      break;
    case SimilarityMeasure::kJaccard:
      FusedItemNeighbors<SimilarityMeasure::kJaccard>(shards, columns, user_means, totals, options,
                                                      &result);
      break;
    case SimilarityMeasure::kMsd:
      FusedItemNeighbors<SimilarityMeasure::kMsd>(shards, columns, user_means, totals, options,
                                                  &result);
      break;
  }
  return result;
}

// ----------------------------------------------------------------------------------------
// User–user on sparse interactions.

std::vector<double> ComputeItemSums(const InteractionMatrix& shard) {
  std::vector<double> sums(static_cast<size_t>(shard.num_items), 0.0);
  for (int64_t e = 0; e < shard.num_entries(); ++e) sums[shard.item_index[e]] += shard.values[e];
  return sums;
}

std::vector<double> ComputeItemMeans(const std::vector<VectorTotals>& totals,
                                     const std::vector<double>& item_sums) {
  std::vector<double> means(totals.size(), 0.0);
  for (size_t i = 0; i < totals.size() && i < item_sums.size(); ++i) {
    if (totals[i].count > 0) means[i] = item_sums[i] / static_cast<double>(totals[i].count);
  }
  return means;
}

namespace {

VectorTotals RowTotals(const InteractionMatrix& m, int64_t row) {
  VectorTotals totals;
  for (int64_t e = m.row_ptr[row]; e < m.row_ptr[row + 1]; ++e) {
    ++totals.count;
    totals.sum_sq += static_cast<double>(m.values[e]) * m.values[e];
  }
  return totals;
}

template <SimilarityMeasure kMeasure>
void UserNeighborsKernel(const UserQueryBlock& queries, const InteractionMatrix& shard,
                         const std::vector<double>& item_means, const SimilarityOptions& options,
                         std::vector<std::vector<Neighbor>>* result) {
  const ColumnIndex columns = BuildColumnIndex(shard);
  std::vector<VectorTotals> candidate_totals(static_cast<size_t>(shard.num_users()));
  for (int64_t r = 0; r < shard.num_users(); ++r) candidate_totals[r] = RowTotals(shard, r);

  const InteractionMatrix& q = queries.rows;
  const int64_t num_queries = q.num_users();
#pragma omp parallel if (num_queries >= kParallelMinRows)
  {
    std::vector<PairSums> accumulator(static_cast<size_t>(shard.num_users()));
    std::vector<int32_t> touched;
#pragma omp for schedule(dynamic, 8)
    for (int64_t i = 0; i < num_queries; ++i) {
      touched.clear();
      for (int64_t e = q.row_ptr[i]; e < q.row_ptr[i + 1]; ++e) {
        const int32_t item = q.item_index[e];
        const double x = q.values[e];
        const double mean = kMeasure == SimilarityMeasure::kAdjustedCosine ? item_means[item] : 0;
        for (int64_t c = columns.col_ptr[item]; c < columns.col_ptr[item + 1]; ++c) {
          const int32_t candidate = columns.row[c];
          PairSums& pair = accumulator[candidate];
          if (pair.n == 0) touched.push_back(candidate);
          const double y = columns.value[c];
          AddCoRating<kMeasure>(x, y, x - mean, y - mean, &pair);
        }
      }
      const VectorTotals query_totals = RowTotals(q, i);
      const int64_t query_id = queries.global_ids[i];
      TopKAccumulator top(options.k, ScoreOrder::kLargerIsBetter);
      for (int32_t candidate : touched) {
        PairSums& pair = accumulator[candidate];
        const int64_t candidate_id = GlobalUserId(shard.shard_id, candidate);
        if (candidate_id != query_id && pair.n >= options.min_support) {
          const double similarity =
              FinishSimilarity(pair, query_totals, candidate_totals[candidate], options);
          top.Push(candidate_id, static_cast<float>(similarity));
        }
        pair = PairSums();
      }
      (*result)[i] = top.TakeSorted();
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<std::vector<Neighbor>>> UserNeighborsInShard(
    const UserQueryBlock& queries, const InteractionMatrix& shard,
    const std::vector<double>& item_means, const SimilarityOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (queries.rows.num_items != shard.num_items) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the query block has ", queries.rows.num_items, " items but shard ", shard.shard_id,
        " has ", shard.num_items, "; use one item dictionary"));
  }
  if (static_cast<int64_t>(queries.global_ids.size()) != queries.rows.num_users()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the query block has ", queries.rows.num_users(), " rows but ",
                     queries.global_ids.size(), " global ids; give one id per row"));
  }
  if (options.measure == SimilarityMeasure::kAdjustedCosine &&
      static_cast<int32_t>(item_means.size()) != shard.num_items) {
    return absl::InvalidArgumentError(
        absl::StrCat("adjusted cosine needs one mean per item (", shard.num_items,
                     "), but item_means has ", item_means.size(), "; pass ComputeItemMeans"));
  }
  std::vector<std::vector<Neighbor>> result(static_cast<size_t>(queries.rows.num_users()));
  switch (options.measure) {
    case SimilarityMeasure::kCosine:
      UserNeighborsKernel<SimilarityMeasure::kCosine>(queries, shard, item_means, options, &result);
      break;
    case SimilarityMeasure::kPearson:
      UserNeighborsKernel<SimilarityMeasure::kPearson>(queries, shard, item_means, options, &result);
      break;
    case SimilarityMeasure::kAdjustedCosine:
      UserNeighborsKernel<SimilarityMeasure::kAdjustedCosine>(queries, shard, item_means, options,
                                                              &result);
      break;
    case SimilarityMeasure::kJaccard:
      UserNeighborsKernel<SimilarityMeasure::kJaccard>(queries, shard, item_means, options, &result);
      break;
    case SimilarityMeasure::kMsd:
      UserNeighborsKernel<SimilarityMeasure::kMsd>(queries, shard, item_means, options, &result);
      break;
  }
  return result;
}

}  // namespace cohort
