#include "cli/segment_client.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/client_util.h"
#include "cli/output_file.h"
#include "cohort/v1/cohort.grpc.pb.h"
#include "core/report.h"
#include "core/segment_summary.h"
#include "core/status_macros.h"
#include "proto/convert.h"

namespace cohort {
namespace {

std::string Number(double value) { return absl::StrFormat("%.6g", value); }

// The request fields that the segment and report flags set.
const std::vector<FlagName>& SegmentFlags() {
  static const std::vector<FlagName> kFlags = {
      {"num_shards", "--shards"},
      {"k", "-k"},
      {"max_iter", "--max-iter"},
      {"tol", "--tol"},
      {"seed", "--seed"},
      {"n_init", "--n-init"},
      {"max_categories", "--max-categories"},
      {"log1p_columns", "--log1p"},
      {"raw_numeric", "--raw-numeric"},
      {"algorithm", "--algorithm"},
      {"split_rule", "--split-rule"},
      {"min_divisible_size", "--min-divisible-size"},
      {"init", "--init"},
      {"oversampling", "--oversampling"},
      {"init_rounds", "--init-rounds"},
      {"batch_size", "--batch-size"},
      {"max_no_improvement", "--max-no-improvement"},
      {"reassignment_ratio", "--reassignment-ratio"},
      {"distance", "--distance"},
      {"ks", "--sweep"},
  };
  return kFlags;
}

absl::StatusOr<v1::Dataset> CreateAndLoad(Client& client, const SegmentCommandOptions& options) {
  v1::CreateDatasetRequest create;
  create.set_kind(options.transactions.empty() ? v1::DATASET_KIND_USERS
                                               : v1::DATASET_KIND_TRANSACTIONS);
  create.set_num_shards(options.num_shards);
  create.set_duplicate_ids(options.duplicate_ids == "keep-first"
                               ? v1::DUPLICATE_ID_RULE_KEEP_FIRST
                               : v1::DUPLICATE_ID_RULE_REJECT);
  v1::Dataset dataset;
  grpc::Status status = client.stub()->CreateDataset(client.Context().get(), create, &dataset);
  if (!status.ok()) return CallError(status, "creating the dataset", SegmentFlags());

  v1::LoadDatasetRequest load;
  load.set_dataset_id(dataset.dataset_id());
  load.set_source(options.transactions.empty() ? options.users : options.transactions);
  load.mutable_csv()->set_delimiter(options.delimiter);
  load.set_id_column(options.id_column);
  for (const std::string& name : options.ignore_columns) {
    (*load.mutable_overrides())[name] = v1::COLUMN_TYPE_IGNORE;
  }
  if (!options.weight_column.empty()) {
    (*load.mutable_overrides())[options.weight_column] = v1::COLUMN_TYPE_WEIGHT;
  }
  for (const std::string& name : options.categorical_columns) {
    (*load.mutable_overrides())[name] = v1::COLUMN_TYPE_CATEGORICAL;
  }
  for (const std::string& name : options.numeric_columns) {
    (*load.mutable_overrides())[name] = v1::COLUMN_TYPE_NUMERIC;
  }
  v1::TransactionColumns* columns = load.mutable_transactions();
  for (const std::string& entry : options.transaction_columns) {
    // Validate() has checked the form and the role.
    const size_t equals = entry.find('=');
    const std::string role = entry.substr(0, equals);
    const std::string name = entry.substr(equals + 1);
    if (role == "user") columns->set_user(name);
    if (role == "invoice") columns->set_invoice(name);
    if (role == "item") columns->set_item(name);
    if (role == "quantity") columns->set_quantity(name);
    if (role == "price") columns->set_price(name);
    if (role == "time") columns->set_time(name);
  }
  std::fprintf(stderr, "loading %s into dataset %s ...\n", load.source().c_str(),
               dataset.dataset_id().c_str());
  status = client.stub()->LoadDataset(client.Context().get(), load, &dataset);
  if (!status.ok()) return CallError(status, "loading the dataset");
  std::fprintf(stderr, "dataset %s: %s users from %s rows", dataset.dataset_id().c_str(),
               FormatReadable(static_cast<double>(dataset.num_users())).c_str(),
               FormatReadable(static_cast<double>(dataset.rows_read())).c_str());
  if (dataset.kind() == v1::DATASET_KIND_TRANSACTIONS) {
    std::fprintf(stderr, " (dropped: %lld anonymous, %lld cancelled, %lld non-positive)",
                 static_cast<long long>(dataset.dropped().anonymous_rows()),
                 static_cast<long long>(dataset.dropped().cancelled_rows()),
                 static_cast<long long>(dataset.dropped().non_positive_rows()));
  }
  if (dataset.duplicate_ids() == v1::DUPLICATE_ID_RULE_KEEP_FIRST) {
    std::fprintf(stderr, " (dropped: %lld duplicate ids, first row kept)",
                 static_cast<long long>(dataset.dropped().duplicate_rows()));
  }
  std::fprintf(stderr, "\n");
  return dataset;
}

// The dataset --dataset names, or a new one loaded from --data or --transactions.
absl::StatusOr<v1::Dataset> FindOrLoad(Client& client, const SegmentCommandOptions& options) {
  if (options.dataset_id.empty()) return CreateAndLoad(client, options);
  return GetGivenDataset(client, options.dataset_id);
}

v1::SegmentationOptions JobOptions(const SegmentCommandOptions& options, int k) {
  v1::SegmentationOptions job_options;
  job_options.set_k(k);
  job_options.set_max_iter(options.max_iter);
  if (options.tol.has_value()) job_options.set_tol(*options.tol);
  if (options.seed.has_value()) job_options.set_seed(*options.seed);
  job_options.set_n_init(options.n_init);
  job_options.set_max_categories(options.max_categories);
  for (const std::string& name : options.log1p_columns) job_options.add_log1p_columns(name);
  job_options.set_raw_numeric(options.raw_numeric);
  job_options.set_algorithm(options.algorithm);
  job_options.set_split_rule(options.split_rule);
  job_options.set_min_divisible_size(options.min_divisible_size);
  job_options.set_init(options.init);
  job_options.set_oversampling(options.oversampling);
  job_options.set_init_rounds(options.init_rounds);
  job_options.set_batch_size(options.batch_size);
  job_options.set_max_no_improvement(options.max_no_improvement);
  job_options.set_reassignment_ratio(options.reassignment_ratio);
  job_options.set_distance(options.distance);
  return job_options;
}

absl::StatusOr<v1::SegmentModel> RunSegmentation(Client& client, const std::string& dataset_id,
                                                 const v1::SegmentationOptions& options,
                                                 bool progress_bar) {
  v1::StartSegmentationRequest start;
  start.set_dataset_id(dataset_id);
  *start.mutable_options() = options;
  v1::Job job;
  grpc::Status status = client.stub()->StartSegmentation(client.Context().get(), start, &job);
  if (!status.ok()) return CallError(status, "starting the segmentation job", SegmentFlags());
  COHORT_ASSIGN_OR_RETURN(job, WatchToEnd(client, job, progress_bar));
  v1::GetSegmentModelRequest get;
  get.set_model_id(job.model_id());
  v1::SegmentModel model;
  status = client.stub()->GetSegmentModel(client.Context().get(), get, &model);
  if (!status.ok()) return CallError(status, "reading the segment model");
  return model;
}

absl::StatusOr<v1::Sweep> RunSweep(Client& client, const std::string& dataset_id,
                                   const SegmentCommandOptions& options) {
  v1::StartSweepRequest start;
  start.set_dataset_id(dataset_id);
  for (int k : options.sweep_ks) start.add_ks(k);
  *start.mutable_options() = JobOptions(options, 1);
  start.mutable_options()->clear_algorithm();
  v1::Job job;
  grpc::Status status = client.stub()->StartSweep(client.Context().get(), start, &job);
  if (!status.ok()) return CallError(status, "starting the k sweep", SegmentFlags());
  COHORT_ASSIGN_OR_RETURN(job, WatchToEnd(client, job, options.progress_bar));
  v1::GetSweepRequest get;
  get.set_job_id(job.job_id());
  v1::Sweep sweep;
  status = client.stub()->GetSweep(client.Context().get(), get, &sweep);
  if (!status.ok()) return CallError(status, "reading the sweep");
  return sweep;
}

void PrintTable(const v1::SegmentModel& model, const v1::Dataset& dataset, std::ostream& out) {
  out << "Segments of dataset " << dataset.dataset_id() << " (segment model "
      << model.model_id() << "): k = " << model.effective_k();
  if (model.fewer_distinct_points()) {
    out << " (requested " << model.requested_k() << ", but the data has only "
        << model.effective_k() << " distinct points)";
  }
  if (!model.stop_reason().empty()) out << " (" << model.stop_reason() << ")";
  out << ", " << FormatReadable(static_cast<double>(model.num_users())) << " users, inertia "
      << FormatReadable(model.inertia()) << ", " << model.iterations() << " iterations"
      << (model.converged() ? " (converged)" : " (max_iter reached)") << "\n\n";

  // Header: segment, users, share, then the mean of every numeric column.
  std::vector<std::string> header = {"segment", "users", "share"};
  for (const v1::NumericFeature& numeric : model.transform().numeric()) {
    header.push_back(numeric.name());
  }
  std::vector<std::vector<std::string>> rows;
  for (const v1::Segment& segment : model.segments()) {
    std::vector<std::string> row = {absl::StrCat(segment.index()),
                                    FormatReadable(static_cast<double>(segment.size())),
                                    absl::StrFormat("%.1f%%", 100 * segment.share())};
    for (const v1::NumericSummary& numeric : segment.numeric()) {
      row.push_back(FormatReadable(numeric.mean()));
    }
    rows.push_back(std::move(row));
  }
  std::vector<std::string> overall = {"all", FormatReadable(static_cast<double>(model.num_users())),
                                      "100%"};
  if (model.segments_size() > 0) {
    for (const v1::NumericSummary& numeric : model.segments(0).numeric()) {
      overall.push_back(FormatReadable(numeric.overall_mean()));
    }
    rows.push_back(overall);
  }
  std::vector<size_t> widths(header.size());
  for (size_t c = 0; c < header.size(); ++c) {
    widths[c] = header[c].size();
    for (const auto& row : rows) widths[c] = std::max(widths[c], row[c].size());
  }
  auto print_row = [&](const std::vector<std::string>& row) {
    for (size_t c = 0; c < row.size(); ++c) {
      out << (c == 0 ? "" : "  ") << std::string(widths[c] - row[c].size(), ' ') << row[c];
    }
    out << "\n";
  };
  print_row(header);
  for (const auto& row : rows) print_row(row);
  out << "\n";
  for (const v1::Segment& segment : model.segments()) {
    out << "Segment " << segment.index() << ": " << segment.description() << "\n";
  }
}

absl::Status WriteText(const std::filesystem::path& path, const std::string& text) {
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<OutputFile> file, OutputFile::Open(path.string()));
  file->stream() << text;
  return file->Commit();
}

absl::Status WriteModelFiles(const v1::SegmentModel& model, const std::filesystem::path& dir) {
  std::string json;
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.add_whitespace = true;
  json_options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(model, &json, json_options).ok()) {
    return absl::InternalError("cannot convert the model to JSON");
  }
  COHORT_RETURN_IF_ERROR(WriteText(dir / "model.json", json));

  // segments.csv: one row per segment, numeric means in original units and the summary.
  std::string segments = "segment,users,share";
  for (const v1::NumericFeature& numeric : model.transform().numeric()) {
    absl::StrAppend(&segments, ",mean_", CsvField(numeric.name()));
  }
  absl::StrAppend(&segments, ",distinguishing,description\n");
  for (const v1::Segment& segment : model.segments()) {
    absl::StrAppend(&segments, segment.index(), ",", segment.size(), ",", Number(segment.share()));
    for (const v1::NumericSummary& numeric : segment.numeric()) {
      absl::StrAppend(&segments, ",", Number(numeric.mean()));
    }
    absl::StrAppend(&segments, ",", CsvField(absl::StrJoin(segment.distinguishing(), "; ")), ",",
                    CsvField(segment.description()), "\n");
  }
  COHORT_RETURN_IF_ERROR(WriteText(dir / "segments.csv", segments));

  // centroids.csv: the centroids in feature space (standardized and one-hot columns).
  std::string centroids = "segment";
  for (const std::string& name : model.feature_names()) absl::StrAppend(&centroids, ",", CsvField(name));
  centroids += "\n";
  const int d = model.centroids().cols();
  for (int c = 0; c < model.centroids().rows(); ++c) {
    absl::StrAppend(&centroids, c);
    for (int j = 0; j < d; ++j) {
      absl::StrAppend(&centroids, ",", Number(model.centroids().values(c * d + j)));
    }
    centroids += "\n";
  }
  return WriteText(dir / "centroids.csv", centroids);
}

absl::Status WriteAssignments(Client& client, const v1::SegmentModel& model,
                              const std::filesystem::path& path) {
  v1::ExportAssignmentsRequest request;
  request.set_model_id(model.model_id());
  auto context = client.Context();
  auto reader = client.stub()->ExportAssignments(context.get(), request);
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<OutputFile> file, OutputFile::Open(path.string()));
  file->stream() << "user_id,segment,squared_distance\n";
  v1::AssignmentChunk chunk;
  std::string buffer;
  int64_t written = 0;
  while (reader->Read(&chunk)) {
    buffer.clear();
    for (const v1::Assignment& assignment : chunk.assignments()) {
      absl::StrAppend(&buffer, CsvField(assignment.user_id()), ",", assignment.segment(), ",",
                      Number(assignment.squared_distance()), "\n");
    }
    file->stream() << buffer;
    written += chunk.assignments_size();
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return CallError(status, "exporting the assignments");
  if (written != model.num_users()) {
    return absl::InternalError(absl::StrCat("export returned ", written, " users, expected ",
                                            model.num_users()));
  }
  return file->Commit();
}

// Creates the --out folder. The commands call it before they load anything, so a bad path
// fails at once instead of after the job.
absl::Status CreateOutputFolder(const SegmentCommandOptions& options) {
  std::error_code error;
  std::filesystem::create_directories(options.out_dir, error);
  if (error) {
    return absl::InvalidArgumentError(absl::StrCat("--out '", options.out_dir,
                                                   "' cannot be created as a folder: ",
                                                   error.message(), "; give a writable folder"));
  }
  return absl::OkStatus();
}

absl::Status WriteOutputs(Client& client, const v1::SegmentModel& model,
                          const SegmentCommandOptions& options, std::ostream& out) {
  const std::filesystem::path dir(options.out_dir);
  COHORT_RETURN_IF_ERROR(CreateOutputFolder(options));
  COHORT_RETURN_IF_ERROR(WriteModelFiles(model, dir));
  if (options.write_assignments) {
    COHORT_RETURN_IF_ERROR(WriteAssignments(client, model, dir / "assignments.csv"));
  }
  out << "\nWrote " << (dir / "model.json").string() << ", segments.csv, centroids.csv"
      << (options.write_assignments ? ", assignments.csv" : "") << " in " << dir.string()
      << "\n";
  return absl::OkStatus();
}

SegmentSummary SummaryFromProto(const v1::Segment& segment) {
  SegmentSummary summary;
  summary.index = segment.index();
  summary.size = segment.size();
  summary.share = segment.share();
  for (const v1::NumericSummary& numeric : segment.numeric()) {
    summary.numeric.push_back(NumericSegmentStat{numeric.column(), numeric.mean(),
                                                 numeric.overall_mean(), numeric.z(),
                                                 numeric.min(), numeric.max(), numeric.missing(),
                                                 numeric.median()});
  }
  for (const v1::CategoricalSummary& categorical : segment.categorical()) {
    CategoricalSegmentStat stat;
    stat.column = categorical.column();
    for (const v1::CategoryShare& share : categorical.top()) {
      stat.top.push_back(CategoryShareStat{share.value(), share.share(), share.overall_share()});
    }
    summary.categorical.push_back(std::move(stat));
  }
  summary.distinguishing.assign(segment.distinguishing().begin(), segment.distinguishing().end());
  summary.description = segment.description();
  return summary;
}

// The report is built only from what the API returns, so a calling service can build the
// same page.
ReportData BuildReportData(const std::string& title, const v1::Dataset& dataset,
                           const v1::SegmentModel& model, const v1::Sweep& sweep,
                           const v1::SegmentModel* tree) {
  ReportData data;
  data.title = title;
  data.subtitle = absl::StrCat(FormatReadable(static_cast<double>(model.num_users())),
                               " users in dataset ", dataset.dataset_id(), ", k = ",
                               model.effective_k(), ", ", model.feature_names_size(),
                               " features, model ", model.model_id());
  for (const v1::Segment& segment : model.segments()) data.segments.push_back(SummaryFromProto(segment));
  data.metrics = FromProto(model.metrics());
  const v1::Projection& projection = model.projection();
  data.projection.explained_variance_ratio.assign(projection.explained_variance_ratio().begin(),
                                                  projection.explained_variance_ratio().end());
  data.projection.x.assign(projection.x().begin(), projection.x().end());
  data.projection.y.assign(projection.y().begin(), projection.y().end());
  data.projection_segments.assign(projection.segments().begin(), projection.segments().end());
  for (const v1::SweepPoint& point : sweep.points()) {
    data.sweep.push_back(SweepPoint{point.k(), FromProto(point.metrics())});
  }
  data.suggestion = KSuggestion{sweep.suggested_k(), sweep.reason()};
  if (tree != nullptr) {
    for (const v1::SegmentTreeNode& node : tree->tree()) {
      SegmentTreeNode out;
      out.id = node.id();
      out.parent = node.parent();
      out.depth = node.depth();
      out.size = node.size();
      out.inertia = node.inertia();
      out.segment = node.segment();
      out.description = node.description();
      data.tree.push_back(std::move(out));
    }
  }
  return data;
}

// Rejects a column named in two of --id-column, --ignore, --weight, --categorical and
// --numeric. Without this check the last flag would win silently, and an id column named
// in --numeric would become a feature.
absl::Status CheckEachColumnHasOneRole(const SegmentCommandOptions& options) {
  std::map<std::string, std::string> flag_of_column;
  if (!options.id_column.empty() && options.id_column != "@line") {
    flag_of_column[options.id_column] = "--id-column";
  }
  std::vector<std::pair<std::string, std::string>> named;
  for (const std::string& name : options.ignore_columns) named.emplace_back(name, "--ignore");
  if (!options.weight_column.empty()) named.emplace_back(options.weight_column, "--weight");
  for (const std::string& name : options.categorical_columns) {
    named.emplace_back(name, "--categorical");
  }
  for (const std::string& name : options.numeric_columns) named.emplace_back(name, "--numeric");
  for (const auto& [name, flag] : named) {
    const auto [it, inserted] = flag_of_column.emplace(name, flag);
    if (!inserted && it->second != flag) {
      return absl::InvalidArgumentError(absl::StrCat("column '", name, "' is named in both ",
                                                     it->second, " and ", flag,
                                                     "; give each column one role"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SegmentCommandOptions::Validate() const {
  if (users.empty() + transactions.empty() + dataset_id.empty() != 2) {
    return absl::InvalidArgumentError(
        "give exactly one of --data (a CSV of users), --transactions (a transaction log) and, "
        "on a running coordinator, --dataset (the id of a loaded dataset)");
  }
  if (!dataset_id.empty()) {
    COHORT_RETURN_IF_ERROR(CheckNoLoadFlags(dataset_id, {
        {!delimiter.empty(), "--delimiter"},
        {!id_column.empty(), "--id-column"},
        {!ignore_columns.empty(), "--ignore"},
        {!weight_column.empty(), "--weight"},
        {!categorical_columns.empty(), "--categorical"},
        {!numeric_columns.empty(), "--numeric"},
        {!transaction_columns.empty(), "--tx-column"},
        {num_shards != 0, "--shards"},
        {duplicate_ids != "reject", "--duplicate-ids"}}));
  }
  if (duplicate_ids != "reject" && duplicate_ids != "keep-first") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--duplicate-ids '", duplicate_ids, "' is invalid; use reject or keep-first"));
  }
  if (duplicate_ids == "keep-first" && !transactions.empty()) {
    return absl::InvalidArgumentError(
        "--duplicate-ids keep-first applies to a user CSV (--data); a transaction log sums "
        "the rows of each user");
  }
  if (!weight_column.empty() && !transactions.empty()) {
    return absl::InvalidArgumentError(
        "--weight applies to a user CSV (--data), not to --transactions; drop --weight");
  }
  if (k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("-k ", k, " is invalid; k must be >= 1"));
  }
  if (delimiter.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--delimiter '", delimiter, "' is invalid; use one character"));
  }
  if (out_dir.empty()) return absl::InvalidArgumentError("--out must not be empty");
  COHORT_RETURN_IF_ERROR(CheckEachColumnHasOneRole(*this));
  static constexpr const char* kRoles[] = {"user", "invoice", "item", "quantity", "price", "time"};
  for (const std::string& entry : transaction_columns) {
    const size_t equals = entry.find('=');
    const std::string role = entry.substr(0, equals);
    const bool known = std::find(std::begin(kRoles), std::end(kRoles), role) != std::end(kRoles);
    if (equals == std::string::npos || equals + 1 == entry.size() || !known) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tx-column '", entry,
          "' is invalid; use role=column with a role among user, invoice, item, quantity, "
          "price, time"));
    }
  }
  return absl::OkStatus();
}

absl::Status RunSegmentCommand(const std::string& address, const SegmentCommandOptions& options,
                               std::ostream& out) {
  COHORT_RETURN_IF_ERROR(options.Validate());
  COHORT_RETURN_IF_ERROR(CreateOutputFolder(options));
  Client client(address, options.deadline);
  COHORT_ASSIGN_OR_RETURN(v1::Dataset dataset, FindOrLoad(client, options));
  COHORT_ASSIGN_OR_RETURN(
      v1::SegmentModel model,
      RunSegmentation(client, dataset.dataset_id(), JobOptions(options, options.k),
                      options.progress_bar));
  PrintTable(model, dataset, out);
  COHORT_RETURN_IF_ERROR(WriteOutputs(client, model, options, out));
  return absl::OkStatus();
}

absl::Status RunReportCommand(const std::string& address, const SegmentCommandOptions& options,
                              std::ostream& out) {
  COHORT_RETURN_IF_ERROR(options.Validate());
  COHORT_RETURN_IF_ERROR(CreateOutputFolder(options));
  Client client(address, options.deadline);
  COHORT_ASSIGN_OR_RETURN(v1::Dataset dataset, FindOrLoad(client, options));

  int k = options.k;
  v1::Sweep sweep;
  if (!options.sweep_ks.empty()) {
    COHORT_ASSIGN_OR_RETURN(sweep, RunSweep(client, dataset.dataset_id(), options));
    out << "k sweep: " << sweep.reason() << "\n";
    if (!options.k_given) k = sweep.suggested_k();
  }
  v1::SegmentationOptions job_options = JobOptions(options, k);
  job_options.set_algorithm("kmeans");
  COHORT_ASSIGN_OR_RETURN(
      v1::SegmentModel model,
      RunSegmentation(client, dataset.dataset_id(), job_options, options.progress_bar));
  PrintTable(model, dataset, out);
  v1::SegmentModel tree;
  if (options.tree) {
    job_options.set_algorithm("bisecting");
    COHORT_ASSIGN_OR_RETURN(tree, RunSegmentation(client, dataset.dataset_id(), job_options,
                                                  options.progress_bar));
  }
  COHORT_RETURN_IF_ERROR(WriteOutputs(client, model, options, out));

  const std::filesystem::path path = std::filesystem::path(options.out_dir) / "report.html";
  const std::string source = !options.dataset_id.empty() ? options.dataset_id
                             : options.users.empty()      ? options.transactions
                                                          : options.users;
  const std::string title =
      absl::StrCat("Segments of ", std::filesystem::path(source).filename().string());
  COHORT_RETURN_IF_ERROR(WriteText(path, RenderReportHtml(BuildReportData(
                                             title, dataset, model, sweep,
                                             options.tree ? &tree : nullptr))));
  out << "Wrote the report " << path.string() << "\n";
  return absl::OkStatus();
}

}  // namespace cohort
