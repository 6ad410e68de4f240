#include "core/profile_columns.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/cleaning.h"
#include "core/raw_table.h"
#include "core/schema.h"

namespace cohort {
namespace {

// id, score (numeric), active (boolean), bio (text), vec (embedding of 3), churn (label).
Schema ProfileSchema() {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId},        {"score", ColumnType::kNumeric},
                    {"active", ColumnType::kBoolean}, {"bio", ColumnType::kText},
                    {"vec", ColumnType::kEmbedding, 3}, {"churn", ColumnType::kLabel}};
  return schema;
}

class ProfileColumnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("cohort_profile_columns_test_" + std::to_string(getpid()) + "_" +
            std::to_string(counter++));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WriteFile(const std::string& text) {
    const std::string path = (dir_ / "users.csv").string();
    std::ofstream out(path, std::ios::binary);
    out << text;
    return path;
  }

  UserLoadOptions Options(const std::string& path) {
    UserLoadOptions options;
    options.paths = {path};
    options.schema = ProfileSchema();
    options.num_shards = 1;
    options.shards = {0};
    return options;
  }

  std::filesystem::path dir_;
};

TEST(ParseBooleanTest, AcceptsCommonSpellings) {
  for (const char* yes : {"true", "TRUE", "Yes", "y", "T", "1", " yes "}) {
    EXPECT_EQ(ParseBoolean(yes), std::optional<int8_t>(1)) << yes;
  }
  for (const char* no : {"false", "No", "n", "f", "0"}) {
    EXPECT_EQ(ParseBoolean(no), std::optional<int8_t>(0)) << no;
  }
  EXPECT_EQ(ParseBoolean(""), std::optional<int8_t>(kMissingBoolean));
  EXPECT_EQ(ParseBoolean("  "), std::optional<int8_t>(kMissingBoolean));
  EXPECT_FALSE(ParseBoolean("2").has_value());
  EXPECT_FALSE(ParseBoolean("maybe").has_value());
}

TEST(ParseEmbeddingTest, ParsesSpaceSeparatedNumbers) {
  absl::StatusOr<std::vector<float>> values = ParseEmbedding(" 0.5  -1e-2\t3 ", 3);
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, (std::vector<float>{0.5f, -0.01f, 3.0f}));
  EXPECT_TRUE(ParseEmbedding("", 3)->empty());
  const absl::Status short_cell = ParseEmbedding("1 2", 3).status();
  EXPECT_NE(short_cell.message().find("2 values but the column has length 3"), std::string::npos)
      << short_cell;
  const absl::Status bad = ParseEmbedding("1 x 3", 3).status();
  EXPECT_NE(bad.message().find("'x' (position 2)"), std::string::npos) << bad;
  EXPECT_FALSE(ParseEmbedding("1 nan 3", 3).ok());
  EXPECT_FALSE(ParseEmbedding("1,2,3", 3).ok());
}

TEST_F(ProfileColumnsTest, LoadsEveryProfilingType) {
  const std::string path = WriteFile(
      "id,score,active,bio,vec,churn\n"
      "u1,1.5,yes,你好 world,1 2 3,no\n"
      "u2,,,,,yes\n");
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(Options(path));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const RawShard& shard = loaded->shards[0];
  ASSERT_EQ(shard.num_rows(), 2);
  EXPECT_EQ(shard.profile.boolean[0], (std::vector<int8_t>{1, kMissingBoolean}));
  EXPECT_EQ(shard.profile.text[0], (std::vector<std::string>{"你好 world", ""}));
  const EmbeddingColumn& vec = shard.profile.embedding[0];
  EXPECT_EQ(vec.dim, 3);
  EXPECT_EQ(vec.missing, (std::vector<uint8_t>{0, 1}));
  EXPECT_EQ(vec.values[2], 3.0f);
  EXPECT_TRUE(std::isnan(vec.values[3]));
  EXPECT_EQ(shard.profile.labels, (std::vector<std::string>{"no", "yes"}));
}

TEST_F(ProfileColumnsTest, WrongEmbeddingLengthNamesTheLine) {
  const std::string path = WriteFile(
      "id,score,active,bio,vec,churn\n"
      "u1,1,yes,a,1 2 3,no\n"
      "u2,2,no,b,1 2,no\n");
  const absl::Status status = LoadUserShards(Options(path)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("users.csv:3"), std::string::npos) << status;
  EXPECT_NE(status.message().find("column 'vec'"), std::string::npos) << status;
  EXPECT_NE(status.message().find("has length 3"), std::string::npos) << status;
}

TEST_F(ProfileColumnsTest, BadBooleanAndEmptyLabelAreRejected) {
  const std::string bad_boolean = WriteFile("id,score,active,bio,vec,churn\nu1,1,perhaps,a,,no\n");
  const absl::Status boolean = LoadUserShards(Options(bad_boolean)).status();
  EXPECT_NE(boolean.message().find("'perhaps' is not a boolean"), std::string::npos) << boolean;
  const std::string empty_label = WriteFile("id,score,active,bio,vec,churn\nu1,1,yes,a,,\n");
  const absl::Status label = LoadUserShards(Options(empty_label)).status();
  EXPECT_NE(label.message().find("the label is empty"), std::string::npos) << label;
}

TEST(AppendUserRowTest, RejectedRowLeavesProfileColumnsUnchanged) {
  const Schema schema = ProfileSchema();
  RawShard shard = MakeEmptyShard(schema, 0);
  ASSERT_TRUE(AppendUserRow(schema, {"u1", "1", "yes", "a", "1 2 3", "no"}, &shard).ok());
  // The numeric cell is rejected after the profiling cells were appended.
  EXPECT_FALSE(AppendUserRow(schema, {"u2", "abc", "no", "b", "4 5 6", "yes"}, &shard).ok());
  // The embedding cell is rejected before anything is appended.
  EXPECT_FALSE(AppendUserRow(schema, {"u3", "3", "no", "b", "4 5", "yes"}, &shard).ok());
  EXPECT_EQ(shard.num_rows(), 1);
  EXPECT_EQ(shard.numeric.rows(), 1);
  EXPECT_EQ(shard.profile.boolean[0].size(), 1u);
  EXPECT_EQ(shard.profile.text[0].size(), 1u);
  EXPECT_EQ(shard.profile.embedding[0].values.size(), 3u);
  EXPECT_EQ(shard.profile.embedding[0].missing.size(), 1u);
  EXPECT_EQ(shard.profile.labels.size(), 1u);
}

TEST_F(ProfileColumnsTest, CleaningRulesDropDuplicatesAndBlankBadCells) {
  const std::string path = WriteFile(
      "id,score,active,bio,vec,churn\n"
      "u1,1,yes,a,1 2 3,no\n"
      "u2,n/a,maybe,b,1 2,yes\n"
      "u1,5,no,c,4 5 6,yes\n");
  UserLoadOptions options = Options(path);
  EXPECT_FALSE(LoadUserShards(options).ok());
  options.cleaning.duplicate_ids = CleaningRules::DuplicateIds::kKeepFirst;
  options.cleaning.unparsable_cells = CleaningRules::UnparsableCells::kMissing;
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const RawShard& shard = loaded->shards[0];
  EXPECT_EQ(shard.ids.ToStrings(), (std::vector<std::string>{"u1", "u2"}));
  EXPECT_EQ(shard.numeric(0, 0), 1.0f);  // the first u1 is kept
  EXPECT_TRUE(std::isnan(shard.numeric(1, 0)));
  EXPECT_EQ(shard.profile.boolean[0][1], kMissingBoolean);
  EXPECT_EQ(shard.profile.embedding[0].missing[1], 1);
  const CleaningReport& report = loaded->cleaning_report;
  EXPECT_EQ(report.duplicate_rows_dropped, 1);
  EXPECT_EQ(report.unparsable_cells.at("score"), 1);
  EXPECT_EQ(report.unparsable_cells.at("active"), 1);
  EXPECT_EQ(report.unparsable_cells.at("vec"), 1);
}

TEST(ProfileSchemaTest, InferenceTakesEmbeddingLengthFromSample) {
  SchemaOverrides overrides;
  overrides.types = {{"vec", ColumnType::kEmbedding}, {"churn", ColumnType::kLabel}};
  absl::StatusOr<Schema> schema =
      InferSchema({"id", "vec", "churn", "flag"}, {{"a", "", "no", "0"}, {"b", "1 2 3 4", "yes", "1"}},
                  overrides);
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_EQ(schema->columns[1].embedding_dim, 4);
  EXPECT_EQ(schema->columns[2].type, ColumnType::kLabel);
  // Inference never guesses a boolean or a label: 0/1 stays numeric.
  EXPECT_EQ(schema->columns[3].type, ColumnType::kNumeric);
  EXPECT_EQ(schema->LabelIndex(), 2);

  const absl::Status no_sample =
      InferSchema({"id", "vec"}, {{"a", ""}}, SchemaOverrides{"", {{"vec", ColumnType::kEmbedding}}})
          .status();
  EXPECT_NE(no_sample.message().find("length is unknown"), std::string::npos) << no_sample;
}

TEST(ProfileSchemaTest, ValidateChecksLabelsAndEmbeddingLengths) {
  Schema two_labels = ProfileSchema();
  two_labels.columns.push_back({"churn2", ColumnType::kLabel});
  EXPECT_NE(two_labels.Validate().message().find("2 label columns"), std::string::npos);
  Schema no_length = ProfileSchema();
  no_length.columns[4].embedding_dim = 0;
  EXPECT_NE(no_length.Validate().message().find("embedding_dim 0"), std::string::npos);
  Schema stray_length = ProfileSchema();
  stray_length.columns[1].embedding_dim = 2;
  EXPECT_NE(stray_length.Validate().message().find("only embedding columns"), std::string::npos);
  for (const char* name : {"boolean", "text", "embedding", "label"}) {
    absl::StatusOr<ColumnType> type = ParseColumnType(name);
    ASSERT_TRUE(type.ok()) << name;
    EXPECT_EQ(ColumnTypeName(*type), name);
  }
}

}  // namespace
}  // namespace cohort
