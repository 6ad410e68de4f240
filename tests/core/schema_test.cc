#include "core/schema.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace cohort {
namespace {

using Rows = std::vector<std::vector<std::string>>;

Schema MakeSchema(std::vector<ColumnSpec> columns) {
  Schema schema;
  schema.columns = std::move(columns);
  return schema;
}

TEST(SchemaColumnTypeTest, NamesRoundTrip) {
  for (ColumnType type : {ColumnType::kId, ColumnType::kNumeric, ColumnType::kCategorical,
                          ColumnType::kIgnore, ColumnType::kWeight}) {
    absl::StatusOr<ColumnType> parsed = ParseColumnType(ColumnTypeName(type));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, type);
  }
  EXPECT_EQ(ColumnTypeName(ColumnType::kNumeric), "numeric");
  EXPECT_EQ(*ParseColumnType("Categorical"), ColumnType::kCategorical);
  EXPECT_EQ(ColumnTypeName(ColumnType::kWeight), "weight");
}

TEST(SchemaColumnTypeTest, UnknownNameListsAcceptedNames) {
  absl::StatusOr<ColumnType> parsed = ParseColumnType("float");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find("'float'"), std::string::npos) << parsed.status();
  EXPECT_NE(parsed.status().message().find("id, numeric, categorical, ignore"), std::string::npos)
      << parsed.status();
}

TEST(SchemaTest, AccessorsFollowFileOrder) {
  const Schema schema = MakeSchema({{"b", ColumnType::kCategorical},
                                    {"user_id", ColumnType::kId},
                                    {"x", ColumnType::kNumeric},
                                    {"skip", ColumnType::kIgnore},
                                    {"a", ColumnType::kCategorical},
                                    {"y", ColumnType::kNumeric}});
  EXPECT_EQ(schema.IdIndex(), 1);
  EXPECT_EQ(schema.IndexOf("skip"), 3);
  EXPECT_EQ(schema.IndexOf("absent"), -1);
  EXPECT_EQ(schema.NumericNames(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(schema.CategoricalNames(), (std::vector<std::string>{"b", "a"}));
  EXPECT_TRUE(schema.Validate().ok());
}

TEST(SchemaTest, ValidateRejectsBadSchemas) {
  EXPECT_EQ(Schema{}.Validate().code(), absl::StatusCode::kInvalidArgument);

  const absl::Status no_id = MakeSchema({{"x", ColumnType::kNumeric}}).Validate();
  EXPECT_EQ(no_id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_id.message().find("no id column"), std::string::npos) << no_id;

  const absl::Status two_ids =
      MakeSchema({{"a", ColumnType::kId}, {"b", ColumnType::kId}, {"x", ColumnType::kNumeric}})
          .Validate();
  EXPECT_EQ(two_ids.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(two_ids.message().find("'a', 'b'"), std::string::npos) << two_ids;

  const absl::Status repeated =
      MakeSchema({{"id", ColumnType::kId}, {"x", ColumnType::kNumeric}, {"x", ColumnType::kNumeric}})
          .Validate();
  EXPECT_EQ(repeated.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(repeated.message().find("'x' appears twice"), std::string::npos) << repeated;

  const absl::Status unnamed =
      MakeSchema({{"id", ColumnType::kId}, {"", ColumnType::kNumeric}}).Validate();
  EXPECT_EQ(unnamed.code(), absl::StatusCode::kInvalidArgument);

  const absl::Status no_features =
      MakeSchema({{"id", ColumnType::kId}, {"x", ColumnType::kIgnore}}).Validate();
  EXPECT_EQ(no_features.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_features.message().find("no numeric, categorical"), std::string::npos)
      << no_features;
}

TEST(SchemaTest, WeightColumnIsNotAFeature) {
  const Schema schema = MakeSchema({{"user_id", ColumnType::kId},
                                    {"x", ColumnType::kNumeric},
                                    {"w", ColumnType::kWeight},
                                    {"city", ColumnType::kCategorical}});
  EXPECT_EQ(schema.WeightIndex(), 2);
  EXPECT_EQ(schema.NumericNames(), (std::vector<std::string>{"x"}));
  EXPECT_EQ(schema.CategoricalNames(), (std::vector<std::string>{"city"}));
  EXPECT_TRUE(schema.Validate().ok());
  EXPECT_EQ(MakeSchema({{"user_id", ColumnType::kId}, {"x", ColumnType::kNumeric}}).WeightIndex(),
            -1);
}

TEST(SchemaTest, ValidateRejectsTwoWeightColumns) {
  const absl::Status status = MakeSchema({{"user_id", ColumnType::kId},
                                          {"w1", ColumnType::kWeight},
                                          {"x", ColumnType::kNumeric},
                                          {"w2", ColumnType::kWeight}})
                                  .Validate();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("2 weight columns ('w1', 'w2')"), std::string::npos) << status;
  EXPECT_NE(status.message().find("at most one column as type 'weight'"), std::string::npos)
      << status;
}

TEST(SchemaTest, WeightOnlyFeaturesFailValidation) {
  const absl::Status status =
      MakeSchema({{"user_id", ColumnType::kId}, {"w", ColumnType::kWeight}}).Validate();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("no numeric, categorical"), std::string::npos) << status;
}

TEST(InferSchemaTest, WeightOnlyByOverride) {
  const std::vector<std::string> header = {"user_id", "weight", "age"};
  const Rows rows = {{"u1", "2", "30"}, {"u2", "0.5", "41"}};

  absl::StatusOr<Schema> inferred = InferSchema(header, rows, {});
  ASSERT_TRUE(inferred.ok()) << inferred.status();
  EXPECT_EQ(inferred->WeightIndex(), -1);
  EXPECT_EQ(inferred->columns[1].type, ColumnType::kNumeric);

  SchemaOverrides overrides;
  overrides.types["weight"] = ColumnType::kWeight;
  absl::StatusOr<Schema> weighted = InferSchema(header, rows, overrides);
  ASSERT_TRUE(weighted.ok()) << weighted.status();
  EXPECT_EQ(weighted->WeightIndex(), 1);
  EXPECT_EQ(weighted->IdIndex(), 0);
  EXPECT_EQ(weighted->NumericNames(), (std::vector<std::string>{"age"}));
}

TEST(InferSchemaTest, NumericAndCategoricalColumns) {
  const std::vector<std::string> header = {"user_id", "age", "city", "score", "mixed", "blank"};
  const Rows rows = {{"u1", "30", "Paris", "1e3", "1", ""},
                     {"u2", " 41 ", "Lyon", "", "two", ""},
                     {"u3", "-2.5", "7", "nan", "3", " "}};
  absl::StatusOr<Schema> schema = InferSchema(header, rows, {});
  ASSERT_TRUE(schema.ok()) << schema.status();
  ASSERT_EQ(schema->columns.size(), header.size());
  EXPECT_EQ(schema->columns[0].type, ColumnType::kId);
  EXPECT_EQ(schema->columns[1].type, ColumnType::kNumeric);
  EXPECT_EQ(schema->columns[2].type, ColumnType::kCategorical);
  // NaN counts as a number so that loading reports it instead of treating it as a label.
  EXPECT_EQ(schema->columns[3].type, ColumnType::kNumeric);
  EXPECT_EQ(schema->columns[4].type, ColumnType::kCategorical);
  // A column with no value in the sample cannot be shown numeric.
  EXPECT_EQ(schema->columns[5].type, ColumnType::kCategorical);
}

TEST(InferSchemaTest, IdColumnDetectedByName) {
  const Rows rows = {{"1", "2", "3"}};
  absl::StatusOr<Schema> exact = InferSchema({"age", "ID", "income"}, rows, {});
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_EQ(exact->IdIndex(), 1);

  absl::StatusOr<Schema> suffix = InferSchema({"age", "CustomerID", "income"}, rows, {});
  ASSERT_TRUE(suffix.ok()) << suffix.status();
  EXPECT_EQ(suffix->IdIndex(), 1);
  EXPECT_EQ(suffix->columns[0].type, ColumnType::kNumeric);
}

TEST(InferSchemaTest, FirstColumnIsIdWithoutIdName) {
  absl::StatusOr<Schema> schema = InferSchema({"email", "age"}, {{"a@x", "3"}}, {});
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_EQ(schema->IdIndex(), 0);
  EXPECT_EQ(schema->columns[1].type, ColumnType::kNumeric);
}

TEST(InferSchemaTest, OverridesWinOverInference) {
  SchemaOverrides overrides;
  overrides.id_column = "email";
  overrides.types["zip"] = ColumnType::kCategorical;
  overrides.types["noise"] = ColumnType::kIgnore;
  absl::StatusOr<Schema> schema = InferSchema({"user_id", "email", "zip", "noise", "age"},
                                              {{"1", "a@x", "75001", "0.1", "30"}}, overrides);
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_EQ(schema->IdIndex(), 1);
  // The named id column replaces name-based detection, so "user_id" is a plain column.
  EXPECT_EQ(schema->columns[0].type, ColumnType::kNumeric);
  EXPECT_EQ(schema->columns[2].type, ColumnType::kCategorical);
  EXPECT_EQ(schema->columns[3].type, ColumnType::kIgnore);
  EXPECT_EQ(schema->columns[4].type, ColumnType::kNumeric);
}

TEST(InferSchemaTest, IdTypeOverrideSelectsIdColumn) {
  SchemaOverrides overrides;
  overrides.types["handle"] = ColumnType::kId;
  absl::StatusOr<Schema> schema = InferSchema({"row_id", "handle", "age"}, {{"1", "h", "3"}},
                                              overrides);
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_EQ(schema->IdIndex(), 1);
  EXPECT_EQ(schema->columns[0].type, ColumnType::kNumeric);
}

TEST(InferSchemaTest, UnknownOverrideColumnListsHeader) {
  SchemaOverrides overrides;
  overrides.types["agee"] = ColumnType::kNumeric;
  absl::StatusOr<Schema> schema = InferSchema({"id", "age"}, {{"1", "2"}}, overrides);
  ASSERT_FALSE(schema.ok());
  EXPECT_EQ(schema.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(schema.status().message().find("'agee'"), std::string::npos) << schema.status();
  EXPECT_NE(schema.status().message().find("'id', 'age'"), std::string::npos) << schema.status();
}

TEST(InferSchemaTest, UnknownIdColumnIsInvalid) {
  SchemaOverrides overrides;
  overrides.id_column = "uid";
  absl::StatusOr<Schema> schema = InferSchema({"id", "age"}, {{"1", "2"}}, overrides);
  EXPECT_EQ(schema.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(schema.status().message().find("'uid'"), std::string::npos) << schema.status();
}

TEST(InferSchemaTest, EmptyHeaderIsInvalid) {
  EXPECT_EQ(InferSchema({}, {}, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(InferSchemaTest, IdOnlyHeaderFailsValidation) {
  absl::StatusOr<Schema> schema = InferSchema({"id"}, {{"1"}}, {});
  EXPECT_EQ(schema.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SchemaParseNumberTest, AcceptsDecimalAndScientific) {
  EXPECT_EQ(ParseNumber("42"), 42.0);
  EXPECT_EQ(ParseNumber("-3.5"), -3.5);
  EXPECT_EQ(ParseNumber("+7"), 7.0);
  EXPECT_EQ(ParseNumber(".5"), 0.5);
  EXPECT_EQ(ParseNumber("1e3"), 1000.0);
  EXPECT_EQ(ParseNumber("2.5E-2"), 0.025);
  EXPECT_EQ(ParseNumber("  12 \t"), 12.0);
}

TEST(SchemaParseNumberTest, NonFiniteWordsParse) {
  for (const char* text : {"nan", "NaN", "NAN", " nan "}) {
    const std::optional<double> value = ParseNumber(text);
    ASSERT_TRUE(value.has_value()) << text;
    EXPECT_TRUE(std::isnan(*value)) << text;
  }
  for (const char* text : {"inf", "Inf", "+inf", "INF", "infinity"}) {
    const std::optional<double> value = ParseNumber(text);
    ASSERT_TRUE(value.has_value()) << text;
    EXPECT_TRUE(std::isinf(*value)) << text;
    EXPECT_GT(*value, 0) << text;
  }
  const std::optional<double> negative = ParseNumber("-Inf");
  ASSERT_TRUE(negative.has_value());
  EXPECT_TRUE(std::isinf(*negative));
  EXPECT_LT(*negative, 0);
}

TEST(SchemaParseNumberTest, OutOfRangeRoundsLikeStrtod) {
  const std::optional<double> huge = ParseNumber("1e400");
  ASSERT_TRUE(huge.has_value());
  EXPECT_TRUE(std::isinf(*huge));
  const std::optional<double> tiny = ParseNumber("1e-400");
  ASSERT_TRUE(tiny.has_value());
  EXPECT_EQ(*tiny, 0.0);
}

TEST(SchemaParseNumberTest, RejectsNonNumbers) {
  for (const char* text : {"", "   ", "abc", "1,5", "1.2.3", "12abc", "+-1", "--1", "+", "0x10",
                           "1 2", "e5"}) {
    EXPECT_FALSE(ParseNumber(text).has_value()) << "'" << text << "'";
  }
}

}  // namespace
}  // namespace cohort
