#include "core/interactions.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/shard_hash.h"

namespace cohort {
namespace {

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path =
      (std::filesystem::path(::testing::TempDir()) / ("interactions_test_" + name)).string();
  std::ofstream(path) << text;
  return path;
}

TEST(InteractionMatrixTest, BuildsSortedCsrWithGlobalItemIndices) {
  const std::vector<InteractionRow> rows = {{"bob", "z", 2, kNoTime},
                                            {"amy", "y", 4, kNoTime},
                                            {"bob", "x", 1, kNoTime},
                                            {"amy", "x", 5, kNoTime}};
  absl::StatusOr<InteractionDataset> dataset = BuildInteractionDataset(rows, 1, DuplicateRule::kReject);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const InteractionMatrix& m = dataset->shards[0];
  EXPECT_EQ(dataset->dictionary.ids(), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(m.user_ids, (std::vector<std::string>{"amy", "bob"}));
  EXPECT_EQ(m.row_ptr, (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(m.item_index, (std::vector<int32_t>{0, 1, 0, 2}));
  EXPECT_EQ(m.values, (std::vector<float>{5, 4, 1, 2}));
  EXPECT_FALSE(m.has_times());
  EXPECT_DOUBLE_EQ(m.UserMean(0), 4.5);
  EXPECT_EQ(dataset->dictionary.Find("y"), 1);
  EXPECT_EQ(dataset->dictionary.Find("w"), -1);
}

TEST(InteractionMatrixTest, DuplicateRulesAreAppliedAndCounted) {
  const std::vector<InteractionRow> rows = {{"u", "a", 3, 100}, {"u", "a", 5, 50},
                                            {"u", "a", 2, 200}, {"u", "b", 1, 10}};
  struct Case {
    DuplicateRule rule;
    float value;
  };
  for (const Case& c : {Case{DuplicateRule::kKeepLatest, 2}, Case{DuplicateRule::kSum, 10},
                        Case{DuplicateRule::kMax, 5}}) {
    absl::StatusOr<InteractionDataset> dataset = BuildInteractionDataset(rows, 1, c.rule);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    const InteractionMatrix& m = dataset->shards[0];
    ASSERT_EQ(m.num_entries(), 2);
    EXPECT_EQ(m.values[0], c.value);
    EXPECT_EQ(m.times[0], 200);
    EXPECT_EQ(dataset->build_counts.rows_in, 4);
    EXPECT_EQ(dataset->build_counts.duplicate_rows, 2);
    EXPECT_EQ(dataset->build_counts.interactions, 2);
  }
  absl::StatusOr<InteractionDataset> rejected = BuildInteractionDataset(rows, 1, DuplicateRule::kReject);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(rejected.status().message().find("'u'"), std::string::npos);
}

TEST(InteractionMatrixTest, KeepLatestWithoutTimesKeepsTheLastRow) {
  const std::vector<InteractionRow> rows = {{"u", "a", 3, kNoTime}, {"u", "a", 1, kNoTime}};
  absl::StatusOr<InteractionDataset> dataset = BuildInteractionDataset(rows, 1, DuplicateRule::kKeepLatest);
  ASSERT_TRUE(dataset.ok());
  EXPECT_EQ(dataset->shards[0].values, std::vector<float>{1});
}

TEST(InteractionMatrixTest, RejectsInvalidRows) {
  const std::vector<InteractionRow> rows = {{"u", "a", 3, 5}, {"v", "a", 1, kNoTime}};
  EXPECT_EQ(BuildInteractionDataset(rows, 1, DuplicateRule::kSum).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<InteractionRow> empty_user = {{"", "a", 3, kNoTime}};
  EXPECT_EQ(BuildInteractionDataset(empty_user, 1, DuplicateRule::kSum).status().code(),
            absl::StatusCode::kInvalidArgument);
  InteractionRows shard{0, {{"u", "missing", 1, kNoTime}}};
  InteractionBuildCounts counts;
  EXPECT_EQ(BuildInteractionMatrix(shard, ItemDictionary({"a"}), DuplicateRule::kSum, &counts)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ItemDictionaryTest, MergeIgnoresShardOrder) {
  const std::vector<std::vector<std::string>> lists = {{"b", "d"}, {"a", "b", "e"}, {}, {"c"}};
  const std::vector<std::vector<std::string>> reversed(lists.rbegin(), lists.rend());
  EXPECT_EQ(MergeItemLists(lists).ids(), (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(MergeItemLists(reversed).ids(), MergeItemLists(lists).ids());
}

TEST(LoadInteractionsTest, KeepsOnlyRequestedShardsFromHeaderlessFile) {
  std::string text;
  for (int u = 0; u < 40; ++u) {
    text += std::to_string(u) + "\t" + std::to_string(100 + u % 7) + "\t" + std::to_string(1 + u % 5) +
            "\t" + std::to_string(880000000 + u) + "\n";
  }
  InteractionLoadOptions options;
  options.paths = {WriteFile("ml.tsv", text)};
  options.csv.delimiter = '\t';
  options.csv.has_header = false;
  options.user_column = "0";
  options.item_column = "1";
  options.value_column = "2";
  options.time_column = "3";
  options.num_shards = 4;
  options.shards = {2, 0};
  absl::StatusOr<LoadedInteractions> loaded = LoadInteractionRows(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->shards.size(), 2u);
  EXPECT_EQ(loaded->shards[0].shard_id, 0);
  EXPECT_EQ(loaded->shards[1].shard_id, 2);
  EXPECT_EQ(loaded->counts.rows_read, 40);
  int64_t kept = 0;
  for (const InteractionRows& shard : loaded->shards) {
    for (const InteractionRow& row : shard.rows) {
      EXPECT_EQ(ShardOfUser(row.user_id, 4), shard.shard_id);
      const int u = std::stoi(row.user_id);
      EXPECT_EQ(row.value, 1 + u % 5);
      EXPECT_EQ(row.time, 880000000 + u);
      ++kept;
    }
  }
  EXPECT_EQ(kept, loaded->counts.kept_rows);
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 40);
}

TEST(LoadInteractionsTest, ImplicitPurchasesFilterAndBinarize) {
  const std::string path = WriteFile(
      "retail.csv",
      "CustomerID,StockCode,Quantity,InvoiceDate\n"
      "17850,85123A,6,2010-12-01 08:26:00\n"
      ",85123A,6,2010-12-01 08:26:00\n"
      "17850,71053,-2,2010-12-01 09:00:00\n"
      "13047,71053,3,2010-12-02 10:00:00\n");
  InteractionLoadOptions options;
  options.paths = {path};
  options.user_column = "CustomerID";
  options.item_column = "StockCode";
  options.value_column = "Quantity";
  options.time_column = "InvoiceDate";
  options.min_value = 0;
  options.binarize = true;
  options.num_shards = 1;
  absl::StatusOr<InteractionDataset> dataset = LoadInteractionDataset(options, DuplicateRule::kSum);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->load_counts.rows_read, 4);
  EXPECT_EQ(dataset->load_counts.empty_user_rows, 1);
  EXPECT_EQ(dataset->load_counts.below_min_rows, 1);
  EXPECT_EQ(dataset->load_counts.kept_rows, 2);
  const InteractionMatrix& m = dataset->shards[0];
  EXPECT_EQ(m.values, (std::vector<float>{1, 1}));
  EXPECT_EQ(m.times[1], 1291191960);  // 2010-12-01 08:26:00 UTC
}

TEST(LoadInteractionsTest, BadCellsNameFileLineAndColumn) {
  InteractionLoadOptions options;
  options.paths = {WriteFile("bad.csv", "user_id,item_id,rating\nu1,a,4\nu2,b,four\n")};
  options.value_column = "rating";
  options.num_shards = 1;
  options.shards = {0};
  absl::StatusOr<LoadedInteractions> loaded = LoadInteractionRows(options);
  ASSERT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("bad.csv:3"), std::string::npos) << loaded.status();
  EXPECT_NE(loaded.status().message().find("'four'"), std::string::npos);

  options.value_column = "score";
  loaded = LoadInteractionRows(options);
  ASSERT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("'score'"), std::string::npos);

  options.value_column.clear();
  options.shards = {0, 0};
  EXPECT_EQ(LoadInteractionRows(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.shards = {0};
  options.paths = {"/nonexistent/interactions.csv"};
  EXPECT_EQ(LoadInteractionRows(options).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cohort
