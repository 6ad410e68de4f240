#include "core/transactions.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/shard_hash.h"
#include "tests/test_data.h"

namespace cohort {
namespace {

constexpr char kHeader[] =
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

// 12 data rows (lines 2-13):
//   u1: invoices 1001 (3.0 + 4.0) and 1006 (10.0); items A, B; last 2011-01-10 12:00;
//       one cancelled row (C1003).
//   u2: invoices 1002 (3.0) and 1009 (price 0, kept); items A, D; last 2011-01-07 06:00;
//       one row with a negative quantity.
//   u3: invoice 1007 (1.0); item A; last 2011-01-08 00:00; one row with a negative price.
//   u4: only a cancelled row, whose quantity, price and time are not parsed.
//   two anonymous rows, one of them with an unparsable quantity that is never parsed.
// The reference time is 2011-01-10 12:00 (u1's row written as "1/10/2011 12:00").
constexpr char kSmallLog[] =
    "1001,A,x,2,2011-01-01 10:00:00,1.5,u1,UK\n"
    "1001,B,x,1,2011-01-01 10:00:00,4,u1,UK\n"
    "1002,A,x,3,2011-01-03 10:00,1,u2,UK\n"
    "C1003,A,x,-2,2011-01-04,1.5,u1,UK\n"
    "1004,C,x,5,2011-01-05 12:00:00,2,,UK\n"
    "1005,A,x,-1,2011-01-06 00:00:00,1,u2,UK\n"
    "1006,B,\"desc, with comma\",1,1/10/2011 12:00,10,u1,UK\n"
    "1007,A,x,2,2011-01-08 00:00:00,0.5,u3,UK\n"
    "1008,A,x,1,2011-01-09 00:00:00,-1,u3,UK\n"
    "1009,D,x,1,2011-01-07 06:00:00,0,u2,UK\n"
    "C1010,A,x,oops,garbage,abc,u4,UK\n"
    "1011,A,x,oops,2011-01-02,2,,UK\n";

constexpr int64_t kSmallReferenceTime = 1294660800;  // 2011-01-10 12:00:00 UTC

// Column order of TransactionFeatureSchema().
enum Feature { kRecency = 0, kFrequency, kMonetary, kDistinctItems, kMeanBasket };

using UserFeatures = std::map<std::string, std::vector<double>>;

UserFeatures FeaturesByUser(const TransactionShards& result) {
  UserFeatures features;
  for (const RawShard& shard : result.loaded.shards) {
    for (int64_t row = 0; row < shard.num_rows(); ++row) {
      std::vector<double>& values = features[std::string(shard.ids[row])];
      for (int col = 0; col < shard.numeric.cols(); ++col) values.push_back(shard.numeric(row, col));
    }
  }
  return features;
}

std::vector<int> AllShards(int num_shards) {
  std::vector<int> shards(num_shards);
  std::iota(shards.begin(), shards.end(), 0);
  return shards;
}

class TransactionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("cohort_transactions_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `body` after the standard header to a new file and returns its path.
  std::string WriteLog(const std::string& name, const std::string& body) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    out << kHeader << body;
    return path;
  }

  std::filesystem::path dir_;
};

TEST_F(TransactionsTest, SmallLogGivesExactCountsAndFeatures) {
  const std::string path = WriteLog("log.csv", kSmallLog);
  const absl::StatusOr<TransactionShards> result =
      LoadTransactionShards({path}, TransactionOptions(), /*num_shards=*/1, {0});
  ASSERT_TRUE(result.ok()) << result.status();

  const TransactionCounts& counts = result->counts;
  EXPECT_EQ(counts.rows_read, 12);
  EXPECT_EQ(counts.anonymous_rows, 2);
  EXPECT_EQ(counts.cancelled_rows, 2);
  EXPECT_EQ(counts.non_positive_rows, 2);
  EXPECT_EQ(counts.kept_rows, 6);
  EXPECT_EQ(counts.users, 3);
  EXPECT_EQ(counts.reference_time, kSmallReferenceTime);
  EXPECT_EQ(result->loaded.rows_read, 12);

  ASSERT_EQ(result->loaded.shards.size(), 1u);
  const RawShard& shard = result->loaded.shards[0];
  EXPECT_EQ(shard.shard_id, 0);
  EXPECT_EQ(shard.ids.ToStrings(), (std::vector<std::string>{"u1", "u2", "u3"}));
  ASSERT_EQ(shard.numeric.cols(), 5);
  EXPECT_TRUE(shard.categorical.empty());

  const std::vector<std::vector<double>> expected = {
      // recency_days, frequency, monetary, distinct_items, mean_basket_value
      {0.0, 2, 17.0, 2, 8.5},
      {3.25, 2, 3.0, 2, 1.5},
      {2.5, 1, 1.0, 1, 1.0},
  };
  for (size_t row = 0; row < expected.size(); ++row) {
    for (size_t col = 0; col < expected[row].size(); ++col) {
      EXPECT_EQ(shard.numeric(row, static_cast<int>(col)), static_cast<float>(expected[row][col]))
          << "user " << shard.ids[row] << " feature " << col;
    }
  }
}

TEST_F(TransactionsTest, FeatureSchemaNamesIdAndFiveNumericColumns) {
  const Schema schema = TransactionFeatureSchema();
  ASSERT_EQ(schema.columns.size(), 6u);
  EXPECT_EQ(schema.columns[0].name, "user_id");
  EXPECT_EQ(schema.columns[0].type, ColumnType::kId);
  const std::vector<std::string> names = {"recency_days", "frequency", "monetary",
                                          "distinct_items", "mean_basket_value"};
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(schema.columns[i + 1].name, names[i]);
    EXPECT_EQ(schema.columns[i + 1].type, ColumnType::kNumeric);
  }
}

TEST_F(TransactionsTest, UnionOfShardSubsetsEqualsSingleCall) {
  const std::string path = WriteLog("log.csv", kSmallLog);
  constexpr int kShards = 8;
  const absl::StatusOr<TransactionShards> whole =
      LoadTransactionShards({path}, TransactionOptions(), kShards, AllShards(kShards));
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_EQ(whole->loaded.shards.size(), static_cast<size_t>(kShards));
  for (int s = 0; s < kShards; ++s) EXPECT_EQ(whole->loaded.shards[s].shard_id, s);

  // Two workers: even and odd shards, each requested in a scrambled order.
  const absl::StatusOr<TransactionShards> even =
      LoadTransactionShards({path}, TransactionOptions(), kShards, {6, 0, 4, 2});
  const absl::StatusOr<TransactionShards> odd =
      LoadTransactionShards({path}, TransactionOptions(), kShards, {7, 5, 3, 1});
  ASSERT_TRUE(even.ok()) << even.status();
  ASSERT_TRUE(odd.ok()) << odd.status();

  UserFeatures merged = FeaturesByUser(*even);
  const UserFeatures odd_features = FeaturesByUser(*odd);
  merged.insert(odd_features.begin(), odd_features.end());
  EXPECT_EQ(merged, FeaturesByUser(*whole));

  EXPECT_EQ(even->counts.users + odd->counts.users, whole->counts.users);
  EXPECT_EQ(even->counts.kept_rows + odd->counts.kept_rows, whole->counts.kept_rows);
  EXPECT_EQ(even->counts.cancelled_rows + odd->counts.cancelled_rows,
            whole->counts.cancelled_rows);
  EXPECT_EQ(even->counts.non_positive_rows + odd->counts.non_positive_rows,
            whole->counts.non_positive_rows);
  EXPECT_EQ(even->counts.rows_read, whole->counts.rows_read);
  EXPECT_EQ(even->counts.anonymous_rows, whole->counts.anonymous_rows);
}

TEST_F(TransactionsTest, RecencyIsIndependentOfRequestedShards) {
  const std::string path = WriteLog("log.csv", kSmallLog);
  constexpr int kShards = 8;
  const absl::StatusOr<TransactionShards> whole =
      LoadTransactionShards({path}, TransactionOptions(), kShards, AllShards(kShards));
  ASSERT_TRUE(whole.ok()) << whole.status();
  const UserFeatures expected = FeaturesByUser(*whole);
  // The latest row belongs to u1; the test needs u3 to load without u1's shard.
  ASSERT_NE(ShardOfUser("u1", kShards), ShardOfUser("u3", kShards));

  for (int s = 0; s < kShards; ++s) {
    const absl::StatusOr<TransactionShards> one =
        LoadTransactionShards({path}, TransactionOptions(), kShards, {s});
    ASSERT_TRUE(one.ok()) << "shard " << s << ": " << one.status();
    EXPECT_EQ(one->counts.reference_time, kSmallReferenceTime) << "shard " << s;
    for (const auto& [user, features] : FeaturesByUser(*one)) {
      EXPECT_EQ(features[kRecency], expected.at(user)[kRecency]) << "user " << user;
    }
  }
}

TEST_F(TransactionsTest, NoShardsRequestedStillReadsFileCounts) {
  const std::string path = WriteLog("log.csv", kSmallLog);
  const absl::StatusOr<TransactionShards> result =
      LoadTransactionShards({path}, TransactionOptions(), /*num_shards=*/4, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->loaded.shards.empty());
  EXPECT_EQ(result->counts.rows_read, 12);
  EXPECT_EQ(result->counts.anonymous_rows, 2);
  EXPECT_EQ(result->counts.reference_time, kSmallReferenceTime);
  EXPECT_EQ(result->counts.cancelled_rows, 0);
  EXPECT_EQ(result->counts.users, 0);
}

TEST_F(TransactionsTest, AcceptsEveryDocumentedTimeFormat) {
  // Reference: r at 2011-02-01 00:00:00. Each other user has one row in one format.
  const std::string path = WriteLog("times.csv",
                                    "1,A,x,1,2011-02-01 00:00:00,1,r,UK\n"
                                    "2,A,x,1,2011-01-31 12:00:00,1,a,UK\n"
                                    "3,A,x,1,2011-01-31 18:00,1,b,UK\n"
                                    "4,A,x,1,2011-01-31,1,c,UK\n"
                                    "5,A,x,1,1/31/2011 6:00,1,d,UK\n"
                                    "6,A,x,1,12/31/2010 0:00,1,e,UK\n"
                                    "7,A,x,1,2008-02-29 00:00:00,1,f,UK\n");
  const absl::StatusOr<TransactionShards> result =
      LoadTransactionShards({path}, TransactionOptions(), 1, {0});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->counts.reference_time, 1296518400);  // 2011-02-01 00:00:00 UTC
  const UserFeatures features = FeaturesByUser(*result);
  const std::map<std::string, double> expected = {
      {"r", 0.0},  {"a", 0.5},  {"b", 0.25},
      {"c", 1.0},  {"d", 0.75}, {"e", 32.0},
      // 2008-02-29 to 2011-02-01: 366 - 59 + 365 + 365 + 31 days.
      {"f", 366 - 59 + 365 + 365 + 31}};
  for (const auto& [user, recency] : expected) {
    EXPECT_EQ(features.at(user)[kRecency], static_cast<float>(recency)) << "user " << user;
  }
}

TEST_F(TransactionsTest, BadTimeNamesFileAndLine) {
  for (const std::string bad : {"2011-13-01 00:00:00", "2011-02-30", "2011-1-5", "13/1/2011 0:00",
                                "2011-01-05 24:00", "yesterday", ""}) {
    const std::string path = WriteLog("bad_time.csv",
                                      "1,A,x,1,2011-01-01 00:00:00,1,u1,UK\n"
                                      "2,A,x,1," + bad + ",1,u2,UK\n");
    const absl::StatusOr<TransactionShards> result =
        LoadTransactionShards({path}, TransactionOptions(), 1, {0});
    ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
    const std::string message(result.status().message());
    EXPECT_NE(message.find(path + ":3: column 'InvoiceDate': value '" + bad + "' is not a time"),
              std::string::npos)
        << message;
  }
}

TEST_F(TransactionsTest, BadTimeInOtherShardFails) {
  // Every worker parses the time of every kept row, so every worker reports the error.
  const std::string path = WriteLog("bad_time.csv",
                                    "1,A,x,1,2011-01-01 00:00:00,1,u1,UK\n"
                                    "2,A,x,1,not a time,1,u2,UK\n");
  for (int s = 0; s < 8; ++s) {
    const absl::StatusOr<TransactionShards> result =
        LoadTransactionShards({path}, TransactionOptions(), 8, {s});
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << "shard " << s;
  }
}

TEST_F(TransactionsTest, BadQuantityOrPriceNamesColumn) {
  const std::string quantity_path =
      WriteLog("bad_quantity.csv", "1,A,x,two,2011-01-01 00:00:00,1,u1,UK\n");
  absl::StatusOr<TransactionShards> result =
      LoadTransactionShards({quantity_path}, TransactionOptions(), 1, {0});
  ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find(quantity_path +
                                           ":2: column 'Quantity': value 'two' is not a"),
            std::string::npos)
      << result.status();

  const std::string price_path =
      WriteLog("bad_price.csv", "1,A,x,1,2011-01-01 00:00:00,nan,u1,UK\n");
  result = LoadTransactionShards({price_path}, TransactionOptions(), 1, {0});
  ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(
      result.status().message().find(price_path + ":2: column 'UnitPrice': value 'nan' is not a"),
      std::string::npos)
      << result.status();
}

TEST_F(TransactionsTest, MissingHeaderColumnIsInvalidArgument) {
  const std::string path = (dir_ / "no_price.csv").string();
  std::ofstream(path) << "InvoiceNo,StockCode,Quantity,InvoiceDate,CustomerID\n"
                      << "1,A,1,2011-01-01,u1\n";
  const absl::StatusOr<TransactionShards> result =
      LoadTransactionShards({path}, TransactionOptions(), 1, {0});
  ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("'UnitPrice'"), std::string::npos) << result.status();
}

TEST_F(TransactionsTest, NoKeptRowIsFailedPrecondition) {
  const std::string path = WriteLog("cancelled.csv",
                                    "C1,A,x,-1,2011-01-01 00:00:00,1,u1,UK\n"
                                    "2,A,x,1,2011-01-01 00:00:00,1,,UK\n");
  const absl::StatusOr<TransactionShards> result =
      LoadTransactionShards({path}, TransactionOptions(), 1, {0});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TransactionsTest, RowsAcrossFilesAggregatePerUser) {
  const std::string first = WriteLog("a.csv", "1,A,x,1,2011-01-01 00:00:00,2,u1,UK\n");
  const std::string second = WriteLog("b.csv",
                                      "2,B,x,2,2011-01-03 00:00:00,3,u1,UK\n"
                                      "3,B,x,1,2011-01-02 00:00:00,1,u2,UK\n");
  const absl::StatusOr<TransactionShards> result =
      LoadTransactionShards({first, second}, TransactionOptions(), 1, {0});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->counts.rows_read, 3);
  const UserFeatures features = FeaturesByUser(*result);
  EXPECT_EQ(features.at("u1"), (std::vector<double>{0.0, 2, 8.0, 2, 4.0}));
  EXPECT_EQ(features.at("u2"), (std::vector<double>{1.0, 1, 1.0, 1, 1.0}));
}

TEST_F(TransactionsTest, InvalidArgumentsAreRejected) {
  const std::string path = WriteLog("log.csv", kSmallLog);
  EXPECT_EQ(LoadTransactionShards({path}, TransactionOptions(), 0, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadTransactionShards({path}, TransactionOptions(), 4, {4}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadTransactionShards({path}, TransactionOptions(), 4, {1, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadTransactionShards({}, TransactionOptions(), 4, {0}).status().code(),
            absl::StatusCode::kInvalidArgument);

  TransactionOptions options;
  options.price_column = "";
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(options.Validate().message().find("price_column"), std::string::npos);
  options = TransactionOptions();
  options.csv.has_header = false;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TransactionsTest, CancelPrefixEmptyKeepsCancellationInvoices) {
  // With the rule disabled, "C1" is an ordinary invoice, so only its negative quantity
  // drops it.
  const std::string path = WriteLog("log.csv",
                                    "C1,A,x,-1,2011-01-01 00:00:00,1,u1,UK\n"
                                    "C2,A,x,1,2011-01-01 00:00:00,1,u1,UK\n");
  TransactionOptions options;
  options.cancel_prefix = "";
  const absl::StatusOr<TransactionShards> result = LoadTransactionShards({path}, options, 1, {0});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->counts.cancelled_rows, 0);
  EXPECT_EQ(result->counts.non_positive_rows, 1);
  EXPECT_EQ(result->counts.kept_rows, 1);
}

TEST(TransactionsRealDataTest, OnlineRetailCountsAndFeatures) {
  COHORT_REQUIRE_DATA_FILE(path, "online-retail/OnlineRetail.csv.gz");
  constexpr int kShards = 64;
  const auto start = std::chrono::steady_clock::now();
  const absl::StatusOr<TransactionShards> result =
      LoadTransactionShards({path}, TransactionOptions(), kShards, AllShards(kShards));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(result.ok()) << result.status();

  const TransactionCounts& counts = result->counts;
  std::printf(
      "online retail: rows_read %lld, anonymous %lld, cancelled %lld, non_positive %lld, "
      "kept %lld, users %lld, reference_time %lld, load %.2f s\n",
      static_cast<long long>(counts.rows_read), static_cast<long long>(counts.anonymous_rows),
      static_cast<long long>(counts.cancelled_rows),
      static_cast<long long>(counts.non_positive_rows), static_cast<long long>(counts.kept_rows),
      static_cast<long long>(counts.users), static_cast<long long>(counts.reference_time),
      seconds);

  EXPECT_EQ(counts.rows_read, 541909);
  EXPECT_EQ(counts.anonymous_rows, 135080);
  // 406,829 rows have a customer id: 8,905 are cancellations and 397,924 are kept. No
  // row with a customer id has a quantity <= 0 outside the cancellations.
  EXPECT_EQ(counts.cancelled_rows, 8905);
  EXPECT_EQ(counts.non_positive_rows, 0);
  EXPECT_EQ(counts.kept_rows, 397924);
  // 4,372 distinct customers, of whom 33 have only cancellations.
  EXPECT_EQ(counts.users, 4339);
  EXPECT_EQ(counts.reference_time, 1323435000);  // 2011-12-09 12:50:00 UTC

  const UserFeatures features = FeaturesByUser(*result);
  ASSERT_EQ(features.size(), 4339u);
  // Customer 12346 bought 74,215 units at 1.04 once (its cancellation is dropped); its
  // last purchase was 2011-01-18 10:01.
  // Features are stored as float32: each is the double value rounded to float.
  const std::vector<double>& customer = features.at("12346");
  EXPECT_EQ(customer[kRecency], static_cast<float>(325.1173611111111));
  EXPECT_EQ(customer[kFrequency], 1);
  EXPECT_EQ(customer[kMonetary], static_cast<float>(77183.6));
  EXPECT_EQ(customer[kDistinctItems], 1);
  const std::vector<double>& regular = features.at("17850");
  EXPECT_EQ(regular[kRecency], static_cast<float>(371.8909722222222));
  EXPECT_EQ(regular[kFrequency], 34);
  EXPECT_EQ(regular[kMonetary], static_cast<float>(5391.21));
  EXPECT_EQ(regular[kDistinctItems], 21);
  EXPECT_EQ(regular[kMeanBasket], static_cast<float>(158.565));

  // Each of the 4,339 values is off by at most half a float ulp (at most 0.004 here).
  double total_monetary = 0;
  for (const auto& [user, values] : features) total_monetary += values[kMonetary];
  EXPECT_NEAR(total_monetary, 8911407.904, 0.5);
}

}  // namespace
}  // namespace cohort
