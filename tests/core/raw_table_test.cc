#include "core/raw_table.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/columns.h"
#include "core/csv.h"
#include "core/raw_cells.h"
#include "core/schema.h"
#include "core/shard_hash.h"
#include "tests/test_data.h"

namespace cohort {
namespace {

Schema UserSchema() {
  Schema schema;
  schema.columns = {{"user_id", ColumnType::kId},
                    {"age", ColumnType::kNumeric},
                    {"city", ColumnType::kCategorical},
                    {"income", ColumnType::kNumeric}};
  return schema;
}

// user_id, a weight column "w" and one numeric feature.
Schema WeightedSchema() {
  Schema schema;
  schema.columns = {{"user_id", ColumnType::kId},
                    {"w", ColumnType::kWeight},
                    {"age", ColumnType::kNumeric}};
  return schema;
}

std::vector<int> AllShards(int num_shards) {
  std::vector<int> shards(num_shards);
  for (int s = 0; s < num_shards; ++s) shards[s] = s;
  return shards;
}

class RawTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("cohort_raw_table_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WriteFile(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    out << bytes;
    return path;
  }

  UserLoadOptions Options(std::vector<std::string> paths, int num_shards = 4) {
    UserLoadOptions options;
    options.paths = std::move(paths);
    options.schema = UserSchema();
    options.num_shards = num_shards;
    options.shards = AllShards(num_shards);
    return options;
  }

  // Writes `rows` users u0..u{rows-1} with a header whose columns are in a different
  // order from the schema and include a column the schema does not use.
  std::string WriteUsers(const std::string& name, int first, int rows) {
    std::string text = "city,extra,income,user_id,age\n";
    for (int i = first; i < first + rows; ++i) {
      text += "c" + std::to_string(i % 3) + ",x," + std::to_string(i * 100) + ",u" +
              std::to_string(i) + "," + std::to_string(20 + i % 50) + "\n";
    }
    return WriteFile(name, text);
  }

  std::filesystem::path dir_;
};

// IdColumn stores offsets in 32 bits; 8-bit words show the same wrap handling on a few
// hundred bytes instead of 4 GiB.
TEST(PackedOffsetsTest, OffsetsPastTheWordRangeReadBackWhole) {
  PackedOffsets<uint8_t> offsets;
  const std::vector<uint64_t> values = {0, 100, 255, 256, 300, 511, 700, 955, 1000};
  for (uint64_t v : values) offsets.push_back(v);
  ASSERT_EQ(offsets.size(), static_cast<int64_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(offsets.at(i), values[i]) << i;

  offsets.pop_back();  // 1000
  offsets.pop_back();  // 955, the entry that passed 768
  EXPECT_EQ(offsets.back(), 700u);
  offsets.push_back(800);
  EXPECT_EQ(offsets.back(), 800u);
  EXPECT_EQ(offsets.at(3), 256u);
}

TEST(PackedOffsetsTest, IdColumnPopBackRestoresTheText) {
  IdColumn ids;
  ids.push_back("alpha");
  ids.push_back("beta");
  ids.pop_back();
  ids.push_back("gamma");
  EXPECT_EQ(ids.ToStrings(), (std::vector<std::string>{"alpha", "gamma"}));
  EXPECT_LT(ids.MemoryBytes(), 64);
}

TEST_F(RawTableTest, EmptyShardHasVectorPerColumn) {
  const RawShard shard = MakeEmptyShard(UserSchema(), 7);
  EXPECT_EQ(shard.shard_id, 7);
  EXPECT_EQ(shard.num_rows(), 0);
  EXPECT_EQ(shard.numeric.cols(), 2);
  EXPECT_EQ(shard.categorical.size(), 1u);
}

TEST_F(RawTableTest, AppendRowSplitsCellsByType) {
  const Schema schema = UserSchema();
  RawShard shard = MakeEmptyShard(schema, 0);
  ASSERT_TRUE(AppendUserRow(schema, {"u1", "30", "Paris", "1.5e3"}, &shard).ok());
  ASSERT_TRUE(AppendUserRow(schema, {"u2", "", "", " "}, &shard).ok());
  ASSERT_EQ(shard.num_rows(), 2);
  EXPECT_EQ(shard.ids.ToStrings(), (std::vector<std::string>{"u1", "u2"}));
  EXPECT_EQ(shard.numeric(0, 0), 30.0);
  EXPECT_EQ(shard.numeric(0, 1), 1500.0);
  EXPECT_EQ(shard.categorical[0][0], "Paris");
  // Blank cells are missing values: NaN for numeric columns, "" for categorical ones.
  EXPECT_TRUE(std::isnan(shard.numeric(1, 0)));
  EXPECT_TRUE(std::isnan(shard.numeric(1, 1)));
  EXPECT_EQ(shard.categorical[0][1], "");
}

TEST_F(RawTableTest, NumericCellEqualsGeneralParserRoundedToFloat) {
  // Formats a fast path for plain decimals takes, and the edges where it must defer to
  // the general parser (many digits, large exponents, spaces, a leading '+').
  std::vector<std::string> texts = {"0",      "-0",        "007",      "1.5",     "-2.25",
                                    "1e22",   "1e23",      "1e-22",    "1e-23",   "9007199254740993",
                                    "123456789012345678901", "0.000000000000000000000001",
                                    " 42 ",   "+3.5",      "1E5",      "2.5e-3",  "3.4e38",
                                    "0.1",    "-0.30000000000000004"};
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> mantissa(-1.0, 1.0);
  std::uniform_int_distribution<int> power(-30, 30);
  for (int i = 0; i < 20000; ++i) {
    char text[64];
    const double value = mantissa(rng) * std::pow(10.0, power(rng));
    const char* format = i % 3 == 0 ? "%.6g" : (i % 3 == 1 ? "%.17g" : "%.9e");
    std::snprintf(text, sizeof(text), format, value);
    texts.push_back(text);
  }
  const Schema schema = UserSchema();
  for (const std::string& text : texts) {
    RawShard shard = MakeEmptyShard(schema, 0);
    ASSERT_TRUE(AppendUserRow(schema, {"u", text, "c", "1"}, &shard).ok()) << text;
    const std::optional<double> expected = ParseNumber(text);
    ASSERT_TRUE(expected.has_value()) << text;
    EXPECT_EQ(shard.numeric(0, 0), static_cast<float>(*expected)) << text;
  }
}

// The float fast path divides m by 10^k in float, where the double path divides in
// double and then rounds to float. Both agree for every mantissa and power it accepts.
TEST(PlainDecimalFloatTest, FloatArithmeticEqualsDoubleRoundedToFloat) {
  constexpr uint32_t kMaxMantissa = uint32_t{1} << 24;
  float float_power = 1.0f;
  double double_power = 1.0;
  for (int k = 1; k <= 10; ++k) {
    float_power *= 10.0f;
    double_power *= 10.0;
    int64_t mismatches = 0;
    for (uint32_t m = 0; m <= kMaxMantissa; ++m) {
      const float mantissa = static_cast<float>(m);
      if (mantissa / float_power != static_cast<float>(m / double_power)) ++mismatches;
      if (mantissa * float_power != static_cast<float>(m * double_power)) ++mismatches;
    }
    EXPECT_EQ(mismatches, 0) << "10^" << k;
  }
}

// The float fast path, where it accepts a text, returns ParseNumericCell's value as it
// was before the fast path: the double fast path or the general parser, rounded to float.
TEST(PlainDecimalFloatTest, EqualsDoubleParsersOnRandomAndEdgeTexts) {
  std::vector<std::string> texts = {
      "0",          "-0",          "+0",          "0.0",         "-0.0",        ".5",
      "5.",         "+.5",         "-5.",         "+5",          "1e10",        "1e-10",
      "1e11",       "1e-11",       "16777216",    "16777217",    "-16777217",   "167772.17",
      "0.16777215", "1.6777216e3", "999999999",   "0999999999",  "000000001.5", "123456789",
      "1e+5",       "1E-5",        "1e",          "1e+",         "e5",          "-",
      "",           "1.5e1000",    "0e1000",      "3.4028236e38", "1e-45",      "1.4e-45",
      "12345678901234567", "1.00000005", "0.000000001", "4294967296", "4294967295.5"};
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<uint64_t> digits(0, 99999999999ull);
  std::uniform_int_distribution<int> length(1, 11);
  std::uniform_int_distribution<int> power(-14, 14);
  std::uniform_int_distribution<int> shape(0, 5);
  for (int i = 0; i < 2000000; ++i) {
    std::string mantissa = std::to_string(digits(rng));
    mantissa.resize(std::min<size_t>(mantissa.size(), static_cast<size_t>(length(rng))));
    std::string text = shape(rng) == 0 ? "-" : "";
    switch (shape(rng)) {
      case 0:
        text += mantissa;
        break;
      case 1:
        text += "0." + mantissa;
        break;
      case 2:
        text += mantissa + "e" + std::to_string(power(rng));
        break;
      default: {
        const size_t point = static_cast<size_t>(length(rng)) % (mantissa.size() + 1);
        text += mantissa.substr(0, point) + "." + mantissa.substr(point);
        if (shape(rng) < 2) text += "E" + std::to_string(power(rng));
        break;
      }
    }
    texts.push_back(text);
  }
  int64_t accepted = 0;
  for (const std::string& text : texts) {
    float fast = 0;
    if (!ParsePlainDecimalFloat(text, &fast)) continue;
    ++accepted;
    const std::optional<double> general = ParseNumber(text);
    ASSERT_TRUE(general.has_value()) << text;
    double plain = 0;
    if (ParsePlainDecimal(text, &plain)) {
      ASSERT_EQ(std::signbit(fast), std::signbit(plain)) << text;
      ASSERT_EQ(fast, static_cast<float>(plain)) << text;
    }
    ASSERT_EQ(std::signbit(fast), std::signbit(*general)) << text;
    ASSERT_EQ(fast, static_cast<float>(*general)) << text;
  }
  // Most random texts are in the fast path's range, so the comparison is not vacuous.
  EXPECT_GT(accepted, 500000);
  float value = 0;
  EXPECT_FALSE(ParsePlainDecimalFloat("1e11", &value));
  EXPECT_FALSE(ParsePlainDecimalFloat("16777217", &value));
  EXPECT_FALSE(ParsePlainDecimalFloat(".5", &value));
  EXPECT_FALSE(ParsePlainDecimalFloat("5.", &value));
  EXPECT_FALSE(ParsePlainDecimalFloat(" 5", &value));
}

// Cells the fast paths reject reach the general parser, and its errors stay.
TEST_F(RawTableTest, OverflowAndJunkKeepTheirErrors) {
  const Schema schema = UserSchema();
  RawShard shard = MakeEmptyShard(schema, 0);
  const absl::Status overflow = AppendUserRow(schema, {"u1", "1e39", "c", "1"}, &shard);
  EXPECT_EQ(overflow.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(overflow.message().find("float32 range"), std::string::npos) << overflow;
  const absl::Status junk = AppendUserRow(schema, {"u1", "1.5.5", "c", "1"}, &shard);
  EXPECT_NE(junk.message().find("'1.5.5' is not a number"), std::string::npos) << junk;
  ASSERT_TRUE(AppendUserRow(schema, {"u2", "1.4e-45", "c", ".5"}, &shard).ok());
  EXPECT_EQ(shard.numeric(0, 0), std::numeric_limits<float>::denorm_min());
  EXPECT_EQ(shard.numeric(0, 1), 0.5f);
}

TEST_F(RawTableTest, AppendRowRejectsNonFiniteCell) {
  const Schema schema = UserSchema();
  RawShard shard = MakeEmptyShard(schema, 0);
  for (const char* text : {"nan", "inf", "-Inf"}) {
    const absl::Status status = AppendUserRow(schema, {"u1", "30", "Paris", text}, &shard);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(status.message().find(std::string("column 'income': value '") + text +
                                    "' is not a finite number; fix or blank the cell"),
              std::string::npos)
        << status;
  }
  EXPECT_EQ(shard.num_rows(), 0);
  EXPECT_EQ(shard.numeric.rows(), 0);
  EXPECT_EQ(shard.numeric.rows(), 0);
  EXPECT_EQ(shard.categorical[0].size(), 0);
}

TEST_F(RawTableTest, AppendRowRejectsTextInNumeric) {
  const Schema schema = UserSchema();
  RawShard shard = MakeEmptyShard(schema, 0);
  const absl::Status status = AppendUserRow(schema, {"u1", "thirty", "Paris", "1"}, &shard);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("column 'age': value 'thirty' is not a number"),
            std::string::npos)
      << status;
}

TEST_F(RawTableTest, AppendRowRejectsEmptyId) {
  const Schema schema = UserSchema();
  RawShard shard = MakeEmptyShard(schema, 0);
  const absl::Status status = AppendUserRow(schema, {"", "1", "a", "2"}, &shard);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("user id is empty"), std::string::npos) << status;
}

TEST_F(RawTableTest, UnweightedShardHasNoWeights) {
  const Schema schema = UserSchema();
  RawShard shard = MakeEmptyShard(schema, 0);
  ASSERT_TRUE(AppendUserRow(schema, {"u1", "30", "Paris", "1"}, &shard).ok());
  EXPECT_TRUE(shard.weights.empty());
}

TEST_F(RawTableTest, AppendRowParsesWeight) {
  const Schema schema = WeightedSchema();
  RawShard shard = MakeEmptyShard(schema, 0);
  EXPECT_TRUE(shard.weights.empty());
  EXPECT_EQ(shard.numeric.cols(), 1);
  ASSERT_TRUE(AppendUserRow(schema, {"u1", "2.5", "30"}, &shard).ok());
  ASSERT_TRUE(AppendUserRow(schema, {"u2", " 0 ", "31"}, &shard).ok());
  ASSERT_TRUE(AppendUserRow(schema, {"u3", "1e2", ""}, &shard).ok());
  EXPECT_EQ(shard.weights, (std::vector<float>{2.5f, 0.0f, 100.0f}));
  // The weight column is not a feature column.
  EXPECT_EQ(shard.numeric(0, 0), 30.0);
  EXPECT_EQ(shard.numeric.rows(), 3);
}

TEST_F(RawTableTest, AppendRowRejectsInvalidWeight) {
  const Schema schema = WeightedSchema();
  RawShard shard = MakeEmptyShard(schema, 0);
  const struct {
    const char* cell;
    const char* message;
  } cases[] = {
      {"-1", "column 'w': weight '-1' is negative; give every row a weight ≥ 0"},
      {"nan", "column 'w': weight 'nan' is not a finite number; give every row a weight ≥ 0"},
      {"inf", "column 'w': weight 'inf' is not a finite number; give every row a weight ≥ 0"},
      {"", "column 'w': weight '' is missing; give every row a weight ≥ 0"},
      {"  ", "column 'w': weight '  ' is missing; give every row a weight ≥ 0"},
      {"heavy", "column 'w': weight 'heavy' is not a number; give every row a weight ≥ 0"},
      {"1e300",
       "column 'w': weight '1e300' is larger than the float maximum; give every row a weight ≥ 0"},
  };
  for (const auto& c : cases) {
    const absl::Status status = AppendUserRow(schema, {"u1", c.cell, "30"}, &shard);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.cell;
    EXPECT_EQ(status.message(), c.message);
  }
  EXPECT_EQ(shard.num_rows(), 0);
  EXPECT_TRUE(shard.weights.empty());
  EXPECT_EQ(shard.numeric.rows(), 0);
}

TEST_F(RawTableTest, BadWeightNamesFileLineColumnAndValue) {
  const std::string path = WriteFile("users.csv", "user_id,w,age\nu1,1,30\nu2,-0.5,31\n");
  UserLoadOptions options = Options({path}, 1);
  options.schema = WeightedSchema();
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(loaded.status().message(),
            path + ":3: column 'w': weight '-0.5' is negative; give every row a weight ≥ 0");
}

TEST_F(RawTableTest, LoadsWeightsInRowOrder) {
  const std::string path = WriteFile("users.csv", "age,w,user_id\n30,2,u1\n31,0,u2\n32,1.5,u3\n");
  UserLoadOptions options = Options({path}, 1);
  options.schema = WeightedSchema();
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const RawShard& shard = loaded->shards[0];
  EXPECT_EQ(shard.ids.ToStrings(), (std::vector<std::string>{"u1", "u2", "u3"}));
  EXPECT_EQ(shard.weights, (std::vector<float>{2.0f, 0.0f, 1.5f}));
  EXPECT_EQ(shard.numeric.Column(0), (std::vector<double>{30, 31, 32}));
}

TEST_F(RawTableTest, LoadsAllRowsInFileOrder) {
  const std::string path = WriteUsers("users.csv", 0, 10);
  UserLoadOptions options = Options({path}, /*num_shards=*/1);
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rows_read, 10);
  ASSERT_EQ(loaded->shards.size(), 1u);
  const RawShard& shard = loaded->shards[0];
  ASSERT_EQ(shard.num_rows(), 10);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(shard.ids[i], "u" + std::to_string(i));
    EXPECT_EQ(shard.numeric(i, 0), 20.0 + i % 50) << "age of row " << i;
    EXPECT_EQ(shard.numeric(i, 1), i * 100.0) << "income of row " << i;
    EXPECT_EQ(shard.categorical[0][i], "c" + std::to_string(i % 3));
  }
}

TEST_F(RawTableTest, LineNumberIdsNumberEachFileFromItsDataLines) {
  const std::string first = WriteFile("a.csv", "age,city\n30,x\n31,y\n");
  const std::string second = WriteFile("b.csv", "age,city\n40,z\n");
  SchemaOverrides overrides;
  overrides.id_column = std::string(kLineNumberIdColumn);
  absl::StatusOr<Schema> schema = InferSchema({"age", "city"}, {{"30", "x"}}, overrides);
  ASSERT_TRUE(schema.ok()) << schema.status();
  ASSERT_EQ(schema->columns.size(), 3u);
  EXPECT_EQ(schema->columns[0].name, "@line");
  EXPECT_EQ(schema->columns[0].type, ColumnType::kId);
  EXPECT_EQ(schema->columns[1].type, ColumnType::kNumeric);

  UserLoadOptions options = Options({first, second}, /*num_shards=*/1);
  options.schema = *schema;
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const RawShard& shard = loaded->shards[0];
  ASSERT_EQ(shard.num_rows(), 3);
  EXPECT_EQ(shard.ids[0], "2");
  EXPECT_EQ(shard.ids[1], "3");
  EXPECT_EQ(shard.ids[2], "1:2");
  EXPECT_EQ(shard.numeric(2, 0), 40.0);
  EXPECT_EQ(shard.categorical[0][1], "y");
}

TEST_F(RawTableTest, LineNumberIdConflictsWithIdTypeOverride) {
  SchemaOverrides overrides;
  overrides.id_column = std::string(kLineNumberIdColumn);
  overrides.types["age"] = ColumnType::kId;
  absl::StatusOr<Schema> schema = InferSchema({"age", "city"}, {{"30", "x"}}, overrides);
  ASSERT_FALSE(schema.ok());
  EXPECT_EQ(schema.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(schema.status().message().find("'age'"), std::string::npos) << schema.status();
}

TEST_F(RawTableTest, ShardFilterKeepsOnlyHostedRows) {
  const int num_shards = 4;
  const std::string path = WriteUsers("users.csv", 0, 200);
  UserLoadOptions options = Options({path}, num_shards);
  options.shards = {3, 1};
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rows_read, 200);
  ASSERT_EQ(loaded->shards.size(), 2u);
  EXPECT_EQ(loaded->shards[0].shard_id, 1);
  EXPECT_EQ(loaded->shards[1].shard_id, 3);

  int64_t expected_rows = 0;
  for (int i = 0; i < 200; ++i) {
    const int shard = ShardOfUser("u" + std::to_string(i), num_shards);
    if (shard == 1 || shard == 3) ++expected_rows;
  }
  EXPECT_EQ(loaded->shards[0].num_rows() + loaded->shards[1].num_rows(), expected_rows);
  for (const RawShard& shard : loaded->shards) {
    for (const std::string& id : shard.ids.ToStrings()) {
      EXPECT_EQ(ShardOfUser(id, num_shards), shard.shard_id);
    }
  }
}

TEST_F(RawTableTest, UnionOverShardsEqualsAllRowsInOrder) {
  const int num_shards = 5;
  const std::string first = WriteUsers("part-1.csv", 0, 120);
  const std::string second = WriteUsers("part-2.csv", 120, 80);

  std::vector<std::string> union_ids;
  int64_t rows_read_total = 0;
  for (int s = 0; s < num_shards; ++s) {
    UserLoadOptions options = Options({first, second}, num_shards);
    options.shards = {s};
    absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->rows_read, 200);
    rows_read_total += loaded->rows_read;
    const RawShard& shard = loaded->shards[0];
    // Within a shard, rows keep file order: the ids' numbers increase.
    for (int64_t r = 1; r < shard.num_rows(); ++r) {
      EXPECT_LT(std::stoi(std::string(shard.ids[r - 1].substr(1))),
                std::stoi(std::string(shard.ids[r].substr(1))));
    }
    for (const std::string& id : shard.ids.ToStrings()) union_ids.push_back(id);
  }
  EXPECT_EQ(rows_read_total, 200 * num_shards);
  std::sort(union_ids.begin(), union_ids.end());
  std::vector<std::string> all_ids;
  for (int i = 0; i < 200; ++i) all_ids.push_back("u" + std::to_string(i));
  std::sort(all_ids.begin(), all_ids.end());
  EXPECT_EQ(union_ids, all_ids);
}

TEST_F(RawTableTest, NoRequestedShardsReadsButKeepsNothing) {
  UserLoadOptions options = Options({WriteUsers("users.csv", 0, 20)});
  options.shards = {};
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rows_read, 20);
  EXPECT_TRUE(loaded->shards.empty());
}

TEST_F(RawTableTest, BadCellInSkippedShardIsNotParsed) {
  const int num_shards = 8;
  // Find an id whose shard is not shard 0, then give it an invalid numeric cell.
  std::string skipped_id;
  for (int i = 0; skipped_id.empty(); ++i) {
    const std::string id = "v" + std::to_string(i);
    if (ShardOfUser(id, num_shards) != 0) skipped_id = id;
  }
  const std::string path =
      WriteFile("users.csv", "user_id,age,city,income\n" + skipped_id + ",inf,a,1\n");
  UserLoadOptions options = Options({path}, num_shards);
  options.shards = {0};
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rows_read, 1);
  EXPECT_EQ(loaded->shards[0].num_rows(), 0);
}

TEST_F(RawTableTest, InfiniteCellNamesFileLineColumnAndValue) {
  const std::string path =
      WriteFile("users.csv", "user_id,age,city,income\nu1,30,a,1\nu2,31,b,+Inf\n");
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(Options({path}, 1));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(loaded.status().message(),
            path + ":3: column 'income': value '+Inf' is not a finite number; fix or blank the "
                   "cell (blank cells are imputed)");
}

TEST_F(RawTableTest, NanCellIsRejected) {
  const std::string path = WriteFile("users.csv", "user_id,age,city,income\nu1,NaN,a,1\n");
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(Options({path}, 1));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find(path + ":2: column 'age': value 'NaN'"),
            std::string::npos)
      << loaded.status();
}

TEST_F(RawTableTest, DuplicateIdNamesBothLines) {
  const std::string first = WriteFile("a.csv", "user_id,age,city,income\nu1,1,a,1\nu2,2,b,2\n");
  const std::string second = WriteFile("b.csv", "user_id,age,city,income\nu3,3,c,3\nu2,4,d,4\n");
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(Options({first, second}, 1));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(loaded.status().message(),
            second + ":3: user id 'u2' already appeared at " + first +
                ":3; user ids must be unique, or create the dataset with the keep-first rule "
                "for duplicate ids");
}

TEST_F(RawTableTest, KeepFirstRuleDropsAndCountsDuplicates) {
  const std::string first =
      WriteFile("a.csv", "user_id,age,city,income\nu1,1,a,1\nu2,2,b,2\nu1,9,z,9\n");
  const std::string second = WriteFile("b.csv", "user_id,age,city,income\nu3,3,c,3\nu2,4,d,4\n");
  UserLoadOptions options = Options({first, second}, 1);
  options.duplicate_ids = DuplicateIdRule::kKeepFirst;
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rows_read, 5);
  ASSERT_EQ(loaded->duplicate_rows.size(), 1u);
  EXPECT_EQ(loaded->duplicate_rows[0], 2);
  const RawShard& shard = loaded->shards[0];
  EXPECT_EQ(shard.ids.ToStrings(), (std::vector<std::string>{"u1", "u2", "u3"}));
  // The first row of each id is the one kept.
  EXPECT_EQ(shard.numeric.Column(0), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(shard.categorical[0].ToStrings(), (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(RawTableTest, DuplicateCountsFollowTheirShards) {
  std::string text = "user_id,age,city,income\n";
  for (int i = 0; i < 300; ++i) text += "u" + std::to_string(i) + ",1,a,1\n";
  for (int i = 0; i < 300; i += 3) text += "u" + std::to_string(i) + ",2,b,2\n";
  const std::string path = WriteFile("users.csv", text);
  UserLoadOptions options = Options({path}, 4);
  options.duplicate_ids = DuplicateIdRule::kKeepFirst;
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::vector<int64_t> expected(4, 0);
  for (int i = 0; i < 300; i += 3) ++expected[ShardOfUser("u" + std::to_string(i), 4)];
  EXPECT_EQ(loaded->duplicate_rows, expected);
  int64_t rows = 0;
  for (const RawShard& shard : loaded->shards) rows += shard.num_rows();
  EXPECT_EQ(rows, 300);
}

// Quoting, line ends and blank lines that the block parser must split exactly as
// CsvReader does, across pieces parsed by different threads. The file (about 6 MB) spans
// several blocks of the loader.
TEST_F(RawTableTest, BlockParserMatchesRowByRowAppend) {
  std::string text = "user_id,age,city,income\r\n";
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < 200000; ++i) {
    std::vector<std::string> cells = {"u" + std::to_string(i), std::to_string(i % 90),
                                      "c" + std::to_string(i % 5), std::to_string(i * 0.5)};
    std::string city_text = cells[2];
    if (i % 7 == 0) {
      cells[2] = "say \"hi\", \nthen go";
      city_text = "\"say \"\"hi\"\", \nthen go\"";
    }
    const char* line_end = i % 11 == 0 ? "\r" : (i % 2 == 0 ? "\r\n" : "\n");
    text += cells[0] + "," + cells[1] + "," + city_text + "," + cells[3] + line_end;
    if (i % 13 == 0) text += "\n";  // a blank line
    rows.push_back(cells);
  }
  const std::string path = WriteFile("quoted.csv", text);

  RawShard expected = MakeEmptyShard(UserSchema(), 0);
  for (const std::vector<std::string>& cells : rows) {
    ASSERT_TRUE(AppendUserRow(UserSchema(), cells, &expected).ok());
  }
  for (int threads : {1, 3}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    UserLoadOptions options = Options({path}, 1);
    options.threads = threads;
    absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const RawShard& shard = loaded->shards[0];
    EXPECT_EQ(shard.ids, expected.ids);
    EXPECT_EQ(shard.numeric.Column(0), expected.numeric.Column(0));
    EXPECT_EQ(shard.numeric.Column(1), expected.numeric.Column(1));
    EXPECT_EQ(shard.categorical[0].ToStrings(), expected.categorical[0].ToStrings());
  }
}

TEST_F(RawTableTest, ErrorLineDoesNotDependOnThreads) {
  std::string text = "user_id,age,city,income\n";
  for (int i = 0; i < 20000; ++i) {
    text += "u" + std::to_string(i) + "," + (i == 15000 ? "x" : "1") + ",a,1\n";
  }
  const std::string path = WriteFile("bad.csv", text);
  for (int threads : {1, 2, 5}) {
    UserLoadOptions options = Options({path}, 4);
    options.threads = threads;
    absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
    ASSERT_FALSE(loaded.ok()) << "threads " << threads;
    EXPECT_EQ(loaded.status().message(),
              path + ":15002: column 'age': value 'x' is not a number; fix or blank the cell "
                     "(blank cells are imputed)")
        << "threads " << threads;
  }
}

// Shards are filled in parallel, but the first failing row in file order is reported:
// a duplicate id before a bad cell, or a bad cell before a duplicate id.
TEST_F(RawTableTest, FirstFailureIsInFileOrder) {
  for (const bool duplicate_first : {true, false}) {
    std::string text = "user_id,age,city,income\n";
    for (int i = 0; i < 40000; ++i) {
      std::string id = "u" + std::to_string(i);
      std::string age = "1";
      if (i == (duplicate_first ? 21000 : 33000)) id = "u17";
      if (i == (duplicate_first ? 33000 : 21000)) age = "x";
      text += id + "," + age + ",a,1\n";
    }
    const std::string path = WriteFile("dup_and_bad.csv", text);
    const std::string expected =
        duplicate_first
            ? path + ":21002: user id 'u17' already appeared at " + path +
                  ":19; user ids must be unique, or create the dataset with the keep-first "
                  "rule for duplicate ids"
            : path + ":21002: column 'age': value 'x' is not a number; fix or blank the cell "
                     "(blank cells are imputed)";
    for (int threads : {1, 2, 5}) {
      UserLoadOptions options = Options({path}, 8);
      options.threads = threads;
      absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
      ASSERT_FALSE(loaded.ok()) << "threads " << threads;
      EXPECT_EQ(loaded.status().message(), expected) << "threads " << threads;
    }
  }
}

// Records the one-pass splitter does not take (a quoted cell, too few or too many
// fields, a blank line) are split by the general parser with the same result.
TEST_F(RawTableTest, MixedRecordsLoadAsRowByRow) {
  const std::string path = WriteFile(
      "mixed.csv",
      "user_id,age,city,income\n"
      "u1,1.5,a,2e3\n"
      "\"u2\",-0,\"b,c\",+.5\n"
      "\n"
      "u3,007,,1e-12\r\n"
      "u4,\"12\",d,  3 \n"
      "u5,16777217,e,123456789012\n");
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(Options({path}, 1));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const RawShard& shard = loaded->shards[0];
  ASSERT_EQ(shard.num_rows(), 5);
  EXPECT_EQ(shard.ids.ToStrings(), (std::vector<std::string>{"u1", "u2", "u3", "u4", "u5"}));
  EXPECT_EQ(shard.numeric.Column(0), (std::vector<double>{1.5, 0.0, 7.0, 12.0, 16777216.0}));
  EXPECT_EQ(shard.numeric.Column(1),
            (std::vector<double>{2000.0, 0.5, static_cast<double>(1e-12f), 3.0,
                                 static_cast<double>(123456789012.0f)}));
  EXPECT_TRUE(std::signbit(shard.numeric(1, 0)));
  EXPECT_EQ(shard.categorical[0].ToStrings(),
            (std::vector<std::string>{"a", "b,c", "", "d", "e"}));

  const std::string too_many = WriteFile("too_many.csv", "user_id,age,city,income\nu1,1,a,1,9\n");
  const std::string too_few = WriteFile("too_few.csv", "user_id,age,city,income\nu1,1,a\n");
  for (const std::string& bad : {too_many, too_few}) {
    absl::StatusOr<LoadedShards> failed = LoadUserShards(Options({bad}, 1));
    ASSERT_FALSE(failed.ok()) << bad;
    EXPECT_NE(failed.status().message().find(bad + ":2"), std::string::npos) << failed.status();
  }
}

TEST_F(RawTableTest, UnterminatedQuoteIsReportedByLine) {
  const std::string path =
      WriteFile("users.csv", "user_id,age,city,income\nu1,1,a,1\nu2,2,\"b,2\nu3,3,c,3\n");
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(Options({path}, 2));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find(path + ":3: column 3: quoted field is not closed"),
            std::string::npos)
      << loaded.status();
}

TEST_F(RawTableTest, MemoryBytesCountsEveryColumn) {
  const std::string path = WriteUsers("users.csv", 0, 1000);
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(Options({path}, 1));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const RawShard& shard = loaded->shards[0];
  // 2 float cells, one 4-byte code, a 4-byte offset and the id's characters per row.
  int64_t id_chars = 0;
  for (int64_t i = 0; i < shard.num_rows(); ++i) id_chars += shard.ids[i].size();
  const int64_t minimum = shard.num_rows() * (2 * 4 + 4 + 4) + id_chars;
  EXPECT_GE(shard.MemoryBytes(), minimum);
  // ShrinkToFit leaves no growth slack beyond the dictionary of three values.
  EXPECT_LT(shard.MemoryBytes(), minimum + 1024);
}

TEST_F(RawTableTest, EmptyIdIsRejectedWithLocation) {
  const std::string path = WriteFile("users.csv", "user_id,age,city,income\n,1,a,1\n");
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(Options({path}, 4));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find(path + ":2: column 'user_id': user id is empty"),
            std::string::npos)
      << loaded.status();
}

TEST_F(RawTableTest, MissingHeaderColumnListsHeader) {
  const std::string path = WriteFile("users.csv", "user_id,age,town,income\nu1,1,a,1\n");
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(Options({path}));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("column 'city' of the schema is missing"),
            std::string::npos)
      << loaded.status();
  EXPECT_NE(loaded.status().message().find("'user_id', 'age', 'town', 'income'"),
            std::string::npos)
      << loaded.status();
}

TEST_F(RawTableTest, MalformedLineIsReported) {
  const std::string path = WriteFile("users.csv", "user_id,age,city,income\nu1,1,a\n");
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(Options({path}));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find(path + ":2: expected 4 fields"), std::string::npos)
      << loaded.status();
}

TEST_F(RawTableTest, EmptyFileAndMissingFileAreReported) {
  const std::string empty = WriteFile("empty.csv", "");
  EXPECT_EQ(LoadUserShards(Options({empty})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadUserShards(Options({(dir_ / "absent.csv").string()})).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RawTableTest, InvalidOptionsAreRejected) {
  const std::string path = WriteUsers("users.csv", 0, 3);
  UserLoadOptions out_of_range = Options({path}, 4);
  out_of_range.shards = {4};
  EXPECT_EQ(LoadUserShards(out_of_range).status().code(), absl::StatusCode::kInvalidArgument);

  UserLoadOptions repeated = Options({path}, 4);
  repeated.shards = {1, 1};
  EXPECT_EQ(LoadUserShards(repeated).status().code(), absl::StatusCode::kInvalidArgument);

  UserLoadOptions zero_shards = Options({path}, 4);
  zero_shards.num_shards = 0;
  zero_shards.shards = {};
  EXPECT_EQ(LoadUserShards(zero_shards).status().code(), absl::StatusCode::kInvalidArgument);

  UserLoadOptions no_header = Options({path}, 4);
  no_header.csv.has_header = false;
  EXPECT_EQ(LoadUserShards(no_header).status().code(), absl::StatusCode::kInvalidArgument);

  UserLoadOptions no_paths = Options({}, 4);
  EXPECT_EQ(LoadUserShards(no_paths).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RawTableRealDataTest, BankMarketingReadsAndInfersTypes) {
  COHORT_REQUIRE_DATA_FILE(path, "bank-marketing/bank-full.csv");
  CsvOptions csv;
  csv.delimiter = ';';
  absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(path, csv);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ((*reader)->header().size(), 17u);

  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> fields;
  while (true) {
    absl::StatusOr<bool> has_record = (*reader)->Next(&fields);
    ASSERT_TRUE(has_record.ok()) << has_record.status();
    if (!*has_record) break;
    ASSERT_EQ(fields.size(), 17u) << "line " << (*reader)->line();
    rows.push_back(fields);
  }
  EXPECT_EQ(rows.size(), 45211u);

  // The file has no user id column, so a row number is added as the id. Without it,
  // InferSchema would take the first column ("age") as the id.
  std::vector<std::string> header = (*reader)->header();
  header.insert(header.begin(), "row_id");
  for (size_t r = 0; r < rows.size(); ++r) rows[r].insert(rows[r].begin(), std::to_string(r + 2));

  absl::StatusOr<Schema> schema = InferSchema(header, rows, {});
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_EQ(schema->IdIndex(), 0);
  for (const char* name : {"age", "balance", "day", "duration", "campaign", "pdays", "previous"}) {
    const int index = schema->IndexOf(name);
    ASSERT_GE(index, 0) << name;
    EXPECT_EQ(schema->columns[index].type, ColumnType::kNumeric) << name;
  }
  for (const char* name : {"job", "marital", "education", "default", "housing", "loan", "contact",
                           "month", "poutcome", "y"}) {
    const int index = schema->IndexOf(name);
    ASSERT_GE(index, 0) << name;
    EXPECT_EQ(schema->columns[index].type, ColumnType::kCategorical) << name;
  }
}

TEST(RawTableRealDataTest, MallCustomersLoadOverFourShards) {
  COHORT_REQUIRE_DATA_FILE(path, "mall-customers/Mall_Customers.csv");
  absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(path, {});
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> fields;
  while (true) {
    absl::StatusOr<bool> has_record = (*reader)->Next(&fields);
    ASSERT_TRUE(has_record.ok()) << has_record.status();
    if (!*has_record) break;
    rows.push_back(fields);
  }
  ASSERT_EQ(rows.size(), 200u);
  // The file ends without a newline, so the last record must still be complete.
  EXPECT_EQ(rows.back()[0], "0200");
  EXPECT_EQ(rows.back()[4], "83");

  absl::StatusOr<Schema> schema = InferSchema((*reader)->header(), rows, {});
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_EQ(schema->columns[schema->IdIndex()].name, "CustomerID");
  EXPECT_EQ(schema->CategoricalNames(), std::vector<std::string>{"Genre"});
  EXPECT_EQ(schema->NumericNames(),
            (std::vector<std::string>{"Age", "Annual Income (k$)", "Spending Score (1-100)"}));

  UserLoadOptions options;
  options.paths = {path};
  options.schema = *schema;
  options.num_shards = 4;
  options.shards = {0, 1, 2, 3};
  absl::StatusOr<LoadedShards> loaded = LoadUserShards(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rows_read, 200);

  std::vector<std::string> union_ids;
  for (const RawShard& shard : loaded->shards) {
    EXPECT_GT(shard.num_rows(), 0) << "shard " << shard.shard_id;
    for (const std::string& id : shard.ids.ToStrings()) union_ids.push_back(id);
  }
  ASSERT_EQ(union_ids.size(), 200u);
  std::sort(union_ids.begin(), union_ids.end());
  std::vector<std::string> all_ids;
  for (const std::vector<std::string>& row : rows) all_ids.push_back(row[0]);
  std::sort(all_ids.begin(), all_ids.end());
  EXPECT_EQ(union_ids, all_ids);
}

TEST(UserRowCellsTest, CellsRebuildTheSameRow) {
  Schema schema;
  schema.columns = {{"user_id", ColumnType::kId},      {"age", ColumnType::kNumeric},
                    {"city", ColumnType::kCategorical}, {"skip", ColumnType::kIgnore},
                    {"w", ColumnType::kWeight},          {"member", ColumnType::kBoolean},
                    {"note", ColumnType::kText},         {"emb", ColumnType::kEmbedding, 3},
                    {"churn", ColumnType::kLabel}};
  const std::vector<std::vector<std::string>> rows = {
      {"a", "0.1", "Paris", "x", "2.5", "yes", "some text", "0.3 -1e-7 12345.678", "no"},
      {"b", "", "", "y", "0", "", "", "", "yes"},
      {"c", "-3.4e38", "Köln", "", "1e-30", "0", "ü", "1 2 3", "no"},
      {"d", "16777217", "Paris", "z", "3.4e38", "TRUE", "t", "1.17549435e-38 0 0", "maybe"}};
  RawShard original = MakeEmptyShard(schema, 0);
  for (const std::vector<std::string>& row : rows) {
    ASSERT_TRUE(AppendUserRow(schema, row, &original).ok());
  }

  RawShard copy = MakeEmptyShard(schema, 0);
  for (int64_t row = 0; row < original.num_rows(); ++row) {
    const std::vector<std::string> cells = UserRowCells(schema, original, row);
    ASSERT_EQ(cells.size(), schema.columns.size());
    EXPECT_EQ(cells[3], "") << "ignored columns are not stored";
    const absl::Status appended = AppendUserRow(schema, cells, &copy);
    ASSERT_TRUE(appended.ok()) << "row " << row << ": " << appended;
  }

  EXPECT_EQ(copy.ids, original.ids);
  ASSERT_EQ(copy.numeric.rows(), original.numeric.rows());
  for (int64_t row = 0; row < original.num_rows(); ++row) {
    const float expected = original.numeric(row, 0);
    const float actual = copy.numeric(row, 0);
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(actual)) << "row " << row;
    } else {
      EXPECT_EQ(actual, expected) << "row " << row;
    }
  }
  EXPECT_EQ(copy.categorical[0].ToStrings(), original.categorical[0].ToStrings());
  EXPECT_EQ(copy.weights, original.weights);
  EXPECT_EQ(copy.profile.boolean, original.profile.boolean);
  EXPECT_EQ(copy.profile.text, original.profile.text);
  EXPECT_EQ(copy.profile.labels, original.profile.labels);
  ASSERT_EQ(copy.profile.embedding.size(), 1u);
  EXPECT_EQ(copy.profile.embedding[0].missing, original.profile.embedding[0].missing);
  const std::vector<float>& values = original.profile.embedding[0].values;
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isnan(values[i])) {
      EXPECT_TRUE(std::isnan(copy.profile.embedding[0].values[i])) << "value " << i;
    } else {
      EXPECT_EQ(copy.profile.embedding[0].values[i], values[i]) << "value " << i;
    }
  }
}

}  // namespace
}  // namespace cohort
