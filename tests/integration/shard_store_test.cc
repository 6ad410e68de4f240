// A worker's stored job labels read their user ids from the hosted shard instead of
// keeping a copy. These tests replace, empty and promote that shard, and reload the
// dataset, after a job stored its labels, and check that the labels still give the
// job's ids, and that the replaced rows are not kept alive.
#include "worker/shard_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/schema.h"
#include "core/shard_hash.h"
#include "proto/convert.h"
#include "tests/integration/test_cluster.h"

namespace cohort::testing {
namespace {

constexpr char kDataset[] = "users";
constexpr int kShard = 3;
constexpr int kNumShards = 8;

Schema TwoColumnSchema() {
  Schema schema;
  schema.columns = {{"user_id", ColumnType::kId}, {"x", ColumnType::kNumeric}};
  return schema;
}

// Rows `prefix`0 .. `prefix`(n-1), all in shard kShard, appended to the hosted copy or,
// with `replica`, to the replica copy; `reset` empties that copy first.
v1::AppendRowsRequest Rows(const std::string& prefix, int n, bool replica = false,
                           bool reset = false) {
  v1::AppendRowsRequest request;
  request.set_dataset_id(kDataset);
  ToProto(TwoColumnSchema(), request.mutable_schema());
  request.set_num_shards(kNumShards);
  request.set_replica(replica);
  if (reset) request.add_reset_shards(kShard);
  for (int i = 0; i < n; ++i) {
    request.add_shard_ids(kShard);
    v1::UserRow* row = request.add_rows();
    row->add_cells(absl::StrCat(prefix, i));
    row->add_cells(absl::StrCat(i));
  }
  return request;
}

void Append(ShardStore& store, const v1::AppendRowsRequest& request) {
  v1::AppendRowsResponse response;
  const absl::Status status = store.Append(request, &response);
  ASSERT_TRUE(status.ok()) << status;
}

// Loads `shards` of `path` into the store's dataset; `keep_held` keeps the other shards
// the store holds, as when shards move here from a lost worker.
absl::Status LoadFile(ShardStore& store, const std::string& path, const std::vector<int>& shards,
                      bool keep_held) {
  v1::LoadShardsRequest load;
  load.set_dataset_id(kDataset);
  load.set_kind(v1::DATASET_KIND_USERS);
  ToProto(TwoColumnSchema(), load.mutable_schema());
  load.set_source(path);
  load.set_num_shards(kNumShards);
  for (int shard : shards) load.add_shards(shard);
  load.set_keep_held_shards(keep_held);
  v1::LoadShardsResponse loaded;
  return store.Load(load, &loaded);
}

std::vector<std::string> Ids(const ShardAssignments& assignments) {
  std::vector<std::string> ids;
  const absl::Status status = assignments.ReadIds(
      0, assignments.size(), [&ids](int64_t, std::string_view id) { ids.emplace_back(id); });
  EXPECT_TRUE(status.ok()) << status;
  return ids;
}

std::vector<std::string> Names(const std::string& prefix, int n) {
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(absl::StrCat(prefix, i));
  return names;
}

class ShardStoreTest : public ::testing::Test {
 protected:
  // Stores the labels of a job that read the first `n` rows of the hosted shard.
  std::shared_ptr<const ShardAssignments> StoreJob(const std::string& job_id, int n) {
    absl::StatusOr<std::shared_ptr<HostedDataset>> dataset = store_.Dataset(kDataset);
    EXPECT_TRUE(dataset.ok()) << dataset.status();
    if (!dataset.ok()) return nullptr;
    absl::ReaderMutexLock lock(&(*dataset)->mutex);
    return store_.StoreAssignments(
        job_id, kShard,
        std::make_unique<ShardAssignments>(*dataset, kShard, std::vector<int32_t>(n, 1),
                                           std::vector<float>(n, 0.5f)));
  }

  ShardStore store_;
};

TEST_F(ShardStoreTest, StoredLabelsReadShardIds) {
  Append(store_, Rows("u", 5));
  std::shared_ptr<const ShardAssignments> job = StoreJob("job", 5);
  ASSERT_NE(job, nullptr);
  EXPECT_TRUE(job->reads_hosted_ids());
  EXPECT_EQ(Ids(*job), Names("u", 5));
}

TEST_F(ShardStoreTest, RowsAppendedAfterTheJobLeaveItsIds) {
  Append(store_, Rows("u", 5));
  std::shared_ptr<const ShardAssignments> job = StoreJob("job", 5);
  ASSERT_NE(job, nullptr);
  Append(store_, Rows("later", 3));
  EXPECT_TRUE(job->reads_hosted_ids());
  EXPECT_EQ(Ids(*job), Names("u", 5));
}

TEST_F(ShardStoreTest, ResetShardCopiesTheJobsIdsFirst) {
  Append(store_, Rows("u", 5));
  std::shared_ptr<const ShardAssignments> job = StoreJob("job", 5);
  ASSERT_NE(job, nullptr);
  Append(store_, Rows("new", 2, /*replica=*/false, /*reset=*/true));
  EXPECT_FALSE(job->reads_hosted_ids());
  EXPECT_EQ(Ids(*job), Names("u", 5));
}

TEST_F(ShardStoreTest, ResetOfReplicaCopyLeavesHostedIds) {
  Append(store_, Rows("u", 5));
  std::shared_ptr<const ShardAssignments> job = StoreJob("job", 5);
  ASSERT_NE(job, nullptr);
  Append(store_, Rows("r", 2, /*replica=*/true, /*reset=*/true));
  EXPECT_TRUE(job->reads_hosted_ids());
  EXPECT_EQ(Ids(*job), Names("u", 5));
}

TEST_F(ShardStoreTest, PromotedReplicaCopiesTheJobsIdsFirst) {
  Append(store_, Rows("u", 5));
  Append(store_, Rows("r", 4, /*replica=*/true));
  std::shared_ptr<const ShardAssignments> job = StoreJob("job", 5);
  ASSERT_NE(job, nullptr);
  v1::PromoteReplicasRequest promote;
  promote.set_dataset_id(kDataset);
  promote.add_shards(kShard);
  v1::PromoteReplicasResponse promoted;
  ASSERT_TRUE(store_.PromoteReplicas(promote, &promoted).ok());
  EXPECT_FALSE(job->reads_hosted_ids());
  EXPECT_EQ(Ids(*job), Names("u", 5));
}

TEST_F(ShardStoreTest, ReloadCopiesIdsAndFreesTheOldRows) {
  Append(store_, Rows("u", 5));
  std::shared_ptr<const ShardAssignments> job = StoreJob("job", 5);
  ASSERT_NE(job, nullptr);
  std::weak_ptr<HostedDataset> old_rows;
  {
    absl::StatusOr<std::shared_ptr<HostedDataset>> dataset = store_.Dataset(kDataset);
    ASSERT_TRUE(dataset.ok());
    old_rows = *dataset;
  }

  TempDir temp;
  const std::string path = temp.path() + "/users.csv";
  {
    std::ofstream out(path);
    out << "user_id,x\n";
    for (int i = 0; i < 40; ++i) out << "file" << i << "," << i << "\n";
  }
  std::vector<int> all_shards;
  for (int shard = 0; shard < kNumShards; ++shard) all_shards.push_back(shard);
  const absl::Status status = LoadFile(store_, path, all_shards, /*keep_held=*/false);
  ASSERT_TRUE(status.ok()) << status;

  EXPECT_FALSE(job->reads_hosted_ids());
  EXPECT_TRUE(old_rows.expired());
  EXPECT_EQ(Ids(*job), Names("u", 5));
}

TEST_F(ShardStoreTest, LabelsOfReplacedDatasetAreCopiedWhenStored) {
  Append(store_, Rows("u", 5));
  // A job still reading a dataset that a reload replaced stores its labels after the
  // reload: the reload did not see them, so storing copies their ids at once.
  auto stale = std::make_shared<HostedDataset>();
  std::shared_ptr<const ShardAssignments> job;
  {
    absl::MutexLock lock(&stale->mutex);
    stale->schema = TwoColumnSchema();
    RawShard rows = MakeEmptyShard(TwoColumnSchema(), kShard);
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(AppendUserRow(TwoColumnSchema(), {absl::StrCat("s", i), "1"}, &rows).ok());
    }
    stale->shards.emplace(kShard, std::move(rows));
    job = store_.StoreAssignments(
        "job", kShard,
        std::make_unique<ShardAssignments>(stale, kShard, std::vector<int32_t>(2, 0),
                                           std::vector<float>(2, 1.0f)));
  }
  EXPECT_FALSE(job->reads_hosted_ids());
  EXPECT_EQ(Ids(*job), Names("s", 2));
}


TEST_F(ShardStoreTest, AppendAfterShardLoadChecksItsIds) {
  // Streamed rows build the shard's id set. A load that moves the shard here again from
  // the files replaces its rows, so appends must then check the loaded ids.
  Append(store_, Rows("u", 5));
  TempDir temp;
  const std::string path = temp.path() + "/users.csv";
  std::vector<std::string> file_ids;
  {
    std::ofstream out(path);
    out << "user_id,x\n";
    for (int i = 0; file_ids.size() < 3; ++i) {
      const std::string id = absl::StrCat("file", i);
      if (ShardOfUser(id, kNumShards) != kShard) continue;
      file_ids.push_back(id);
      out << id << "," << i << "\n";
    }
  }
  const absl::Status status = LoadFile(store_, path, {kShard}, /*keep_held=*/true);
  ASSERT_TRUE(status.ok()) << status;

  v1::AppendRowsRequest again = Rows("unused", 0);
  again.add_shard_ids(kShard);
  v1::UserRow* row = again.add_rows();
  row->add_cells(file_ids[1]);
  row->add_cells("1");
  v1::AppendRowsResponse response;
  const absl::Status appended = store_.Append(again, &response);
  EXPECT_EQ(appended.code(), absl::StatusCode::kInvalidArgument) << appended;
  // An id of the replaced rows is free again.
  Append(store_, Rows("u", 1));
}


TEST_F(ShardStoreTest, JobIdsStableUnderConcurrentChanges) {
  // Readers of a job's ids run while other threads append rows, store more jobs, promote
  // replica copies over the shard and reload the dataset, each of which may copy the
  // ids. Every read gives the job's ids.
  Append(store_, Rows("u", 200));
  std::shared_ptr<const ShardAssignments> job = StoreJob("job", 200);
  ASSERT_NE(job, nullptr);

  TempDir temp;
  const std::string path = temp.path() + "/users.csv";
  {
    std::ofstream out(path);
    out << "user_id,x\n";
    for (int i = 0; i < 300; ++i) out << "file" << i << "," << i << "\n";
  }

  constexpr int kRounds = 40;
  std::atomic<int> bad_reads{0};
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    for (int round = 0; round < kRounds; ++round) {
      if (Ids(*job) != Names("u", 200)) ++bad_reads;
    }
  });
  threads.emplace_back([&] {
    for (int round = 0; round < kRounds; ++round) {
      v1::AppendRowsResponse response;
      (void)store_.Append(Rows(absl::StrCat("a", round, "_"), 20), &response);
      (void)store_.Append(Rows(absl::StrCat("r", round, "_"), 20, /*replica=*/true), &response);
    }
  });
  threads.emplace_back([&] {
    for (int round = 0; round < kRounds; ++round) {
      if (round % 4 == 0) {
        v1::PromoteReplicasRequest promote;
        promote.set_dataset_id(kDataset);
        promote.add_shards(kShard);
        v1::PromoteReplicasResponse promoted;
        (void)store_.PromoteReplicas(promote, &promoted);
      } else if (round % 4 == 2) {
        const absl::Status status = LoadFile(store_, path, {kShard}, round % 8 == 2);
        EXPECT_TRUE(status.ok()) << status;
      } else {
        absl::StatusOr<std::shared_ptr<HostedDataset>> dataset = store_.Dataset(kDataset);
        if (!dataset.ok()) continue;
        absl::ReaderMutexLock lock(&(*dataset)->mutex);
        auto it = (*dataset)->shards.find(kShard);
        const int64_t n = it == (*dataset)->shards.end() ? 0 : it->second.num_rows();
        store_.StoreAssignments(
            absl::StrCat("job", round), kShard,
            std::make_unique<ShardAssignments>(*dataset, kShard, std::vector<int32_t>(n, 0),
                                               std::vector<float>(n, 0.0f)));
      }
    }
  });
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(bad_reads.load(), 0);
  EXPECT_EQ(Ids(*job), Names("u", 200));
  // The jobs stored meanwhile read all their ids, from the shard or from a copy.
  for (int round = 1; round < kRounds; round += 2) {
    absl::StatusOr<std::shared_ptr<const ShardAssignments>> other =
        store_.FindAssignments(absl::StrCat("job", round), kShard);
    ASSERT_TRUE(other.ok()) << other.status();
    EXPECT_EQ(static_cast<int64_t>(Ids(**other).size()), (*other)->size());
  }
}

}  // namespace
}  // namespace cohort::testing
