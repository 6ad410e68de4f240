#include "cli/recommend_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <unistd.h>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/flag_checks.h"
#include "cli/flag_names.h"
#include "cohort/v1/cohort.grpc.pb.h"
#include "coordinator/coordinator_server.h"
#include "core/csv.h"
#include "core/log.h"
#include "core/status_macros.h"
#include "core/synthetic.h"
#include "proto/convert.h"
#include "worker/worker_server.h"

namespace cohort {
namespace {

// The request fields that the neighbours and recommend flags set.
const std::vector<FlagName>& NeighbourFlagNames() {
  static const std::vector<FlagName> kFlags = {
      {"num_shards", "--shards"},
      {"measure", "--measure"},
      {"k", "-k"},
      {"shrinkage", "--shrinkage"},
      {"min_support", "--min-support"},
      {"baseline_epochs", "--baseline-epochs"},
      {"baseline_reg_item", "--baseline-reg-item"},
      {"baseline_reg_user", "--baseline-reg-user"},
  };
  return kFlags;
}

// The status of a failed call, with the request fields named by their flags.
absl::Status FlagError(const grpc::Status& status, const std::vector<FlagName>& flags) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      NameFlags(status.error_message(), flags));
}

// Deadline of one unary call, and of a neighbour job from start to end.
constexpr auto kCallTimeout = std::chrono::minutes(10);
constexpr auto kJobTimeout = std::chrono::hours(6);
constexpr int kMaxMessageBytes = 256 << 20;
// Users picked from the file when `cohort local recommend` gets no --user.
constexpr int kDefaultUsers = 3;

std::unique_ptr<grpc::ClientContext> Context(std::chrono::seconds timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + timeout);
  return context;
}

void AddFileFlags(CLI::App* command, InteractionFileFlags* flags) {
  command->add_option("--interactions", flags->path,
                      "CSV file or glob of interactions (user, item, value, optional time)");
  command->add_option("--delimiter", flags->delimiter, "CSV field separator (default ,)");
  command->add_flag("--no-header", flags->no_header,
                    "the files have no header; columns are then 0-based numbers");
  command->add_option("--user-column", flags->user_column, "user column (default user_id or 0)");
  command->add_option("--item-column", flags->item_column, "item column (default item_id or 1)");
  command->add_option("--value-column", flags->value_column, "value column (default value or 2)");
  command->add_option("--time-column", flags->time_column,
                      "time column: Unix seconds or a date (default: none)");
  command->add_flag("--implicit", flags->implicit,
                    "every interaction counts as 1; a --value-column then only filters rows");
  command->add_option("--min-value", flags->min_value,
                      "drop rows whose value is <= this number (e.g. 0 for returns)");
  command->add_option("--duplicates", flags->duplicates,
                      "rule for a repeated (user, item): keep_latest (default), sum, max or "
                      "reject");
  command->add_option("--shards", flags->num_shards, "virtual shards (default 64)")
      ->check(AtLeast(1));
}

void AddNeighbourFlags(CLI::App* command, NeighbourFlags* flags) {
  command->add_option("--measure", flags->measure,
                      "cosine, pearson, adjusted_cosine, jaccard or msd")
      ->capture_default_str();
  command->add_option("-k,--k", flags->k, "neighbours kept per item or user")
      ->capture_default_str();
  command->add_option("--shrinkage", flags->shrinkage,
                      "λ >= 0: a similarity over n co-rated entries is scaled by n / (n + λ)");
  command->add_option("--min-support", flags->min_support,
                      "pairs with fewer co-rated entries are no neighbours (default 1)")
      ->check(AtLeast(1));
  command->add_option("--baseline-epochs", flags->baseline_epochs,
                      "ALS epochs of the baselines μ + b_u + b_i stored with the model, "
                      "1..1000 (default 10)");
  command->add_option("--baseline-reg-item", flags->baseline_reg_item,
                      "regularisation of the item biases, >= 0 (default 10)");
  command->add_option("--baseline-reg-user", flags->baseline_reg_user,
                      "regularisation of the user biases, >= 0 (default 15)");
}

absl::StatusOr<v1::SimilarityMeasure> ParseMeasure(const std::string& name) {
  if (name == "cosine") return v1::SIMILARITY_MEASURE_COSINE;
  if (name == "pearson") return v1::SIMILARITY_MEASURE_PEARSON;
  if (name == "adjusted_cosine") return v1::SIMILARITY_MEASURE_ADJUSTED_COSINE;
  if (name == "jaccard") return v1::SIMILARITY_MEASURE_JACCARD;
  if (name == "msd") return v1::SIMILARITY_MEASURE_MSD;
  return absl::InvalidArgumentError(absl::StrCat(
      "--measure '", name, "' is unknown; use cosine, pearson, adjusted_cosine, jaccard or msd"));
}

absl::StatusOr<v1::DuplicateRule> ParseDuplicates(const std::string& name) {
  if (name.empty() || name == "keep_latest") return v1::DUPLICATE_RULE_KEEP_LATEST;
  if (name == "sum") return v1::DUPLICATE_RULE_SUM;
  if (name == "max") return v1::DUPLICATE_RULE_MAX;
  if (name == "reject") return v1::DUPLICATE_RULE_REJECT;
  return absl::InvalidArgumentError(absl::StrCat(
      "--duplicates '", name, "' is unknown; use keep_latest, sum, max or reject"));
}

class Client {
 public:
  explicit Client(const std::string& address) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    stub_ = v1::Cohort::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }

  // Creates an INTERACTIONS dataset and loads the file into it.
  absl::StatusOr<v1::Dataset> Load(const InteractionFileFlags& flags) {
    if (flags.path.empty()) {
      return absl::InvalidArgumentError("--interactions is missing; give a CSV file or glob");
    }
    v1::CreateDatasetRequest create;
    create.set_kind(v1::DATASET_KIND_INTERACTIONS);
    create.set_num_shards(flags.num_shards);
    COHORT_ASSIGN_OR_RETURN(v1::DuplicateRule rule, ParseDuplicates(flags.duplicates));
    create.set_duplicate_rule(rule);
    v1::Dataset created;
    grpc::Status status = stub_->CreateDataset(Context(kCallTimeout).get(), create, &created);
    if (!status.ok()) return FlagError(status, NeighbourFlagNames());

    v1::LoadDatasetRequest load;
    load.set_dataset_id(created.dataset_id());
    load.set_source(flags.path);
    load.mutable_csv()->set_delimiter(flags.delimiter);
    load.mutable_csv()->set_no_header(flags.no_header);
    v1::InteractionColumns* columns = load.mutable_interactions();
    columns->set_user(flags.user_column);
    columns->set_item(flags.item_column);
    columns->set_value(flags.value_column);
    columns->set_time(flags.time_column);
    columns->set_implicit(flags.implicit);
    if (!flags.min_value.empty()) {
      double min_value = 0;
      if (!absl::SimpleAtod(flags.min_value, &min_value)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--min-value '", flags.min_value, "' is not a number"));
      }
      columns->set_min_value(min_value);
    }
    v1::Dataset loaded;
    status = stub_->LoadDataset(Context(kCallTimeout).get(), load, &loaded);
    if (!status.ok()) return FromGrpcStatus(status);
    std::fprintf(stderr, "dataset %s: %lld users, %lld interactions from %lld rows\n",
                 loaded.dataset_id().c_str(), static_cast<long long>(loaded.num_users()),
                 static_cast<long long>(loaded.num_interactions()),
                 static_cast<long long>(loaded.rows_read()));
    return loaded;
  }

  // Runs a neighbour job to its end and returns its model id.
  absl::StatusOr<std::string> Neighbours(const std::string& dataset_id, v1::NeighbourKind kind,
                                         const NeighbourFlags& flags, bool progress) {
    v1::StartNeighbourJobRequest request;
    request.set_dataset_id(dataset_id);
    v1::NeighbourOptions* options = request.mutable_options();
    options->set_kind(kind);
    COHORT_ASSIGN_OR_RETURN(v1::SimilarityMeasure measure, ParseMeasure(flags.measure));
    options->set_measure(measure);
    options->set_k(flags.k);
    options->set_shrinkage(flags.shrinkage);
    options->set_min_support(flags.min_support);
    if (flags.baseline_epochs.has_value()) options->set_baseline_epochs(*flags.baseline_epochs);
    if (flags.baseline_reg_item.has_value()) {
      options->set_baseline_reg_item(*flags.baseline_reg_item);
    }
    if (flags.baseline_reg_user.has_value()) {
      options->set_baseline_reg_user(*flags.baseline_reg_user);
    }
    v1::Job job;
    grpc::Status status = stub_->StartNeighbourJob(Context(kCallTimeout).get(), request, &job);
    if (!status.ok()) return FlagError(status, NeighbourFlagNames());

    v1::WatchJobRequest watch;
    watch.set_job_id(job.job_id());
    auto context = Context(kJobTimeout);
    auto reader = stub_->WatchJob(context.get(), watch);
    v1::JobEvent event;
    std::string last_phase;
    while (reader->Read(&event)) {
      if (progress && !event.message().empty() && event.phase() != last_phase) {
        std::fprintf(stderr, "%s %s: %s\n", job.job_id().c_str(), event.phase().c_str(),
                     event.message().c_str());
        last_phase = event.phase();
      }
    }
    status = reader->Finish();
    if (!status.ok()) return FromGrpcStatus(status);
    v1::GetJobRequest get;
    get.set_job_id(job.job_id());
    status = stub_->GetJob(Context(kCallTimeout).get(), get, &job);
    if (!status.ok()) return FromGrpcStatus(status);
    if (job.state() != v1::JOB_STATE_SUCCEEDED) {
      return absl::Status(static_cast<absl::StatusCode>(job.error_code()),
                          absl::StrCat("neighbour job ", job.job_id(), " ended ",
                                       v1::JobState_Name(job.state()), ": ",
                                       job.error_message()));
    }
    std::fprintf(stderr, "%s: %s neighbours ready in %.2f s\n", job.job_id().c_str(),
                 kind == v1::NEIGHBOUR_KIND_ITEM_ITEM ? "item–item" : "user–user",
                 job.elapsed_seconds());
    return job.model_id();
  }

  // Prints one neighbour list per id as "id,rank,neighbour,score" CSV lines.
  absl::Status PrintNeighbours(const std::string& model_id, bool items,
                               const std::vector<std::string>& ids, std::ostream& out) {
    out << (items ? "item_id" : "user_id") << ",rank,neighbour_id,score\n";
    for (const std::string& id : ids) {
      v1::NeighboursResponse response;
      grpc::Status status;
      if (items) {
        v1::SimilarItemsRequest request;
        request.set_model_id(model_id);
        request.set_item_id(id);
        status = stub_->SimilarItems(Context(kCallTimeout).get(), request, &response);
      } else {
        v1::SimilarUsersRequest request;
        request.set_model_id(model_id);
        request.set_user_id(id);
        status = stub_->SimilarUsers(Context(kCallTimeout).get(), request, &response);
      }
      if (!status.ok()) return FromGrpcStatus(status);
      for (int i = 0; i < response.neighbours_size(); ++i) {
        out << id << "," << i + 1 << "," << response.neighbours(i).id() << ","
            << response.neighbours(i).score() << "\n";
      }
    }
    return absl::OkStatus();
  }

  // Prints the recommendations of every user as "user,rank,item,score,from_neighbours".
  absl::Status PrintRecommendations(const v1::RecommendBatchRequest& request, std::ostream& out) {
    auto context = Context(kCallTimeout);
    auto reader = stub_->RecommendBatch(context.get(), request);
    out << "user_id,rank,item_id,score,from_neighbours\n";
    v1::RecommendResponse response;
    while (reader->Read(&response)) {
      for (int i = 0; i < response.items_size(); ++i) {
        const v1::RecommendedItem& item = response.items(i);
        out << response.user_id() << "," << i + 1 << "," << item.item_id() << ","
            << item.score() << "," << (item.from_neighbours() ? "true" : "false") << "\n";
      }
      if (response.fewer_than_n()) {
        std::fprintf(stderr, "user %s: fewer than %d items are eligible\n",
                     response.user_id().c_str(), request.options().n());
      }
    }
    return FromGrpcStatus(reader->Finish());
  }

 private:
  std::unique_ptr<v1::Cohort::Stub> stub_;
};

absl::Status RunNeighbours(const std::string& coordinator, const RecommendCommandOptions& options,
                           std::ostream& out) {
  if (options.kind != "item" && options.kind != "user") {
    return absl::InvalidArgumentError(
        absl::StrCat("--kind '", options.kind, "' is invalid; use item or user"));
  }
  const bool items = options.kind == "item";
  Client client(coordinator);
  // A bad measure fails before the file is loaded.
  if (absl::StatusOr<v1::SimilarityMeasure> measure = ParseMeasure(options.neighbours.measure);
      !measure.ok()) {
    return measure.status();
  }
  COHORT_ASSIGN_OR_RETURN(v1::Dataset dataset, client.Load(options.file));
  COHORT_ASSIGN_OR_RETURN(
      std::string model_id,
      client.Neighbours(dataset.dataset_id(),
                        items ? v1::NEIGHBOUR_KIND_ITEM_ITEM : v1::NEIGHBOUR_KIND_USER_USER,
                        options.neighbours, options.progress));
  out << "# model " << model_id << "\n";
  return client.PrintNeighbours(model_id, items, options.show, out);
}

absl::Status RunRecommend(const std::string& coordinator, const RecommendCommandOptions& options,
                          std::ostream& out) {
  v1::RecommendMethod method = v1::RECOMMEND_METHOD_ITEM_BASED;
  if (options.method == "user") {
    method = v1::RECOMMEND_METHOD_USER_BASED;
  } else if (options.method == "hybrid") {
    method = v1::RECOMMEND_METHOD_HYBRID;
  } else if (options.method == "content") {
    method = v1::RECOMMEND_METHOD_CONTENT;
  } else if (options.method != "item") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--method '", options.method, "' is invalid; use item, user, hybrid or content"));
  }
  if ((method == v1::RECOMMEND_METHOD_CONTENT || options.content_weight > 0) &&
      options.content_model.empty()) {
    return absl::InvalidArgumentError(
        "--content-model is missing; content recommendations need the id of a user–user "
        "neighbour model on feature vectors (a USERS or TRANSACTIONS dataset)");
  }
  if (options.users.empty()) {
    return absl::InvalidArgumentError("--user is missing; give the users to recommend for");
  }
  // The coordinator checks these too, but only after the file is loaded and the neighbour
  // lists are computed, which takes minutes on a large file.
  if (options.n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("-n ", options.n, " is invalid; give the number of items per user (>= 1)"));
  }
  if (!(options.hybrid_weight >= 0 && options.hybrid_weight <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--hybrid-weight ", options.hybrid_weight, " is invalid; use a number in [0, 1]"));
  }
  Client client(coordinator);
  // A bad measure fails before the file is loaded.
  if (absl::StatusOr<v1::SimilarityMeasure> measure = ParseMeasure(options.neighbours.measure);
      !measure.ok()) {
    return measure.status();
  }
  COHORT_ASSIGN_OR_RETURN(v1::Dataset dataset, client.Load(options.file));
  v1::RecommendBatchRequest request;
  v1::RecommendRequest* one = request.mutable_options();
  one->set_method(method);
  one->set_n(options.n);
  one->set_hybrid_weight(options.hybrid_weight);
  one->set_content_model_id(options.content_model);
  one->set_content_weight(options.content_weight);
  for (const std::string& id : options.exclude) one->add_exclude_item_ids(id);
  if (method != v1::RECOMMEND_METHOD_USER_BASED) {
    COHORT_ASSIGN_OR_RETURN(std::string model_id,
                            client.Neighbours(dataset.dataset_id(), v1::NEIGHBOUR_KIND_ITEM_ITEM,
                                              options.neighbours, options.progress));
    one->set_item_model_id(model_id);
  }
  // CONTENT takes its item catalogue from the item–item model above.
  if (method == v1::RECOMMEND_METHOD_USER_BASED || method == v1::RECOMMEND_METHOD_HYBRID) {
    COHORT_ASSIGN_OR_RETURN(std::string model_id,
                            client.Neighbours(dataset.dataset_id(), v1::NEIGHBOUR_KIND_USER_USER,
                                              options.neighbours, options.progress));
    one->set_user_model_id(model_id);
  }
  for (const std::string& user : options.users) request.add_user_ids(user);
  return client.PrintRecommendations(request, out);
}

// The first `count` distinct user ids of the interaction file, in file order.
absl::StatusOr<std::vector<std::string>> FirstUsers(const InteractionFileFlags& flags,
                                                    int count) {
  COHORT_ASSIGN_OR_RETURN(std::vector<std::string> paths, ExpandPaths(flags.path));
  CsvOptions csv;
  if (!flags.delimiter.empty()) csv.delimiter = flags.delimiter[0];
  csv.has_header = !flags.no_header;
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<CsvReader> reader, CsvReader::Open(paths[0], csv));
  std::string column = csv.has_header ? "user_id" : "0";
  if (!flags.user_column.empty()) column = flags.user_column;
  int index = -1;
  if (csv.has_header) {
    for (size_t i = 0; i < reader->header().size(); ++i) {
      if (reader->header()[i] == column) index = static_cast<int>(i);
    }
  } else if (!absl::SimpleAtoi(column, &index)) {
    index = -1;
  }
  if (index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("user column '", column, "' is not in ", paths[0]));
  }
  std::vector<std::string> users;
  std::set<std::string> seen;
  std::vector<std::string> fields;
  while (static_cast<int>(users.size()) < count) {
    COHORT_ASSIGN_OR_RETURN(bool more, reader->Next(&fields));
    if (!more) break;
    if (index >= static_cast<int>(fields.size()) || fields[index].empty()) continue;
    if (seen.insert(fields[index]).second) users.push_back(fields[index]);
  }
  return users;
}

// Without --interactions, local mode writes the synthetic shop into a temp folder and
// recommends from its purchases: every (customer, product) bought counts its purchases,
// returns dropped. Returns the folder, which the caller removes.
absl::StatusOr<std::string> UseShopPurchases(RecommendCommandOptions* options) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           absl::StrCat("cohort-shop-", ::getpid())).string();
  SyntheticShopOptions shop;
  COHORT_ASSIGN_OR_RETURN(SyntheticShopFiles files, WriteSyntheticShop(dir, shop));
  std::fprintf(stderr,
               "no --interactions given: recommending from the purchases of a synthetic shop "
               "(%lld transactions) in %s\n",
               static_cast<long long>(files.transactions), dir.c_str());
  InteractionFileFlags& file = options->file;
  file.path = files.transactions_csv;
  file.user_column = "CustomerID";
  file.item_column = "StockCode";
  file.value_column = "Quantity";
  file.time_column = "InvoiceDate";
  file.implicit = true;
  file.min_value = "0";
  file.duplicates = "sum";
  return dir;
}

absl::Status RunLocalCluster(int workers, RecommendCommandOptions options, std::ostream& out) {
  if (options.users.empty()) {
    COHORT_ASSIGN_OR_RETURN(options.users, FirstUsers(options.file, kDefaultUsers));
    std::fprintf(stderr, "no --user given: recommending for %s\n",
                 absl::StrJoin(options.users, ", ").c_str());
  }
  std::vector<std::unique_ptr<WorkerServer>> servers;
  CoordinatorServerOptions coordinator_options;
  for (int i = 0; i < workers; ++i) {
    WorkerServerOptions worker_options;
    worker_options.worker_id = absl::StrCat("local-", i);
    COHORT_ASSIGN_OR_RETURN(std::unique_ptr<WorkerServer> server,
                            WorkerServer::Start(worker_options));
    coordinator_options.worker_addresses.push_back(server->address());
    servers.push_back(std::move(server));
  }
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorServer> coordinator,
                          CoordinatorServer::Start(coordinator_options));
  std::fprintf(stderr, "local cluster: coordinator %s, %d workers\n",
               coordinator->address().c_str(), workers);
  const absl::Status status = RunRecommend(coordinator->address(), options, out);
  coordinator->Shutdown(absl::Seconds(1));
  for (auto& server : servers) server->Shutdown(absl::Seconds(1));
  return status;
}

absl::Status RunLocal(int workers, RecommendCommandOptions options, std::ostream& out) {
  if (workers < 1 || workers > 64) {
    return absl::InvalidArgumentError(absl::StrCat("--workers ", workers, " is invalid; use 1..64"));
  }
  std::string shop_dir;
  if (options.file.path.empty()) {
    COHORT_ASSIGN_OR_RETURN(shop_dir, UseShopPurchases(&options));
  }
  absl::Status status = RunLocalCluster(workers, options, out);
  if (!shop_dir.empty()) {
    std::error_code error;
    std::filesystem::remove_all(shop_dir, error);
  }
  return status;
}

void AddRecommendFlags(CLI::App* command, RecommendCommandOptions* options) {
  AddFileFlags(command, &options->file);
  AddNeighbourFlags(command, &options->neighbours);
  command->add_option("--user", options->users, "users to recommend for")->delimiter(',');
  command->add_option("--method", options->method, "item, user, hybrid or content")
      ->capture_default_str();
  command->add_option("-n,--n", options->n, "items per user")->capture_default_str();
  command->add_option("--exclude", options->exclude, "items never recommended")->delimiter(',');
  command->add_option("--hybrid-weight", options->hybrid_weight,
                      "hybrid: weight of the item-based scores in [0, 1]")
      ->capture_default_str();
  command->add_option("--content-model", options->content_model,
                      "content and hybrid: id of a user–user neighbour model on feature "
                      "vectors on the coordinator, whose user ids match the interactions");
  command->add_option("--content-weight", options->content_weight,
                      "hybrid: weight of the content scores in [0, 1] (default 0: none)");
  command->add_flag("!--no-progress", options->progress, "do not print job progress");
}

}  // namespace

RecommendCommands::RecommendCommands(CLI::App* app, CLI::App* local) {
  neighbours_ = app->add_subcommand(
      "neighbours", "load interactions on a running coordinator and compute neighbour lists");
  neighbours_->add_option("--coordinator", neighbours_coordinator_, "coordinator host:port")
      ->capture_default_str();
  AddFileFlags(neighbours_, &neighbour_options_.file);
  AddNeighbourFlags(neighbours_, &neighbour_options_.neighbours);
  neighbours_->add_option("--kind", neighbour_options_.kind, "item or user")
      ->capture_default_str();
  neighbours_->add_option("--show", neighbour_options_.show,
                          "item or user ids whose neighbour lists are printed")
      ->delimiter(',');
  neighbours_->add_flag("!--no-progress", neighbour_options_.progress,
                        "do not print job progress");

  recommend_ = app->add_subcommand(
      "recommend", "load interactions on a running coordinator and recommend items to users");
  recommend_->add_option("--coordinator", recommend_coordinator_, "coordinator host:port")
      ->capture_default_str();
  AddRecommendFlags(recommend_, &recommend_options_);

  local_recommend_ = local->add_subcommand(
      "recommend",
      "recommend items on a local cluster (default: the synthetic shop's purchases)");
  local_recommend_->add_option("--workers", local_workers_, "workers to start")
      ->capture_default_str();
  AddRecommendFlags(local_recommend_, &local_options_);
}

bool RecommendCommands::parsed() const {
  return neighbours_->parsed() || recommend_->parsed() || local_recommend_->parsed();
}

absl::Status RecommendCommands::Run(std::ostream& out) {
  if (neighbours_->parsed()) return RunNeighbours(neighbours_coordinator_, neighbour_options_, out);
  if (recommend_->parsed()) return RunRecommend(recommend_coordinator_, recommend_options_, out);
  return RunLocal(local_workers_, local_options_, out);
}

}  // namespace cohort
