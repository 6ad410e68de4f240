// Top-k selection and the merge of per-shard top-k lists.
#ifndef COHORT_CORE_TOPK_H_
#define COHORT_CORE_TOPK_H_

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

namespace cohort {

// Whether a larger score (a similarity) or a smaller score (a distance) is better.
enum class ScoreOrder { kLargerIsBetter, kSmallerIsBetter };

// One entry of a top-k list: a global id and its score. Item ids are indices into the
// ItemDictionary; user ids are GlobalUserId(shard, row) (see core/interactions.h).
struct Neighbor {
  int64_t id = 0;
  float score = 0;

  friend bool operator==(const Neighbor& a, const Neighbor& b) {
    return a.id == b.id && a.score == b.score;
  }
};

// True when `a` ranks before `b`: the better score first, equal scores by id ascending.
// NaN scores rank after every other score.
bool RanksBefore(const Neighbor& a, const Neighbor& b, ScoreOrder order);

// Bounded accumulator of the k best (id, score) pairs, kept in a heap whose top is the
// worst kept entry, so each Push costs O(1) when the candidate is not better than it and
// O(log k) otherwise. NaN scores are ignored.
//
// REQUIRES: the ids pushed into one accumulator are distinct; MergeTopK accepts repeats.
// Thread safety: one thread at a time.
class TopKAccumulator {
 public:
  // REQUIRES: k >= 0 (k = 0 keeps nothing).
  TopKAccumulator(int k, ScoreOrder order);

  void Push(int64_t id, float score);

  // False when Push(id, score) would certainly keep nothing: k entries are kept and
  // `score` is worse than the worst kept one (or NaN). A cheap pre-filter for scans; an
  // equal score is decided by id inside Push.
  bool MayAccept(float score) const;

  int size() const { return static_cast<int>(heap_.size()); }
  // True when k entries are kept.
  bool full() const { return static_cast<int>(heap_.size()) == k_; }
  // Score of the worst kept entry. REQUIRES: size() > 0.
  float worst_score() const { return heap_.front().score; }

  // Returns the kept entries best first (RanksBefore) and empties the accumulator.
  std::vector<Neighbor> TakeSorted();

 private:
  int k_;
  ScoreOrder order_;
  std::vector<Neighbor> heap_;  // max-heap of "worse than", so heap_.front() is the worst
};

// Merges top-k lists (one per shard, in shard id order) into one list of at most k
// entries, best first. An id that appears more than once keeps its best score, and
// repeats are removed before the list is cut to k. Ties are broken by id ascending, so
// the result does not depend on the order of `lists` or of the entries in each list.
// REQUIRES: k >= 0.
std::vector<Neighbor> MergeTopK(const std::vector<std::vector<Neighbor>>& lists, int k,
                                ScoreOrder order);

// MergeTopK with equal scores ordered by key(id) ascending, then by id: for user lists,
// whose global ids follow (shard, row) while ties are broken by user id. Each input list
// must have been cut by the same order (within one shard, row order is user id order
// when the rows are sorted by user id). REQUIRES: k >= 0; `key` is defined on every id.
std::vector<Neighbor> MergeTopKByKey(const std::vector<std::vector<Neighbor>>& lists, int k,
                                     ScoreOrder order,
                                     const std::function<std::string_view(int64_t)>& key);

}  // namespace cohort

#endif  // COHORT_CORE_TOPK_H_
