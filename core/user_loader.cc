// LoadUserShards reads files in blocks of whole lines and splits each block into pieces
// that OpenMP threads parse at the same time. Then each shard is filled by one thread
// with its rows in input order, and the first failing row in input order is reported, so
// the result and the error do not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/csv.h"
#include "core/raw_cells.h"
#include "core/raw_table.h"
#include "core/shard_hash.h"
#include "core/status_macros.h"

namespace cohort {
namespace {

// Bytes of a block per parsing thread: large enough that the per-block work (reading,
// the serial append) is small next to the parse, small enough to stay in the L2/L3
// caches of a few cores.
constexpr size_t kBlockBytesPerThread = size_t{2} << 20;
// Pieces per thread in a block, so a thread that ends early takes another piece.
constexpr int kPiecesPerThread = 2;

// The field index of each schema column in one file, and the names used in messages.
struct FilePlan {
  size_t field_count = 0;
  size_t id_field = kNotInFile;
  size_t weight_field = kNotInFile;
  std::vector<size_t> numeric_fields;
  std::vector<size_t> categorical_fields;
  // Fields checked for UTF-8, in schema order: the id (when read from the file) and the
  // categorical columns, as AppendUserRow checks them.
  std::vector<size_t> text_fields;
  std::vector<std::string_view> text_names;
  std::string_view id_name;
  std::string_view weight_name;
  std::vector<std::string_view> numeric_names;
  // "<file index>:" for line-number ids of every file after the first.
  std::string line_id_prefix;
  // For each field, its index in numeric_fields, or -1 for a field of another column.
  std::vector<int> numeric_of_field;
};

FilePlan MakeFilePlan(const Schema& schema, const std::vector<size_t>& header_index,
                      size_t field_count, size_t file_index) {
  FilePlan plan;
  plan.field_count = field_count;
  for (size_t j = 0; j < schema.columns.size(); ++j) {
    const ColumnSpec& column = schema.columns[j];
    const size_t field = header_index[j];
    switch (column.type) {
      case ColumnType::kId:
        plan.id_field = field;
        plan.id_name = column.name;
        if (field != kNotInFile) {
          plan.text_fields.push_back(field);
          plan.text_names.push_back(column.name);
        }
        break;
      case ColumnType::kNumeric:
        plan.numeric_fields.push_back(field);
        plan.numeric_names.push_back(column.name);
        break;
      case ColumnType::kCategorical:
        plan.categorical_fields.push_back(field);
        plan.text_fields.push_back(field);
        plan.text_names.push_back(column.name);
        break;
      case ColumnType::kWeight:
        plan.weight_field = field;
        plan.weight_name = column.name;
        break;
      case ColumnType::kIgnore:
      // Schemas with profiling columns go to LoadUserShardsRowByRow instead.
      case ColumnType::kBoolean:
      case ColumnType::kText:
      case ColumnType::kEmbedding:
      case ColumnType::kLabel:
        break;
    }
  }
  if (file_index > 0) plan.line_id_prefix = absl::StrCat(file_index, ":");
  plan.numeric_of_field.assign(field_count, -1);
  for (size_t c = 0; c < plan.numeric_fields.size(); ++c) {
    plan.numeric_of_field[plan.numeric_fields[c]] = static_cast<int>(c);
  }
  return plan;
}

// The first problem of a piece. Lines are counted from the start of the piece.
struct PieceIssue {
  enum class Kind { kNone, kMalformed, kCell };
  Kind kind = Kind::kNone;
  int64_t line = 0;
  absl::Status cell_error;  // kCell: the cell's error, without file and line
};

// The rows of one piece that belong to requested shards, parsed, in input order.
struct ParsedPiece {
  std::vector<int32_t> slots;
  std::vector<int64_t> lines;  // line of each row, counted from the start of the piece
  std::vector<std::string_view> ids;
  std::vector<float> numeric;                  // rows × numeric columns
  std::vector<std::string_view> categorical;   // rows × categorical columns
  std::vector<float> weights;                  // empty without a weight column
  // Text of line-number ids, which do not exist in the block.
  std::deque<std::string> line_ids;
  int64_t records = 0;
  int64_t line_breaks = 0;
  PieceIssue issue;
  // The row indices grouped by slot, in input order inside each slot: the rows of slot
  // s are by_slot[slot_starts[s], slot_starts[s + 1]).
  std::vector<int32_t> by_slot;
  std::vector<int32_t> slot_starts;

  // Fills by_slot and slot_starts with a counting sort of the rows by slot.
  void GroupBySlot(size_t num_slots) {
    slot_starts.assign(num_slots + 1, 0);
    for (int32_t slot : slots) ++slot_starts[static_cast<size_t>(slot) + 1];
    for (size_t s = 0; s < num_slots; ++s) slot_starts[s + 1] += slot_starts[s];
    by_slot.resize(slots.size());
    next_in_slot.assign(slot_starts.begin(), slot_starts.end() - 1);
    for (size_t r = 0; r < slots.size(); ++r) {
      by_slot[next_in_slot[slots[r]]++] = static_cast<int32_t>(r);
    }
  }
  std::vector<int32_t> next_in_slot;  // GroupBySlot's write position per slot

  // Empties the piece, keeping the capacity of its vectors for the next block.
  void Clear() {
    slots.clear();
    lines.clear();
    ids.clear();
    numeric.clear();
    categorical.clear();
    weights.clear();
    line_ids.clear();
    by_slot.clear();
    slot_starts.clear();
    records = 0;
    line_breaks = 0;
    issue = PieceIssue{};
  }
};

// Splits records that have no quoted field into fields and parses their numeric cells
// in the same pass, so the bytes of a number are read once. A record it cannot take
// (a quoted field, a blank line before it, a wrong field count) goes to CsvRecordParser,
// so every record is split as CsvRecordParser splits it.
class PlainRecordSplitter {
 public:
  PlainRecordSplitter(const CsvOptions& csv, const FilePlan& plan)
      : delimiter_(csv.delimiter), quote_(csv.quote), plan_(plan) {
    stops_.fill(false);
    stops_[static_cast<unsigned char>(csv.delimiter)] = true;
    stops_[static_cast<unsigned char>('\n')] = true;
    stops_[static_cast<unsigned char>('\r')] = true;
    // A delimiter that can be part of a number would end the number parse inside a cell.
    enabled_ = std::string_view("0123456789+-.eE").find(csv.delimiter) == std::string_view::npos &&
               plan.field_count > 0;
  }

  // Splits the record at *pos of data[0, size) into `fields`, and for each numeric column
  // c whose cell is a number ParsePlainDecimalFloat accepts, sets values[c] and
  // parsed[c] = 1 (else parsed[c] = 0). Advances *pos past the line end and counts it in
  // *lines. Returns false, changing nothing, for a record it does not take.
  bool Split(const char* data, size_t size, size_t* pos, std::vector<std::string_view>* fields,
             float* values, uint8_t* parsed, int64_t* lines) const {
    if (!enabled_) return false;
    size_t p = *pos;
    if (p == size || data[p] == '\n' || data[p] == '\r') return false;
    fields->resize(plan_.field_count);
    const char* const end = data + size;
    for (size_t f = 0; f < plan_.field_count; ++f) {
      if (p < size && data[p] == quote_) return false;
      const size_t start = p;
      const int c = plan_.numeric_of_field[f];
      if (c >= 0) {
        const char* number_end = ParsePlainDecimalFloatPrefix(data + p, end, &values[c]);
        const bool at_stop = number_end != nullptr &&
                             (number_end == end || stops_[static_cast<unsigned char>(*number_end)]);
        parsed[c] = at_stop ? 1 : 0;
        if (at_stop) p = static_cast<size_t>(number_end - data);
      }
      while (p < size && !stops_[static_cast<unsigned char>(data[p])]) ++p;
      (*fields)[f] = std::string_view(data + start, p - start);
      if (f + 1 == plan_.field_count) break;
      if (p == size || data[p] != delimiter_) return false;  // too few fields
      ++p;
    }
    if (p < size) {
      if (data[p] == delimiter_) return false;  // too many fields
      p += (data[p] == '\r' && p + 1 < size && data[p + 1] == '\n') ? 2 : 1;
      ++*lines;
    }
    *pos = p;
    return true;
  }

 private:
  char delimiter_;
  char quote_;
  const FilePlan& plan_;
  std::array<bool, 256> stops_;
  bool enabled_ = false;
};

struct PieceContext {
  const FilePlan* plan;
  const PlainRecordSplitter* splitter;
  const CsvRecordParser* parser;
  const std::vector<int>* slot_of_shard;
  int num_shards;
};

// Parses one piece. Stops at the first problem, recorded in out->issue; the rows before
// it are kept. `first_line` is the file line of the piece's first byte, used only for
// line-number ids (whose pieces are therefore parsed one at a time).
void ParsePiece(const PieceContext& context, char* data, size_t size, int64_t first_line,
                ParsedPiece* out) {
  const FilePlan& plan = *context.plan;
  const size_t num_numeric = plan.numeric_fields.size();
  std::vector<std::string_view> fields;
  fields.reserve(plan.field_count);
  // Numeric cells the splitter parsed: values[c] is valid where parsed[c] is 1.
  std::vector<float> values(num_numeric);
  std::vector<uint8_t> parsed(num_numeric);
  size_t pos = 0;
  int64_t lines = 0;
  int64_t record_line = 0;
  auto fail = [&](PieceIssue::Kind kind, absl::Status error) {
    out->issue.kind = kind;
    out->issue.line = record_line;
    out->issue.cell_error = std::move(error);
  };

  while (true) {
    const int64_t lines_before = lines;
    if (context.splitter->Split(data, size, &pos, &fields, values.data(), parsed.data(),
                                &lines)) {
      record_line = lines_before;
    } else {
      std::fill(parsed.begin(), parsed.end(), 0);
      const CsvRecordParser::Result result =
          context.parser->Next(data, size, &pos, &fields, &lines, &record_line);
      if (result == CsvRecordParser::Result::kEnd) break;
      if (result == CsvRecordParser::Result::kMalformed) {
        fail(PieceIssue::Kind::kMalformed, absl::OkStatus());
        break;
      }
    }
    if (fields.size() != plan.field_count) {
      fail(PieceIssue::Kind::kMalformed, absl::OkStatus());
      break;
    }
    ++out->records;

    std::string_view id;
    if (plan.id_field == kNotInFile) {
      out->line_ids.push_back(absl::StrCat(plan.line_id_prefix, first_line + record_line));
      id = out->line_ids.back();
    } else {
      id = fields[plan.id_field];
    }
    if (absl::Status status = CheckIdCell(plan.id_name, id); !status.ok()) {
      fail(PieceIssue::Kind::kCell, std::move(status));
      break;
    }
    const int slot = (*context.slot_of_shard)[ShardOfUser(id, context.num_shards)];
    if (slot < 0) {
      if (plan.id_field == kNotInFile) out->line_ids.pop_back();
      continue;
    }

    // A hosted row: cells are checked in AppendUserRow's order.
    absl::Status cell_error;
    for (size_t t = 0; t < plan.text_fields.size() && cell_error.ok(); ++t) {
      cell_error = CheckTextCell(plan.text_names[t], fields[plan.text_fields[t]]);
    }
    float weight = 1.0f;
    if (cell_error.ok() && plan.weight_field != kNotInFile) {
      absl::StatusOr<float> parsed = ParseWeightCell(plan.weight_name, fields[plan.weight_field]);
      if (parsed.ok()) {
        weight = *parsed;
      } else {
        cell_error = parsed.status();
      }
    }
    const size_t numeric_start = out->numeric.size();
    out->numeric.resize(numeric_start + num_numeric);
    for (size_t c = 0; c < num_numeric && cell_error.ok(); ++c) {
      // Most cells take the plain-decimal paths, which ParseNumericCell also starts with.
      if (parsed[c] != 0) {
        out->numeric[numeric_start + c] = values[c];
        continue;
      }
      const std::string_view cell = fields[plan.numeric_fields[c]];
      if (double value = 0; ParsePlainDecimal(cell, &value)) {
        out->numeric[numeric_start + c] = static_cast<float>(value);
        continue;
      }
      absl::StatusOr<float> value = ParseNumericCell(plan.numeric_names[c], cell);
      if (value.ok()) {
        out->numeric[numeric_start + c] = *value;
      } else {
        cell_error = value.status();
      }
    }
    if (!cell_error.ok()) {
      out->numeric.resize(numeric_start);
      fail(PieceIssue::Kind::kCell, std::move(cell_error));
      break;
    }
    for (size_t field : plan.categorical_fields) out->categorical.push_back(fields[field]);
    if (plan.weight_field != kNotInFile) out->weights.push_back(weight);
    out->slots.push_back(slot);
    out->lines.push_back(record_line);
    out->ids.push_back(id);
  }
  out->line_breaks = lines;
}

// The error CsvReader reports for `path`, which the block parser found malformed.
absl::Status CsvErrorOf(const std::string& path, const CsvOptions& csv) {
  absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(path, csv);
  if (!reader.ok()) return reader.status();
  std::vector<std::string> fields;
  while (true) {
    absl::StatusOr<bool> has_record = (*reader)->Next(&fields);
    if (!has_record.ok()) return has_record.status();
    if (!*has_record) break;
  }
  return absl::InternalError(absl::StrCat(
      "failed to parse '", path, "': the block parser and CsvReader disagree on its records"));
}

// The error for the user id that repeats first in input order among `candidates`,
// found by reading the files again with CsvReader (only on the error path, so the load
// keeps no per-row locations). Each candidate is an id stored twice in one shard.
absl::Status RepeatedIdError(const UserLoadOptions& options,
                             const absl::flat_hash_set<std::string>& candidates) {
  const std::string rule_hint =
      "; user ids must be unique, or create the dataset with the keep-first rule for "
      "duplicate ids";
  const size_t id_column = static_cast<size_t>(options.schema.IdIndex());
  absl::flat_hash_map<std::string, std::string> first_seen;
  std::vector<std::string> fields;
  for (const std::string& path : options.paths) {
    absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(path, options.csv);
    if (!reader.ok()) continue;
    absl::StatusOr<std::vector<size_t>> header_index =
        MapSchemaToHeader(options.schema, (*reader)->header(), path);
    if (!header_index.ok() || (*header_index)[id_column] == kNotInFile) continue;
    const size_t id_field = (*header_index)[id_column];
    while (true) {
      absl::StatusOr<bool> has_record = (*reader)->Next(&fields);
      if (!has_record.ok() || !*has_record) break;
      if (id_field >= fields.size() || !candidates.contains(fields[id_field])) continue;
      const std::string location = absl::StrCat(path, ":", (*reader)->line());
      auto [it, first] = first_seen.try_emplace(fields[id_field], location);
      if (!first) {
        return absl::InvalidArgumentError(absl::StrCat(location, ": user id '", it->first,
                                                       "' already appeared at ", it->second,
                                                       rule_hint));
      }
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "user id '", *candidates.begin(), "' appears more than once", rule_hint));
}

// Copies the rows of `shard` whose `drop` entry is 0 into a new shard, in order.
void DropRows(const Schema& schema, const std::vector<uint8_t>& drop, RawShard* shard) {
  RawShard kept = MakeEmptyShard(schema, shard->shard_id);
  const int64_t n = shard->num_rows();
  const int64_t rows = n - std::count(drop.begin(), drop.end(), uint8_t{1});
  kept.ids.Reserve(rows, rows * 8);
  kept.numeric.Reserve(rows);
  for (CategoricalColumn& column : kept.categorical) column.Reserve(rows);
  if (!shard->weights.empty()) kept.weights.reserve(static_cast<size_t>(rows));
  for (int64_t row = 0; row < n; ++row) {
    if (drop[row] != 0) continue;
    kept.ids.push_back(shard->ids[row]);
    kept.numeric.AppendRows(shard->numeric.row(row), 1);
    for (size_t c = 0; c < kept.categorical.size(); ++c) {
      kept.categorical[c].push_back(shard->categorical[c][row]);
    }
    if (!shard->weights.empty()) kept.weights.push_back(shard->weights[row]);
  }
  *shard = std::move(kept);
}

// Finds the user ids stored twice in a shard, after the rows are appended: one shard's
// id set at a time per thread, so a load does not hold a set for every shard. Under
// kKeepFirst it drops every later copy and counts it in duplicate_rows. Otherwise it
// returns the error for the repeat that comes first in input order (see
// RepeatedIdError), and OK when no id repeats.
absl::Status CheckRepeatedIds(const UserLoadOptions& options, int threads,
                              LoadedShards* loaded) {
  const int num_slots = static_cast<int>(loaded->shards.size());
  const bool keep_first = options.duplicate_ids == DuplicateIdRule::kKeepFirst;
  std::vector<int64_t> first_repeat(static_cast<size_t>(num_slots), -1);
  // Neither the sets nor DropRows throw, apart from allocation failure.
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
  for (int slot = 0; slot < num_slots; ++slot) {
    RawShard& shard = loaded->shards[slot];
    const int64_t n = shard.num_rows();
    std::vector<uint8_t> drop;
    {
      UserIdSet seen(&shard.ids);
      seen.Reserve(n);
      for (int64_t row = 0; row < n; ++row) {
        if (seen.Insert(row) < 0) continue;
        if (!keep_first) {
          first_repeat[slot] = row;
          break;
        }
        if (drop.empty()) drop.assign(static_cast<size_t>(n), 0);
        drop[row] = 1;
        ++loaded->duplicate_rows[slot];
      }
    }
    if (!drop.empty()) DropRows(options.schema, drop, &shard);
  }
  absl::flat_hash_set<std::string> candidates;
  for (int slot = 0; slot < num_slots; ++slot) {
    if (first_repeat[slot] >= 0) {
      candidates.emplace(loaded->shards[slot].ids[first_repeat[slot]]);
    }
  }
  if (candidates.empty()) return absl::OkStatus();
  return RepeatedIdError(options, candidates);
}

// Appends parsed rows to the shards in input order.
class ShardAppender {
 public:
  ShardAppender(const UserLoadOptions& options, LoadedShards* loaded)
      : options_(options), loaded_(loaded) {
    loaded_->duplicate_rows.assign(loaded_->shards.size(), 0);
    reserved_rows_.assign(loaded_->shards.size(), 0);
  }

  size_t num_slots() const { return loaded_->shards.size(); }

  // Reserves room in each shard for its expected share of the rows of file `file_index`
  // and of the files after it, estimated from the first block of that file
  // (`block_bytes` holding the rows of `pieces`). So the columns are allocated once for
  // the whole load rather than grown file by file: every growth copies the shard and
  // frees the old block, which stays resident until the allocator returns it. A shard
  // that has room for the rows expected keeps it. Compressed files, whose size is
  // unknown, count as empty.
  void ReserveForFile(size_t file_index, size_t block_bytes,
                      const std::vector<ParsedPiece>& pieces, int count) {
    uintmax_t rest_bytes = 0;
    for (size_t f = file_index; f < options_.paths.size(); ++f) {
      const std::string& path = options_.paths[f];
      std::error_code error;
      const uintmax_t bytes = std::filesystem::file_size(path, error);
      if (!error && !absl::EndsWith(path, ".gz")) rest_bytes += bytes;
    }
    if (rest_bytes == 0 || block_bytes == 0) return;
    int64_t hosted = 0;
    int64_t id_chars = 0;
    for (int i = 0; i < count; ++i) {
      for (size_t r = 0; r < pieces[i].slots.size(); ++r) {
        id_chars += static_cast<int64_t>(pieces[i].ids[r].size());
      }
      hosted += static_cast<int64_t>(pieces[i].slots.size());
    }
    if (hosted == 0) return;
    // The hash spreads ids evenly over the hosted shards.
    const double scale = static_cast<double>(rest_bytes) / static_cast<double>(block_bytes);
    const auto expected = static_cast<int64_t>(scale * static_cast<double>(hosted) /
                                               static_cast<double>(loaded_->shards.size()));
    const int64_t chars_per_id = id_chars / hosted + 1;
    for (size_t slot = 0; slot < loaded_->shards.size(); ++slot) {
      RawShard& shard = loaded_->shards[slot];
      if (shard.num_rows() + expected <= reserved_rows_[slot]) continue;
      // 5 % to spare: rows beyond the room grow the columns by doubling.
      const int64_t more = expected + expected / 20;
      const int64_t rows = shard.num_rows() + more;
      reserved_rows_[slot] = rows;
      shard.ids.Reserve(more, more * chars_per_id);
      shard.numeric.Reserve(rows);
      for (CategoricalColumn& column : shard.categorical) column.Reserve(rows);
      if (!pieces[0].weights.empty()) shard.weights.reserve(static_cast<size_t>(rows));
    }
  }

  // Appends the rows of pieces[0, count) to their shards, in input order inside each
  // shard. The shards are filled in parallel on up to `threads` threads, one thread per
  // shard at a time. Repeated ids are stored here and found afterwards by
  // CheckDuplicateIds. Errors: ResourceExhausted when a shard would pass kMaxShardRows.
  // REQUIRES: GroupBySlot was called on every piece.
  absl::Status AppendBlock(const std::vector<ParsedPiece>& pieces, int count, int threads) {
    const int num_slots = static_cast<int>(loaded_->shards.size());
    std::vector<uint8_t> full(static_cast<size_t>(num_slots), 0);
    // AppendSlot neither throws nor returns early from the region.
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
    for (int slot = 0; slot < num_slots; ++slot) {
      full[slot] = AppendSlot(slot, pieces, count) ? 0 : 1;
    }
    for (int slot = 0; slot < num_slots; ++slot) {
      if (full[slot] == 0) continue;
      return absl::ResourceExhaustedError(
          absl::StrCat("shard ", loaded_->shards[slot].shard_id, " has more than ",
                       kMaxShardRows, " rows; create the dataset with more shards"));
    }
    return absl::OkStatus();
  }

 private:
  // Appends the rows of slot `slot` from pieces[0, count), in input order. Returns false,
  // with the shard full, when a row would pass kMaxShardRows. Touches only that slot's
  // shard.
  bool AppendSlot(int slot, const std::vector<ParsedPiece>& pieces, int count) {
    RawShard& shard = loaded_->shards[slot];
    const size_t num_numeric = shard.numeric.cols();
    const size_t num_categorical = shard.categorical.size();
    for (int i = 0; i < count; ++i) {
      const ParsedPiece& piece = pieces[i];
      for (int32_t k = piece.slot_starts[slot]; k < piece.slot_starts[slot + 1]; ++k) {
        const int32_t r = piece.by_slot[k];
        if (shard.num_rows() >= kMaxShardRows) return false;
        shard.ids.push_back(piece.ids[r]);
        shard.numeric.AppendRows(piece.numeric.data() + r * num_numeric, 1);
        for (size_t c = 0; c < num_categorical; ++c) {
          shard.categorical[c].push_back(piece.categorical[r * num_categorical + c]);
        }
        if (!piece.weights.empty()) shard.weights.push_back(piece.weights[r]);
      }
    }
    return true;
  }

  const UserLoadOptions& options_;
  LoadedShards* loaded_;
  // Rows each shard has room for, by the last ReserveForFile.
  std::vector<int64_t> reserved_rows_;
};

// Loads one file into `appender`.
absl::Status LoadFile(const UserLoadOptions& options, size_t file_index,
                      const std::vector<int>& slot_of_shard, int threads,
                      ShardAppender* appender, int64_t* rows_read) {
  const std::string& path = options.paths[file_index];
  absl::StatusOr<std::unique_ptr<CsvBlockReader>> reader =
      CsvBlockReader::Open(path, options.csv);
  if (!reader.ok()) return reader.status();
  absl::StatusOr<std::vector<size_t>> header_index =
      MapSchemaToHeader(options.schema, (*reader)->header(), path);
  if (!header_index.ok()) return header_index.status();
  const FilePlan plan =
      MakeFilePlan(options.schema, *header_index, (*reader)->header().size(), file_index);
  const CsvRecordParser parser(options.csv);
  const PlainRecordSplitter splitter(options.csv, plan);
  const PieceContext context{&plan, &splitter, &parser, &slot_of_shard, options.num_shards};
  // Line-number ids need each piece's first line before it is parsed, so such files
  // are parsed one piece at a time.
  const bool serial = plan.id_field == kNotInFile || threads == 1;
  const int pieces = serial ? 1 : threads * kPiecesPerThread;

  int64_t line = (*reader)->first_data_line();
  bool reserved = false;
  std::string block;
  std::vector<ParsedPiece> parsed;
  while (true) {
    absl::StatusOr<bool> has_block = (*reader)->NextBlock(kBlockBytesPerThread * threads, &block);
    if (!has_block.ok()) return has_block.status();
    if (!*has_block) break;
    const std::vector<size_t> starts = SplitCsvRecords(block, pieces, options.csv);
    const int count = static_cast<int>(starts.size()) - 1;
    if (parsed.size() < static_cast<size_t>(count)) parsed.resize(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) parsed[i].Clear();
    const size_t num_slots = appender->num_slots();
    if (count == 1) {
      ParsePiece(context, block.data(), block.size(), line, &parsed[0]);
      parsed[0].GroupBySlot(num_slots);
    } else {
      // ParsePiece neither throws nor returns early: a problem is recorded in its piece.
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
      for (int i = 0; i < count; ++i) {
        ParsePiece(context, block.data() + starts[i], starts[i + 1] - starts[i], 0, &parsed[i]);
        parsed[i].GroupBySlot(num_slots);
      }
    }
    if (!reserved) {
      appender->ReserveForFile(file_index, block.size(), parsed, count);
      reserved = true;
    }
    // Rows after the first piece with a problem are not appended: the load fails there,
    // unless an earlier row fails to append first.
    int appended = 0;
    std::vector<int64_t> first_lines(static_cast<size_t>(count));
    for (int64_t piece_line = line; appended < count; ++appended) {
      first_lines[appended] = piece_line;
      piece_line += parsed[appended].line_breaks;
      if (parsed[appended].issue.kind != PieceIssue::Kind::kNone) {
        ++appended;
        break;
      }
    }
    COHORT_RETURN_IF_ERROR(appender->AppendBlock(parsed, appended, threads));
    for (int i = 0; i < appended; ++i) {
      const ParsedPiece& piece = parsed[i];
      *rows_read += piece.records;
      switch (piece.issue.kind) {
        case PieceIssue::Kind::kNone:
          break;
        case PieceIssue::Kind::kMalformed:
          return CsvErrorOf(path, options.csv);
        case PieceIssue::Kind::kCell:
          return absl::Status(piece.issue.cell_error.code(),
                              absl::StrCat(path, ":", first_lines[i] + piece.issue.line, ": ",
                                           piece.issue.cell_error.message()));
      }
      line += piece.line_breaks;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LoadedShards> LoadUserShards(const UserLoadOptions& options) {
  if (absl::Status status = ValidateLoadOptions(options); !status.ok()) return status;
  const CleaningRules default_rules;
  const bool row_by_row =
      options.cleaning.duplicate_ids != default_rules.duplicate_ids ||
      options.cleaning.unparsable_cells != default_rules.unparsable_cells ||
      absl::c_any_of(options.schema.columns, [](const ColumnSpec& column) {
        return column.type == ColumnType::kBoolean || column.type == ColumnType::kText ||
               column.type == ColumnType::kEmbedding || column.type == ColumnType::kLabel;
      });
  if (row_by_row) return LoadUserShardsRowByRow(options);
  const int threads = options.threads > 0 ? options.threads : std::max(1, omp_get_max_threads());

  std::vector<int> requested = options.shards;
  std::sort(requested.begin(), requested.end());
  LoadedShards loaded;
  // slot_of_shard[s] is the index of shard s in loaded.shards, or -1 when not requested.
  std::vector<int> slot_of_shard(static_cast<size_t>(options.num_shards), -1);
  loaded.shards.reserve(requested.size());
  for (size_t slot = 0; slot < requested.size(); ++slot) {
    slot_of_shard[requested[slot]] = static_cast<int>(slot);
    loaded.shards.push_back(MakeEmptyShard(options.schema, requested[slot]));
  }

  {
    ShardAppender appender(options, &loaded);
    for (size_t file_index = 0; file_index < options.paths.size(); ++file_index) {
      if (absl::Status status = LoadFile(options, file_index, slot_of_shard, threads, &appender,
                                         &loaded.rows_read);
          !status.ok()) {
        // The rows stored so far all come before the failure, so a repeated id among
        // them is the first failing row in input order.
        if (options.duplicate_ids != DuplicateIdRule::kKeepFirst) {
          COHORT_RETURN_IF_ERROR(CheckRepeatedIds(options, threads, &loaded));
        }
        return status;
      }
    }
  }
  // An id maps to exactly one shard, so every repeat of a hosted id is found here.
  // Repeats in other shards are found by the loader that hosts them.
  COHORT_RETURN_IF_ERROR(CheckRepeatedIds(options, threads, &loaded));
  for (RawShard& shard : loaded.shards) shard.ShrinkToFit();
  return loaded;
}

}  // namespace cohort
