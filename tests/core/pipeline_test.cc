#include "core/pipeline.h"

#include <gtest/gtest.h>
#include <omp.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/features.h"

namespace cohort {
namespace {

// Schema of the small tables: id, x (numeric), flag (boolean), job (categorical),
// note (text), emb (embedding of length 2), y (label).
Schema SmallSchema() {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId},          {"x", ColumnType::kNumeric},
                    {"flag", ColumnType::kBoolean},   {"job", ColumnType::kCategorical},
                    {"note", ColumnType::kText},      {"emb", ColumnType::kEmbedding, 2},
                    {"y", ColumnType::kLabel}};
  return schema;
}

RawShard ShardOf(const Schema& schema, const std::vector<std::vector<std::string>>& rows,
                 int shard_id = 0) {
  RawShard shard = MakeEmptyShard(schema, shard_id);
  for (const std::vector<std::string>& row : rows) {
    const absl::Status status = AppendUserRow(schema, row, &shard);
    EXPECT_TRUE(status.ok()) << status;
  }
  return shard;
}

// x: 1, 2, missing, 4, 10 → observed mean 4.25.
std::vector<std::vector<std::string>> SmallRows() {
  return {
      {"u1", "1", "yes", "a", "hello world", "1 2", "no"},
      {"u2", "2", "no", "b", "hello", "3 4", "yes"},
      {"u3", "", "", "a", "", "", "no"},
      {"u4", "4", "true", "", "world hello world", "5 6", "yes"},
      {"u5", "10", "1", "c", "你好世界", "7 8", "no"},
  };
}

PipelineSpec SpecOf(std::string_view text) {
  absl::StatusOr<PipelineSpec> spec = ParsePipelineSpec(text);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : PipelineSpec();
}

PipelineModel FitOrDie(const PipelineSpec& spec, const Schema& schema,
                       const std::vector<RawShard>& shards, CleaningReport* report = nullptr) {
  absl::StatusOr<PipelineModel> model = FitPipeline(spec, schema, shards, report);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : PipelineModel();
}

MatrixXfR TransformOrDie(const PipelineModel& model, const RawShard& shard,
                         std::vector<uint8_t>* labels = nullptr, CleaningReport* report = nullptr) {
  MatrixXfR x;
  const absl::Status status = TransformShardPipeline(model, shard, &x, labels, report);
  EXPECT_TRUE(status.ok()) << status;
  return x;
}

TEST(PipelineTest, StandardizeWithMeanImputationMatchesReference) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  const PipelineModel model =
      FitOrDie(SpecOf("column x = impute mean | missing_indicator | standardize"), schema, {shard});
  ASSERT_EQ(model.dim(), 2);
  const std::vector<double> observed = {1, 2, 4, 10};
  const double mean = 17.0 / 4;
  double variance = 0;
  for (double v : observed) variance += (v - mean) * (v - mean) / 4;
  const double sd = std::sqrt(variance);
  const MatrixXfR x = TransformOrDie(model, shard);
  EXPECT_FLOAT_EQ(x(0, 0), static_cast<float>((1 - mean) / sd));
  EXPECT_FLOAT_EQ(x(4, 0), static_cast<float>((10 - mean) / sd));
  EXPECT_FLOAT_EQ(x(2, 0), 0.0f);  // the imputed mean standardizes to 0
  EXPECT_EQ(x(2, 1), 1.0f);
  EXPECT_EQ(x(0, 1), 0.0f);
  EXPECT_EQ(model.FeatureNames(), (std::vector<std::string>{"x", "x=(missing)"}));
}

TEST(PipelineTest, MinMaxAndLog1pMatchReference) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  const PipelineModel model = FitOrDie(SpecOf("column x = log1p | minmax"), schema, {shard});
  const double low = std::log1p(1.0);
  const double high = std::log1p(10.0);
  const MatrixXfR x = TransformOrDie(model, shard);
  EXPECT_FLOAT_EQ(x(0, 0), 0.0f);
  EXPECT_FLOAT_EQ(x(1, 0), static_cast<float>((std::log1p(2.0) - low) / (high - low)));
  EXPECT_FLOAT_EQ(x(4, 0), 1.0f);
  EXPECT_FLOAT_EQ(x(2, 0), 0.0f);  // missing without imputation
}

TEST(PipelineTest, QuantileClipUsesSketchQuantiles) {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId}, {"v", ColumnType::kNumeric}};
  std::vector<std::vector<std::string>> rows;
  for (int i = 1; i <= 100; ++i) rows.push_back({absl::StrCat("u", i), absl::StrCat(i)});
  const RawShard shard = ShardOf(schema, rows);
  const PipelineModel model = FitOrDie(SpecOf("column v = clip 0.1 0.9"), schema, {shard});
  // Without compaction the q-quantile is the value of rank ceil(q · n): 10 and 90.
  EXPECT_EQ(model.columns[0].clip_low, 10);
  EXPECT_EQ(model.columns[0].clip_high, 90);
  const MatrixXfR x = TransformOrDie(model, shard);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(x(i, 0), static_cast<float>(std::clamp(i + 1, 10, 90))) << "row " << i;
  }
}

TEST(PipelineTest, ShardedClipQuantilesWithinRankBound) {
  // 200,000 skewed values over 16 shards: far more than the sketch keeps, so the bounds
  // come from compacted, merged sketches. Their true ranks must be within 1 % of n of the
  // requested quantiles, the error bound quantile_sketch.h states for capacity 256.
  Schema schema;
  schema.columns = {{"id", ColumnType::kId}, {"v", ColumnType::kNumeric}};
  const int n = 200000;
  std::vector<double> values;
  std::vector<RawShard> shards;
  for (int s = 0; s < 16; ++s) shards.push_back(MakeEmptyShard(schema, s));
  uint64_t state = 12345;
  for (int i = 0; i < n; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    const double u = static_cast<double>(state >> 11) * 0x1.0p-53;
    const double value = std::exp(6 * u);  // log-uniform on [1, e^6]
    values.push_back(value);
    RawShard& shard = shards[static_cast<size_t>(i % 16)];
    shard.ids.push_back(absl::StrCat("u", i));
    *shard.numeric.AppendRow() = static_cast<float>(value);
  }
  const PipelineModel model = FitOrDie(SpecOf("column v = clip 0.05 0.95"), schema, shards);
  std::sort(values.begin(), values.end());
  auto rank = [&values](double v) {
    return static_cast<double>(std::upper_bound(values.begin(), values.end(), v) - values.begin());
  };
  EXPECT_NEAR(rank(model.columns[0].clip_low) / n, 0.05, 0.01);
  EXPECT_NEAR(rank(model.columns[0].clip_high) / n, 0.95, 0.01);
}

TEST(PipelineTest, StandardizeAfterClipUsesClippedMoments) {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId}, {"v", ColumnType::kNumeric}};
  std::vector<std::vector<std::string>> rows;
  for (int i = 1; i <= 20; ++i) rows.push_back({absl::StrCat("u", i), absl::StrCat(i * i)});
  const RawShard shard = ShardOf(schema, rows);
  const PipelineModel model =
      FitOrDie(SpecOf("column v = clip 0.25 0.75 | standardize"), schema, {shard});
  std::vector<double> clipped;
  for (int i = 1; i <= 20; ++i) clipped.push_back(std::clamp(i * i, 25, 225));
  double mean = 0;
  for (double v : clipped) mean += v / 20;
  double variance = 0;
  for (double v : clipped) variance += (v - mean) * (v - mean) / 20;
  EXPECT_NEAR(model.columns[0].shift, mean, 1e-9);
  EXPECT_NEAR(model.columns[0].scale, std::sqrt(variance), 1e-9);
}

TEST(PipelineTest, MedianModeAndConstantImputation) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  // The sketch median of {1, 2, 4, 10} is the value of rank ceil(0.5 · 4) = 2, so 2
  // (scikit-learn's SimpleImputer would average the middle two, 3).
  PipelineModel median = FitOrDie(SpecOf("column x = impute median"), schema, {shard});
  EXPECT_EQ(TransformOrDie(median, shard)(2, 0), 2.0f);
  PipelineModel constant = FitOrDie(SpecOf("column x = impute constant -7.5"), schema, {shard});
  EXPECT_EQ(TransformOrDie(constant, shard)(2, 0), -7.5f);
  // Boolean: yes, no, missing, true, 1 → mode 1; mean 0.75.
  PipelineModel mode = FitOrDie(SpecOf("column flag = impute mode"), schema, {shard});
  EXPECT_EQ(TransformOrDie(mode, shard)(2, 0), 1.0f);
  PipelineModel mean = FitOrDie(SpecOf("column flag = impute mean"), schema, {shard});
  EXPECT_EQ(TransformOrDie(mean, shard)(2, 0), 0.75f);
  // Categorical a, b, a, "", c → mode a; the imputed row is then one-hot "a".
  PipelineModel category =
      FitOrDie(SpecOf("column job = impute mode | missing_indicator | onehot 5"), schema, {shard});
  EXPECT_EQ(category.FeatureNames(),
            (std::vector<std::string>{"job=a", "job=b", "job=c", "job=(missing)"}));
  const MatrixXfR x = TransformOrDie(category, shard);
  EXPECT_EQ(x(3, 0), 1.0f);
  EXPECT_EQ(x(3, 3), 1.0f);
  EXPECT_EQ(x(0, 3), 0.0f);
}

TEST(PipelineTest, NumericModeTiesGoToSmallestValue) {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId}, {"v", ColumnType::kNumeric}};
  const RawShard shard =
      ShardOf(schema, {{"a", "5"}, {"b", "-3"}, {"c", "5"}, {"d", "-3"}, {"e", "20"}, {"f", ""}});
  const PipelineModel model = FitOrDie(SpecOf("column v = impute mode"), schema, {shard});
  EXPECT_EQ(TransformOrDie(model, shard)(5, 0), -3.0f);
}

TEST(PipelineTest, OneHotKeepsTopValuesAndOther) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  // Counts: a 2, "" 1, b 1, c 1; top 2 by count then value: a, "".
  const PipelineModel model = FitOrDie(SpecOf("column job = onehot 2"), schema, {shard});
  EXPECT_EQ(model.FeatureNames(),
            (std::vector<std::string>{"job=a", "job=(missing)", "job=(other)"}));
  const MatrixXfR x = TransformOrDie(model, shard);
  EXPECT_EQ(x.row(0), (Eigen::RowVector3f(1, 0, 0)));
  EXPECT_EQ(x.row(1), (Eigen::RowVector3f(0, 0, 1)));
  EXPECT_EQ(x.row(3), (Eigen::RowVector3f(0, 1, 0)));
}

TEST(PipelineTest, HashingMatchesXxh64Buckets) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  const PipelineModel model = FitOrDie(SpecOf("column job = hash 7"), schema, {shard});
  ASSERT_EQ(model.dim(), 7);
  const MatrixXfR x = TransformOrDie(model, shard);
  const std::vector<std::string> jobs = {"a", "b", "a", "", "c"};
  for (size_t i = 0; i < jobs.size(); ++i) {
    const uint64_t bucket = XXH64(jobs[i].data(), jobs[i].size(), 0) % 7;
    for (int b = 0; b < 7; ++b) {
      EXPECT_EQ(x(static_cast<Eigen::Index>(i), b), b == static_cast<int>(bucket) ? 1.0f : 0.0f)
          << "row " << i << " bucket " << b;
    }
  }
}

// Naive reference: count each n-gram's bucket, then scale to unit L2 norm.
std::vector<float> NgramReference(const std::vector<std::string>& units, int low, int high,
                                  const std::string& separator, int buckets) {
  std::vector<double> counts(static_cast<size_t>(buckets), 0);
  for (int n = low; n <= high; ++n) {
    for (size_t s = 0; s + static_cast<size_t>(n) <= units.size(); ++s) {
      std::string gram;
      for (int k = 0; k < n; ++k) gram += (k > 0 ? separator : "") + units[s + static_cast<size_t>(k)];
      counts[XXH64(gram.data(), gram.size(), 0) % static_cast<uint64_t>(buckets)] += 1;
    }
  }
  double norm = 0;
  for (double c : counts) norm += c * c;
  norm = std::sqrt(norm);
  std::vector<float> out(static_cast<size_t>(buckets), 0.0f);
  for (size_t b = 0; b < counts.size(); ++b) {
    if (counts[b] > 0) out[b] = static_cast<float>(counts[b] / norm);
  }
  return out;
}

TEST(PipelineTest, WordNgramsMatchReference) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  const PipelineModel model = FitOrDie(SpecOf("column note = words 1 2 64"), schema, {shard});
  const MatrixXfR x = TransformOrDie(model, shard);
  const std::vector<float> expected =
      NgramReference({"world", "hello", "world"}, 1, 2, " ", 64);
  for (int b = 0; b < 64; ++b) EXPECT_FLOAT_EQ(x(3, b), expected[static_cast<size_t>(b)]) << b;
  EXPECT_EQ(x.row(2).squaredNorm(), 0.0f);  // a missing cell is all zeros
  EXPECT_EQ(model.FeatureNames()[5], "note~words[1,2]#5");
}

TEST(PipelineTest, CharNgramsSplitChineseByCodePoint) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  const PipelineModel model = FitOrDie(SpecOf("column note = chars 1 2 128"), schema, {shard});
  const MatrixXfR x = TransformOrDie(model, shard);
  // 你好世界: four code points of three bytes each, so 4 unigrams and 3 bigrams.
  const std::vector<float> expected =
      NgramReference({"你", "好", "世", "界"}, 1, 2, "", 128);
  for (int b = 0; b < 128; ++b) EXPECT_FLOAT_EQ(x(4, b), expected[static_cast<size_t>(b)]) << b;
}

TEST(PipelineTest, EmbeddingCopiesAndImputesMeanVector) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  const PipelineModel model =
      FitOrDie(SpecOf("column emb = impute mean | missing_indicator"), schema, {shard});
  EXPECT_EQ(model.FeatureNames(), (std::vector<std::string>{"emb[0]", "emb[1]", "emb=(missing)"}));
  const MatrixXfR x = TransformOrDie(model, shard);
  EXPECT_EQ(x.row(1), (Eigen::RowVector3f(3, 4, 0)));
  EXPECT_EQ(x.row(2), (Eigen::RowVector3f(4, 5, 1)));  // mean of (1,2), (3,4), (5,6), (7,8)
}

TEST(PipelineTest, LabelsFollowThePositiveValue) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  const PipelineModel model =
      FitOrDie(SpecOf("label y positive yes\ncolumn x = impute mean"), schema, {shard});
  std::vector<uint8_t> labels;
  TransformOrDie(model, shard, &labels);
  EXPECT_EQ(labels, (std::vector<uint8_t>{0, 1, 0, 1, 0}));
  absl::StatusOr<PipelineModel> wrong =
      FitPipeline(SpecOf("label y positive maybe\ncolumn x = impute mean"), schema, {shard});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong.status().message().find("'no', 'yes'"), std::string::npos) << wrong.status();
}

constexpr std::string_view kFullSpec =
    "label y positive yes\n"
    "cleaning duplicate_ids keep_first\n"
    "column x = range 0 8 | impute median | missing_indicator | log1p | clip 0 1 | standardize\n"
    "column flag = impute mode\n"
    "column job = impute constant none | missing_indicator | onehot 2\n"
    "column note = chars 1 3 32\n"
    "column emb = impute constant 0.5\n";

TEST(PipelineTest, ShardedFitEqualsSingleShardFit) {
  const Schema schema = SmallSchema();
  const std::vector<std::vector<std::string>> rows = SmallRows();
  const RawShard whole = ShardOf(schema, rows);
  const RawShard first = ShardOf(schema, {rows[0], rows[1]}, 0);
  const RawShard second = ShardOf(schema, {rows[2], rows[3], rows[4]}, 1);
  const PipelineSpec spec = SpecOf(kFullSpec);
  const PipelineModel single = FitOrDie(spec, schema, {whole});
  const PipelineModel sharded = FitOrDie(spec, schema, {first, second});
  // The small data fit exactly into the sketches and the sums are of few small numbers,
  // so the two fits agree exactly.
  EXPECT_EQ(single.Serialize(), sharded.Serialize());
}

TEST(PipelineTest, SerializedModelTransformsIdentically) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  const PipelineModel model = FitOrDie(SpecOf(kFullSpec), schema, {shard});
  absl::StatusOr<PipelineModel> restored = PipelineModel::Deserialize(model.Serialize());
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->Serialize(), model.Serialize());
  const MatrixXfR a = TransformOrDie(model, shard);
  const MatrixXfR b = TransformOrDie(*restored, shard);
  EXPECT_EQ(a, b);

  // A new user given as cells is transformed exactly as the same row of a shard.
  const std::vector<std::string> header = {"id", "x", "flag", "job", "note", "emb", "y"};
  for (size_t r = 0; r < SmallRows().size(); ++r) {
    std::map<std::string, std::string> cells;
    for (size_t c = 1; c < header.size(); ++c) cells[header[c]] = SmallRows()[r][c];
    absl::StatusOr<std::vector<float>> user = TransformUserPipeline(*restored, cells);
    ASSERT_TRUE(user.ok()) << user.status();
    for (int j = 0; j < model.dim(); ++j) {
      EXPECT_EQ((*user)[static_cast<size_t>(j)], a(static_cast<Eigen::Index>(r), j))
          << "row " << r << " feature " << model.FeatureNames()[static_cast<size_t>(j)];
    }
  }
}

TEST(PipelineTest, TruncatedModelIsRejected) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  const std::string text = FitOrDie(SpecOf(kFullSpec), schema, {shard}).Serialize();
  const absl::StatusOr<PipelineModel> truncated =
      PipelineModel::Deserialize(text.substr(0, text.size() / 2));
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PipelineModel::Deserialize("not a model").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PipelineTest, DamagedModelIsRejected) {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId}, {"zip", ColumnType::kCategorical}};
  const RawShard shard = ShardOf(schema, {{"a", "10115"}, {"b", "80331"}});
  const std::string text = FitOrDie(SpecOf("column zip = hash 8"), schema, {shard}).Serialize();
  // "hash 8" escaped in the column line; zero buckets would divide by zero when
  // transforming.
  std::string damaged = text;
  const size_t at = damaged.find("hash%208");
  ASSERT_NE(at, std::string::npos) << text;
  damaged.replace(at, 8, "hash%200");
  const absl::Status status = PipelineModel::Deserialize(damaged).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("hash 0 is invalid"), std::string::npos) << status;
}

TEST(PipelineTest, NewUserWithBadCellsIsRejected) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  const PipelineModel model = FitOrDie(SpecOf(kFullSpec), schema, {shard});
  auto error = [&model](const std::map<std::string, std::string>& cells) {
    return TransformUserPipeline(model, cells).status();
  };
  EXPECT_NE(error({{"x", "abc"}}).message().find("column 'x'"), std::string::npos);
  EXPECT_NE(error({{"flag", "perhaps"}}).message().find("not a boolean"), std::string::npos);
  EXPECT_NE(error({{"emb", "1 2 3"}}).message().find("3 values"), std::string::npos);
  EXPECT_NE(error({{"height", "3"}}).message().find("'height'"), std::string::npos);
  EXPECT_TRUE(TransformUserPipeline(model, {}).ok());  // every column missing is fine
}

TEST(PipelineTest, RangeClipsAndImputationsAreCounted) {
  const Schema schema = SmallSchema();
  const RawShard shard = ShardOf(schema, SmallRows());
  CleaningReport fit_report;
  const PipelineModel model = FitOrDie(SpecOf(kFullSpec), schema, {shard}, &fit_report);
  EXPECT_EQ(fit_report.clipped_values["x"], 1);  // 10 → 8
  CleaningReport report;
  TransformOrDie(model, shard, nullptr, &report);
  EXPECT_EQ(report.clipped_values["x"], 1);
  EXPECT_EQ(report.imputed_cells["x"], 1);
  EXPECT_EQ(report.imputed_cells["flag"], 1);
  EXPECT_EQ(report.imputed_cells["job"], 1);
  EXPECT_EQ(report.imputed_cells["emb"], 1);
  EXPECT_NE(report.ToString().find("x: 1 values clipped"), std::string::npos) << report.ToString();
}

TEST(PipelineTest, SpecTextRoundTrips) {
  const PipelineSpec spec = SpecOf(kFullSpec);
  ASSERT_EQ(spec.columns.size(), 5u);
  EXPECT_EQ(spec.cleaning.duplicate_ids, CleaningRules::DuplicateIds::kKeepFirst);
  const PipelineSpec again = SpecOf(FormatPipelineSpec(spec));
  EXPECT_EQ(FormatPipelineSpec(again), FormatPipelineSpec(spec));
  EXPECT_EQ(again.columns[2].impute_constant, "none");
  EXPECT_EQ(*again.columns[0].valid_max, 8);
}

TEST(PipelineTest, ImputeConstantKeepsSpacesAndCase) {
  const PipelineSpec spec =
      SpecOf("  # a comment\ncolumn job #2 = IMPUTE Constant  not #given  | onehot 3");
  ASSERT_EQ(spec.columns.size(), 1u);
  EXPECT_EQ(spec.columns[0].column, "job #2");
  EXPECT_EQ(spec.columns[0].impute, ImputeRule::kConstant);
  EXPECT_EQ(spec.columns[0].impute_constant, "not #given");
  EXPECT_EQ(spec.columns[0].top_n, 3);
}

TEST(PipelineTest, SpecErrorsNameLineAndStep) {
  const absl::Status unknown = ParsePipelineSpec("# header\ncolumn x = standardise\n").status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.message().find("line 2"), std::string::npos) << unknown;
  EXPECT_NE(unknown.message().find("standardise"), std::string::npos) << unknown;
  EXPECT_NE(ParsePipelineSpec("column x = clip 0.1").status().message().find("2 arguments"),
            std::string::npos);
  EXPECT_NE(ParsePipelineSpec("column x = impute\ncolumn x = log1p").status().message().find("line 1"),
            std::string::npos);
  EXPECT_NE(ParsePipelineSpec("column x =\ncolumn x =").status().message().find("twice"),
            std::string::npos);

  const Schema schema = SmallSchema();
  auto invalid = [&schema](std::string_view text) { return SpecOf(text).Validate(schema); };
  EXPECT_NE(invalid("column job = log1p").message().find("log1p applies to numeric"),
            std::string::npos);
  EXPECT_NE(invalid("column x = clip 0.9 0.1").message().find("0 <= lower < upper"),
            std::string::npos);
  EXPECT_NE(invalid("column note = impute mean").message().find("impute mean"), std::string::npos);
  EXPECT_NE(invalid("column note =").message().find("'words' or 'chars'"), std::string::npos);
  EXPECT_NE(invalid("column y =").message().find("not a feature"), std::string::npos);
  EXPECT_NE(invalid("column nope =").message().find("no such column"), std::string::npos);
  EXPECT_NE(invalid("label x positive 1\ncolumn flag =").message().find("type label"),
            std::string::npos);
  EXPECT_NE(invalid("label y positive yes").message().find("declares no column"),
            std::string::npos);
}

TEST(PipelineTest, Log1pOfValueBelowMinusOneFailsFit) {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId}, {"v", ColumnType::kNumeric}};
  const RawShard shard = ShardOf(schema, {{"a", "3"}, {"b", "-2.5"}});
  const absl::Status status = FitPipeline(SpecOf("column v = log1p"), schema, {shard}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("-2.5"), std::string::npos) << status;
  // A valid range that keeps values above -1 makes the same column usable.
  EXPECT_TRUE(FitPipeline(SpecOf("column v = range 0 10 | log1p"), schema, {shard}).ok());
}

TEST(PipelineTest, ShardOfAnotherSchemaIsRejected) {
  const Schema schema = SmallSchema();
  const PipelineModel model =
      FitOrDie(SpecOf("column emb = impute mean"), schema, {ShardOf(schema, SmallRows())});
  Schema other;
  other.columns = {{"id", ColumnType::kId}, {"x", ColumnType::kNumeric}};
  const RawShard shard = ShardOf(other, {{"a", "1"}});
  MatrixXfR x;
  const absl::Status status = TransformShardPipeline(model, shard, &x, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("'emb'"), std::string::npos) << status;
  PipelineModel unfinished = model;
  unfinished.finished = false;
  EXPECT_EQ(TransformShardPipeline(unfinished, ShardOf(schema, SmallRows()), &x, nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(PipelineTest, ThreadCountDoesNotChangeTransform) {
  const Schema schema = SmallSchema();
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::string> row = SmallRows()[static_cast<size_t>(i % 5)];
    row[0] = absl::StrCat("u", i);
    rows.push_back(row);
  }
  const RawShard shard = ShardOf(schema, rows);
  const PipelineModel model = FitOrDie(SpecOf(kFullSpec), schema, {shard});
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  CleaningReport one_report;
  const MatrixXfR one = TransformOrDie(model, shard, nullptr, &one_report);
  omp_set_num_threads(std::max(2, threads));
  CleaningReport many_report;
  const MatrixXfR many = TransformOrDie(model, shard, nullptr, &many_report);
  omp_set_num_threads(threads);
  EXPECT_EQ(one, many);
  EXPECT_EQ(one_report.imputed_cells, many_report.imputed_cells);
  EXPECT_EQ(many_report.imputed_cells["x"], 4000);
  EXPECT_EQ(many_report.clipped_values["x"], 4000);
}

TEST(PipelineTest, SegmentationSpecReproducesFeatureTransform) {
  Schema schema;
  schema.columns = {{"id", ColumnType::kId},
                    {"age", ColumnType::kNumeric},
                    {"job", ColumnType::kCategorical},
                    {"spend", ColumnType::kNumeric}};
  const RawShard shard = ShardOf(schema, {{"u1", "31", "a", "10"},
                                          {"u2", "", "b", "250"},
                                          {"u3", "45", "", ""},
                                          {"u4", "52", "a", "3"},
                                          {"u5", "29", "c", "70"}});
  FeatureOptions options;
  options.max_categories = 2;
  options.log1p_columns = {"spend"};
  absl::StatusOr<std::vector<bool>> flags = Log1pFlags(schema, options);
  ASSERT_TRUE(flags.ok());
  absl::StatusOr<FeatureTransform> transform =
      FitFeatureTransform(schema, ComputeFeatureStats(shard, *flags), options);
  ASSERT_TRUE(transform.ok()) << transform.status();
  MatrixXfR expected;
  TransformShard(*transform, shard, &expected);

  absl::StatusOr<PipelineSpec> spec = SegmentationSpec(schema, options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const PipelineModel model = FitOrDie(*spec, schema, {shard});
  EXPECT_EQ(model.FeatureNames(), transform->FeatureNames());
  const MatrixXfR x = TransformOrDie(model, shard);
  ASSERT_EQ(x.cols(), expected.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      EXPECT_FLOAT_EQ(x(i, j), expected(i, j)) << "row " << i << " feature " << j;
    }
  }
}

}  // namespace
}  // namespace cohort
