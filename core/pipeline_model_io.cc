// PipelineModel::Serialize and Deserialize: the text form stored with a profile model.
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/pipeline.h"

namespace cohort {
namespace {

constexpr absl::string_view kModelMagic = "cohort-pipeline-model";
constexpr int kModelVersion = 1;

// Percent-encodes the bytes that would break a space-separated line; "-" stands for the
// empty string.
std::string Escape(std::string_view text) {
  if (text.empty()) return "-";
  std::string out;
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u <= ' ' || c == '%' || (c == '-' && text.size() == 1) || u == 0x7F) {
      absl::StrAppendFormat(&out, "%%%02X", u);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::optional<std::string> Unescape(std::string_view text) {
  if (text == "-") return std::string();
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    int value = 0;
    for (size_t k = 1; k <= 2; ++k) {
      if (i + k >= text.size()) return std::nullopt;
      const char h = text[i + k];
      value *= 16;
      if (h >= '0' && h <= '9') {
        value += h - '0';
      } else if (h >= 'A' && h <= 'F') {
        value += h - 'A' + 10;
      } else {
        return std::nullopt;
      }
    }
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

std::string Number(double value) { return absl::StrFormat("%.17g", value); }

// Checks what transforming relies on, so that a damaged model is rejected here instead of
// indexing out of range later: each column spec is valid for its type, and the fitted
// sizes agree with the spec.
absl::Status ValidateModel(const PipelineModel& model) {
  Schema schema;
  PipelineSpec spec;
  spec.label_column = model.label_column;
  spec.positive_label = model.positive_label;
  if (!model.label_column.empty()) schema.columns.push_back({model.label_column, ColumnType::kLabel});
  for (const FittedColumn& column : model.columns) {
    const bool feature_type = column.type == ColumnType::kNumeric ||
                              column.type == ColumnType::kBoolean ||
                              column.type == ColumnType::kCategorical ||
                              column.type == ColumnType::kText ||
                              column.type == ColumnType::kEmbedding;
    if (!feature_type) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column '", column.spec.column, "' has type ", static_cast<int>(column.type),
          ", which is not a feature type"));
    }
    if (column.source_index < 0 || (column.type == ColumnType::kEmbedding) != (column.embedding_dim > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column '", column.spec.column, "' has source index ", column.source_index,
          " and embedding length ", column.embedding_dim));
    }
    if (column.spec.encoding == CategoryEncoding::kOneHot &&
        column.categories.size() > static_cast<size_t>(column.spec.top_n)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column '", column.spec.column, "' has ", column.categories.size(),
          " one-hot values but keeps at most ", column.spec.top_n));
    }
    schema.columns.push_back({column.spec.column, column.type, column.embedding_dim});
    spec.columns.push_back(column.spec);
  }
  return spec.Validate(schema);
}

}  // namespace

std::string PipelineModel::Serialize() const {
  std::string out = absl::StrCat(kModelMagic, " ", kModelVersion, "\n");
  absl::StrAppend(&out, "label ", Escape(label_column), " ", Escape(positive_label), "\n");
  absl::StrAppend(&out, "rows ", fitted_rows, " ", finished ? 1 : 0, "\n");
  for (const FittedColumn& column : columns) {
    PipelineSpec column_only;
    column_only.columns.push_back(column.spec);
    std::string spec_line = FormatPipelineSpec(column_only);
    if (!spec_line.empty() && spec_line.back() == '\n') spec_line.pop_back();
    absl::StrAppend(&out, "column ", static_cast<int>(column.type), " ", column.source_index, " ",
                    column.embedding_dim, " ", Number(column.impute_value), " ",
                    Number(column.clip_low), " ", Number(column.clip_high), " ",
                    Number(column.shift), " ", Number(column.scale), " ",
                    column.has_other ? 1 : 0, " ", Escape(column.impute_category), " ",
                    Escape(spec_line), "\n");
    absl::StrAppend(&out, "categories ", column.categories.size());
    for (const std::string& value : column.categories) absl::StrAppend(&out, " ", Escape(value));
    absl::StrAppend(&out, "\nvector ", column.impute_vector.size());
    for (double value : column.impute_vector) absl::StrAppend(&out, " ", Number(value));
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out, "end\n");
  return out;
}

absl::StatusOr<PipelineModel> PipelineModel::Deserialize(std::string_view text) {
  const std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(text.data(), text.size()), '\n');
  size_t next = 0;
  auto error = [&next](absl::string_view message) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline model line ", next, ": ", message));
  };
  // Returns the tokens of the next line, which must start with `keyword`.
  auto read_line = [&](absl::string_view keyword) -> std::optional<std::vector<std::string>> {
    if (next >= lines.size()) return std::nullopt;
    std::vector<std::string> tokens = absl::StrSplit(lines[next++], ' ', absl::SkipEmpty());
    if (tokens.empty() || tokens[0] != keyword) return std::nullopt;
    tokens.erase(tokens.begin());
    return tokens;
  };
  auto number = [](const std::string& token) { return ParseNumber(token); };

  std::optional<std::vector<std::string>> header = read_line(kModelMagic);
  if (!header.has_value() || header->size() != 1 || (*header)[0] != absl::StrCat(kModelVersion)) {
    return error(absl::StrCat("expected '", kModelMagic, " ", kModelVersion,
                              "'; the text is not a pipeline model of this version"));
  }
  PipelineModel model;
  std::optional<std::vector<std::string>> label = read_line("label");
  if (!label.has_value() || label->size() != 2) return error("expected 'label <column> <value>'");
  std::optional<std::string> label_column = Unescape((*label)[0]);
  std::optional<std::string> positive = Unescape((*label)[1]);
  if (!label_column.has_value() || !positive.has_value()) return error("bad escape in the label");
  model.label_column = *label_column;
  model.positive_label = *positive;
  std::optional<std::vector<std::string>> rows = read_line("rows");
  if (!rows.has_value() || rows->size() != 2 || !number((*rows)[0]).has_value()) {
    return error("expected 'rows <count> <finished>'");
  }
  model.fitted_rows = static_cast<int64_t>(*number((*rows)[0]));
  model.finished = (*rows)[1] == "1";

  while (next < lines.size() && lines[next] != "end") {
    std::optional<std::vector<std::string>> fields = read_line("column");
    if (!fields.has_value() || fields->size() != 11) return error("expected a column line of 11 fields");
    const std::vector<std::string>& f = *fields;
    FittedColumn column;
    std::optional<double> values[8];
    for (int k = 0; k < 8; ++k) values[k] = number(f[static_cast<size_t>(k)]);
    for (int k = 0; k < 8; ++k) {
      if (!values[k].has_value()) return error(absl::StrCat("field ", k + 1, " is not a number"));
    }
    const int type = static_cast<int>(*values[0]);
    if (type < 0 || type > static_cast<int>(ColumnType::kLabel)) return error("unknown column type");
    column.type = static_cast<ColumnType>(type);
    column.source_index = static_cast<int>(*values[1]);
    column.embedding_dim = static_cast<int>(*values[2]);
    column.impute_value = *values[3];
    column.clip_low = *values[4];
    column.clip_high = *values[5];
    column.shift = *values[6];
    column.scale = *values[7];
    column.has_other = f[8] == "1";
    std::optional<std::string> impute_category = Unescape(f[9]);
    std::optional<std::string> spec_line = Unescape(f[10]);
    if (!impute_category.has_value() || !spec_line.has_value()) return error("bad escape");
    column.impute_category = *impute_category;
    absl::StatusOr<PipelineSpec> spec = ParsePipelineSpec(*spec_line);
    if (!spec.ok() || spec->columns.size() != 1) {
      return error(absl::StrCat("the column spec does not parse: ",
                                spec.ok() ? "no column" : std::string(spec.status().message())));
    }
    column.spec = spec->columns[0];

    std::optional<std::vector<std::string>> categories = read_line("categories");
    if (!categories.has_value() || categories->empty() || !number((*categories)[0]).has_value() ||
        static_cast<size_t>(*number((*categories)[0])) + 1 != categories->size()) {
      return error("expected 'categories <count> <value>...'");
    }
    for (size_t k = 1; k < categories->size(); ++k) {
      std::optional<std::string> value = Unescape((*categories)[k]);
      if (!value.has_value()) return error("bad escape in a category");
      column.categories.push_back(*value);
    }
    std::optional<std::vector<std::string>> vector = read_line("vector");
    if (!vector.has_value() || vector->empty() || !number((*vector)[0]).has_value() ||
        static_cast<size_t>(*number((*vector)[0])) + 1 != vector->size()) {
      return error("expected 'vector <count> <value>...'");
    }
    for (size_t k = 1; k < vector->size(); ++k) {
      std::optional<double> value = number((*vector)[k]);
      if (!value.has_value()) return error("a vector value is not a number");
      column.impute_vector.push_back(*value);
    }
    if (column.type == ColumnType::kEmbedding && !column.impute_vector.empty() &&
        static_cast<int>(column.impute_vector.size()) != column.embedding_dim) {
      return error("the imputed vector does not have the embedding length");
    }
    model.columns.push_back(std::move(column));
  }
  if (next >= lines.size()) {
    ++next;
    return error("the model is truncated (no 'end' line)");
  }
  if (absl::Status status = ValidateModel(model); !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline model is inconsistent: ", status.message()));
  }
  return model;
}

}  // namespace cohort
