#include "core/cf_eval.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/kmeans_kernels.h"
#include "core/shard_hash.h"

namespace cohort {
namespace {

// Appends entry e of `from` to the last row of `to`.
void CopyEntry(const InteractionMatrix& from, int64_t e, InteractionMatrix* to) {
  to->item_index.push_back(from.item_index[e]);
  to->values.push_back(from.values[e]);
  if (from.has_times()) to->times.push_back(from.times[e]);
}

}  // namespace

absl::Status HoldoutOptions::Validate() const {
  if (!(test_fraction > 0 && test_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("test_fraction is ", test_fraction, "; it must be in (0, 1)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<HoldoutSplit> SplitHoldout(const InteractionMatrix& shard,
                                          const HoldoutOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  HoldoutSplit split;
  for (InteractionMatrix* part : {&split.train, &split.test}) {
    part->shard_id = shard.shard_id;
    part->num_items = shard.num_items;
    part->user_ids = shard.user_ids;
    part->row_ptr.assign(1, 0);
  }

  std::vector<int64_t> order;
  std::vector<double> key;
  std::vector<uint8_t> held_out;
  for (int64_t r = 0; r < shard.num_users(); ++r) {
    const int64_t begin = shard.row_ptr[r];
    const int64_t m = shard.row_ptr[r + 1] - begin;
    const int64_t hold = std::min<int64_t>(
        static_cast<int64_t>(std::floor(options.test_fraction * static_cast<double>(m))),
        std::max<int64_t>(m - 1, 0));

    // order lists the row's entries with the held-out ones first.
    order.resize(static_cast<size_t>(m));
    std::iota(order.begin(), order.end(), begin);
    if (shard.has_times()) {
      // Latest first; among equal times, the larger item index first.
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        if (shard.times[a] != shard.times[b]) return shard.times[a] > shard.times[b];
        return shard.item_index[a] > shard.item_index[b];
      });
    } else {
      const uint64_t user_hash = HashUserId(shard.user_ids[r]);
      key.resize(static_cast<size_t>(m));
      for (int64_t i = 0; i < m; ++i) {
        key[i] = KeyedUniform(options.seed, user_hash,
                              static_cast<uint64_t>(shard.item_index[begin + i]), 0, 0);
      }
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        if (key[a - begin] != key[b - begin]) return key[a - begin] < key[b - begin];
        return shard.item_index[a] < shard.item_index[b];
      });
    }
    held_out.assign(static_cast<size_t>(m), 0);
    for (int64_t i = 0; i < hold; ++i) held_out[order[i] - begin] = 1;

    // Entries keep their item order in both parts.
    for (int64_t i = 0; i < m; ++i) {
      CopyEntry(shard, begin + i, held_out[i] ? &split.test : &split.train);
    }
    split.train.row_ptr.push_back(split.train.num_entries());
    split.test.row_ptr.push_back(split.test.num_entries());
  }
  return split;
}

void RankingMetricSums::Add(const RankingMetricSums& other) {
  users += other.users;
  precision += other.precision;
  recall += other.recall;
  ndcg += other.ndcg;
  hit_rate += other.hit_rate;
  if (recommended.size() < other.recommended.size()) recommended.resize(other.recommended.size(), 0);
  for (size_t i = 0; i < other.recommended.size(); ++i) recommended[i] |= other.recommended[i];
}

void AddUserRanking(const std::vector<int32_t>& recommended, const std::vector<int32_t>& relevant,
                    int k, RankingMetricSums* sums) {
  if (relevant.empty()) return;
  const size_t cut = std::min(recommended.size(), static_cast<size_t>(k));
  int64_t hits = 0;
  double dcg = 0.0;
  for (size_t r = 0; r < cut; ++r) {
    const int32_t item = recommended[r];
    if (item >= 0 && static_cast<size_t>(item) < sums->recommended.size()) {
      sums->recommended[item] = 1;
    }
    if (std::binary_search(relevant.begin(), relevant.end(), item)) {
      ++hits;
      dcg += 1.0 / std::log2(static_cast<double>(r) + 2.0);
    }
  }
  double ideal = 0.0;
  const size_t ideal_hits = std::min(relevant.size(), static_cast<size_t>(k));
  for (size_t r = 0; r < ideal_hits; ++r) ideal += 1.0 / std::log2(static_cast<double>(r) + 2.0);

  ++sums->users;
  sums->precision += static_cast<double>(hits) / k;
  sums->recall += static_cast<double>(hits) / static_cast<double>(relevant.size());
  sums->ndcg += dcg / ideal;
  sums->hit_rate += hits > 0 ? 1.0 : 0.0;
}

RankingMetrics FinishRankingMetrics(const RankingMetricSums& sums) {
  RankingMetrics metrics;
  metrics.users = sums.users;
  if (!sums.recommended.empty()) {
    const int64_t distinct = std::count(sums.recommended.begin(), sums.recommended.end(), 1);
    metrics.coverage =
        static_cast<double>(distinct) / static_cast<double>(sums.recommended.size());
  }
  if (sums.users == 0) return metrics;
  const double users = static_cast<double>(sums.users);
  metrics.precision_at_k = sums.precision / users;
  metrics.recall_at_k = sums.recall / users;
  metrics.ndcg_at_k = sums.ndcg / users;
  metrics.hit_rate = sums.hit_rate / users;
  return metrics;
}

void RatingErrorSums::Add(double predicted, double actual) {
  const double error = predicted - actual;
  ++count;
  sum_sq += error * error;
  sum_abs += std::abs(error);
}

void RatingErrorSums::Merge(const RatingErrorSums& other) {
  count += other.count;
  sum_sq += other.sum_sq;
  sum_abs += other.sum_abs;
}

double RatingErrorSums::Rmse() const {
  return count == 0 ? 0.0 : std::sqrt(sum_sq / static_cast<double>(count));
}

double RatingErrorSums::Mae() const {
  return count == 0 ? 0.0 : sum_abs / static_cast<double>(count);
}

}  // namespace cohort
