#include "core/transactions.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/shard_hash.h"

namespace cohort {
namespace {

constexpr int64_t kSecondsPerDay = 86400;
constexpr double kSecondsPerDayDouble = 86400.0;

constexpr char kTimeFormats[] =
    "YYYY-MM-DD HH:MM:SS, YYYY-MM-DD HH:MM, YYYY-MM-DD or M/D/YYYY H:MM (UTC)";

// Days from 1970-01-01 to the proleptic Gregorian date y-m-d (Howard Hinnant's
// days_from_civil algorithm).
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t year_of_era = y - era * 400;                                   // [0, 399]
  const int64_t day_of_year = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;  // [0, 365]
  const int64_t day_of_era =
      year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;  // [0, 146096]
  return era * 146097 + day_of_era - 719468;
}

bool IsLeapYear(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

int DaysInMonth(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && IsLeapYear(year) ? 29 : kDays[month - 1];
}

// A cursor over the text of one time cell.
class TimeScanner {
 public:
  explicit TimeScanner(std::string_view text) : text_(text) {}

  // Reads between `min_digits` and `max_digits` decimal digits into `value`.
  bool Digits(int min_digits, int max_digits, int* value) {
    int digits = 0;
    int result = 0;
    while (digits < max_digits && pos_ < text_.size() && text_[pos_] >= '0' &&
           text_[pos_] <= '9') {
      result = result * 10 + (text_[pos_] - '0');
      ++pos_;
      ++digits;
    }
    *value = result;
    return digits >= min_digits;
  }

  bool Literal(char c) {
    if (pos_ >= text_.size() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }

  bool AtEnd() const { return pos_ == text_.size(); }

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

struct CivilTime {
  int year = 0;
  int month = 0;
  int day = 0;
  int hour = 0;
  int minute = 0;
  int second = 0;
};

// Parses "YYYY-MM-DD", optionally followed by " HH:MM" and then optionally ":SS".
bool ParseIsoTime(std::string_view text, CivilTime* time) {
  TimeScanner scan(text);
  if (!scan.Digits(4, 4, &time->year) || !scan.Literal('-') ||
      !scan.Digits(2, 2, &time->month) || !scan.Literal('-') || !scan.Digits(2, 2, &time->day)) {
    return false;
  }
  if (scan.AtEnd()) return true;
  if (!scan.Literal(' ') || !scan.Digits(2, 2, &time->hour) || !scan.Literal(':') ||
      !scan.Digits(2, 2, &time->minute)) {
    return false;
  }
  if (scan.AtEnd()) return true;
  return scan.Literal(':') && scan.Digits(2, 2, &time->second) && scan.AtEnd();
}

// Parses "M/D/YYYY H:MM", where month, day and hour have one or two digits.
bool ParseUsTime(std::string_view text, CivilTime* time) {
  TimeScanner scan(text);
  return scan.Digits(1, 2, &time->month) && scan.Literal('/') && scan.Digits(1, 2, &time->day) &&
         scan.Literal('/') && scan.Digits(4, 4, &time->year) && scan.Literal(' ') &&
         scan.Digits(1, 2, &time->hour) && scan.Literal(':') &&
         scan.Digits(2, 2, &time->minute) && scan.AtEnd();
}

}  // namespace

std::optional<int64_t> ParseTransactionTime(std::string_view text) {
  CivilTime time;
  if (!ParseIsoTime(text, &time)) {
    time = CivilTime();
    if (!ParseUsTime(text, &time)) return std::nullopt;
  }
  if (time.month < 1 || time.month > 12 || time.day < 1 ||
      time.day > DaysInMonth(time.year, time.month) || time.hour > 23 || time.minute > 59 ||
      time.second > 59) {
    return std::nullopt;
  }
  return DaysFromCivil(time.year, time.month, time.day) * kSecondsPerDay + time.hour * 3600 +
         time.minute * 60 + time.second;
}

namespace {

// Column positions of one file's header.
struct ColumnIndex {
  int user = -1;
  int invoice = -1;
  int item = -1;
  int quantity = -1;
  int price = -1;
  int time = -1;
};

absl::StatusOr<ColumnIndex> FindColumns(const CsvReader& reader,
                                        const TransactionOptions& options) {
  const std::vector<std::string>& header = reader.header();
  ColumnIndex index;
  const std::pair<const std::string*, int*> wanted[] = {
      {&options.user_column, &index.user},         {&options.invoice_column, &index.invoice},
      {&options.item_column, &index.item},         {&options.quantity_column, &index.quantity},
      {&options.price_column, &index.price},       {&options.time_column, &index.time},
  };
  for (const auto& [name, position] : wanted) {
    auto it = std::find(header.begin(), header.end(), *name);
    if (it == header.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          reader.path(), ":1: column '", *name, "' is missing from the header (",
          absl::StrJoin(header, ", "), "); set the matching TransactionOptions column name"));
    }
    *position = static_cast<int>(it - header.begin());
  }
  return index;
}

absl::Status BadCell(const CsvReader& reader, const std::string& column, const std::string& text,
                     const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(reader.path(), ":", reader.line(),
                                                 ": column '", column, "': value '", text,
                                                 "' is not a ", problem));
}

absl::StatusOr<double> ParseAmount(const CsvReader& reader, const std::string& column,
                                   const std::string& text) {
  const std::optional<double> value = ParseNumber(text);
  if (!value.has_value() || !std::isfinite(*value)) {
    return BadCell(reader, column, text,
                   "finite number; fix the cell or remove the row from the file");
  }
  return *value;
}

// Interns strings as dense int32 ids, so that per-user distinct sets hold integers.
class StringInterner {
 public:
  int32_t Intern(const std::string& text) {
    auto [it, inserted] = ids_.try_emplace(text, static_cast<int32_t>(ids_.size()));
    return it->second;
  }

 private:
  absl::flat_hash_map<std::string, int32_t> ids_;
};

struct UserAggregate {
  int64_t last_time = std::numeric_limits<int64_t>::min();
  double monetary = 0;
  absl::flat_hash_set<int32_t> invoices;
  absl::flat_hash_set<int32_t> items;
};

// The users of one requested shard in order of first appearance.
struct ShardAggregate {
  absl::flat_hash_map<std::string, size_t> position;  // user id → index into users
  std::vector<std::string> ids;
  std::vector<UserAggregate> users;

  UserAggregate& Find(const std::string& user_id) {
    auto [it, inserted] = position.try_emplace(user_id, users.size());
    if (inserted) {
      ids.push_back(user_id);
      users.emplace_back();
    }
    return users[it->second];
  }
};

// State of one LoadTransactionShards call while it reads the files.
struct LoadState {
  int num_shards = 0;
  // Virtual shard id → index into `shards`, or -1 when the shard is not requested.
  std::vector<int> slot;
  std::vector<ShardAggregate> shards;
  StringInterner invoices;
  StringInterner items;
  TransactionCounts counts;
  bool any_kept = false;  // a row is kept somewhere in the input, requested or not
};

// Applies one data row to `state`. The anonymous check comes first, then the shard of
// the user, so that rows of shards not requested still have quantity, price and time
// parsed: the reference time must not depend on which shards a worker loads.
absl::Status ApplyRow(const CsvReader& reader, const TransactionOptions& options,
                      const ColumnIndex& columns, const std::vector<std::string>& fields,
                      LoadState* state) {
  ++state->counts.rows_read;
  const std::string& user = fields[columns.user];
  if (user.empty()) {
    ++state->counts.anonymous_rows;
    return absl::OkStatus();
  }
  if (!IsValidUtf8(user)) {
    return absl::InvalidArgumentError(absl::StrCat(
        reader.path(), ":", reader.line(), ": column '", options.user_column,
        "': the user id is not valid UTF-8; convert the file to UTF-8 (e.g. with iconv)"));
  }
  const int slot = state->slot[ShardOfUser(user, state->num_shards)];
  const bool requested = slot >= 0;

  const std::string& invoice = fields[columns.invoice];
  if (!options.cancel_prefix.empty() && invoice.starts_with(options.cancel_prefix)) {
    if (requested) ++state->counts.cancelled_rows;
    return absl::OkStatus();
  }

  absl::StatusOr<double> quantity =
      ParseAmount(reader, options.quantity_column, fields[columns.quantity]);
  if (!quantity.ok()) return quantity.status();
  absl::StatusOr<double> price = ParseAmount(reader, options.price_column, fields[columns.price]);
  if (!price.ok()) return price.status();
  if (*quantity <= 0 || *price < 0) {
    if (requested) ++state->counts.non_positive_rows;
    return absl::OkStatus();
  }

  const std::string& time_text = fields[columns.time];
  const std::optional<int64_t> time = ParseTransactionTime(time_text);
  if (!time.has_value()) {
    return BadCell(reader, options.time_column, time_text,
                   absl::StrCat("time; write it as ", kTimeFormats));
  }
  if (!state->any_kept || *time > state->counts.reference_time) {
    state->counts.reference_time = *time;
  }
  state->any_kept = true;
  if (!requested) return absl::OkStatus();

  ++state->counts.kept_rows;
  UserAggregate& aggregate = state->shards[slot].Find(user);
  aggregate.last_time = std::max(aggregate.last_time, *time);
  aggregate.monetary += *quantity * *price;
  aggregate.invoices.insert(state->invoices.Intern(invoice));
  aggregate.items.insert(state->items.Intern(fields[columns.item]));
  return absl::OkStatus();
}

absl::Status ReadFile(const std::string& path, const TransactionOptions& options,
                      LoadState* state) {
  absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(path, options.csv);
  if (!reader.ok()) return reader.status();
  absl::StatusOr<ColumnIndex> columns = FindColumns(**reader, options);
  if (!columns.ok()) return columns.status();

  std::vector<std::string> fields;
  while (true) {
    absl::StatusOr<bool> has_row = (*reader)->Next(&fields);
    if (!has_row.ok()) return has_row.status();
    if (!*has_row) return absl::OkStatus();
    if (absl::Status status = ApplyRow(**reader, options, *columns, fields, state);
        !status.ok()) {
      return status;
    }
  }
}

// Turns the aggregates of one shard into its RawShard, in TransactionFeatureSchema()
// numeric column order.
RawShard BuildShard(const Schema& schema, int shard_id, int64_t reference_time,
                    ShardAggregate* aggregate) {
  RawShard shard = MakeEmptyShard(schema, shard_id);
  const size_t n = aggregate->users.size();
  shard.numeric.Reserve(static_cast<int64_t>(n));
  for (size_t i = 0; i < n; ++i) {
    const UserAggregate& user = aggregate->users[i];
    const double frequency = static_cast<double>(user.invoices.size());
    float* row = shard.numeric.AppendRow();
    row[0] = static_cast<float>(static_cast<double>(reference_time - user.last_time) /
                                kSecondsPerDayDouble);
    row[1] = static_cast<float>(frequency);
    row[2] = static_cast<float>(user.monetary);
    row[3] = static_cast<float>(user.items.size());
    row[4] = static_cast<float>(user.monetary / frequency);
  }
  int64_t id_chars = 0;
  for (const std::string& id : aggregate->ids) id_chars += static_cast<int64_t>(id.size());
  shard.ids.Reserve(static_cast<int64_t>(aggregate->ids.size()), id_chars);
  for (const std::string& id : aggregate->ids) shard.ids.push_back(id);
  std::vector<std::string>().swap(aggregate->ids);
  return shard;
}

}  // namespace

absl::Status TransactionOptions::Validate() const {
  const std::pair<const char*, const std::string*> names[] = {
      {"user_column", &user_column},         {"invoice_column", &invoice_column},
      {"item_column", &item_column},         {"quantity_column", &quantity_column},
      {"price_column", &price_column},       {"time_column", &time_column},
  };
  for (const auto& [field, value] : names) {
    if (value->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("TransactionOptions.", field, " is empty; set it to a header column name"));
    }
  }
  if (!csv.has_header) {
    return absl::InvalidArgumentError(
        "TransactionOptions.csv.has_header is false; transaction files need a header that "
        "names their columns");
  }
  return csv.Validate();
}

Schema TransactionFeatureSchema() {
  Schema schema;
  schema.columns = {
      {"user_id", ColumnType::kId},          {"recency_days", ColumnType::kNumeric},
      {"frequency", ColumnType::kNumeric},   {"monetary", ColumnType::kNumeric},
      {"distinct_items", ColumnType::kNumeric}, {"mean_basket_value", ColumnType::kNumeric},
  };
  return schema;
}

absl::StatusOr<TransactionShards> LoadTransactionShards(const std::vector<std::string>& paths,
                                                        const TransactionOptions& options,
                                                        int num_shards,
                                                        const std::vector<int>& shards) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (paths.empty()) {
    return absl::InvalidArgumentError("no transaction files given; pass at least one path");
  }
  if (num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_shards is ", num_shards, "; it must be at least 1"));
  }

  LoadState state;
  state.num_shards = num_shards;
  state.slot.assign(num_shards, -1);
  std::vector<int> sorted_shards = shards;
  std::sort(sorted_shards.begin(), sorted_shards.end());
  for (size_t i = 0; i < sorted_shards.size(); ++i) {
    const int shard = sorted_shards[i];
    if (shard < 0 || shard >= num_shards) {
      return absl::InvalidArgumentError(absl::StrCat("shard ", shard, " is outside [0, ",
                                                     num_shards, "); request existing shards"));
    }
    if (state.slot[shard] >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard ", shard, " is requested twice; request each shard once"));
    }
    state.slot[shard] = static_cast<int>(i);
  }
  state.shards.resize(sorted_shards.size());

  for (const std::string& path : paths) {
    if (absl::Status status = ReadFile(path, options, &state); !status.ok()) return status;
  }
  if (!state.any_kept) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no row of ", absl::StrJoin(paths, ", "), " is kept (", state.counts.rows_read,
        " rows read, ", state.counts.anonymous_rows,
        " without a user id); every row is anonymous, cancelled or has a non-positive "
        "quantity or a negative price"));
  }

  TransactionShards result;
  result.counts = state.counts;
  result.loaded.rows_read = state.counts.rows_read;
  const Schema schema = TransactionFeatureSchema();
  result.loaded.shards.reserve(sorted_shards.size());
  for (size_t i = 0; i < sorted_shards.size(); ++i) {
    result.counts.users += static_cast<int64_t>(state.shards[i].users.size());
    result.loaded.shards.push_back(
        BuildShard(schema, sorted_shards[i], state.counts.reference_time, &state.shards[i]));
  }
  return result;
}

}  // namespace cohort
