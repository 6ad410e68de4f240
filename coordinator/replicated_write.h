// Writing one streamed batch to the primary and the replica workers of its shards.
// Internal to coordinator/.
#ifndef COHORT_COORDINATOR_REPLICATED_WRITE_H_
#define COHORT_COORDINATOR_REPLICATED_WRITE_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/replicas.h"
#include "coordinator/worker_registry.h"
#include "proto/convert.h"

namespace cohort {

// The part of a batch that goes to one worker in one call. Request is AppendRowsRequest
// or AppendInteractionsRequest, Response the matching response.
template <typename Request, typename Response>
struct WriteGroup {
  std::string worker_id;
  // For a primary group: whether its shards have a replica. A primary worker gets up to
  // two groups, so rows without a replica are counted apart.
  bool replicated = false;
  std::vector<int> shards;  // the shards of the rows, ascending after FinishGroups
  Request request;
  Response stored;  // the worker's response once `written`
  bool written = false;
};

template <typename Request, typename Response>
using AppendCall = std::function<grpc::Status(const WorkerHandle&, grpc::ClientContext*,
                                              const Request&, Response*)>;
using FindLiveWorker =
    std::function<absl::StatusOr<WorkerHandle>(const std::string&, const std::vector<int>&)>;

namespace replicated_write_internal {

// Sends every group's request to its worker, one thread per group, and returns the first
// failure in group order. `what` names the stored data in the message.
template <typename Request, typename Response>
absl::Status SendAll(std::vector<WriteGroup<Request, Response>>* groups,
                     const AppendCall<Request, Response>& append, const FindLiveWorker& find_live,
                     std::chrono::system_clock::time_point deadline, const std::string& what) {
  std::vector<WorkerHandle> workers;
  for (auto& group : *groups) {
    absl::StatusOr<WorkerHandle> worker = find_live(group.worker_id, group.shards);
    if (!worker.ok()) return worker.status();
    workers.push_back(*std::move(worker));
  }
  std::vector<grpc::Status> statuses(groups->size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < groups->size(); ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext context;
      context.set_deadline(deadline);
      auto& group = (*groups)[i];
      statuses[i] = append(workers[i], &context, group.request, &group.stored);
      group.written = statuses[i].ok();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (size_t i = 0; i < groups->size(); ++i) {
    const grpc::Status& status = statuses[i];
    if (status.ok()) continue;
    const bool worker_lost = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                             status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!worker_lost) return FromGrpcStatus(status);
    return absl::UnavailableError(absl::StrCat(
        "worker ", (*groups)[i].worker_id, " did not store ", what, " of shards ",
        absl::StrJoin((*groups)[i].shards, ","), ": ", status.error_message()));
  }
  return absl::OkStatus();
}

}  // namespace replicated_write_internal

// Sorts and deduplicates the shard list of every group and returns the groups in worker
// order.
template <typename Request, typename Response, typename Key>
std::vector<WriteGroup<Request, Response>> FinishGroups(
    std::map<Key, WriteGroup<Request, Response>>* by_key) {
  std::vector<WriteGroup<Request, Response>> groups;
  for (auto& [key, group] : *by_key) {
    std::sort(group.shards.begin(), group.shards.end());
    group.shards.erase(std::unique(group.shards.begin(), group.shards.end()),
                       group.shards.end());
    groups.push_back(std::move(group));
  }
  return groups;
}

// Splits a batch into one group per primary worker (two when some of its shards have no
// replica) and one per replica worker. `rows` are (shard, row) pairs, and
// `add_row(request, shard, row)` appends a row to a request. After `placed` (the first
// batch of a dataset) every owner gets a group, even without rows, and every replica
// copy is reset to empty.
template <typename Request, typename Response, typename Row, typename AddRow>
void GroupBatch(const StreamedPlacement& placement, bool placed,
                const std::vector<std::pair<int, const Row*>>& rows, const AddRow& add_row,
                std::vector<WriteGroup<Request, Response>>* primaries,
                std::vector<WriteGroup<Request, Response>>* replicas) {
  using Group = WriteGroup<Request, Response>;
  std::map<std::pair<std::string, bool>, Group> by_primary;
  std::map<std::string, Group> by_replica;
  auto replica_of = [&](int shard) {
    return placement.replicas.empty() ? std::string() : placement.replicas[shard];
  };
  auto primary_group = [&](int shard) -> Group& {
    const bool replicated = !replica_of(shard).empty();
    Group& group = by_primary[{placement.owners[shard], replicated}];
    group.worker_id = placement.owners[shard];
    group.replicated = replicated;
    group.shards.push_back(shard);
    return group;
  };
  auto replica_group = [&](int shard) -> Group* {
    const std::string replica = replica_of(shard);
    if (replica.empty()) return nullptr;
    Group& group = by_replica[replica];
    group.worker_id = replica;
    group.request.set_replica(true);
    group.shards.push_back(shard);
    return &group;
  };
  if (placed) {
    for (int shard = 0; shard < static_cast<int>(placement.owners.size()); ++shard) {
      primary_group(shard);
      if (Group* copy = replica_group(shard)) copy->request.add_reset_shards(shard);
    }
  }
  for (const auto& [shard, row] : rows) {
    add_row(&primary_group(shard).request, shard, *row);
    if (Group* copy = replica_group(shard)) add_row(&copy->request, shard, *row);
  }
  *primaries = FinishGroups(&by_primary);
  *replicas = FinishGroups(&by_replica);
}

// Writes a batch: every primary group in parallel, then, once all of them stored their
// rows, every replica group in parallel. `find_live(id, shards)` returns a live worker
// or Unavailable. OK means every row is stored on its primary and on its replica when
// it has one. Errors: the first failure, Unavailable naming the worker and its shards
// when a worker is lost or times out, else the worker's own error. When a replica fails,
// the message states that the batch is not acknowledged although its primaries stored it.
template <typename Request, typename Response>
absl::Status WriteReplicated(std::vector<WriteGroup<Request, Response>>* primaries,
                             std::vector<WriteGroup<Request, Response>>* replicas,
                             const AppendCall<Request, Response>& append,
                             const FindLiveWorker& find_live,
                             std::chrono::system_clock::time_point deadline) {
  const absl::Status primary = replicated_write_internal::SendAll(
      primaries, append, find_live, deadline, std::string("the rows"));
  if (!primary.ok()) {
    return absl::Status(primary.code(), absl::StrCat(primary.message(), "; retry"));
  }
  const absl::Status replica = replicated_write_internal::SendAll(
      replicas, append, find_live, deadline, std::string("the replica copy"));
  if (!replica.ok()) {
    return absl::Status(
        replica.code(),
        absl::StrCat(replica.message(), ". The batch is not acknowledged, although the "
                     "primary workers of those shards stored its rows. Retry the batch: the "
                     "rows that reach a worker twice then follow the dataset's duplicate "
                     "rule"));
  }
  return absl::OkStatus();
}

}  // namespace cohort

#endif  // COHORT_COORDINATOR_REPLICATED_WRITE_H_
