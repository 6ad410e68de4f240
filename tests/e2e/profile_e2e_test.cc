// End-to-end tests of profile models, profiles, audiences and online scoring: a
// coordinator and worker processes of the `cohort` command on loopback ports, driven
// through the public gRPC API.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cohort/v1/cohort.grpc.pb.h"
#include "tests/e2e/subprocess.h"
#include "tests/test_data.h"

namespace cohort {
namespace {
using ::cohort::testing::ReadTextFile;
using ::cohort::testing::Subprocess;

constexpr char kCli[] = COHORT_CLI_PATH;
// Time allowed for a server to print its address.
constexpr absl::Duration kServerTimeout = absl::Seconds(30);
// Deadline of one unary call or one audience stream.
constexpr absl::Duration kCallTimeout = absl::Seconds(60);
// Deadline of the WatchJob stream that waits for a job to end.
constexpr absl::Duration kJobTimeout = absl::Seconds(300);
constexpr int kUsers = 3000;

std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout = kCallTimeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  return context;
}

absl::Status ToStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

// Writes users with a numeric, a partly missing numeric, a categorical and a boolean
// feature and a yes/no label drawn from a known logistic model, seeded.
std::string WriteLabelledUsers(const std::string& path, int users) {
  std::mt19937_64 random(20251204);
  std::normal_distribution<double> normal(0, 1);
  std::uniform_real_distribution<double> uniform(0, 1);
  const char* channels[] = {"web", "store", "app"};
  std::ofstream out(path);
  out << "user_id,age,income,channel,vip,converted\n";
  for (int i = 0; i < users; ++i) {
    const double age = 40 + 12 * normal(random);
    const double income = 50 + 20 * normal(random);
    const int channel = static_cast<int>(uniform(random) * 3) % 3;
    const bool vip = uniform(random) < 0.2;
    const double z = -1 + 0.04 * (age - 40) + 0.03 * (income - 50) + (channel == 2 ? 1.0 : 0.0) +
                     (vip ? 1.5 : 0.0);
    const bool converted = uniform(random) < 1 / (1 + std::exp(-z));
    out << "u" << i << "," << age << ",";
    if (i % 17 != 0) out << income;  // every 17th income is missing
    out << "," << channels[channel] << "," << (vip ? "yes" : "no") << ","
        << (converted ? "yes" : "no") << "\n";
  }
  return path;
}

// A coordinator and `workers` worker processes; their output goes to files in `dir`.
class ProcessCluster {
 public:
  // `state_dir`, when not empty, is the coordinator's state folder.
  static std::unique_ptr<ProcessCluster> Start(const std::string& dir, int workers,
                                               const std::string& state_dir = "") {
    std::unique_ptr<ProcessCluster> cluster(new ProcessCluster(dir));
    std::vector<std::string> coordinator_args = {"coordinator", "--listen", "127.0.0.1:0"};
    if (!state_dir.empty()) {
      coordinator_args.push_back("--state-dir");
      coordinator_args.push_back(state_dir);
    }
    Subprocess* coordinator = cluster->Spawn("coordinator", coordinator_args);
    if (coordinator == nullptr) return nullptr;
    const std::optional<std::string> address =
        coordinator->AwaitStderrLine("coordinator listening on ", kServerTimeout);
    if (!address.has_value()) {
      ADD_FAILURE() << "coordinator printed no address:\n" << coordinator->Stderr();
      return nullptr;
    }
    for (int i = 0; i < workers; ++i) {
      const std::string id = absl::StrCat("w", i);
      Subprocess* worker = cluster->Spawn(
          absl::StrCat("worker", i),
          {"worker", "--listen", "127.0.0.1:0", "--coordinator", *address, "--id", id});
      if (worker == nullptr ||
          !worker->AwaitStderrLine(absl::StrCat("worker ", id, " listening on "), kServerTimeout)
               .has_value()) {
        ADD_FAILURE() << "worker " << id << " did not start";
        return nullptr;
      }
    }
    cluster->address_ = *address;
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(256 << 20);
    cluster->stub_ = v1::Cohort::NewStub(
        grpc::CreateCustomChannel(*address, grpc::InsecureChannelCredentials(), args));
    return cluster;
  }

  v1::Cohort::Stub& stub() { return *stub_; }
  const std::string& address() const { return address_; }

  // Creates a USERS dataset and loads `path` with the given type overrides.
  absl::StatusOr<v1::Dataset> Load(const std::string& path, const std::string& id_column,
                                   const std::map<std::string, v1::ColumnType>& overrides,
                                   const std::string& delimiter = "") {
    v1::CreateDatasetRequest create;
    create.set_num_shards(16);
    v1::Dataset dataset;
    grpc::Status status = stub_->CreateDataset(Context().get(), create, &dataset);
    if (!status.ok()) return ToStatus(status);
    v1::LoadDatasetRequest load;
    load.set_dataset_id(dataset.dataset_id());
    load.set_source(path);
    load.set_id_column(id_column);
    load.mutable_csv()->set_delimiter(delimiter);
    for (const auto& [name, type] : overrides) (*load.mutable_overrides())[name] = type;
    status = stub_->LoadDataset(Context().get(), load, &dataset);
    if (!status.ok()) return ToStatus(status);
    return dataset;
  }

  // Watches the job until it ends and returns its final state.
  absl::StatusOr<v1::Job> Wait(const std::string& job_id) {
    v1::WatchJobRequest watch;
    watch.set_job_id(job_id);
    auto context = Context(kJobTimeout);
    auto reader = stub_->WatchJob(context.get(), watch);
    v1::JobEvent event;
    while (reader->Read(&event)) {
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) return ToStatus(status);
    v1::GetJobRequest get;
    get.set_job_id(job_id);
    v1::Job job;
    const grpc::Status got = stub_->GetJob(Context().get(), get, &job);
    if (!got.ok()) return ToStatus(got);
    return job;
  }

  // Trains a profile model and returns it. Errors: the start call's status, or the
  // job's error when it did not succeed.
  absl::StatusOr<v1::ProfileModel> Train(const std::string& dataset_id,
                                         const v1::ProfileOptions& options) {
    v1::StartProfileJobRequest start;
    start.set_dataset_id(dataset_id);
    *start.mutable_options() = options;
    v1::Job job;
    const grpc::Status started = stub_->StartProfileJob(Context().get(), start, &job);
    if (!started.ok()) return ToStatus(started);
    absl::StatusOr<v1::Job> done = Wait(job.job_id());
    if (!done.ok()) return done.status();
    if (done->state() != v1::JOB_STATE_SUCCEEDED) {
      return absl::Status(static_cast<absl::StatusCode>(done->error_code()),
                          done->error_message());
    }
    v1::GetProfileModelRequest get;
    get.set_model_id(done->model_id());
    v1::ProfileModel model;
    const grpc::Status got = stub_->GetProfileModel(Context().get(), get, &model);
    if (!got.ok()) return ToStatus(got);
    return model;
  }

  // The audience messages in stream order.
  absl::StatusOr<std::vector<v1::AudienceChunk>> Audience(const v1::SelectAudienceRequest& request) {
    auto context = Context();
    auto reader = stub_->SelectAudience(context.get(), request);
    std::vector<v1::AudienceChunk> chunks;
    v1::AudienceChunk chunk;
    while (reader->Read(&chunk)) chunks.push_back(chunk);
    const grpc::Status status = reader->Finish();
    if (!status.ok()) return ToStatus(status);
    return chunks;
  }

 private:
  explicit ProcessCluster(std::string dir) : dir_(std::move(dir)) {}

  Subprocess* Spawn(const std::string& name, std::vector<std::string> args) {
    args.insert(args.begin(), kCli);
    const std::string base = (std::filesystem::path(dir_) / name).string();
    std::unique_ptr<Subprocess> child =
        Subprocess::Start(args, base + ".stdout", base + ".stderr", dir_);
    if (child == nullptr) return nullptr;
    children_.push_back(std::move(child));
    return children_.back().get();
  }

  const std::string dir_;
  std::vector<std::unique_ptr<Subprocess>> children_;
  std::unique_ptr<v1::Cohort::Stub> stub_;
  std::string address_;
};

v1::ProfileOptions LabelledOptions() {
  v1::ProfileOptions options;
  options.set_label_column("converted");
  options.set_positive_label("yes");
  return options;
}

const std::map<std::string, v1::ColumnType> kLabelledTypes = {
    {"converted", v1::COLUMN_TYPE_LABEL}, {"vip", v1::COLUMN_TYPE_BOOLEAN}};

class ProfileEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "cohort-profile-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << "mkdtemp(" << pattern << ") failed";
    dir_ = pattern;
    users_csv_ = WriteLabelledUsers(dir_ + "/users.csv", kUsers);
  }

  void TearDown() override {
    clusters_.clear();
    std::error_code error;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, error);
  }

  // Starts a cluster in its own subfolder.
  ProcessCluster* StartCluster(int workers, const std::string& state_dir = "") {
    const std::string dir = absl::StrCat(dir_, "/cluster", started_clusters_++);
    std::filesystem::create_directories(dir);
    std::unique_ptr<ProcessCluster> cluster = ProcessCluster::Start(dir, workers, state_dir);
    if (cluster == nullptr) return nullptr;
    clusters_.push_back(std::move(cluster));
    return clusters_.back().get();
  }

  // Starts a 3-worker cluster, loads the labelled users and trains the default model.
  void TrainDefault() {
    cluster_ = StartCluster(3);
    ASSERT_NE(cluster_, nullptr);
    absl::StatusOr<v1::Dataset> dataset = cluster_->Load(users_csv_, "user_id", kLabelledTypes);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    dataset_id_ = dataset->dataset_id();
    absl::StatusOr<v1::ProfileModel> model = cluster_->Train(dataset_id_, LabelledOptions());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *model;
  }

  // Every user with a score, from an audience without filters.
  std::vector<v1::AudienceMember> AllMembers(const std::string& segment_model_id = "") {
    v1::SelectAudienceRequest request;
    request.set_profile_model_id(model_.model_id());
    request.set_segment_model_id(segment_model_id);
    absl::StatusOr<std::vector<v1::AudienceChunk>> chunks = cluster_->Audience(request);
    EXPECT_TRUE(chunks.ok()) << chunks.status();
    std::vector<v1::AudienceMember> members;
    if (!chunks.ok()) return members;
    for (const v1::AudienceChunk& chunk : *chunks) {
      members.insert(members.end(), chunk.members().begin(), chunk.members().end());
    }
    return members;
  }

  // The audience's members, checking that the first message has the count and no member.
  std::vector<v1::AudienceMember> Select(const v1::SelectAudienceRequest& request) {
    absl::StatusOr<std::vector<v1::AudienceChunk>> chunks = cluster_->Audience(request);
    EXPECT_TRUE(chunks.ok()) << chunks.status();
    std::vector<v1::AudienceMember> members;
    if (!chunks.ok() || chunks->empty()) {
      ADD_FAILURE() << "the audience stream sent no message";
      return members;
    }
    EXPECT_EQ(chunks->front().members_size(), 0) << "the first message must carry only the count";
    for (const v1::AudienceChunk& chunk : *chunks) {
      members.insert(members.end(), chunk.members().begin(), chunk.members().end());
    }
    EXPECT_EQ(chunks->front().count(), static_cast<int64_t>(members.size()));
    return members;
  }

  struct CommandResult {
    int exit_code = -1;  // -1: still running at the timeout, then killed
    std::string out;
    std::string err;
  };

  // Runs `cohort <args>` in the temp folder to completion, bounded by kJobTimeout.
  CommandResult Run(const std::string& name, std::vector<std::string> args) {
    args.insert(args.begin(), kCli);
    const std::string base = absl::StrCat(dir_, "/", name);
    std::unique_ptr<Subprocess> child =
        Subprocess::Start(args, base + ".stdout", base + ".stderr", dir_);
    CommandResult result;
    if (child == nullptr) return result;
    result.exit_code = child->WaitForExit(kJobTimeout).value_or(-1);
    result.out = child->Stdout();
    result.err = child->Stderr();
    return result;
  }

  std::string dir_;
  std::string users_csv_;
  std::vector<std::unique_ptr<ProcessCluster>> clusters_;
  int started_clusters_ = 0;  // names each cluster's own output folder
  ProcessCluster* cluster_ = nullptr;
  std::string dataset_id_;
  v1::ProfileModel model_;
};

std::vector<std::string> Ids(const std::vector<v1::AudienceMember>& members) {
  std::vector<std::string> ids;
  for (const v1::AudienceMember& member : members) ids.push_back(member.user_id());
  return ids;
}

TEST_F(ProfileEndToEndTest, ModelDoesNotDependOnWorkerCount) {
  std::vector<v1::ProfileModel> models;
  for (int workers : {1, 3}) {
    ProcessCluster* cluster = StartCluster(workers);
    ASSERT_NE(cluster, nullptr);
    absl::StatusOr<v1::Dataset> dataset = cluster->Load(users_csv_, "user_id", kLabelledTypes);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    absl::StatusOr<v1::ProfileModel> model = cluster->Train(dataset->dataset_id(), LabelledOptions());
    ASSERT_TRUE(model.ok()) << "workers=" << workers << ": " << model.status();
    models.push_back(*model);
  }
  const v1::ProfileModel& one = models[0];
  const v1::ProfileModel& three = models[1];
  ASSERT_EQ(one.weights_size(), three.weights_size());
  ASSERT_GT(one.weights_size(), 0);
  for (int j = 0; j < one.weights_size(); ++j) {
    EXPECT_EQ(one.weights(j), three.weights(j)) << one.feature_names(j);
  }
  EXPECT_EQ(one.intercept(), three.intercept());
  EXPECT_EQ(one.iterations(), three.iterations());
  EXPECT_EQ(one.loss(), three.loss());
  EXPECT_EQ(one.train_users(), three.train_users());
  EXPECT_EQ(one.test_users(), three.test_users());
  EXPECT_EQ(one.test_metrics().SerializeAsString(), three.test_metrics().SerializeAsString());
  EXPECT_EQ(one.test_metrics().roc_auc().value(), three.test_metrics().roc_auc().value());
  ASSERT_EQ(one.decile_bounds_size(), 9);
  for (int i = 0; i < 9; ++i) EXPECT_EQ(one.decile_bounds(i), three.decile_bounds(i));

  // The known model is learnt: vip and the app channel raise the propensity.
  EXPECT_EQ(one.train_users() + one.test_users(), kUsers);
  EXPECT_TRUE(one.test_metrics().roc_auc().defined());
  EXPECT_GT(one.test_metrics().roc_auc().value(), 0.7);
  std::map<std::string, double> weight;
  for (const v1::Coefficient& coefficient : one.coefficients()) {
    weight[coefficient.feature()] = coefficient.weight();
  }
  EXPECT_GT(weight["vip"], 0.5);
  EXPECT_GT(weight["channel=app"], weight["channel=web"]);
  // Every 17th income is missing and imputed.
  bool imputed = false;
  for (const v1::CleaningCount& count : one.cleaning()) {
    if (count.column() == "income") {
      imputed = true;
      EXPECT_EQ(count.imputed(), (kUsers + 16) / 17);
    }
  }
  EXPECT_TRUE(imputed);
}

TEST_F(ProfileEndToEndTest, OnlineScoreEqualsStoredScore) {
  TrainDefault();
  ASSERT_FALSE(HasFatalFailure());
  for (const std::string user_id : {"u0", "u17", "u1234", "u2999"}) {
    v1::GetProfileRequest get;
    get.set_profile_model_id(model_.model_id());
    get.set_user_id(user_id);
    v1::UserProfile profile;
    const grpc::Status got = cluster_->stub().GetProfile(Context().get(), get, &profile);
    ASSERT_TRUE(got.ok()) << got.error_message();
    EXPECT_EQ(profile.user_id(), user_id);
    EXPECT_EQ(profile.columns().at("user_id"), user_id);
    EXPECT_GE(profile.decile(), 1);
    EXPECT_LE(profile.decile(), 10);
    EXPECT_EQ(profile.top_features_size(), 5);

    v1::ScoreUserRequest score;
    score.set_profile_model_id(model_.model_id());
    for (const auto& [name, cell] : profile.columns()) {
      if (name != "user_id") (*score.mutable_columns())[name] = cell;
    }
    v1::ScoreUserResponse scored;
    const grpc::Status status = cluster_->stub().ScoreUser(Context().get(), score, &scored);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(scored.propensity(), profile.propensity()) << user_id;
    EXPECT_EQ(scored.decile(), profile.decile()) << user_id;
  }
}

TEST_F(ProfileEndToEndTest, AudienceFiltersMatchNaiveReference) {
  TrainDefault();
  ASSERT_FALSE(HasFatalFailure());

  // A segment model of the same users, for the segment filter and the cap.
  v1::StartSegmentationRequest segment;
  segment.set_dataset_id(dataset_id_);
  segment.mutable_options()->set_k(3);
  v1::Job job;
  ASSERT_TRUE(cluster_->stub().StartSegmentation(Context().get(), segment, &job).ok());
  absl::StatusOr<v1::Job> segmented = cluster_->Wait(job.job_id());
  ASSERT_TRUE(segmented.ok()) << segmented.status();
  ASSERT_EQ(segmented->state(), v1::JOB_STATE_SUCCEEDED) << segmented->error_message();
  const std::string segment_model = segmented->model_id();

  // Each kind of model is read with its own RPC.
  v1::GetSegmentModelRequest as_segments;
  as_segments.set_model_id(model_.model_id());
  v1::SegmentModel unused_segments;
  const grpc::Status wrong_kind =
      cluster_->stub().GetSegmentModel(Context().get(), as_segments, &unused_segments);
  EXPECT_EQ(wrong_kind.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(wrong_kind.error_message(), "GetProfileModel"))
      << wrong_kind.error_message();
  v1::GetProfileModelRequest as_profile;
  as_profile.set_model_id(segment_model);
  v1::ProfileModel unused_profile;
  EXPECT_EQ(cluster_->stub().GetProfileModel(Context().get(), as_profile, &unused_profile)
                .error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  const std::vector<v1::AudienceMember> all = AllMembers(segment_model);
  ASSERT_EQ(all.size(), static_cast<size_t>(kUsers));
  for (size_t i = 1; i < all.size(); ++i) {
    const bool ordered = all[i - 1].propensity() > all[i].propensity() ||
                         (all[i - 1].propensity() == all[i].propensity() &&
                          all[i - 1].user_id() < all[i].user_id());
    ASSERT_TRUE(ordered) << "members " << i - 1 << " and " << i << " are out of order";
  }

  // Threshold, exclusion and segments against a filter over every member.
  v1::SelectAudienceRequest request;
  request.set_profile_model_id(model_.model_id());
  request.set_segment_model_id(segment_model);
  request.set_has_min_score(true);
  request.set_min_score(0.4);
  request.add_segments(0);
  request.add_segments(2);
  const std::set<std::string> excluded = {all[0].user_id(), all[5].user_id(), "not-a-user"};
  for (const std::string& id : excluded) request.add_exclude_user_ids(id);
  std::vector<v1::AudienceMember> expected;
  for (const v1::AudienceMember& member : all) {
    if (member.propensity() >= 0.4 && (member.segment() == 0 || member.segment() == 2) &&
        excluded.count(member.user_id()) == 0) {
      expected.push_back(member);
    }
  }
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(Ids(Select(request)), Ids(expected));

  // Top-N with a per-segment cap: walk the ordered list, skipping full segments.
  request.set_top_n(50);
  request.set_per_segment_cap(20);
  std::vector<v1::AudienceMember> capped;
  std::map<int, int> per_segment;
  for (const v1::AudienceMember& member : expected) {
    if (capped.size() == 50) break;
    if (per_segment[member.segment()] >= 20) continue;
    ++per_segment[member.segment()];
    capped.push_back(member);
  }
  EXPECT_EQ(Ids(Select(request)), Ids(capped));

  // Top-N alone.
  v1::SelectAudienceRequest top;
  top.set_profile_model_id(model_.model_id());
  top.set_top_n(7);
  const std::vector<v1::AudienceMember> top7(all.begin(), all.begin() + 7);
  EXPECT_EQ(Ids(Select(top)), Ids(top7));

  // No user passes: the stream has the count 0 and nothing else.
  v1::SelectAudienceRequest none;
  none.set_profile_model_id(model_.model_id());
  none.set_has_min_score(true);
  none.set_min_score(1.5);
  absl::StatusOr<std::vector<v1::AudienceChunk>> empty = cluster_->Audience(none);
  ASSERT_TRUE(empty.ok()) << empty.status();
  ASSERT_EQ(empty->size(), 1u);
  EXPECT_EQ(empty->front().count(), 0);

  // GetProfile reports the stored segment.
  v1::GetProfileRequest get;
  get.set_profile_model_id(model_.model_id());
  get.set_segment_model_id(segment_model);
  get.set_user_id(all[3].user_id());
  v1::UserProfile profile;
  ASSERT_TRUE(cluster_->stub().GetProfile(Context().get(), get, &profile).ok());
  EXPECT_TRUE(profile.has_segment());
  EXPECT_EQ(profile.segment(), all[3].segment());
  EXPECT_EQ(profile.propensity(), all[3].propensity());
}

TEST_F(ProfileEndToEndTest, UnknownIdsAreNotFound) {
  TrainDefault();
  ASSERT_FALSE(HasFatalFailure());
  v1::GetProfileModelRequest model;
  model.set_model_id("job-999999");
  v1::ProfileModel unused_model;
  EXPECT_EQ(cluster_->stub().GetProfileModel(Context().get(), model, &unused_model).error_code(),
            grpc::StatusCode::NOT_FOUND);

  v1::GetProfileRequest profile;
  profile.set_profile_model_id(model_.model_id());
  profile.set_user_id("nobody");
  v1::UserProfile unused_profile;
  const grpc::Status missing_user =
      cluster_->stub().GetProfile(Context().get(), profile, &unused_profile);
  EXPECT_EQ(missing_user.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(absl::StrContains(missing_user.error_message(), "nobody"))
      << missing_user.error_message();

  v1::ScoreUserRequest score;
  score.set_profile_model_id("job-999999");
  v1::ScoreUserResponse unused_score;
  EXPECT_EQ(cluster_->stub().ScoreUser(Context().get(), score, &unused_score).error_code(),
            grpc::StatusCode::NOT_FOUND);

  v1::SelectAudienceRequest audience;
  audience.set_profile_model_id("job-999999");
  EXPECT_EQ(cluster_->Audience(audience).status().code(), absl::StatusCode::kNotFound);

  v1::StartProfileJobRequest start;
  start.set_dataset_id("no-such-dataset");
  *start.mutable_options() = LabelledOptions();
  v1::Job unused_job;
  EXPECT_EQ(cluster_->stub().StartProfileJob(Context().get(), start, &unused_job).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ProfileEndToEndTest, BadOptionsNameTheField) {
  TrainDefault();
  ASSERT_FALSE(HasFatalFailure());
  struct Case {
    std::string field;
    std::function<void(v1::ProfileOptions*)> spoil;
  };
  const std::vector<Case> cases = {
      {"options.label_column", [](v1::ProfileOptions* o) { o->set_label_column("age"); }},
      {"options.label_column", [](v1::ProfileOptions* o) { o->set_label_column("nope"); }},
      {"options.positive_label", [](v1::ProfileOptions* o) { o->clear_positive_label(); }},
      {"options.c", [](v1::ProfileOptions* o) { o->set_c(-1); }},
      {"options.test_fraction", [](v1::ProfileOptions* o) { o->set_test_fraction(2); }},
      {"options.class_weight", [](v1::ProfileOptions* o) { o->set_class_weight("heavy"); }},
      {"options.pipeline.columns[0].impute",
       [](v1::ProfileOptions* o) {
         v1::ColumnPipelineSpec* column = o->mutable_pipeline()->add_columns();
         column->set_column("age");
         column->set_impute("bogus");
       }},
      {"options.pipeline",
       [](v1::ProfileOptions* o) { o->mutable_pipeline()->add_columns()->set_column("nope"); }},
  };
  for (const Case& c : cases) {
    v1::StartProfileJobRequest start;
    start.set_dataset_id(dataset_id_);
    *start.mutable_options() = LabelledOptions();
    c.spoil(start.mutable_options());
    v1::Job unused;
    const grpc::Status status = cluster_->stub().StartProfileJob(Context().get(), start, &unused);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_TRUE(absl::StrContains(status.error_message(), c.field))
        << c.field << ": " << status.error_message();
  }

  v1::SelectAudienceRequest audience;
  audience.set_profile_model_id(model_.model_id());
  audience.set_top_n(-1);
  absl::Status negative = cluster_->Audience(audience).status();
  EXPECT_EQ(negative.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(negative.message(), "top_n")) << negative;

  v1::SelectAudienceRequest cap;
  cap.set_profile_model_id(model_.model_id());
  cap.set_per_segment_cap(3);
  absl::Status no_segments = cluster_->Audience(cap).status();
  EXPECT_EQ(no_segments.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(no_segments.message(), "segment_model_id")) << no_segments;

  v1::ScoreUserRequest score;
  score.set_profile_model_id(model_.model_id());
  (*score.mutable_columns())["age"] = "old";
  v1::ScoreUserResponse unused_score;
  const grpc::Status bad_cell = cluster_->stub().ScoreUser(Context().get(), score, &unused_score);
  EXPECT_EQ(bad_cell.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(bad_cell.error_message(), "age")) << bad_cell.error_message();
}

TEST_F(ProfileEndToEndTest, BankMarketingThroughTheCluster) {
  COHORT_REQUIRE_DATA_FILE(path, "bank-marketing/bank-full.csv");
  cluster_ = StartCluster(3);
  ASSERT_NE(cluster_, nullptr);
  absl::StatusOr<v1::Dataset> dataset =
      cluster_->Load(path, "@line", {{"y", v1::COLUMN_TYPE_LABEL}}, ";");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->num_users(), 45211);

  v1::ProfileOptions options;
  options.set_label_column("y");
  options.set_positive_label("yes");
  options.set_class_weight("balanced");
  absl::StatusOr<v1::ProfileModel> model = cluster_->Train(dataset->dataset_id(), options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->train_users() + model->test_users(), 45211);
  // About 12 % of the clients subscribed; the call duration alone separates them well, so
  // a linear model reaches a ROC-AUC near 0.9.
  const v1::BinaryMetrics& metrics = model->test_metrics();
  EXPECT_NEAR(static_cast<double>(metrics.positives()) / metrics.users(), 0.117, 0.02);
  EXPECT_GT(metrics.roc_auc().value(), 0.85);
  EXPECT_GT(metrics.recall().value(), 0.6);
  // A longer call means a likelier subscription, and the standardized duration is among
  // the five largest weights.
  int duration_rank = -1;
  for (int j = 0; j < model->coefficients_size(); ++j) {
    if (model->coefficients(j).feature() == "duration") {
      duration_rank = j;
      EXPECT_GT(model->coefficients(j).weight(), 0);
    }
  }
  EXPECT_GE(duration_rank, 0);
  EXPECT_LT(duration_rank, 5);
}

TEST_F(ProfileEndToEndTest, CancelStopsProfileJob) {
  COHORT_REQUIRE_DATA_FILE(path, "bank-marketing/bank-full.csv");
  cluster_ = StartCluster(2);
  ASSERT_NE(cluster_, nullptr);
  absl::StatusOr<v1::Dataset> dataset =
      cluster_->Load(path, "@line", {{"y", v1::COLUMN_TYPE_LABEL}}, ";");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  v1::StartProfileJobRequest start;
  start.set_dataset_id(dataset->dataset_id());
  start.mutable_options()->set_positive_label("yes");
  // A tight tolerance keeps L-BFGS busy long enough for the cancellation to land.
  start.mutable_options()->set_tol(1e-12);
  start.mutable_options()->set_max_iter(100000);
  v1::Job job;
  ASSERT_TRUE(cluster_->stub().StartProfileJob(Context().get(), start, &job).ok());
  EXPECT_EQ(job.profile_options().positive_label(), "yes");

  v1::CancelJobRequest cancel;
  cancel.set_job_id(job.job_id());
  v1::Job cancelled;
  const grpc::Status status = cluster_->stub().CancelJob(Context().get(), cancel, &cancelled);
  absl::StatusOr<v1::Job> done = cluster_->Wait(job.job_id());
  ASSERT_TRUE(done.ok()) << done.status();
  if (status.ok()) {
    EXPECT_EQ(done->state(), v1::JOB_STATE_CANCELLED) << done->error_message();
    EXPECT_TRUE(done->model_id().empty());
  } else {
    // The job had already ended when the cancellation arrived.
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  }
}

TEST_F(ProfileEndToEndTest, RestartedCoordinatorServesStoredModel) {
  const std::string state_dir = dir_ + "/state";
  cluster_ = StartCluster(2, state_dir);
  ASSERT_NE(cluster_, nullptr);
  absl::StatusOr<v1::Dataset> dataset = cluster_->Load(users_csv_, "user_id", kLabelledTypes);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  absl::StatusOr<v1::ProfileModel> trained =
      cluster_->Train(dataset->dataset_id(), LabelledOptions());
  ASSERT_TRUE(trained.ok()) << trained.status();
  v1::ScoreUserRequest score;
  score.set_profile_model_id(trained->model_id());
  (*score.mutable_columns())["age"] = "52";
  (*score.mutable_columns())["channel"] = "app";
  v1::ScoreUserResponse before;
  ASSERT_TRUE(cluster_->stub().ScoreUser(Context().get(), score, &before).ok());
  clusters_.clear();  // stops every process of the first cluster

  // A new coordinator on the same state folder, with no worker.
  ProcessCluster* restarted = StartCluster(0, state_dir);
  ASSERT_NE(restarted, nullptr);
  v1::GetProfileModelRequest get;
  get.set_model_id(trained->model_id());
  v1::ProfileModel stored;
  const grpc::Status got = restarted->stub().GetProfileModel(Context().get(), get, &stored);
  ASSERT_TRUE(got.ok()) << got.error_message();
  EXPECT_EQ(stored.SerializeAsString(), trained->SerializeAsString());
  v1::ScoreUserResponse after;
  ASSERT_TRUE(restarted->stub().ScoreUser(Context().get(), score, &after).ok());
  EXPECT_EQ(after.propensity(), before.propensity());
  // The per-user scores lived on the old job's workers.
  v1::SelectAudienceRequest audience;
  audience.set_profile_model_id(trained->model_id());
  EXPECT_EQ(restarted->Audience(audience).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ProfileEndToEndTest, ClientCommands) {
  cluster_ = StartCluster(2);
  ASSERT_NE(cluster_, nullptr);
  const CommandResult train =
      Run("profile", {"profile", "--coordinator", cluster_->address(), "--data", users_csv_,
                      "--label", "converted", "--positive", "yes", "--boolean", "vip",
                      "--no-progress", "--top", "3"});
  ASSERT_EQ(train.exit_code, 0) << train.err;
  EXPECT_TRUE(absl::StrContains(train.out, "ROC-AUC")) << train.out;
  const size_t start = train.out.find("Profile model ");
  ASSERT_NE(start, std::string::npos) << train.out;
  const std::string model_id = train.out.substr(start + 14, train.out.find(' ', start + 14) - start - 14);
  ASSERT_TRUE(absl::StartsWith(model_id, "job-")) << model_id;

  const std::string csv = dir_ + "/audience.csv";
  const CommandResult audience =
      Run("audience", {"audience", "--coordinator", cluster_->address(), "--model", model_id,
                       "--top", "10", "--exclude", "u1,u2", "--out", csv});
  ASSERT_EQ(audience.exit_code, 0) << audience.err;
  EXPECT_TRUE(absl::StrContains(audience.out, ": 10 users")) << audience.out;
  const std::string written = ReadTextFile(csv);
  EXPECT_TRUE(absl::StartsWith(written, "user_id,propensity,segment\n")) << written;
  EXPECT_EQ(std::count(written.begin(), written.end(), '\n'), 11) << written;

  // A failed call leaves an existing --out file as it was, and creates no new one.
  const CommandResult unknown =
      Run("unknown-audience", {"audience", "--coordinator", cluster_->address(), "--model",
                               "job-999999", "--out", csv});
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(unknown.err, "NOT_FOUND")) << unknown.err;
  EXPECT_EQ(ReadTextFile(csv), written);
  const std::string fresh = dir_ + "/fresh-audience.csv";
  const CommandResult unknown_fresh =
      Run("unknown-fresh", {"audience", "--coordinator", cluster_->address(), "--model",
                            "job-999999", "--out", fresh});
  EXPECT_NE(unknown_fresh.exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(fresh));
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    EXPECT_FALSE(absl::EndsWith(entry.path().string(), ".tmp")) << entry.path();
  }

  // Messages name the flags the user typed, not the request fields.
  const CommandResult uncapped =
      Run("cap-without-segments", {"audience", "--coordinator", cluster_->address(), "--model",
                                   model_id, "--cap", "5"});
  EXPECT_NE(uncapped.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(uncapped.err, "--cap need --segment-model")) << uncapped.err;
  const CommandResult zero_top =
      Run("zero-top", {"audience", "--coordinator", cluster_->address(), "--model", model_id,
                       "--top", "0"});
  EXPECT_NE(zero_top.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(zero_top.err, "--top")) << zero_top.err;
  EXPECT_TRUE(absl::StrContains(zero_top.err, ">= 1")) << zero_top.err;

  const CommandResult score =
      Run("score", {"score", "--coordinator", cluster_->address(), "--model", model_id,
                    "--column", "age=45", "--column", "channel=app", "--column", "vip=yes"});
  ASSERT_EQ(score.exit_code, 0) << score.err;
  EXPECT_TRUE(absl::StartsWith(score.out, "propensity ")) << score.out;

  const CommandResult bad =
      Run("bad-score", {"score", "--coordinator", cluster_->address(), "--model", model_id,
                        "--column", "age=old"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(bad.err, "INVALID_ARGUMENT")) << bad.err;

  // A repeated column would otherwise score the last value only, without a word.
  const CommandResult repeated =
      Run("repeated-score", {"score", "--coordinator", cluster_->address(), "--model", model_id,
                             "--column", "age=45", "--column", "age=30"});
  EXPECT_NE(repeated.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(repeated.err, "--column 'age=30'")) << repeated.err;
  EXPECT_TRUE(absl::StrContains(repeated.err, "INVALID_ARGUMENT")) << repeated.err;
}

TEST_F(ProfileEndToEndTest, SegmentOfProfileDatasetSelectsAudience) {
  cluster_ = StartCluster(2);
  ASSERT_NE(cluster_, nullptr);
  const CommandResult train =
      Run("profile", {"profile", "--coordinator", cluster_->address(), "--data", users_csv_,
                      "--label", "converted", "--positive", "yes", "--boolean", "vip",
                      "--no-progress"});
  ASSERT_EQ(train.exit_code, 0) << train.err;
  const std::regex profile_line("Profile model (job-[0-9]+) of dataset ([^:]+):");
  std::smatch profile;
  ASSERT_TRUE(std::regex_search(train.out, profile, profile_line)) << train.out;
  const std::string profile_model = profile[1];
  const std::string dataset = profile[2];

  // Loading flags do not apply to a dataset that is loaded already.
  const CommandResult with_shards =
      Run("segment-shards", {"segment", "--coordinator", cluster_->address(), "--dataset",
                             dataset, "--shards", "8", "--no-progress"});
  EXPECT_NE(with_shards.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(with_shards.err, "--shards applies when a file is loaded"))
      << with_shards.err;

  const CommandResult segment =
      Run("segment", {"segment", "--coordinator", cluster_->address(), "--dataset", dataset,
                      "-k", "3", "--no-progress", "--out", dir_ + "/segments"});
  ASSERT_EQ(segment.exit_code, 0) << segment.err;
  const std::regex segment_line("Segments of dataset ([^ ]+) \\(segment model (job-[0-9]+)\\)");
  std::smatch segmented;
  ASSERT_TRUE(std::regex_search(segment.out, segmented, segment_line)) << segment.out;
  EXPECT_EQ(segmented[1], dataset);
  const std::string segment_model = segmented[2];

  const CommandResult audience =
      Run("audience", {"audience", "--coordinator", cluster_->address(), "--model",
                       profile_model, "--segment-model", segment_model, "--segments", "0,2",
                       "--top", "20", "--out", dir_ + "/audience.csv"});
  ASSERT_EQ(audience.exit_code, 0) << audience.err;
  EXPECT_TRUE(absl::StrContains(audience.out, ": 20 users")) << audience.out;
  const std::string written = ReadTextFile(dir_ + "/audience.csv");
  EXPECT_EQ(std::count(written.begin(), written.end(), '\n'), 21) << written;
}

TEST_F(ProfileEndToEndTest, LocalProfileWithoutDataUsesLabelledShop) {
  const CommandResult local = Run("local", {"local", "profile", "--no-progress", "--workers", "2"});
  ASSERT_EQ(local.exit_code, 0) << local.err;
  EXPECT_TRUE(absl::StrContains(local.out, "Profile model job-000001")) << local.out;
  EXPECT_TRUE(absl::StrContains(local.out, "20000 users")) << local.out;
  EXPECT_TRUE(absl::StrContains(local.out, "visits_per_month")) << local.out;
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/cohort-out/data/customers_labelled.csv"));
}

}  // namespace
}  // namespace cohort
