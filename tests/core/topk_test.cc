#include "core/topk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace cohort {
namespace {

TEST(TopKAccumulatorTest, KeepsBestWithTiesById) {
  TopKAccumulator top(3, ScoreOrder::kLargerIsBetter);
  top.Push(5, 0.5f);
  top.Push(9, 0.9f);
  top.Push(4, 0.9f);
  top.Push(1, 0.1f);
  top.Push(2, 0.5f);
  top.Push(7, std::nanf(""));
  const std::vector<Neighbor> expected = {{4, 0.9f}, {9, 0.9f}, {2, 0.5f}};
  EXPECT_EQ(top.TakeSorted(), expected);
  EXPECT_EQ(top.size(), 0);
}

TEST(TopKAccumulatorTest, KeepsSmallestScoresForDistance) {
  TopKAccumulator top(2, ScoreOrder::kSmallerIsBetter);
  for (int id = 0; id < 10; ++id) top.Push(id, static_cast<float>((id * 7) % 10));
  const std::vector<Neighbor> expected = {{0, 0.0f}, {3, 1.0f}};
  EXPECT_EQ(top.TakeSorted(), expected);
}

TEST(TopKAccumulatorTest, EqualsFullSortOnRandomScores) {
  std::mt19937_64 engine(3);
  for (ScoreOrder order : {ScoreOrder::kLargerIsBetter, ScoreOrder::kSmallerIsBetter}) {
    std::vector<Neighbor> all;
    TopKAccumulator top(17, order);
    for (int id = 0; id < 500; ++id) {
      // Few distinct scores, so many ties.
      const float score = static_cast<float>(engine() % 20);
      all.push_back({id, score});
      if (top.MayAccept(score)) top.Push(id, score);
    }
    std::sort(all.begin(), all.end(),
              [order](const Neighbor& a, const Neighbor& b) { return RanksBefore(a, b, order); });
    all.resize(17);
    EXPECT_EQ(top.TakeSorted(), all);
  }
}

TEST(TopKAccumulatorTest, ZeroKKeepsNothing) {
  TopKAccumulator top(0, ScoreOrder::kLargerIsBetter);
  top.Push(1, 1.0f);
  EXPECT_FALSE(top.MayAccept(2.0f));
  EXPECT_TRUE(top.TakeSorted().empty());
}

TEST(MergeTopKTest, RemovesDuplicatesBeforeTruncating) {
  // Id 3 appears in two shards; its best score counts once, so the third entry is id 8.
  const std::vector<std::vector<Neighbor>> lists = {{{3, 0.9f}, {1, 0.5f}}, {{3, 0.7f}, {8, 0.6f}}};
  const std::vector<Neighbor> expected = {{3, 0.9f}, {8, 0.6f}, {1, 0.5f}};
  EXPECT_EQ(MergeTopK(lists, 3, ScoreOrder::kLargerIsBetter), expected);
}

TEST(MergeTopKTest, BreaksTiesByIdWhateverTheListOrder) {
  const std::vector<std::vector<Neighbor>> lists = {{{6, 0.5f}, {2, 0.4f}}, {{4, 0.5f}}, {{1, 0.5f}}};
  std::vector<std::vector<Neighbor>> reversed(lists.rbegin(), lists.rend());
  const std::vector<Neighbor> expected = {{1, 0.5f}, {4, 0.5f}};
  EXPECT_EQ(MergeTopK(lists, 2, ScoreOrder::kLargerIsBetter), expected);
  EXPECT_EQ(MergeTopK(reversed, 2, ScoreOrder::kLargerIsBetter), expected);
}

TEST(MergeTopKTest, DistanceKeepsSmallestAndDropsNan) {
  const std::vector<std::vector<Neighbor>> lists = {{{1, 2.0f}, {2, std::nanf("")}}, {{3, 0.5f}, {1, 1.0f}}};
  const std::vector<Neighbor> expected = {{3, 0.5f}, {1, 1.0f}};
  EXPECT_EQ(MergeTopK(lists, 5, ScoreOrder::kSmallerIsBetter), expected);
}

TEST(MergeTopKByKeyTest, BreaksTiesByKeyNotById) {
  // Ids 1 and 2 come from one shard, ids 9 and 5 from another; the keys reverse the ids.
  const std::vector<std::string> keys = {"", "z", "y", "", "", "b", "", "", "", "a"};
  const auto key = [&keys](int64_t id) -> std::string_view { return keys[id]; };
  const std::vector<std::vector<Neighbor>> lists = {{{2, 0.5f}, {1, 0.5f}}, {{9, 0.5f}, {5, 0.5f}}};
  const std::vector<Neighbor> expected = {{9, 0.5f}, {5, 0.5f}, {2, 0.5f}};
  EXPECT_EQ(MergeTopKByKey(lists, 3, ScoreOrder::kLargerIsBetter, key), expected);
}

TEST(MergeTopKByKeyTest, BetterScoreWinsOverSmallerKey) {
  const std::vector<std::string> keys = {"b", "a", "c"};
  const auto key = [&keys](int64_t id) -> std::string_view { return keys[id]; };
  const std::vector<std::vector<Neighbor>> lists = {{{0, 0.9f}, {0, 0.2f}}, {{1, 0.4f}, {2, 0.4f}}};
  const std::vector<Neighbor> expected = {{0, 0.9f}, {1, 0.4f}};
  EXPECT_EQ(MergeTopKByKey(lists, 2, ScoreOrder::kLargerIsBetter, key), expected);
}

}  // namespace
}  // namespace cohort
