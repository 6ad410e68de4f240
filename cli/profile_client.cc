#include "cli/profile_client.h"

#include <grpcpp/grpcpp.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/client_util.h"
#include "cli/output_file.h"
#include "cohort/v1/cohort.grpc.pb.h"
#include "core/csv.h"
#include "core/pipeline.h"
#include "core/shard_hash.h"
#include "core/status_macros.h"
#include "core/synthetic.h"
#include "proto/profile_convert.h"

namespace cohort {
namespace {

// The request fields that the profile flags set.
const std::vector<FlagName>& ProfileFlags() {
  static const std::vector<FlagName> kFlags = {
      {"num_shards", "--shards"},
      {"label_column", "--label"},
      {"positive_label", "--positive"},
      {"c", "-C"},
      {"l2", "--l2"},
      {"class_weight", "--class-weight"},
      {"negative_weight", "--negative-weight"},
      {"positive_weight", "--positive-weight"},
      {"test_fraction", "--test-fraction"},
      {"no_test_split", "--no-test-split"},
      {"seed", "--seed"},
      {"max_iter", "--max-iter"},
      {"tol", "--tol"},
  };
  return kFlags;
}

// The request fields that the audience and score flags set.
const std::vector<FlagName>& AudienceFlags() {
  static const std::vector<FlagName> kFlags = {
      {"profile_model_id", "--model"},
      {"segment_model_id", "--segment-model"},
      {"segments", "--segments"},
      {"min_score", "--min-score"},
      {"top_n", "--top"},
      {"per_segment_cap", "--cap"},
      {"exclude_user_ids", "--exclude"},
      {"columns", "--column"},
  };
  return kFlags;
}

// Files of users are read through the load API; a spec file is read here, so a
// malformed spec fails before anything is loaded.
absl::StatusOr<v1::ProfileOptions> JobOptions(const ProfileCommandOptions& options) {
  v1::ProfileOptions job;
  job.set_label_column(options.label_column);
  job.set_positive_label(options.positive_label);
  if (!options.spec_file.empty()) {
    COHORT_ASSIGN_OR_RETURN(PipelineSpec spec, ReadPipelineSpecFile(options.spec_file));
    ToProto(spec.columns, job.mutable_pipeline());
    if (job.label_column().empty()) job.set_label_column(spec.label_column);
    if (job.positive_label().empty()) job.set_positive_label(spec.positive_label);
  }
  job.set_c(options.c);
  job.set_l2(options.l2);
  job.set_class_weight(options.class_weight);
  job.set_negative_weight(options.negative_weight);
  job.set_positive_weight(options.positive_weight);
  job.set_test_fraction(options.test_fraction);
  job.set_no_test_split(options.no_test_split);
  job.set_seed(options.seed);
  job.set_max_iter(options.max_iter);
  job.set_tol(options.tol);
  if (job.label_column().empty()) {
    return absl::InvalidArgumentError(
        "--label is missing; name the label column (or declare 'label' in the --spec file)");
  }
  if (job.positive_label().empty()) {
    return absl::InvalidArgumentError(
        "--positive is missing; give the label value of the positive class");
  }
  return job;
}

absl::StatusOr<v1::Dataset> LoadUsers(Client& client, const ProfileCommandOptions& options,
                                      const std::string& label_column) {
  v1::CreateDatasetRequest create;
  create.set_kind(v1::DATASET_KIND_USERS);
  create.set_num_shards(options.num_shards);
  create.set_duplicate_ids(options.duplicate_ids == "keep-first"
                               ? v1::DUPLICATE_ID_RULE_KEEP_FIRST
                               : v1::DUPLICATE_ID_RULE_REJECT);
  v1::Dataset dataset;
  grpc::Status status = client.stub()->CreateDataset(client.Context().get(), create, &dataset);
  if (!status.ok()) return CallError(status, "creating the dataset", ProfileFlags());

  v1::LoadDatasetRequest load;
  load.set_dataset_id(dataset.dataset_id());
  load.set_source(options.users);
  load.mutable_csv()->set_delimiter(options.delimiter);
  load.set_id_column(options.id_column);
  load.set_unparsable_cells(options.unparsable_cells == "missing"
                                ? v1::UNPARSABLE_CELL_RULE_MISSING
                                : v1::UNPARSABLE_CELL_RULE_REJECT);
  auto& overrides = *load.mutable_overrides();
  const std::pair<const std::vector<std::string>*, v1::ColumnType> typed[] = {
      {&options.ignore_columns, v1::COLUMN_TYPE_IGNORE},
      {&options.categorical_columns, v1::COLUMN_TYPE_CATEGORICAL},
      {&options.numeric_columns, v1::COLUMN_TYPE_NUMERIC},
      {&options.boolean_columns, v1::COLUMN_TYPE_BOOLEAN},
      {&options.text_columns, v1::COLUMN_TYPE_TEXT},
      {&options.embedding_columns, v1::COLUMN_TYPE_EMBEDDING},
  };
  for (const auto& [names, type] : typed) {
    for (const std::string& name : *names) overrides[name] = type;
  }
  if (!options.weight_column.empty()) overrides[options.weight_column] = v1::COLUMN_TYPE_WEIGHT;
  overrides[label_column] = v1::COLUMN_TYPE_LABEL;
  std::fprintf(stderr, "loading %s into dataset %s ...\n", load.source().c_str(),
               dataset.dataset_id().c_str());
  status = client.stub()->LoadDataset(client.Context().get(), load, &dataset);
  if (!status.ok()) return CallError(status, "loading the dataset");
  std::fprintf(stderr,
               "dataset %s: %lld users (%lld repeated ids dropped, %lld unparsable cells "
               "treated as missing)\n",
               dataset.dataset_id().c_str(), static_cast<long long>(dataset.num_users()),
               static_cast<long long>(dataset.dropped().duplicate_rows()),
               static_cast<long long>(dataset.dropped().unparsable_cells()));
  return dataset;
}

// The dataset --dataset names, or a new one loaded from --data.
absl::StatusOr<v1::Dataset> FindOrLoadUsers(Client& client, const ProfileCommandOptions& options,
                                            const std::string& label_column) {
  if (options.dataset_id.empty()) return LoadUsers(client, options, label_column);
  return GetGivenDataset(client, options.dataset_id);
}

std::string Metric(const v1::BinaryMetricValue& metric) {
  return metric.defined() ? absl::StrFormat("%.4f", metric.value()) : "undefined";
}

void PrintModel(const v1::ProfileModel& model, int top_coefficients, std::ostream& out) {
  out << "Profile model " << model.model_id() << " of dataset " << model.dataset_id() << ": "
      << model.train_users() + model.test_users() << " users (" << model.train_users()
      << " train, " << model.test_users() << " test), " << model.weights_size() << " features\n";
  out << absl::StrFormat("L-BFGS: %d iterations, %s, objective %.6g (C = %g, class weights %g / %g)\n",
                         model.iterations(), model.converged() ? "converged" : "not converged",
                         model.loss(), model.c(), model.class_weight_negative(),
                         model.class_weight_positive());

  const v1::BinaryMetrics& metrics = model.test_metrics();
  out << "Test split (" << metrics.users() << " users, " << metrics.positives()
      << " positive), threshold " << metrics.threshold() << ":\n";
  out << "  accuracy " << Metric(metrics.accuracy()) << "  precision " << Metric(metrics.precision())
      << "  recall " << Metric(metrics.recall()) << "  F1 " << Metric(metrics.f1()) << "\n";
  out << "  ROC-AUC " << Metric(metrics.roc_auc()) << "  PR-AUC " << Metric(metrics.pr_auc())
      << "  log loss " << Metric(metrics.log_loss()) << "\n";
  const v1::ConfusionMatrix& confusion = metrics.confusion();
  out << "  confusion: TP " << confusion.true_positives() << "  FP " << confusion.false_positives()
      << "  TN " << confusion.true_negatives() << "  FN " << confusion.false_negatives() << "\n";

  out << "Top coefficients (log-odds per feature unit):\n";
  for (int i = 0; i < model.coefficients_size() && i < top_coefficients; ++i) {
    out << absl::StrFormat("  %+10.4f  %s\n", model.coefficients(i).weight(),
                           model.coefficients(i).feature());
  }
  out << absl::StrFormat("  %+10.4f  (intercept)\n", model.intercept());
  out << "Loading: " << model.load_duplicate_rows() << " repeated user ids dropped, "
      << model.load_unparsable_cells() << " unparsable cells treated as missing\n";
  if (model.cleaning_size() > 0) {
    out << "Cleaning:\n";
    for (const v1::CleaningCount& count : model.cleaning()) {
      out << "  " << count.column() << ": " << count.imputed() << " imputed, " << count.clipped()
          << " clipped\n";
    }
  }
}

}  // namespace

absl::Status ProfileCommandOptions::Validate() const {
  if (users.empty() == dataset_id.empty()) {
    return absl::InvalidArgumentError(
        "give exactly one of --data (a CSV file of users with a label) and --dataset (the id "
        "of a dataset loaded by an earlier profile command)");
  }
  if (!dataset_id.empty()) {
    COHORT_RETURN_IF_ERROR(CheckNoLoadFlags(dataset_id, {
        {!delimiter.empty(), "--delimiter"},
        {!id_column.empty(), "--id-column"},
        {!ignore_columns.empty(), "--ignore"},
        {!categorical_columns.empty(), "--categorical"},
        {!numeric_columns.empty(), "--numeric"},
        {!boolean_columns.empty(), "--boolean"},
        {!text_columns.empty(), "--text"},
        {!embedding_columns.empty(), "--embedding"},
        {!weight_column.empty(), "--weight"},
        {num_shards != 0, "--shards"},
        {duplicate_ids != "reject", "--duplicate-ids"},
        {unparsable_cells != "reject", "--unparsable-cells"}}));
  }
  if (duplicate_ids != "reject" && duplicate_ids != "keep-first") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--duplicate-ids '", duplicate_ids, "' is invalid; use reject or keep-first"));
  }
  if (unparsable_cells != "reject" && unparsable_cells != "missing") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--unparsable-cells '", unparsable_cells, "' is invalid; use reject or missing"));
  }
  if (top_coefficients < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--top ", top_coefficients, " is invalid; use 0 or more"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RunProfileCommand(const std::string& address,
                                              const ProfileCommandOptions& options,
                                              std::ostream& out) {
  COHORT_RETURN_IF_ERROR(options.Validate());
  COHORT_ASSIGN_OR_RETURN(v1::ProfileOptions job_options, JobOptions(options));
  Client client(address, options.deadline);
  COHORT_ASSIGN_OR_RETURN(v1::Dataset dataset,
                          FindOrLoadUsers(client, options, job_options.label_column()));
  v1::StartProfileJobRequest start;
  start.set_dataset_id(dataset.dataset_id());
  *start.mutable_options() = job_options;
  v1::Job job;
  grpc::Status status = client.stub()->StartProfileJob(client.Context().get(), start, &job);
  if (!status.ok()) return CallError(status, "starting the profile job", ProfileFlags());
  std::fprintf(stderr, "profile job %s started\n", job.job_id().c_str());
  COHORT_ASSIGN_OR_RETURN(job, WatchToEnd(client, job, options.progress_bar));
  v1::GetProfileModelRequest get;
  get.set_model_id(job.model_id());
  v1::ProfileModel model;
  status = client.stub()->GetProfileModel(client.Context().get(), get, &model);
  if (!status.ok()) return CallError(status, "reading the profile model");
  PrintModel(model, options.top_coefficients, out);
  return model.model_id();
}

absl::Status RunAudienceCommand(const std::string& address, const AudienceCommandOptions& options,
                                std::ostream& out) {
  v1::SelectAudienceRequest request;
  request.set_profile_model_id(options.profile_model_id);
  request.set_segment_model_id(options.segment_model_id);
  for (int segment : options.segments) request.add_segments(segment);
  request.set_has_min_score(options.has_min_score);
  request.set_min_score(options.min_score);
  request.set_top_n(options.top_n);
  request.set_per_segment_cap(options.per_segment_cap);
  for (const std::string& id : options.exclude_user_ids) request.add_exclude_user_ids(id);
  if (!options.exclude_file.empty()) {
    std::ifstream in(options.exclude_file);
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat("--exclude-file ", options.exclude_file, " cannot be read"));
    }
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) request.add_exclude_user_ids(line);
    }
  }

  // Opened before the call, so an unwritable path fails at once.
  std::unique_ptr<OutputFile> csv;
  if (!options.out_path.empty()) {
    COHORT_ASSIGN_OR_RETURN(csv, OutputFile::Open(options.out_path));
    csv->stream() << "user_id,propensity,segment\n";
  }
  Client client(address, options.deadline);
  auto context = client.Context();
  auto reader = client.stub()->SelectAudience(context.get(), request);
  v1::AudienceChunk chunk;
  int64_t count = -1;
  int64_t written = 0;
  while (reader->Read(&chunk)) {
    if (count < 0) count = chunk.count();
    for (const v1::AudienceMember& member : chunk.members()) {
      if (csv != nullptr) {
        csv->stream() << CsvField(member.user_id()) << ","
                      << absl::StrFormat("%.17g", member.propensity()) << "," << member.segment()
                      << "\n";
      }
      ++written;
    }
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return CallError(status, "selecting the audience", AudienceFlags());
  if (written != count) {
    return absl::InternalError(absl::StrCat("the audience stream announced ", count,
                                            " users but sent ", written));
  }
  if (csv != nullptr) COHORT_RETURN_IF_ERROR(csv->Commit());
  out << "Audience of profile model " << options.profile_model_id << ": " << count << " users";
  if (csv != nullptr) out << " written to " << options.out_path;
  out << "\n";
  return absl::OkStatus();
}

absl::Status RunScoreCommand(const std::string& address, const ScoreCommandOptions& options,
                             std::ostream& out) {
  v1::ScoreUserRequest request;
  request.set_profile_model_id(options.profile_model_id);
  request.set_segment_model_id(options.segment_model_id);
  for (const std::string& column : options.columns) {
    const size_t equals = column.find('=');
    if (equals == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--column '", column, "' is invalid; write name=value"));
    }
    const std::string name = column.substr(0, equals);
    if (request.columns().contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--column '", column, "' repeats column '", name, "'; give each column once"));
    }
    (*request.mutable_columns())[name] = column.substr(equals + 1);
  }
  Client client(address, options.deadline);
  v1::ScoreUserResponse response;
  const grpc::Status status = client.stub()->ScoreUser(client.Context().get(), request, &response);
  if (!status.ok()) return CallError(status, "scoring the user", AudienceFlags());
  out << absl::StrFormat("propensity %.6f (decile %d)", response.propensity(), response.decile());
  if (response.has_segment()) {
    out << absl::StrFormat(", segment %d at distance %.4g", response.segment(),
                           response.segment_distance());
  }
  out << "\n";
  for (const v1::FeatureContribution& feature : response.top_features()) {
    out << absl::StrFormat("  %+8.4f  %s (value %.4g, weight %+.4f)\n", feature.contribution(),
                           feature.feature(), feature.value(), feature.weight());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> WriteLabelledShop(const std::string& directory) {
  COHORT_ASSIGN_OR_RETURN(SyntheticShopFiles files,
                          WriteSyntheticShop(directory, SyntheticShopOptions()));
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<CsvReader> reader,
                          CsvReader::Open(files.customers_csv, CsvOptions()));
  const std::vector<std::string>& header = reader->header();
  std::map<std::string, int> column;
  for (int i = 0; i < static_cast<int>(header.size()); ++i) column[header[i]] = i;
  for (const char* name : {"customer_id", "visits_per_month", "tenure_months", "basket_size",
                           "channel"}) {
    if (column.count(name) == 0) {
      return absl::InternalError(absl::StrCat(files.customers_csv, " has no column ", name));
    }
  }

  const std::string path = (std::filesystem::path(directory) / "customers_labelled.csv").string();
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<OutputFile> file, OutputFile::Open(path));
  std::ostream& out = file->stream();
  out << absl::StrJoin(header, ",") << ",responded\n";
  std::vector<std::string> fields;
  while (true) {
    COHORT_ASSIGN_OR_RETURN(bool more, reader->Next(&fields));
    if (!more) break;
    const double visits = std::atof(fields[column["visits_per_month"]].c_str());
    const double tenure = std::atof(fields[column["tenure_months"]].c_str());
    const double basket = std::atof(fields[column["basket_size"]].c_str());
    const bool online = fields[column["channel"]] != "store";
    const double z = -4 + 0.3 * visits + 0.02 * tenure + 0.01 * basket + (online ? 0.8 : 0.0);
    // A uniform draw keyed by the customer id, so the label does not depend on row order.
    const double u =
        static_cast<double>(HashUserId(absl::StrCat("responded/", fields[column["customer_id"]])) >>
                            11) *
        0x1.0p-53;
    const bool responded = u < 1 / (1 + std::exp(-z));
    for (const std::string& field : fields) out << CsvField(field) << ",";
    out << (responded ? "yes" : "no") << "\n";
  }
  COHORT_RETURN_IF_ERROR(file->Commit());
  return path;
}

}  // namespace cohort
