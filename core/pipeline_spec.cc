// PipelineSpec: validation against a schema, the spec text format and the segmentation
// spec.
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/pipeline.h"

namespace cohort {
namespace {

constexpr int kMaxTopN = 10000;
constexpr int kMaxBuckets = 1 << 20;
constexpr int kMaxNgram = 8;

std::string FormatDouble(double value) { return absl::StrFormat("%.17g", value); }

absl::Status ColumnError(const ColumnPipeline& column, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("pipeline column '", column.column, "': ", message));
}

bool IsNumericLike(ColumnType type) {
  return type == ColumnType::kNumeric || type == ColumnType::kBoolean ||
         type == ColumnType::kEmbedding;
}

// Checks the fields of `column` that apply to numeric columns only.
absl::Status ValidateNumericOnlyFields(const ColumnPipeline& column, ColumnType type) {
  const bool numeric = type == ColumnType::kNumeric;
  const std::string type_name(ColumnTypeName(type));
  if (!numeric && (column.valid_min.has_value() || column.valid_max.has_value())) {
    return ColumnError(column, absl::StrCat("range applies to numeric columns, not ", type_name));
  }
  if (!numeric && column.log1p) {
    return ColumnError(column, absl::StrCat("log1p applies to numeric columns, not ", type_name));
  }
  if (!numeric && (column.clip_lower_quantile.has_value() || column.clip_upper_quantile.has_value())) {
    return ColumnError(column, absl::StrCat("clip applies to numeric columns, not ", type_name));
  }
  if (!numeric && column.scale != ScaleRule::kNone) {
    return ColumnError(column,
                       absl::StrCat("standardize and minmax apply to numeric columns, not ", type_name));
  }

  if (column.valid_min.has_value() != column.valid_max.has_value()) {
    return ColumnError(column, "range needs both a minimum and a maximum");
  }
  if (column.valid_min.has_value() &&
      !(std::isfinite(*column.valid_min) && std::isfinite(*column.valid_max) &&
        *column.valid_min <= *column.valid_max)) {
    return ColumnError(column, absl::StrCat("range [", *column.valid_min, ", ", *column.valid_max,
                                            "] is invalid; give finite min <= max"));
  }
  if (column.clip_lower_quantile.has_value() != column.clip_upper_quantile.has_value()) {
    return ColumnError(column, "clip needs both a lower and an upper quantile");
  }

  if (column.clip_lower_quantile.has_value()) {
    const double lower = *column.clip_lower_quantile;
    const double upper = *column.clip_upper_quantile;
    if (!(lower >= 0 && lower < upper && upper <= 1)) {
      return ColumnError(column, absl::StrCat("clip quantiles ", lower, " and ", upper,
                                              " are invalid; need 0 <= lower < upper <= 1"));
    }
  }
  if (column.log1p && column.impute == ImputeRule::kConstant) {
    const std::optional<double> value = ParseNumber(column.impute_constant);
    if (value.has_value() && *value <= -1) {
      return ColumnError(column, absl::StrCat("impute constant ", column.impute_constant,
                                              " is <= -1, so log1p is undefined for it"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateImputation(const ColumnPipeline& column, ColumnType type) {
  const std::string type_name(ColumnTypeName(type));
  switch (column.impute) {
    case ImputeRule::kNone:
      break;
    case ImputeRule::kMean:
      if (!IsNumericLike(type)) {
        return ColumnError(column, absl::StrCat("impute mean needs a numeric, boolean or "
                                                "embedding column, not ", type_name));
      }
      break;
    case ImputeRule::kMedian:
      if (type != ColumnType::kNumeric) {
        return ColumnError(column,
                           absl::StrCat("impute median needs a numeric column, not ", type_name));
      }
      break;
    case ImputeRule::kMode:
      if (type == ColumnType::kText || type == ColumnType::kEmbedding) {
        return ColumnError(column, absl::StrCat("impute mode does not apply to ", type_name,
                                                " columns; use mean or constant"));
      }
      break;
    case ImputeRule::kConstant:
      if (type == ColumnType::kText) {
        return ColumnError(column, "text columns are not imputed; a missing cell is all zeros");
      }
      if (IsNumericLike(type)) {
        const std::optional<double> value = ParseNumber(column.impute_constant);
        if (!value.has_value() || !std::isfinite(*value)) {
          return ColumnError(column, absl::StrCat("impute constant '", column.impute_constant,
                                                  "' is not a finite number"));
        }
        if (type == ColumnType::kBoolean && *value != 0 && *value != 1) {
          return ColumnError(column, absl::StrCat("impute constant '", column.impute_constant,
                                                  "' of a boolean column must be 0 or 1"));
        }
      } else if (column.impute_constant.empty()) {
        return ColumnError(column, "impute constant of a categorical column must not be empty");
      }
      break;
  }
  if (column.missing_indicator && type == ColumnType::kText) {
    return ColumnError(column, "missing_indicator does not apply to text columns");
  }
  if (column.missing_indicator && type == ColumnType::kCategorical &&
      column.impute == ImputeRule::kNone) {
    return ColumnError(column,
                       "missing_indicator on a categorical column needs an impute rule, because "
                       "without one the empty value already has its own feature");
  }
  return absl::OkStatus();
}

absl::Status ValidateEncoding(const ColumnPipeline& column, ColumnType type) {
  const std::string type_name(ColumnTypeName(type));
  if (type == ColumnType::kCategorical) {
    if (column.encoding == CategoryEncoding::kOneHot &&
        (column.top_n < 1 || column.top_n > kMaxTopN)) {
      return ColumnError(column, absl::StrCat("onehot ", column.top_n, " is invalid; keep 1 to ",
                                              kMaxTopN, " values"));
    }
    if (column.encoding == CategoryEncoding::kHash &&
        (column.hash_buckets < 1 || column.hash_buckets > kMaxBuckets)) {
      return ColumnError(column, absl::StrCat("hash ", column.hash_buckets,
                                              " is invalid; use 1 to ", kMaxBuckets, " buckets"));
    }
  } else if (column.encoding == CategoryEncoding::kHash) {
    return ColumnError(column, absl::StrCat("hash applies to categorical columns, not ", type_name));
  }
  if (type == ColumnType::kText) {
    if (column.ngrams == NgramKind::kNone) {
      return ColumnError(column, "a text column needs a 'words' or 'chars' step");
    }
    if (column.ngram_min < 1 || column.ngram_max > kMaxNgram ||
        column.ngram_min > column.ngram_max) {
      return ColumnError(column, absl::StrCat("n-gram lengths ", column.ngram_min, " to ",
                                              column.ngram_max, " are invalid; need 1 <= min <= max <= ",
                                              kMaxNgram));
    }
    if (column.ngram_buckets < 1 || column.ngram_buckets > kMaxBuckets) {
      return ColumnError(column, absl::StrCat("n-gram buckets ", column.ngram_buckets,
                                              " are invalid; use 1 to ", kMaxBuckets));
    }
  } else if (column.ngrams != NgramKind::kNone) {
    return ColumnError(column,
                       absl::StrCat("words and chars apply to text columns, not ", type_name));
  }
  return absl::OkStatus();
}

// Splits "a b  c" into whitespace-separated tokens.
std::vector<std::string> Tokens(absl::string_view text) {
  return absl::StrSplit(text, absl::ByAnyChar(" \t"), absl::SkipEmpty());
}

absl::StatusOr<double> NumberArgument(const std::vector<std::string>& args, size_t index,
                                      absl::string_view step) {
  if (index >= args.size()) {
    return absl::InvalidArgumentError(absl::StrCat("step '", step, "' needs ", index + 1,
                                                   " arguments"));
  }
  const std::optional<double> value = ParseNumber(args[index]);
  if (!value.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("argument '", args[index], "' of step '", step, "' is not a number"));
  }
  return *value;
}

absl::StatusOr<int> IntArgument(const std::vector<std::string>& args, size_t index,
                                absl::string_view step) {
  int value = 0;
  if (index >= args.size() || !absl::SimpleAtoi(args[index], &value)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step '", step, "' needs an integer as argument ", index + 1,
        index < args.size() ? absl::StrCat(", not '", args[index], "'") : std::string()));
  }
  return value;
}

absl::Status ExpectArguments(const std::vector<std::string>& args, size_t count,
                             absl::string_view step) {
  if (args.size() != count) {
    return absl::InvalidArgumentError(absl::StrCat("step '", step, "' takes ", count,
                                                   " arguments, not ", args.size()));
  }
  return absl::OkStatus();
}

// Applies one step ("clip 0.01 0.99") to `column`.
absl::Status ParseStep(absl::string_view step_text, ColumnPipeline* column) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(step_text);
  std::vector<std::string> args = Tokens(trimmed);
  if (args.empty()) return absl::InvalidArgumentError("empty step between '|'");
  const std::string step = absl::AsciiStrToLower(args.front());
  args.erase(args.begin());

  if (step == "range") {
    if (absl::Status s = ExpectArguments(args, 2, step); !s.ok()) return s;
    absl::StatusOr<double> low = NumberArgument(args, 0, step);
    if (!low.ok()) return low.status();
    absl::StatusOr<double> high = NumberArgument(args, 1, step);
    if (!high.ok()) return high.status();
    column->valid_min = *low;
    column->valid_max = *high;
  } else if (step == "impute") {
    if (args.empty()) {
      return absl::InvalidArgumentError("step 'impute' needs mean, median, mode or constant");
    }
    const std::string rule = absl::AsciiStrToLower(args[0]);
    if (rule == "mean") {
      column->impute = ImputeRule::kMean;
    } else if (rule == "median") {
      column->impute = ImputeRule::kMedian;
    } else if (rule == "mode") {
      column->impute = ImputeRule::kMode;
    } else if (rule == "constant") {
      column->impute = ImputeRule::kConstant;
      // The constant is the step text after its second word, so it may contain spaces.
      absl::string_view rest = trimmed;
      for (int word = 0; word < 2; ++word) {
        rest = absl::StripLeadingAsciiWhitespace(rest);
        const size_t end = rest.find_first_of(" \t");
        rest = end == absl::string_view::npos ? absl::string_view() : rest.substr(end);
      }
      column->impute_constant = std::string(absl::StripAsciiWhitespace(rest));
      if (column->impute_constant.empty()) {
        return absl::InvalidArgumentError("step 'impute constant' needs a value");
      }
      return absl::OkStatus();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "impute rule '", args[0], "' is invalid; expected mean, median, mode or constant"));
    }
    if (absl::Status s = ExpectArguments(args, 1, step); !s.ok()) return s;
  } else if (step == "missing_indicator") {
    if (absl::Status s = ExpectArguments(args, 0, step); !s.ok()) return s;
    column->missing_indicator = true;
  } else if (step == "log1p") {
    if (absl::Status s = ExpectArguments(args, 0, step); !s.ok()) return s;
    column->log1p = true;
  } else if (step == "clip") {
    if (absl::Status s = ExpectArguments(args, 2, step); !s.ok()) return s;
    absl::StatusOr<double> lower = NumberArgument(args, 0, step);
    if (!lower.ok()) return lower.status();
    absl::StatusOr<double> upper = NumberArgument(args, 1, step);
    if (!upper.ok()) return upper.status();
    column->clip_lower_quantile = *lower;
    column->clip_upper_quantile = *upper;
  } else if (step == "standardize" || step == "minmax") {
    if (absl::Status s = ExpectArguments(args, 0, step); !s.ok()) return s;
    column->scale = step == "standardize" ? ScaleRule::kStandardize : ScaleRule::kMinMax;
  } else if (step == "onehot") {
    if (absl::Status s = ExpectArguments(args, 1, step); !s.ok()) return s;
    absl::StatusOr<int> top_n = IntArgument(args, 0, step);
    if (!top_n.ok()) return top_n.status();
    column->encoding = CategoryEncoding::kOneHot;
    column->top_n = *top_n;
  } else if (step == "hash") {
    if (absl::Status s = ExpectArguments(args, 1, step); !s.ok()) return s;
    absl::StatusOr<int> buckets = IntArgument(args, 0, step);
    if (!buckets.ok()) return buckets.status();
    column->encoding = CategoryEncoding::kHash;
    column->hash_buckets = *buckets;
  } else if (step == "words" || step == "chars") {
    if (absl::Status s = ExpectArguments(args, 3, step); !s.ok()) return s;
    absl::StatusOr<int> low = IntArgument(args, 0, step);
    if (!low.ok()) return low.status();
    absl::StatusOr<int> high = IntArgument(args, 1, step);
    if (!high.ok()) return high.status();
    absl::StatusOr<int> buckets = IntArgument(args, 2, step);
    if (!buckets.ok()) return buckets.status();
    column->ngrams = step == "words" ? NgramKind::kWords : NgramKind::kChars;
    column->ngram_min = *low;
    column->ngram_max = *high;
    column->ngram_buckets = *buckets;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "step '", step, "' is unknown; expected range, impute, "
        "missing_indicator, log1p, clip, standardize, minmax, onehot, hash, words or chars"));
  }
  return absl::OkStatus();
}

std::string FormatSteps(const ColumnPipeline& column) {
  std::vector<std::string> steps;
  if (column.valid_min.has_value()) {
    steps.push_back(absl::StrCat("range ", FormatDouble(*column.valid_min), " ",
                                 FormatDouble(*column.valid_max)));
  }
  switch (column.impute) {
    case ImputeRule::kNone:
      break;
    case ImputeRule::kMean:
      steps.push_back("impute mean");
      break;
    case ImputeRule::kMedian:
      steps.push_back("impute median");
      break;
    case ImputeRule::kMode:
      steps.push_back("impute mode");
      break;
    case ImputeRule::kConstant:
      steps.push_back(absl::StrCat("impute constant ", column.impute_constant));
      break;
  }
  if (column.missing_indicator) steps.push_back("missing_indicator");
  if (column.log1p) steps.push_back("log1p");
  if (column.clip_lower_quantile.has_value()) {
    steps.push_back(absl::StrCat("clip ", FormatDouble(*column.clip_lower_quantile), " ",
                                 FormatDouble(*column.clip_upper_quantile)));
  }
  if (column.scale == ScaleRule::kStandardize) steps.push_back("standardize");
  if (column.scale == ScaleRule::kMinMax) steps.push_back("minmax");
  if (column.encoding == CategoryEncoding::kHash) {
    steps.push_back(absl::StrCat("hash ", column.hash_buckets));
  } else if (column.top_n != ColumnPipeline{}.top_n) {
    steps.push_back(absl::StrCat("onehot ", column.top_n));
  }
  if (column.ngrams != NgramKind::kNone) {
    steps.push_back(absl::StrCat(column.ngrams == NgramKind::kWords ? "words " : "chars ",
                                 column.ngram_min, " ", column.ngram_max, " ",
                                 column.ngram_buckets));
  }
  return absl::StrJoin(steps, " | ");
}

}  // namespace

absl::Status PipelineSpec::Validate(const Schema& schema) const {
  if (columns.empty()) {
    return absl::InvalidArgumentError(
        "the pipeline spec declares no column; add at least one 'column <name> = ...' line");
  }
  std::set<std::string> seen;
  for (const ColumnPipeline& column : columns) {
    const int index = schema.IndexOf(column.column);
    if (index < 0) {
      return ColumnError(column, "the schema has no such column");
    }
    if (!seen.insert(column.column).second) {
      return ColumnError(column, "appears twice in the spec; declare each column once");
    }
    const ColumnType type = schema.columns[static_cast<size_t>(index)].type;
    if (type == ColumnType::kId || type == ColumnType::kWeight || type == ColumnType::kLabel ||
        type == ColumnType::kIgnore) {
      return ColumnError(column, absl::StrCat("has type ", std::string(ColumnTypeName(type)),
                                              ", which is not a feature"));
    }
    if (absl::Status s = ValidateNumericOnlyFields(column, type); !s.ok()) return s;
    if (absl::Status s = ValidateImputation(column, type); !s.ok()) return s;
    if (absl::Status s = ValidateEncoding(column, type); !s.ok()) return s;
  }
  if (label_column.empty() != positive_label.empty()) {
    return absl::InvalidArgumentError(
        "the label needs both a column and a positive value, or neither");
  }
  if (!label_column.empty()) {
    const int index = schema.IndexOf(label_column);
    if (index < 0 || schema.columns[static_cast<size_t>(index)].type != ColumnType::kLabel) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label column '", label_column,
          "' is not a column of type label in the schema; set its type to label"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PipelineSpec> ParsePipelineSpec(std::string_view text) {
  PipelineSpec spec;
  std::set<std::string> names;
  int line_number = 0;
  for (absl::string_view raw_line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_number;
    // Only whole lines are comments, so column names and constants may contain '#'.
    const absl::string_view line = absl::StripAsciiWhitespace(raw_line);
    if (line.empty() || line.front() == '#') continue;
    auto line_error = [line_number, line](absl::string_view message) {
      return absl::InvalidArgumentError(
          absl::StrCat("pipeline spec line ", line_number, " ('", line, "'): ", message));
    };
    const std::vector<std::string> words = Tokens(line);
    const std::string keyword = absl::AsciiStrToLower(words[0]);
    if (keyword == "label") {
      if (words.size() != 4 || absl::AsciiStrToLower(words[2]) != "positive") {
        return line_error("expected 'label <column> positive <value>'");
      }
      spec.label_column = words[1];
      spec.positive_label = words[3];
    } else if (keyword == "cleaning") {
      if (words.size() != 3) {
        return line_error("expected 'cleaning duplicate_ids <rule>' or 'cleaning unparsable <rule>'");
      }
      const std::string rule = absl::AsciiStrToLower(words[1]);
      if (rule == "duplicate_ids") {
        absl::StatusOr<CleaningRules::DuplicateIds> parsed = ParseDuplicateIdsRule(words[2]);
        if (!parsed.ok()) return line_error(parsed.status().message());
        spec.cleaning.duplicate_ids = *parsed;
      } else if (rule == "unparsable") {
        absl::StatusOr<CleaningRules::UnparsableCells> parsed = ParseUnparsableCellsRule(words[2]);
        if (!parsed.ok()) return line_error(parsed.status().message());
        spec.cleaning.unparsable_cells = *parsed;
      } else {
        return line_error(absl::StrCat("cleaning rule '", words[1],
                                       "' is unknown; expected duplicate_ids or unparsable"));
      }
    } else if (keyword == "column") {
      const absl::string_view rest = absl::StripAsciiWhitespace(line.substr(words[0].size()));
      const size_t equals = rest.find('=');
      if (equals == absl::string_view::npos) {
        return line_error("expected 'column <name> = <step> | <step> ...'");
      }
      ColumnPipeline column;
      column.column = std::string(absl::StripAsciiWhitespace(rest.substr(0, equals)));
      if (column.column.empty()) return line_error("the column name is empty");
      if (!names.insert(column.column).second) {
        return line_error(absl::StrCat("column '", column.column, "' is declared twice"));
      }
      const absl::string_view steps = rest.substr(equals + 1);
      if (!absl::StripAsciiWhitespace(steps).empty()) {
        for (absl::string_view step : absl::StrSplit(steps, '|')) {
          if (absl::Status s = ParseStep(step, &column); !s.ok()) return line_error(s.message());
        }
      }
      spec.columns.push_back(std::move(column));
    } else {
      return line_error(
          absl::StrCat("'", words[0], "' is unknown; a line starts with label, cleaning or column"));
    }
  }
  return spec;
}

std::string FormatPipelineSpec(const PipelineSpec& spec) {
  std::string out;
  if (!spec.label_column.empty()) {
    absl::StrAppend(&out, "label ", spec.label_column, " positive ", spec.positive_label, "\n");
  }
  if (spec.cleaning.duplicate_ids == CleaningRules::DuplicateIds::kKeepFirst) {
    absl::StrAppend(&out, "cleaning duplicate_ids keep_first\n");
  }
  if (spec.cleaning.unparsable_cells == CleaningRules::UnparsableCells::kMissing) {
    absl::StrAppend(&out, "cleaning unparsable missing\n");
  }
  for (const ColumnPipeline& column : spec.columns) {
    absl::StrAppend(&out, "column ", column.column, " = ", FormatSteps(column), "\n");
  }
  return out;
}

absl::StatusOr<PipelineSpec> ReadPipelineSpecFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    return absl::NotFoundError(
        absl::StrCat("pipeline spec file ", path, " is missing or not readable"));
  }
  std::stringstream buffer;
  buffer << file.rdbuf();
  absl::StatusOr<PipelineSpec> spec = ParsePipelineSpec(buffer.str());
  if (!spec.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", spec.status().message()));
  }
  return spec;
}

absl::StatusOr<PipelineSpec> SegmentationSpec(const Schema& schema, const FeatureOptions& options) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  absl::StatusOr<std::vector<bool>> log1p = Log1pFlags(schema, options);
  if (!log1p.ok()) return log1p.status();
  PipelineSpec spec;
  const std::vector<std::string> numeric = schema.NumericNames();
  for (size_t i = 0; i < numeric.size(); ++i) {
    ColumnPipeline column;
    column.column = numeric[i];
    column.impute = ImputeRule::kMean;
    column.log1p = (*log1p)[i];
    column.scale = ScaleRule::kStandardize;
    spec.columns.push_back(std::move(column));
  }
  for (const std::string& name : schema.CategoricalNames()) {
    ColumnPipeline column;
    column.column = name;
    column.encoding = CategoryEncoding::kOneHot;
    column.top_n = options.max_categories;
    spec.columns.push_back(std::move(column));
  }
  return spec;
}

}  // namespace cohort
