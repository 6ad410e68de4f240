// Transaction log → per-user RFM features.
#ifndef COHORT_CORE_TRANSACTIONS_H_
#define COHORT_CORE_TRANSACTIONS_H_

#include <cstdint>
#include <optional>
#include <string_view>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/csv.h"
#include "core/raw_table.h"
#include "core/schema.h"

namespace cohort {

struct TransactionOptions {
  std::string user_column = "CustomerID";
  std::string invoice_column = "InvoiceNo";
  std::string item_column = "StockCode";
  std::string quantity_column = "Quantity";
  std::string price_column = "UnitPrice";
  // Accepted formats: "YYYY-MM-DD HH:MM:SS", "YYYY-MM-DD HH:MM", "YYYY-MM-DD",
  // "M/D/YYYY H:MM" (all read as UTC).
  std::string time_column = "InvoiceDate";
  // Invoices whose number starts with this prefix are cancellations and are dropped.
  // Empty disables the rule.
  std::string cancel_prefix = "C";
  CsvOptions csv;

  // Errors: InvalidArgument for an empty column name or bad CSV options.
  [[nodiscard]] absl::Status Validate() const;
};

// Parses one of the accepted time formats (see TransactionOptions::time_column) into
// seconds since the Unix epoch, UTC. Returns nullopt for any other text or for an
// impossible date or time of day.
std::optional<int64_t> ParseTransactionTime(std::string_view text);

// The schema of the per-user table that LoadTransactionShards produces: the id column
// "user_id" and the numeric columns
//   recency_days       days from the user's last purchase to the reference time
//   frequency          distinct invoices
//   monetary           sum of quantity × unit price
//   distinct_items     distinct item codes
//   mean_basket_value  monetary / frequency
Schema TransactionFeatureSchema();

// Row counts of the log by outcome. File-level counts are the same on every worker
// (each reads every row); shard-level counts cover the requested shards only.
struct TransactionCounts {
  // File level.
  int64_t rows_read = 0;
  int64_t anonymous_rows = 0;  // empty user id: dropped
  // Reference time for recency: the latest time of any kept row in the files, in
  // seconds since the Unix epoch (UTC).
  int64_t reference_time = 0;
  // Shard level.
  int64_t cancelled_rows = 0;     // invoice starts with cancel_prefix: dropped
  int64_t non_positive_rows = 0;  // quantity <= 0 or unit price < 0: dropped
  int64_t kept_rows = 0;
  int64_t users = 0;
};

struct TransactionShards {
  LoadedShards loaded;  // columns as in TransactionFeatureSchema()
  TransactionCounts counts;
};

// Reads the transaction files and aggregates the kept rows of the requested shards into
// one row per user (users in order of first appearance). Errors (InvalidArgument naming
// file, line, column and value): a missing column in a header, a malformed line, an
// unparsable quantity, price or time on a row that is not dropped for another reason.
// FailedPrecondition when no row is kept in the whole input.
[[nodiscard]] absl::StatusOr<TransactionShards> LoadTransactionShards(
    const std::vector<std::string>& paths, const TransactionOptions& options, int num_shards,
    const std::vector<int>& shards);

}  // namespace cohort

#endif  // COHORT_CORE_TRANSACTIONS_H_
