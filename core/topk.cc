#include "core/topk.h"

#include <algorithm>
#include <cmath>

namespace cohort {

bool RanksBefore(const Neighbor& a, const Neighbor& b, ScoreOrder order) {
  const bool a_nan = std::isnan(a.score);
  const bool b_nan = std::isnan(b.score);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && a.score != b.score) {
    return order == ScoreOrder::kLargerIsBetter ? a.score > b.score : a.score < b.score;
  }
  return a.id < b.id;
}

TopKAccumulator::TopKAccumulator(int k, ScoreOrder order) : k_(std::max(k, 0)), order_(order) {
  heap_.reserve(static_cast<size_t>(k_));
}

bool TopKAccumulator::MayAccept(float score) const {
  if (k_ == 0 || std::isnan(score)) return false;
  if (static_cast<int>(heap_.size()) < k_) return true;
  const float worst = heap_.front().score;
  return order_ == ScoreOrder::kLargerIsBetter ? score >= worst : score <= worst;
}

void TopKAccumulator::Push(int64_t id, float score) {
  if (k_ == 0 || std::isnan(score)) return;
  const ScoreOrder order = order_;
  // The heap is ordered so that its front is the entry every other entry ranks before.
  auto ranks_before = [order](const Neighbor& a, const Neighbor& b) {
    return RanksBefore(a, b, order);
  };
  const Neighbor candidate{id, score};
  if (static_cast<int>(heap_.size()) < k_) {
    heap_.push_back(candidate);
    std::push_heap(heap_.begin(), heap_.end(), ranks_before);
    return;
  }
  if (!RanksBefore(candidate, heap_.front(), order)) return;
  std::pop_heap(heap_.begin(), heap_.end(), ranks_before);
  heap_.back() = candidate;
  std::push_heap(heap_.begin(), heap_.end(), ranks_before);
}

std::vector<Neighbor> TopKAccumulator::TakeSorted() {
  const ScoreOrder order = order_;
  std::sort_heap(heap_.begin(), heap_.end(),
                 [order](const Neighbor& a, const Neighbor& b) { return RanksBefore(a, b, order); });
  std::vector<Neighbor> result = std::move(heap_);
  heap_.clear();
  heap_.reserve(static_cast<size_t>(k_));
  return result;
}

namespace {

// The distinct ids of `lists` with their best scores, NaN scores left out.
std::vector<Neighbor> DistinctBest(const std::vector<std::vector<Neighbor>>& lists,
                                   ScoreOrder order) {
  std::vector<Neighbor> all;
  size_t total = 0;
  for (const std::vector<Neighbor>& list : lists) total += list.size();
  all.reserve(total);
  for (const std::vector<Neighbor>& list : lists) {
    for (const Neighbor& entry : list) {
      if (!std::isnan(entry.score)) all.push_back(entry);
    }
  }

  // Repeats of an id are removed first, keeping the best score of each id: sorting by
  // id, then by rank, puts the entry to keep first in each run of one id.
  std::sort(all.begin(), all.end(), [order](const Neighbor& a, const Neighbor& b) {
    if (a.id != b.id) return a.id < b.id;
    return RanksBefore(a, b, order);
  });
  all.erase(std::unique(all.begin(), all.end(),
                        [](const Neighbor& a, const Neighbor& b) { return a.id == b.id; }),
            all.end());
  return all;
}

template <typename RanksBeforeFn>
std::vector<Neighbor> KeepBest(std::vector<Neighbor> all, int k, RanksBeforeFn ranks_before) {
  const size_t keep = std::min(all.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(keep), all.end(),
                    ranks_before);
  all.resize(keep);
  return all;
}

}  // namespace

std::vector<Neighbor> MergeTopK(const std::vector<std::vector<Neighbor>>& lists, int k,
                                ScoreOrder order) {
  return KeepBest(DistinctBest(lists, order), k, [order](const Neighbor& a, const Neighbor& b) {
    return RanksBefore(a, b, order);
  });
}

std::vector<Neighbor> MergeTopKByKey(const std::vector<std::vector<Neighbor>>& lists, int k,
                                     ScoreOrder order,
                                     const std::function<std::string_view(int64_t)>& key) {
  return KeepBest(DistinctBest(lists, order), k,
                  [order, &key](const Neighbor& a, const Neighbor& b) {
                    if (a.score != b.score) return RanksBefore(a, b, order);
                    const std::string_view key_a = key(a.id);
                    const std::string_view key_b = key(b.id);
                    if (key_a != key_b) return key_a < key_b;
                    return a.id < b.id;
                  });
}

}  // namespace cohort
