// Integration tests of interaction datasets, neighbour jobs and recommendations: real
// coordinator and worker servers on loopback ports. Neighbour lists and recommendations
// must not depend on the worker count and must equal the core functions' result.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cohort/v1/cohort.grpc.pb.h"
#include "core/features.h"
#include "core/interactions.h"
#include "core/shard_hash.h"
#include "core/recommend.h"
#include "core/similarity.h"
#include "core/topk.h"
#include "tests/integration/test_cluster.h"

namespace cohort {
namespace {

using testing::JobError;
using testing::TempDir;
using testing::TestCluster;
using testing::TestClusterOptions;

constexpr int kShards = 8;
constexpr int kUsers = 90;
constexpr int kItems = 40;

// A seeded ratings log: every user rates 4 to 15 items with integers 1..5, with a bias
// per item so that similarities differ.
std::vector<InteractionRow> MakeRatings(uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<InteractionRow> rows;
  for (int u = 0; u < kUsers; ++u) {
    std::set<int> items;
    const int count = 4 + static_cast<int>(random() % 12);
    while (static_cast<int>(items.size()) < count) {
      // Lower item numbers are more popular.
      const int item = static_cast<int>((random() % kItems) * (random() % kItems) / kItems);
      items.insert(item);
    }
    for (int item : items) {
      InteractionRow row;
      row.user_id = absl::StrCat("u", u);
      row.item_id = absl::StrCat("i", item);
      row.value = static_cast<double>(1 + (item % 3 + random() % 3 + u % 2));
      rows.push_back(row);
    }
  }
  return rows;
}

std::string ToCsv(const std::vector<InteractionRow>& rows) {
  std::string text = "user_id,item_id,value\n";
  for (const InteractionRow& row : rows) {
    absl::StrAppend(&text, row.user_id, ",", row.item_id, ",", row.value, "\n");
  }
  return text;
}

// Neighbour lists by owner id: (neighbour id, score) best first.
using Lists = std::map<std::string, std::vector<std::pair<std::string, float>>>;

// Expects the same owners and neighbour ids, and scores within `tolerance`; reports only
// the entries that differ.
void ExpectListsNear(const Lists& actual, const Lists& expected, double tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  for (const auto& [owner, list] : expected) {
    ASSERT_EQ(actual.count(owner), 1u) << owner;
    const auto& got = actual.at(owner);
    ASSERT_EQ(got.size(), list.size()) << owner;
    for (size_t i = 0; i < list.size(); ++i) {
      EXPECT_EQ(got[i].first, list[i].first) << owner << " rank " << i;
      EXPECT_NEAR(got[i].second, list[i].second, tolerance) << owner << " rank " << i;
    }
  }
}

class SimilarityTest : public ::testing::Test {
 protected:
  static std::unique_ptr<TestCluster> StartCluster(int workers) {
    TestClusterOptions options;
    options.num_workers = workers;
    absl::StatusOr<std::unique_ptr<TestCluster>> cluster = TestCluster::Start(options);
    EXPECT_TRUE(cluster.ok()) << cluster.status();
    return cluster.ok() ? std::move(*cluster) : nullptr;
  }

  static absl::StatusOr<v1::Dataset> LoadInteractions(TestCluster& cluster,
                                                      const std::string& path) {
    v1::CreateDatasetRequest create;
    create.set_kind(v1::DATASET_KIND_INTERACTIONS);
    create.set_num_shards(kShards);
    v1::LoadDatasetRequest load;
    load.set_source(path);
    return cluster.CreateAndLoad(create, load);
  }

  static absl::StatusOr<v1::Job> StartNeighbours(TestCluster& cluster,
                                                 const std::string& dataset_id,
                                                 const v1::NeighbourOptions& options) {
    v1::StartNeighbourJobRequest request;
    request.set_dataset_id(dataset_id);
    *request.mutable_options() = options;
    v1::Job job;
    const grpc::Status status =
        cluster.stub().StartNeighbourJob(TestCluster::Context().get(), request, &job);
    if (!status.ok()) return FromGrpcStatus(status);
    return job;
  }

  // Runs a neighbour job to its end and returns the model id.
  static std::string RunNeighbours(TestCluster& cluster, const std::string& dataset_id,
                                   const v1::NeighbourOptions& options) {
    absl::StatusOr<v1::Job> job = StartNeighbours(cluster, dataset_id, options);
    EXPECT_TRUE(job.ok()) << job.status();
    if (!job.ok()) return "";
    absl::StatusOr<v1::Job> done = cluster.WaitForJob(job->job_id());
    EXPECT_TRUE(done.ok()) << done.status();
    if (!done.ok()) return "";
    EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED) << JobError(*done);
    return done->model_id();
  }

  // Every list of a model, read back through SimilarItems or SimilarUsers.
  static Lists ReadLists(TestCluster& cluster, const std::string& model_id, bool items,
                         const std::vector<std::string>& owners) {
    Lists lists;
    for (const std::string& owner : owners) {
      v1::NeighboursResponse response;
      grpc::Status status;
      if (items) {
        v1::SimilarItemsRequest request;
        request.set_model_id(model_id);
        request.set_item_id(owner);
        status = cluster.stub().SimilarItems(TestCluster::Context().get(), request, &response);
      } else {
        v1::SimilarUsersRequest request;
        request.set_model_id(model_id);
        request.set_user_id(owner);
        status = cluster.stub().SimilarUsers(TestCluster::Context().get(), request, &response);
      }
      EXPECT_TRUE(status.ok()) << owner << ": " << status.error_message();
      for (const v1::Neighbour& neighbour : response.neighbours()) {
        lists[owner].emplace_back(neighbour.id(), neighbour.score());
      }
    }
    return lists;
  }

  static absl::StatusOr<v1::RecommendResponse> Recommend(TestCluster& cluster,
                                                         const v1::RecommendRequest& request) {
    v1::RecommendResponse response;
    const grpc::Status status =
        cluster.stub().Recommend(TestCluster::Context().get(), request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  }
};

// The distinct item ids of `rows`, sorted.
std::vector<std::string> ItemIds(const std::vector<InteractionRow>& rows) {
  std::set<std::string> ids;
  for (const InteractionRow& row : rows) ids.insert(row.item_id);
  return std::vector<std::string>(ids.begin(), ids.end());
}

std::vector<std::string> UserIds() {
  std::vector<std::string> ids;
  for (int u = 0; u < kUsers; ++u) ids.push_back(absl::StrCat("u", u));
  return ids;
}

// The core result on the same shards: item lists with ComputeAllItemNeighbors, user
// lists with UserNeighborsInShard per shard merged in shard order.
Lists CoreLists(const InteractionDataset& data, const SimilarityOptions& options, bool items) {
  Lists lists;
  if (items) {
    absl::StatusOr<std::vector<std::vector<Neighbor>>> all =
        ComputeAllItemNeighbors(data.shards, options);
    EXPECT_TRUE(all.ok()) << all.status();
    if (!all.ok()) return lists;
    for (int32_t i = 0; i < data.dictionary.size(); ++i) {
      auto& out = lists[data.dictionary.id(i)];
      for (const Neighbor& n : (*all)[i]) {
        out.emplace_back(data.dictionary.id(static_cast<int32_t>(n.id)), n.score);
      }
    }
    return lists;
  }
  std::vector<VectorTotals> totals(data.dictionary.size());
  std::vector<double> sums(data.dictionary.size(), 0.0);
  for (const InteractionMatrix& shard : data.shards) {
    MergeItemTotals(ComputeItemTotals(shard), &totals);
    const std::vector<double> shard_sums = ComputeItemSums(shard);
    for (size_t i = 0; i < sums.size(); ++i) sums[i] += shard_sums[i];
  }
  const std::vector<double> means = ComputeItemMeans(totals, sums);
  for (const InteractionMatrix& query_shard : data.shards) {
    UserQueryBlock block;
    block.rows = query_shard;
    for (int64_t row = 0; row < query_shard.num_users(); ++row) {
      block.global_ids.push_back(GlobalUserId(query_shard.shard_id, row));
    }
    std::vector<std::vector<std::vector<Neighbor>>> per_shard;
    for (const InteractionMatrix& shard : data.shards) {
      absl::StatusOr<std::vector<std::vector<Neighbor>>> found =
          UserNeighborsInShard(block, shard, means, options);
      EXPECT_TRUE(found.ok()) << found.status();
      if (!found.ok()) return lists;
      per_shard.push_back(*found);
    }
    for (int64_t row = 0; row < query_shard.num_users(); ++row) {
      std::vector<std::vector<Neighbor>> candidates;
      for (const auto& shard_lists : per_shard) candidates.push_back(shard_lists[row]);
      auto& out = lists[query_shard.user_ids[row]];
      // Equal scores rank by user id.
      const auto user_id = [&data](int64_t id) -> std::string_view {
        return data.shards[ShardOfGlobalUserId(id)].user_ids[RowOfGlobalUserId(id)];
      };
      for (const Neighbor& n :
           MergeTopKByKey(candidates, options.k, ScoreOrder::kLargerIsBetter, user_id)) {
        out.emplace_back(user_id(n.id), n.score);
      }
    }
  }
  return lists;
}

struct MeasureCase {
  v1::SimilarityMeasure proto;
  SimilarityMeasure core;
};

TEST_F(SimilarityTest, NeighboursEqualAcrossWorkerCountsAndCore) {
  TempDir dir;
  const std::vector<InteractionRow> rows = MakeRatings(11);
  const std::string path = dir.WriteFile("ratings.csv", ToCsv(rows));
  absl::StatusOr<InteractionDataset> core = BuildInteractionDataset(rows, kShards,
                                                                    DuplicateRule::kKeepLatest);
  ASSERT_TRUE(core.ok()) << core.status();

  std::unique_ptr<TestCluster> one = StartCluster(1);
  std::unique_ptr<TestCluster> three = StartCluster(3);
  ASSERT_NE(one, nullptr);
  ASSERT_NE(three, nullptr);
  absl::StatusOr<v1::Dataset> dataset_one = LoadInteractions(*one, path);
  absl::StatusOr<v1::Dataset> dataset_three = LoadInteractions(*three, path);
  ASSERT_TRUE(dataset_one.ok()) << dataset_one.status();
  ASSERT_TRUE(dataset_three.ok()) << dataset_three.status();
  EXPECT_EQ(dataset_one->num_users(), kUsers);
  EXPECT_EQ(dataset_one->num_interactions(), static_cast<int64_t>(rows.size()));

  const std::vector<MeasureCase> measures = {
      {v1::SIMILARITY_MEASURE_COSINE, SimilarityMeasure::kCosine},
      {v1::SIMILARITY_MEASURE_PEARSON, SimilarityMeasure::kPearson},
      {v1::SIMILARITY_MEASURE_ADJUSTED_COSINE, SimilarityMeasure::kAdjustedCosine},
      {v1::SIMILARITY_MEASURE_JACCARD, SimilarityMeasure::kJaccard}};
  for (const MeasureCase& measure : measures) {
    for (bool items : {true, false}) {
      SCOPED_TRACE(absl::StrCat(v1::SimilarityMeasure_Name(measure.proto),
                                items ? " item-item" : " user-user"));
      v1::NeighbourOptions options;
      options.set_kind(items ? v1::NEIGHBOUR_KIND_ITEM_ITEM : v1::NEIGHBOUR_KIND_USER_USER);
      options.set_measure(measure.proto);
      options.set_k(5);
      options.set_shrinkage(2.5);
      options.set_min_support(2);
      const std::string model_one = RunNeighbours(*one, dataset_one->dataset_id(), options);
      const std::string model_three = RunNeighbours(*three, dataset_three->dataset_id(), options);
      const std::vector<std::string> owners = items ? ItemIds(rows) : UserIds();
      const Lists lists_one = ReadLists(*one, model_one, items, owners);
      const Lists lists_three = ReadLists(*three, model_three, items, owners);
      EXPECT_EQ(lists_one, lists_three);

      SimilarityOptions core_options;
      core_options.measure = measure.core;
      core_options.k = 5;
      core_options.shrinkage = 2.5;
      core_options.min_support = 2;
      const Lists expected = CoreLists(*core, core_options, items);
      // The core merges the same partials; sums that cancel to about 1e-16 may round
      // differently, so scores are compared with a tolerance.
      for (const auto& [owner, list] : expected) {
        if (list.empty()) continue;
        ASSERT_TRUE(lists_three.count(owner) > 0) << owner;
        const auto& actual = lists_three.at(owner);
        ASSERT_EQ(actual.size(), list.size()) << owner;
        for (size_t i = 0; i < list.size(); ++i) {
          EXPECT_EQ(actual[i].first, list[i].first) << owner << " rank " << i;
          EXPECT_NEAR(actual[i].second, list[i].second, 1e-6) << owner << " rank " << i;
        }
      }
      size_t non_empty = 0;
      for (const auto& [owner, list] : lists_three) non_empty += list.empty() ? 0 : 1;
      EXPECT_GT(non_empty, owners.size() / 2);
    }
  }
}

TEST_F(SimilarityTest, RecommendationsEqualAcrossWorkerCountsAndCore) {
  TempDir dir;
  const std::vector<InteractionRow> rows = MakeRatings(23);
  const std::string path = dir.WriteFile("ratings.csv", ToCsv(rows));
  absl::StatusOr<InteractionDataset> core = BuildInteractionDataset(rows, kShards,
                                                                    DuplicateRule::kKeepLatest);
  ASSERT_TRUE(core.ok()) << core.status();
  std::unique_ptr<TestCluster> one = StartCluster(1);
  std::unique_ptr<TestCluster> three = StartCluster(3);
  ASSERT_NE(one, nullptr);
  ASSERT_NE(three, nullptr);

  struct Models {
    std::string items;
    std::string users;
  };
  auto build = [&](TestCluster& cluster) {
    absl::StatusOr<v1::Dataset> dataset = LoadInteractions(cluster, path);
    EXPECT_TRUE(dataset.ok()) << dataset.status();
    v1::NeighbourOptions options;
    options.set_k(10);
    options.set_kind(v1::NEIGHBOUR_KIND_ITEM_ITEM);
    Models models;
    models.items = RunNeighbours(cluster, dataset->dataset_id(), options);
    options.set_kind(v1::NEIGHBOUR_KIND_USER_USER);
    models.users = RunNeighbours(cluster, dataset->dataset_id(), options);
    return models;
  };
  const Models models_one = build(*one);
  const Models models_three = build(*three);

  SimilarityOptions core_options;
  core_options.k = 10;
  absl::StatusOr<std::vector<std::vector<Neighbor>>> item_lists =
      ComputeAllItemNeighbors(core->shards, core_options);
  ASSERT_TRUE(item_lists.ok()) << item_lists.status();
  std::vector<int64_t> popularity(core->dictionary.size(), 0);
  for (const InteractionMatrix& shard : core->shards) {
    const std::vector<int64_t> counts = ItemPopularity(shard);
    for (size_t i = 0; i < counts.size(); ++i) popularity[i] += counts[i];
  }

  for (v1::RecommendMethod method : {v1::RECOMMEND_METHOD_ITEM_BASED,
                                     v1::RECOMMEND_METHOD_USER_BASED,
                                     v1::RECOMMEND_METHOD_HYBRID}) {
    for (const std::string user : {"u0", "u7", "u42", "u89"}) {
      SCOPED_TRACE(absl::StrCat(v1::RecommendMethod_Name(method), " ", user));
      v1::RecommendRequest request;
      request.set_user_id(user);
      request.set_method(method);
      request.set_n(8);
      request.add_exclude_item_ids("i0");
      request.set_item_model_id(models_one.items);
      request.set_user_model_id(models_one.users);
      absl::StatusOr<v1::RecommendResponse> from_one = Recommend(*one, request);
      request.set_item_model_id(models_three.items);
      request.set_user_model_id(models_three.users);
      absl::StatusOr<v1::RecommendResponse> from_three = Recommend(*three, request);
      ASSERT_TRUE(from_one.ok()) << from_one.status();
      ASSERT_TRUE(from_three.ok()) << from_three.status();
      EXPECT_EQ(from_one->SerializeAsString(), from_three->SerializeAsString());
      EXPECT_EQ(from_three->items_size(), 8);
      for (const v1::RecommendedItem& item : from_three->items()) EXPECT_NE(item.item_id(), "i0");

      if (method != v1::RECOMMEND_METHOD_ITEM_BASED) continue;
      // The core result of the same user.
      const int shard = ShardOfUser(user, kShards);
      const InteractionMatrix& matrix = core->shards[shard];
      const int64_t row = std::lower_bound(matrix.user_ids.begin(), matrix.user_ids.end(), user) -
                          matrix.user_ids.begin();
      const UserRatings seen = RowRatings(matrix, row);
      RecommendOptions options;
      options.n = 8;
      options.excluded_items = {core->dictionary.Find("i0")};
      absl::StatusOr<RecommendationList> expected = RankRecommendations(
          ItemBasedScores(seen, *item_lists, core->dictionary.size()), seen, popularity, options);
      ASSERT_TRUE(expected.ok()) << expected.status();
      ASSERT_EQ(static_cast<int>(expected->items.size()), from_three->items_size());
      for (size_t i = 0; i < expected->items.size(); ++i) {
        EXPECT_EQ(from_three->items(i).item_id(), core->dictionary.id(expected->items[i].item));
        EXPECT_FLOAT_EQ(from_three->items(i).score(), expected->items[i].score);
      }
    }
  }

  // A hybrid weight of 0 is a weight, not "unset": HYBRID then ranks as USER_BASED.
  for (const std::string user : {"u0", "u7", "u42"}) {
    SCOPED_TRACE(user);
    v1::RecommendRequest request;
    request.set_user_id(user);
    request.set_n(8);
    request.set_item_model_id(models_three.items);
    request.set_user_model_id(models_three.users);
    request.set_method(v1::RECOMMEND_METHOD_USER_BASED);
    absl::StatusOr<v1::RecommendResponse> user_based = Recommend(*three, request);
    request.set_method(v1::RECOMMEND_METHOD_HYBRID);
    request.set_hybrid_weight(0);
    absl::StatusOr<v1::RecommendResponse> hybrid = Recommend(*three, request);
    ASSERT_TRUE(user_based.ok()) << user_based.status();
    ASSERT_TRUE(hybrid.ok()) << hybrid.status();
    ASSERT_EQ(user_based->items_size(), hybrid->items_size());
    for (int i = 0; i < hybrid->items_size(); ++i) {
      EXPECT_EQ(hybrid->items(i).item_id(), user_based->items(i).item_id()) << "rank " << i;
    }
  }
}

TEST_F(SimilarityTest, UserTiesBreakByUserIdAcrossShards) {
  // q rates a and b; each of t00..t29 rates a and b the same way plus an item z<j> of its
  // own, so every t has the same cosine with q and with each other, and the t users
  // spread over the shards.
  constexpr int kTied = 30;
  std::vector<InteractionRow> rows;
  auto add = [&rows](const std::string& user, const std::string& item, double value) {
    InteractionRow row;
    row.user_id = user;
    row.item_id = item;
    row.value = value;
    rows.push_back(row);
  };
  add("q", "a", 5);
  add("q", "b", 3);
  std::set<int> shards;
  for (int j = 0; j < kTied; ++j) {
    const std::string user = absl::StrFormat("t%02d", j);
    add(user, "a", 5);
    add(user, "b", 3);
    add(user, absl::StrFormat("z%02d", j), 4);
    shards.insert(ShardOfUser(user, kShards));
  }
  ASSERT_GE(shards.size(), 4u);
  TempDir dir;
  const std::string path = dir.WriteFile("ties.csv", ToCsv(rows));

  for (int workers : {1, 3}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    std::unique_ptr<TestCluster> cluster = StartCluster(workers);
    ASSERT_NE(cluster, nullptr);
    absl::StatusOr<v1::Dataset> dataset = LoadInteractions(*cluster, path);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    v1::NeighbourOptions options;
    options.set_kind(v1::NEIGHBOUR_KIND_USER_USER);
    options.set_measure(v1::SIMILARITY_MEASURE_COSINE);
    options.set_k(5);
    const std::string model = RunNeighbours(*cluster, dataset->dataset_id(), options);
    const Lists lists = ReadLists(*cluster, model, false, {"q", "t07", "t29"});

    // The lowest user ids among the tied users, whatever shard stores them.
    const std::vector<std::string> of_q = {"t00", "t01", "t02", "t03", "t04"};
    ASSERT_EQ(lists.at("q").size(), of_q.size());
    for (size_t i = 0; i < of_q.size(); ++i) {
      EXPECT_EQ(lists.at("q")[i].first, of_q[i]) << "rank " << i;
      EXPECT_EQ(lists.at("q")[i].second, lists.at("q")[0].second) << "rank " << i;
    }
    // For a t user, q is nearest (cosine 0.82) and the other t users tie (0.68).
    const std::vector<std::string> of_t07 = {"q", "t00", "t01", "t02", "t03"};
    const std::vector<std::string> of_t29 = {"q", "t00", "t01", "t02", "t03"};
    for (const auto& [user, expected] :
         {std::pair{std::string("t07"), of_t07}, std::pair{std::string("t29"), of_t29}}) {
      ASSERT_EQ(lists.at(user).size(), expected.size()) << user;
      for (size_t i = 0; i < expected.size(); ++i) {
        EXPECT_EQ(lists.at(user)[i].first, expected[i]) << user << " rank " << i;
      }
    }

    // User-based recommendations follow the same neighbours: each neighbour adds the
    // same score to its own z item, and equal scores rank by item id.
    v1::RecommendRequest request;
    request.set_user_id("q");
    request.set_method(v1::RECOMMEND_METHOD_USER_BASED);
    request.set_user_model_id(model);
    request.set_n(7);
    absl::StatusOr<v1::RecommendResponse> recommended = Recommend(*cluster, request);
    ASSERT_TRUE(recommended.ok()) << recommended.status();
    ASSERT_EQ(recommended->items_size(), 7);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(recommended->items(i).item_id(), absl::StrFormat("z%02d", i)) << "rank " << i;
      EXPECT_TRUE(recommended->items(i).from_neighbours()) << "rank " << i;
    }
    // The rest come from popularity (every z has one interaction), by item id.
    EXPECT_EQ(recommended->items(5).item_id(), "z05");
    EXPECT_FALSE(recommended->items(5).from_neighbours());
  }
}

TEST_F(SimilarityTest, StreamedInteractionsEqualLoadedFile) {
  TempDir dir;
  const std::vector<InteractionRow> rows = MakeRatings(5);
  const std::string path = dir.WriteFile("ratings.csv", ToCsv(rows));
  std::unique_ptr<TestCluster> cluster = StartCluster(3);
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> loaded = LoadInteractions(*cluster, path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();

  v1::CreateDatasetRequest create;
  create.set_kind(v1::DATASET_KIND_INTERACTIONS);
  create.set_num_shards(kShards);
  absl::StatusOr<v1::Dataset> streamed = cluster->CreateDataset(create);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  {
    auto context = TestCluster::Context();
    v1::IngestInteractionsResponse response;
    auto writer = cluster->stub().IngestInteractions(context.get(), &response);
    // Three messages of uneven size.
    for (size_t first = 0; first < rows.size(); first += 200) {
      v1::IngestInteractionsRequest request;
      if (first == 0) request.set_dataset_id(streamed->dataset_id());
      for (size_t i = first; i < std::min(rows.size(), first + 200); ++i) {
        v1::Interaction* out = request.add_interactions();
        out->set_user_id(rows[i].user_id);
        out->set_item_id(rows[i].item_id);
        out->set_value(rows[i].value);
      }
      ASSERT_TRUE(writer->Write(request));
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.interactions_accepted(), static_cast<int64_t>(rows.size()));
  }
  absl::StatusOr<v1::Dataset> after = cluster->GetDataset(streamed->dataset_id());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->state(), v1::DATASET_STATE_READY);
  EXPECT_EQ(after->num_users(), loaded->num_users());
  EXPECT_EQ(after->num_interactions(), loaded->num_interactions());

  v1::NeighbourOptions options;
  options.set_kind(v1::NEIGHBOUR_KIND_ITEM_ITEM);
  options.set_measure(v1::SIMILARITY_MEASURE_PEARSON);
  options.set_k(6);
  const std::string from_file = RunNeighbours(*cluster, loaded->dataset_id(), options);
  const std::string from_stream = RunNeighbours(*cluster, streamed->dataset_id(), options);
  EXPECT_EQ(ReadLists(*cluster, from_file, true, ItemIds(rows)),
            ReadLists(*cluster, from_stream, true, ItemIds(rows)));
}

TEST_F(SimilarityTest, BadInputsGetTheirStatusCodes) {
  TempDir dir;
  const std::string path = dir.WriteFile("ratings.csv", ToCsv(MakeRatings(3)));
  std::unique_ptr<TestCluster> cluster = StartCluster(2);
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = LoadInteractions(*cluster, path);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const std::string users_csv = dir.WriteFile("users.csv", "id,age\na,1\nb,2\nc,3\n");
  absl::StatusOr<v1::Dataset> users = cluster->LoadUsers(users_csv, "id");
  ASSERT_TRUE(users.ok()) << users.status();

  v1::NeighbourOptions options;
  options.set_kind(v1::NEIGHBOUR_KIND_ITEM_ITEM);
  options.set_k(5);

  v1::NeighbourOptions unknown_measure = options;
  unknown_measure.set_measure(static_cast<v1::SimilarityMeasure>(99));
  EXPECT_EQ(StartNeighbours(*cluster, dataset->dataset_id(), unknown_measure).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (int k : {0, -3, 10001}) {
    v1::NeighbourOptions bad_k = options;
    bad_k.set_k(k);
    const absl::Status status = StartNeighbours(*cluster, dataset->dataset_id(), bad_k).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << k;
    EXPECT_NE(status.message().find("options.k"), std::string::npos) << status;
  }
  for (int epochs : {0, -1, 1001}) {
    v1::NeighbourOptions bad_epochs = options;
    bad_epochs.set_baseline_epochs(epochs);
    const absl::Status status =
        StartNeighbours(*cluster, dataset->dataset_id(), bad_epochs).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << epochs;
    EXPECT_NE(status.message().find("options.baseline_epochs"), std::string::npos) << status;
  }
  for (double reg : {-0.5, std::nan(""), HUGE_VAL}) {
    v1::NeighbourOptions bad_reg = options;
    bad_reg.set_baseline_reg_item(reg);
    absl::Status status = StartNeighbours(*cluster, dataset->dataset_id(), bad_reg).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << reg;
    EXPECT_NE(status.message().find("options.baseline_reg_item"), std::string::npos) << status;
    bad_reg = options;
    bad_reg.set_baseline_reg_user(reg);
    status = StartNeighbours(*cluster, dataset->dataset_id(), bad_reg).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << reg;
    EXPECT_NE(status.message().find("options.baseline_reg_user"), std::string::npos) << status;
  }
  v1::NeighbourOptions no_kind = options;
  no_kind.clear_kind();
  EXPECT_EQ(StartNeighbours(*cluster, dataset->dataset_id(), no_kind).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StartNeighbours(*cluster, "no-such-dataset", options).status().code(),
            absl::StatusCode::kNotFound);
  // A dataset of the wrong kind: item–item needs interactions, and interactions cannot be
  // segmented or take user rows.
  EXPECT_EQ(StartNeighbours(*cluster, users->dataset_id(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::SegmentationOptions segmentation;
  segmentation.set_k(2);
  EXPECT_EQ(cluster->StartSegmentation(dataset->dataset_id(), segmentation).status().code(),
            absl::StatusCode::kFailedPrecondition);
  {
    auto context = TestCluster::Context();
    v1::IngestInteractionsResponse response;
    auto writer = cluster->stub().IngestInteractions(context.get(), &response);
    v1::IngestInteractionsRequest request;
    request.set_dataset_id(users->dataset_id());
    request.add_interactions()->set_user_id("a");
    writer->Write(request);
    writer->WritesDone();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    auto context = TestCluster::Context();
    v1::IngestInteractionsResponse response;
    auto writer = cluster->stub().IngestInteractions(context.get(), &response);
    v1::IngestInteractionsRequest request;
    request.set_dataset_id(dataset->dataset_id());
    v1::Interaction* good = request.add_interactions();
    good->set_user_id("new-user");
    good->set_item_id("i1");
    good->set_value(4);
    v1::Interaction* bad = request.add_interactions();
    bad->set_user_id("new-user");
    bad->set_value(2);
    writer->Write(request);
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("interaction 1"), std::string::npos)
        << status.error_message();
  }

  const std::string model = RunNeighbours(*cluster, dataset->dataset_id(), options);
  v1::SimilarItemsRequest similar;
  similar.set_model_id(model);
  similar.set_item_id("no-such-item");
  v1::NeighboursResponse neighbours;
  EXPECT_EQ(cluster->stub().SimilarItems(TestCluster::Context().get(), similar, &neighbours)
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
  similar.set_model_id("job-999999");
  similar.set_item_id("i1");
  EXPECT_EQ(cluster->stub().SimilarItems(TestCluster::Context().get(), similar, &neighbours)
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::SimilarUsersRequest similar_users;
  similar_users.set_model_id(model);
  similar_users.set_user_id("u1");
  EXPECT_EQ(cluster->stub().SimilarUsers(TestCluster::Context().get(), similar_users, &neighbours)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  v1::RecommendRequest recommend;
  recommend.set_item_model_id(model);
  recommend.set_n(5);
  recommend.set_user_id("no-such-user");
  EXPECT_EQ(Recommend(*cluster, recommend).status().code(), absl::StatusCode::kNotFound);
  recommend.set_user_id("u1");
  recommend.set_n(0);
  EXPECT_EQ(Recommend(*cluster, recommend).status().code(), absl::StatusCode::kInvalidArgument);
  recommend.set_n(5);
  recommend.set_method(v1::RECOMMEND_METHOD_USER_BASED);
  EXPECT_EQ(Recommend(*cluster, recommend).status().code(), absl::StatusCode::kInvalidArgument);
  recommend.set_method(v1::RECOMMEND_METHOD_ITEM_BASED);
  absl::StatusOr<v1::RecommendResponse> good = Recommend(*cluster, recommend);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->items_size(), 5);

  v1::PredictRatingRequest predict;
  predict.set_model_id(model);
  predict.set_user_id("u1");
  predict.set_item_id("no-such-item");
  v1::PredictRatingResponse predicted;
  EXPECT_EQ(cluster->stub().PredictRating(TestCluster::Context().get(), predict, &predicted)
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
  predict.set_item_id("i2");
  const grpc::Status predicted_status =
      cluster->stub().PredictRating(TestCluster::Context().get(), predict, &predicted);
  ASSERT_TRUE(predicted_status.ok()) << predicted_status.error_message();
  EXPECT_GE(predicted.rating(), 1.0);
  EXPECT_LE(predicted.rating(), 6.0);
}

TEST_F(SimilarityTest, RecommendBatchStreamsOneAnswerPerUser) {
  TempDir dir;
  const std::string path = dir.WriteFile("ratings.csv", ToCsv(MakeRatings(8)));
  std::unique_ptr<TestCluster> cluster = StartCluster(2);
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = LoadInteractions(*cluster, path);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  v1::NeighbourOptions options;
  options.set_kind(v1::NEIGHBOUR_KIND_ITEM_ITEM);
  options.set_k(10);
  const std::string model = RunNeighbours(*cluster, dataset->dataset_id(), options);

  v1::RecommendBatchRequest request;
  request.mutable_options()->set_item_model_id(model);
  request.mutable_options()->set_n(4);
  for (const char* user : {"u3", "u1", "u60"}) request.add_user_ids(user);
  auto context = TestCluster::Context();
  auto reader = cluster->stub().RecommendBatch(context.get(), request);
  std::vector<std::string> answered;
  v1::RecommendResponse response;
  while (reader->Read(&response)) {
    answered.push_back(response.user_id());
    v1::RecommendRequest one = request.options();
    one.set_user_id(response.user_id());
    absl::StatusOr<v1::RecommendResponse> single = Recommend(*cluster, one);
    ASSERT_TRUE(single.ok()) << single.status();
    EXPECT_EQ(single->SerializeAsString(), response.SerializeAsString());
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(answered, (std::vector<std::string>{"u3", "u1", "u60"}));
}

TEST_F(SimilarityTest, RecommendBatchOfHundredsEqualsSingleCalls) {
  // 600 users, so a batch spans several fetch blocks.
  std::mt19937_64 random(31);
  std::vector<InteractionRow> rows;
  for (int u = 0; u < 600; ++u) {
    std::set<int> items;
    const int count = 4 + static_cast<int>(random() % 12);
    while (static_cast<int>(items.size()) < count) {
      items.insert(static_cast<int>((random() % kItems) * (random() % kItems) / kItems));
    }
    for (int item : items) {
      InteractionRow row;
      row.user_id = absl::StrCat("u", u);
      row.item_id = absl::StrCat("i", item);
      row.value = static_cast<double>(1 + random() % 5);
      rows.push_back(row);
    }
  }
  TempDir dir;
  const std::string path = dir.WriteFile("ratings.csv", ToCsv(rows));
  std::unique_ptr<TestCluster> cluster = StartCluster(3);
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<v1::Dataset> dataset = LoadInteractions(*cluster, path);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  v1::NeighbourOptions options;
  options.set_k(10);
  options.set_kind(v1::NEIGHBOUR_KIND_ITEM_ITEM);
  const std::string item_model = RunNeighbours(*cluster, dataset->dataset_id(), options);
  options.set_kind(v1::NEIGHBOUR_KIND_USER_USER);
  const std::string user_model = RunNeighbours(*cluster, dataset->dataset_id(), options);

  // 500 users in random order, then 60 of them again.
  std::vector<std::string> users;
  for (int u = 0; u < 500; ++u) users.push_back(absl::StrCat("u", u));
  std::shuffle(users.begin(), users.end(), random);
  for (int u = 0; u < 60; ++u) users.push_back(users[(u * 7) % 500]);

  // Streams a batch and returns its responses and final status.
  auto run_batch = [&cluster](const v1::RecommendBatchRequest& request,
                              std::vector<v1::RecommendResponse>* responses) {
    auto context = TestCluster::Context();
    auto reader = cluster->stub().RecommendBatch(context.get(), request);
    v1::RecommendResponse response;
    while (reader->Read(&response)) responses->push_back(response);
    return reader->Finish();
  };

  for (v1::RecommendMethod method : {v1::RECOMMEND_METHOD_ITEM_BASED,
                                     v1::RECOMMEND_METHOD_USER_BASED,
                                     v1::RECOMMEND_METHOD_HYBRID}) {
    SCOPED_TRACE(v1::RecommendMethod_Name(method));
    v1::RecommendBatchRequest request;
    request.mutable_options()->set_method(method);
    request.mutable_options()->set_item_model_id(item_model);
    request.mutable_options()->set_user_model_id(user_model);
    request.mutable_options()->set_n(6);
    request.mutable_options()->add_exclude_item_ids("i1");
    for (const std::string& user : users) request.add_user_ids(user);
    std::vector<v1::RecommendResponse> responses;
    const grpc::Status status = run_batch(request, &responses);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(responses.size(), users.size());
    for (size_t i = 0; i < users.size(); ++i) {
      v1::RecommendRequest one = request.options();
      one.set_user_id(users[i]);
      absl::StatusOr<v1::RecommendResponse> single = Recommend(*cluster, one);
      ASSERT_TRUE(single.ok()) << single.status();
      EXPECT_EQ(responses[i].SerializeAsString(), single->SerializeAsString())
          << "position " << i << ", user " << users[i];
    }
  }

  // An unknown user ends the stream with NOT_FOUND naming it, after the responses of the
  // users before it, as Recommend would fail for it.
  v1::RecommendBatchRequest request;
  request.mutable_options()->set_item_model_id(item_model);
  request.mutable_options()->set_n(3);
  for (int i = 0; i < 300; ++i) request.add_user_ids(users[i]);
  request.add_user_ids("nobody");
  for (int i = 300; i < 400; ++i) request.add_user_ids(users[i]);
  std::vector<v1::RecommendResponse> responses;
  grpc::Status status = run_batch(request, &responses);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("user 'nobody'"), std::string::npos)
      << status.error_message();
  ASSERT_EQ(responses.size(), 300u);
  for (size_t i = 0; i < responses.size(); ++i) {
    EXPECT_EQ(responses[i].user_id(), users[i]) << "position " << i;
  }

  // Invalid options fail before any response, naming the first user.
  request.mutable_options()->set_n(0);
  responses.clear();
  status = run_batch(request, &responses);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find(absl::StrCat("user '", users[0], "'")),
            std::string::npos)
      << status.error_message();
  EXPECT_TRUE(responses.empty());
}

TEST_F(SimilarityTest, DenseUserNeighboursEqualAcrossWorkersAndCore) {
  TempDir dir;
  std::mt19937_64 random(17);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::string csv = "id,spend,visits,tenure\n";
  std::map<std::string, std::map<std::string, std::string>> users;
  for (int u = 0; u < 150; ++u) {
    const double center = (u % 3) * 4.0;
    const std::string id = absl::StrCat("c", u);
    users[id] = {{"spend", absl::StrCat(center + normal(random))},
                 {"visits", absl::StrCat(center - normal(random))},
                 {"tenure", absl::StrCat(normal(random))}};
    absl::StrAppend(&csv, id, ",", users[id]["spend"], ",", users[id]["visits"], ",",
                    users[id]["tenure"], "\n");
  }
  const std::string path = dir.WriteFile("users.csv", csv);

  std::map<int, Lists> exact;
  std::map<int, std::string> segment_models;
  for (int workers : {1, 3}) {
    std::unique_ptr<TestCluster> cluster = StartCluster(workers);
    ASSERT_NE(cluster, nullptr);
    absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(path, "id", {}, kShards);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    v1::SegmentationOptions segmentation;
    segmentation.set_k(3);
    absl::StatusOr<v1::Job> segmented = cluster->RunSegmentation(dataset->dataset_id(), segmentation);
    ASSERT_TRUE(segmented.ok()) << segmented.status();
    ASSERT_EQ(segmented->state(), v1::JOB_STATE_SUCCEEDED) << JobError(*segmented);

    v1::NeighbourOptions options;
    options.set_kind(v1::NEIGHBOUR_KIND_USER_USER);
    options.set_k(6);
    options.set_segment_model_id(segmented->model_id());
    const std::vector<std::string> ids = [&] {
      std::vector<std::string> out;
      for (const auto& [id, columns] : users) out.push_back(id);
      return out;
    }();
    const std::string exact_model = RunNeighbours(*cluster, dataset->dataset_id(), options);
    exact[workers] = ReadLists(*cluster, exact_model, false, ids);
    // Probing every segment scans every user, so it finds the exact lists. Its dot
    // products take another path than the exact search, so scores may differ in the
    // last bit.
    options.set_nprobe(3);
    const std::string all_lists = RunNeighbours(*cluster, dataset->dataset_id(), options);
    ExpectListsNear(ReadLists(*cluster, all_lists, false, ids), exact[workers], 1e-6);
    options.set_nprobe(1);
    const std::string one_list = RunNeighbours(*cluster, dataset->dataset_id(), options);
    const Lists approximate = ReadLists(*cluster, one_list, false, ids);
    EXPECT_EQ(approximate.size(), users.size());

    // Wrong kinds of options on feature vectors.
    options.set_nprobe(4);
    EXPECT_EQ(StartNeighbours(*cluster, dataset->dataset_id(), options).status().code(),
              absl::StatusCode::kInvalidArgument);
    options.set_nprobe(0);
    options.set_measure(v1::SIMILARITY_MEASURE_JACCARD);
    EXPECT_EQ(StartNeighbours(*cluster, dataset->dataset_id(), options).status().code(),
              absl::StatusCode::kInvalidArgument);

    if (workers != 1) continue;
    // The core result: every user's features from the model's transform, exact top-k.
    absl::StatusOr<v1::SegmentModel> model = cluster->GetSegmentModel(segmented->model_id());
    ASSERT_TRUE(model.ok()) << model.status();
    const FeatureTransform transform = FromProto(model->transform());
    MatrixXfR x(static_cast<Eigen::Index>(ids.size()), transform.dim());
    std::vector<int64_t> row_ids;
    for (size_t i = 0; i < ids.size(); ++i) {
      absl::StatusOr<std::vector<float>> features = TransformUser(transform, users[ids[i]]);
      ASSERT_TRUE(features.ok()) << features.status();
      for (int j = 0; j < transform.dim(); ++j) x(i, j) = (*features)[j];
      row_ids.push_back(static_cast<int64_t>(i));
    }
    const MatrixXfR prepared = PrepareDenseRows(x, DenseMetric::kCosine);
    DenseSearchOptions search;
    search.k = 6;
    absl::StatusOr<std::vector<std::vector<Neighbor>>> expected =
        ExactDenseTopK(prepared, row_ids, prepared, row_ids, search);
    ASSERT_TRUE(expected.ok()) << expected.status();
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto& actual = exact[1][ids[i]];
      ASSERT_EQ(actual.size(), (*expected)[i].size()) << ids[i];
      for (size_t r = 0; r < actual.size(); ++r) {
        EXPECT_EQ(actual[r].first, ids[(*expected)[i][r].id]) << ids[i] << " rank " << r;
        EXPECT_NEAR(actual[r].second, (*expected)[i][r].score, 1e-5) << ids[i];
      }
    }
  }
  EXPECT_EQ(exact[1], exact[3]);
}

TEST_F(SimilarityTest, ContentRecommendationsUseFeatureNeighbours) {
  TempDir dir;
  const std::vector<InteractionRow> rows = MakeRatings(41);
  const std::string ratings_path = dir.WriteFile("ratings.csv", ToCsv(rows));
  absl::StatusOr<InteractionDataset> core = BuildInteractionDataset(rows, kShards,
                                                                    DuplicateRule::kKeepLatest);
  ASSERT_TRUE(core.ok()) << core.status();
  // Features of the same users in three groups, and of "newbie", who has no interactions.
  std::mt19937_64 random(3);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::string csv = "id,spend,visits\n";
  for (int u = 0; u < kUsers; ++u) {
    const double center = (u % 3) * 4.0;
    absl::StrAppend(&csv, "u", u, ",", center + normal(random), ",", center - normal(random),
                    "\n");
  }
  absl::StrAppend(&csv, "newbie,0.5,-0.5\n");
  const std::string users_path = dir.WriteFile("users.csv", csv);
  std::vector<int64_t> popularity(core->dictionary.size(), 0);
  for (const InteractionMatrix& shard : core->shards) {
    const std::vector<int64_t> counts = ItemPopularity(shard);
    for (size_t i = 0; i < counts.size(); ++i) popularity[i] += counts[i];
  }

  std::map<int, std::vector<std::string>> results;
  for (int workers : {1, 3}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    std::unique_ptr<TestCluster> cluster = StartCluster(workers);
    ASSERT_NE(cluster, nullptr);
    absl::StatusOr<v1::Dataset> ratings = LoadInteractions(*cluster, ratings_path);
    ASSERT_TRUE(ratings.ok()) << ratings.status();
    absl::StatusOr<v1::Dataset> users = cluster->LoadUsers(users_path, "id", {}, kShards);
    ASSERT_TRUE(users.ok()) << users.status();
    v1::SegmentationOptions segmentation;
    segmentation.set_k(3);
    absl::StatusOr<v1::Job> segmented = cluster->RunSegmentation(users->dataset_id(), segmentation);
    ASSERT_TRUE(segmented.ok()) << segmented.status();
    ASSERT_EQ(segmented->state(), v1::JOB_STATE_SUCCEEDED) << JobError(*segmented);
    v1::NeighbourOptions options;
    options.set_kind(v1::NEIGHBOUR_KIND_USER_USER);
    options.set_k(5);
    options.set_segment_model_id(segmented->model_id());
    const std::string content_model = RunNeighbours(*cluster, users->dataset_id(), options);
    options.clear_segment_model_id();
    options.set_k(10);
    const std::string user_model = RunNeighbours(*cluster, ratings->dataset_id(), options);
    options.set_kind(v1::NEIGHBOUR_KIND_ITEM_ITEM);
    const std::string item_model = RunNeighbours(*cluster, ratings->dataset_id(), options);

    v1::RecommendRequest request;
    request.set_method(v1::RECOMMEND_METHOD_CONTENT);
    request.set_content_model_id(content_model);
    request.set_item_model_id(item_model);
    request.set_n(6);
    for (const std::string user : {"u0", "u7", "u42", "newbie"}) {
      SCOPED_TRACE(user);
      request.set_user_id(user);
      absl::StatusOr<v1::RecommendResponse> response = Recommend(*cluster, request);
      ASSERT_TRUE(response.ok()) << response.status();
      ASSERT_EQ(response->items_size(), 6);
      results[workers].push_back(response->SerializeAsString());

      // The same scores from the content model's neighbour lists and the core rows.
      const Lists neighbours = ReadLists(*cluster, content_model, false, {user});
      ASSERT_EQ(neighbours.at(user).size(), 5u);
      std::vector<double> scores(core->dictionary.size(), 0.0);
      for (const auto& [neighbour, similarity] : neighbours.at(user)) {
        const InteractionMatrix& shard = core->shards[ShardOfUser(neighbour, kShards)];
        const int64_t row = std::lower_bound(shard.user_ids.begin(), shard.user_ids.end(),
                                             neighbour) - shard.user_ids.begin();
        for (int64_t e = shard.row_ptr[row]; e < shard.row_ptr[row + 1]; ++e) {
          scores[shard.item_index[e]] += double{similarity} * shard.values[e];
        }
      }
      UserRatings seen;
      if (user != "newbie") {
        const InteractionMatrix& shard = core->shards[ShardOfUser(user, kShards)];
        const int64_t row = std::lower_bound(shard.user_ids.begin(), shard.user_ids.end(),
                                             user) - shard.user_ids.begin();
        seen = RowRatings(shard, row);
      }
      RecommendOptions rank;
      rank.n = 6;
      absl::StatusOr<RecommendationList> expected =
          RankRecommendations(scores, seen, popularity, rank);
      ASSERT_TRUE(expected.ok()) << expected.status();
      ASSERT_EQ(static_cast<int>(expected->items.size()), response->items_size());
      for (size_t i = 0; i < expected->items.size(); ++i) {
        EXPECT_EQ(response->items(i).item_id(), core->dictionary.id(expected->items[i].item))
            << "rank " << i;
        EXPECT_NEAR(response->items(i).score(), expected->items[i].score, 1e-5) << "rank " << i;
      }

      // HYBRID with content weight 1 ranks the scored items as CONTENT does.
      v1::RecommendRequest hybrid = request;
      hybrid.set_method(v1::RECOMMEND_METHOD_HYBRID);
      hybrid.set_user_model_id(user_model);
      hybrid.set_content_weight(1);
      absl::StatusOr<v1::RecommendResponse> mixed = Recommend(*cluster, hybrid);
      if (user == "newbie") {
        EXPECT_EQ(mixed.status().code(), absl::StatusCode::kNotFound) << mixed.status();
        continue;
      }
      ASSERT_TRUE(mixed.ok()) << mixed.status();
      ASSERT_EQ(mixed->items_size(), 6);
      for (int i = 0; i < 6; ++i) {
        EXPECT_EQ(mixed->items(i).item_id(), response->items(i).item_id()) << "rank " << i;
        EXPECT_EQ(mixed->items(i).from_neighbours(), response->items(i).from_neighbours());
      }
      hybrid.set_content_weight(0.3);
      mixed = Recommend(*cluster, hybrid);
      ASSERT_TRUE(mixed.ok()) << mixed.status();
      EXPECT_EQ(mixed->items_size(), 6);
      results[workers].push_back(mixed->SerializeAsString());
    }

    // Only CONTENT serves a user without interactions.
    request.set_user_id("newbie");
    request.set_method(v1::RECOMMEND_METHOD_ITEM_BASED);
    request.clear_content_model_id();
    EXPECT_EQ(Recommend(*cluster, request).status().code(), absl::StatusCode::kNotFound);

    if (workers != 1) continue;
    // Bad combinations of options.
    request.set_user_id("u7");
    struct BadCase {
      const char* name;
      std::function<void(v1::RecommendRequest*)> change;
    };
    const std::vector<BadCase> bad = {
        {"no content model", [](v1::RecommendRequest* r) { r->clear_content_model_id(); }},
        {"item model as content",
         [&](v1::RecommendRequest* r) { r->set_content_model_id(item_model); }},
        {"interaction user model as content",
         [&](v1::RecommendRequest* r) { r->set_content_model_id(user_model); }},
        {"no catalogue", [](v1::RecommendRequest* r) { r->clear_item_model_id(); }},
        {"content weight above 1",
         [&](v1::RecommendRequest* r) {
           r->set_method(v1::RECOMMEND_METHOD_HYBRID);
           r->set_user_model_id(user_model);
           r->set_content_weight(1.5);
         }},
        {"content weight without HYBRID", [](v1::RecommendRequest* r) { r->set_content_weight(0.5); }},
        {"HYBRID content without model",
         [&](v1::RecommendRequest* r) {
           r->set_method(v1::RECOMMEND_METHOD_HYBRID);
           r->set_user_model_id(user_model);
           r->clear_content_model_id();
           r->set_content_weight(0.5);
         }},
    };
    for (const BadCase& bad_case : bad) {
      v1::RecommendRequest changed = request;
      changed.set_method(v1::RECOMMEND_METHOD_CONTENT);
      changed.set_content_model_id(content_model);
      bad_case.change(&changed);
      EXPECT_EQ(Recommend(*cluster, changed).status().code(), absl::StatusCode::kInvalidArgument)
          << bad_case.name;
    }
  }
  EXPECT_EQ(results[1], results[3]);
}

TEST_F(SimilarityTest, DenseUserTiesBreakByUserId) {
  // d00..d29 have the same features, written in descending id order so that row order
  // differs from id order in every shard; e00..e29 spread around them.
  TempDir dir;
  std::mt19937_64 random(5);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::string csv = "id,spend,visits\n";
  for (int u = 29; u >= 0; --u) absl::StrAppend(&csv, absl::StrFormat("d%02d", u), ",3,1\n");
  for (int u = 0; u < 30; ++u) {
    absl::StrAppend(&csv, absl::StrFormat("e%02d", u), ",", normal(random), ",",
                    2 + normal(random), "\n");
  }
  const std::string path = dir.WriteFile("users.csv", csv);
  for (int workers : {1, 3}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    std::unique_ptr<TestCluster> cluster = StartCluster(workers);
    ASSERT_NE(cluster, nullptr);
    absl::StatusOr<v1::Dataset> dataset = cluster->LoadUsers(path, "id", {}, kShards);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    v1::SegmentationOptions segmentation;
    segmentation.set_k(2);
    absl::StatusOr<v1::Job> segmented =
        cluster->RunSegmentation(dataset->dataset_id(), segmentation);
    ASSERT_TRUE(segmented.ok()) << segmented.status();
    ASSERT_EQ(segmented->state(), v1::JOB_STATE_SUCCEEDED) << JobError(*segmented);
    v1::NeighbourOptions options;
    options.set_kind(v1::NEIGHBOUR_KIND_USER_USER);
    options.set_k(4);
    options.set_segment_model_id(segmented->model_id());
    for (int nprobe : {0, 2}) {
      SCOPED_TRACE(absl::StrCat("nprobe ", nprobe));
      options.set_nprobe(nprobe);
      const std::string model = RunNeighbours(*cluster, dataset->dataset_id(), options);
      const Lists lists = ReadLists(*cluster, model, false, {"d00", "d17", "d29"});
      const std::map<std::string, std::vector<std::string>> expected = {
          {"d00", {"d01", "d02", "d03", "d04"}},
          {"d17", {"d00", "d01", "d02", "d03"}},
          {"d29", {"d00", "d01", "d02", "d03"}}};
      for (const auto& [user, neighbours] : expected) {
        ASSERT_EQ(lists.at(user).size(), neighbours.size()) << user;
        for (size_t i = 0; i < neighbours.size(); ++i) {
          EXPECT_EQ(lists.at(user)[i].first, neighbours[i]) << user << " rank " << i;
        }
      }
    }
  }
}

TEST_F(SimilarityTest, LostWorkerMakesRecommendUnavailable) {
  TempDir dir;
  const std::string path = dir.WriteFile("ratings.csv", ToCsv(MakeRatings(4)));
  TestClusterOptions cluster_options;
  cluster_options.num_workers = 2;
  cluster_options.probe_interval = absl::Milliseconds(100);
  cluster_options.probe_timeout = absl::Milliseconds(200);
  absl::StatusOr<std::unique_ptr<TestCluster>> cluster = TestCluster::Start(cluster_options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  absl::StatusOr<v1::Dataset> dataset = LoadInteractions(**cluster, path);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  v1::NeighbourOptions options;
  options.set_kind(v1::NEIGHBOUR_KIND_ITEM_ITEM);
  options.set_k(5);
  const std::string model = RunNeighbours(**cluster, dataset->dataset_id(), options);

  (*cluster)->worker(1).Shutdown(absl::ZeroDuration());
  ASSERT_TRUE((*cluster)->AwaitWorkerLive("worker-1", false, absl::Seconds(30)).ok());
  v1::RecommendBatchRequest request;
  request.mutable_options()->set_item_model_id(model);
  request.mutable_options()->set_n(3);
  for (const std::string& user : UserIds()) request.add_user_ids(user);
  auto context = TestCluster::Context();
  auto reader = (*cluster)->stub().RecommendBatch(context.get(), request);
  v1::RecommendResponse response;
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(StartNeighbours(**cluster, dataset->dataset_id(), options).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(SimilarityTest, RestartedCoordinatorServesNeighbourModels) {
  TempDir dir;
  const std::vector<InteractionRow> rows = MakeRatings(9);
  const std::string path = dir.WriteFile("ratings.csv", ToCsv(rows));
  WorkerServerOptions worker_options;
  worker_options.worker_id = "worker-0";
  absl::StatusOr<std::unique_ptr<WorkerServer>> worker = WorkerServer::Start(worker_options);
  ASSERT_TRUE(worker.ok()) << worker.status();
  CoordinatorServerOptions options;
  options.state_dir = (std::filesystem::path(dir.path()) / "state").string();
  options.worker_addresses.push_back((*worker)->address());

  std::string model_id;
  Lists before;
  for (int restart = 0; restart < 2; ++restart) {
    absl::StatusOr<std::unique_ptr<CoordinatorServer>> coordinator =
        CoordinatorServer::Start(options);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    auto stub = v1::Cohort::NewStub(
        grpc::CreateChannel((*coordinator)->address(), grpc::InsecureChannelCredentials()));
    if (restart == 0) {
      v1::CreateDatasetRequest create;
      create.set_kind(v1::DATASET_KIND_INTERACTIONS);
      v1::Dataset dataset;
      ASSERT_TRUE(stub->CreateDataset(TestCluster::Context().get(), create, &dataset).ok());
      v1::LoadDatasetRequest load;
      load.set_dataset_id(dataset.dataset_id());
      load.set_source(path);
      ASSERT_TRUE(stub->LoadDataset(TestCluster::Context().get(), load, &dataset).ok());
      v1::StartNeighbourJobRequest start;
      start.set_dataset_id(dataset.dataset_id());
      start.mutable_options()->set_kind(v1::NEIGHBOUR_KIND_ITEM_ITEM);
      start.mutable_options()->set_k(4);
      v1::Job job;
      ASSERT_TRUE(stub->StartNeighbourJob(TestCluster::Context().get(), start, &job).ok());
      v1::WatchJobRequest watch;
      watch.set_job_id(job.job_id());
      auto context = TestCluster::Context();
      auto reader = stub->WatchJob(context.get(), watch);
      v1::JobEvent event;
      while (reader->Read(&event)) {
      }
      ASSERT_TRUE(reader->Finish().ok());
      ASSERT_EQ(event.state(), v1::JOB_STATE_SUCCEEDED) << event.message();
      model_id = job.job_id();
    }
    Lists lists;
    for (const std::string& item : ItemIds(rows)) {
      v1::SimilarItemsRequest request;
      request.set_model_id(model_id);
      request.set_item_id(item);
      v1::NeighboursResponse response;
      const grpc::Status status =
          stub->SimilarItems(TestCluster::Context().get(), request, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      for (const v1::Neighbour& neighbour : response.neighbours()) {
        lists[item].emplace_back(neighbour.id(), neighbour.score());
      }
    }
    if (restart == 0) {
      before = lists;
      EXPECT_FALSE(before.empty());
    } else {
      EXPECT_EQ(lists, before);
    }
    (*coordinator)->Shutdown(absl::Seconds(1));
  }
  (*worker)->Shutdown(absl::Seconds(1));

  // The state file keeps the fitted item biases, one per item.
  std::ifstream in(std::filesystem::path(options.state_dir) / "models" /
                       (model_id + ".neighbour_model.pb"),
                   std::ios::binary);
  v1::NeighbourModel stored;
  ASSERT_TRUE(in && stored.ParseFromIstream(&in));
  EXPECT_EQ(stored.item_bias_size(), static_cast<int>(ItemIds(rows).size()));
  EXPECT_TRUE(std::any_of(stored.item_bias().begin(), stored.item_bias().end(),
                          [](double bias) { return bias != 0; }));
}

}  // namespace
}  // namespace cohort
