#include "coordinator/shard_moves.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/placement.h"
#include "core/log.h"
#include "proto/convert.h"

namespace cohort {

absl::StatusOr<std::vector<JobStreams::Member>> MoveShards(
    const ShardSource& source, const std::vector<WorkerHandle>& live,
    const std::vector<std::string>& lost, const std::vector<int>& shards,
    absl::Duration call_timeout) {
  const v1::Dataset& info = source.info;
  if (source.load.source().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "dataset '", info.dataset_id(), "' was filled by streamed rows, which move by "
        "promoting their replicas, not by loading files"));
  }
  std::vector<WorkerHandle> hosts;
  for (const WorkerHandle& worker : live) {
    if (std::find(lost.begin(), lost.end(), worker.worker_id) == lost.end()) {
      hosts.push_back(worker);
    }
  }
  if (hosts.empty()) {
    return absl::UnavailableError("no live worker is left to take the shards; start workers "
                                  "and rerun the job");
  }
  std::vector<std::string> ids;
  for (const WorkerHandle& worker : hosts) ids.push_back(worker.worker_id);
  const std::vector<int> owners = PlaceShards(info.num_shards(), ids);
  std::map<int, JobStreams::Member> by_host;  // host index → member
  for (int shard : shards) {
    JobStreams::Member& member = by_host[owners[shard]];
    member.worker = hosts[owners[shard]];
    member.shards.push_back(shard);
  }

  struct Call {
    JobStreams::Member* member;
    v1::LoadShardsRequest request;
    v1::LoadShardsResponse response;
    grpc::Status status;
  };
  std::vector<Call> calls;
  for (auto& [index, member] : by_host) {
    std::sort(member.shards.begin(), member.shards.end());
    Call call;
    call.member = &member;
    call.request.set_dataset_id(info.dataset_id());
    call.request.set_kind(info.kind());
    *call.request.mutable_schema() = info.schema();
    call.request.set_source(source.load.source());
    *call.request.mutable_csv() = source.load.csv();
    *call.request.mutable_transactions() = source.load.transactions();
    *call.request.mutable_interactions() = source.load.interactions();
    call.request.set_duplicate_rule(info.duplicate_rule());
    call.request.set_num_shards(info.num_shards());
    for (int shard : member.shards) call.request.add_shards(shard);
    call.request.set_keep_held_shards(true);
    call.request.set_duplicate_ids(info.duplicate_ids());
    call.request.set_unparsable_cells(source.load.unparsable_cells());
    calls.push_back(std::move(call));
  }
  std::vector<std::thread> threads;
  for (Call& call : calls) {
    threads.emplace_back([&call, call_timeout] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           absl::ToChronoNanoseconds(call_timeout));
      call.status = call.member->worker.stub->LoadShards(&context, call.request, &call.response);
    });
  }
  for (std::thread& thread : threads) thread.join();

  std::vector<JobStreams::Member> members;
  for (const Call& call : calls) {
    const WorkerHandle& worker = call.member->worker;
    if (!call.status.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "worker ", worker.worker_id, " could not load moved shards ",
          absl::StrJoin(call.member->shards, ","), ": ", call.status.error_message()));
    }
    for (const v1::ShardRows& rows : call.response.shards()) {
      const int shard = rows.shard_id();
      if (shard >= 0 && shard < static_cast<int>(source.shard_rows.size()) &&
          rows.rows() != source.shard_rows[shard]) {
        return absl::FailedPreconditionError(absl::StrCat(
            "shard ", shard, " of dataset '", info.dataset_id(), "' has ", rows.rows(),
            " rows when reloaded from ", source.load.source(), " but had ",
            source.shard_rows[shard], " at load time; the source changed, so load it into a "
            "new dataset and rerun the job"));
      }
    }
    COHORT_LOG_WARN("dataset {}: shards {} moved to worker {}", info.dataset_id(),
                    absl::StrJoin(call.member->shards, ","), worker.worker_id);
    members.push_back(*call.member);
  }
  return members;
}

}  // namespace cohort
