// Writing one streamed batch to the primary and the replica of its shards. Internal to
// coordinator/.
#ifndef COHORT_COORDINATOR_REPLICATED_WRITE_H_
#define COHORT_COORDINATOR_REPLICATED_WRITE_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/worker_registry.h"
#include "proto/convert.h"

namespace cohort {

// The part of a batch whose shards have the same primary (`owner`) and replica worker
// (`replica`, empty when the shards have none). Request is AppendRowsRequest or
// AppendInteractionsRequest.
template <typename Request, typename Response>
struct WriteGroup {
  std::string owner;
  std::string replica;
  std::vector<int> shards;  // the shards the group covers, ascending
  // Shards whose replica copy starts empty with this batch, the first after placement.
  std::vector<int> reset_replica_shards;
  Request request;
  Response stored;          // the primary's response, once it stored the rows
  bool primary_stored = false;
};

// Sends each group's request to its owner and then, with replica set, to its replica.
// `append(worker, context, request, response)` makes the call; `find_live(id, shards)`
// returns a live worker or Unavailable; `deadline` is the deadline of each call. Stops at
// the first failure. Returns Unavailable, or the worker's own error, naming the worker,
// its shards and whether the rows may be stored on the primary only; OK means every
// group is stored on its owner and on its replica when it has one.
template <typename Request, typename Response>
absl::Status WriteGroups(
    std::vector<WriteGroup<Request, Response>>* groups,
    const std::function<grpc::Status(const WorkerHandle&, grpc::ClientContext*,
                                     const Request&, Response*)>& append,
    const std::function<absl::StatusOr<WorkerHandle>(const std::string&,
                                                     const std::vector<int>&)>& find_live,
    std::chrono::system_clock::time_point deadline) {
  auto failure = [](const grpc::Status& status, const std::string& worker_id,
                    const std::string& what) {
    const bool worker_lost = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    return worker_lost ? absl::UnavailableError(absl::StrCat("worker ", worker_id, " did not store ",
                                                      what, ": ", status.error_message()))
                : FromGrpcStatus(status);
  };
  for (auto& group : *groups) {
    absl::StatusOr<WorkerHandle> owner = find_live(group.owner, group.shards);
    if (!owner.ok()) return owner.status();
    grpc::ClientContext context;
    context.set_deadline(deadline);
    const grpc::Status stored = append(*owner, &context, group.request, &group.stored);
    if (!stored.ok()) {
      const absl::Status failed = failure(stored, group.owner, "the rows");
      return absl::Status(failed.code(), absl::StrCat(failed.message(), "; retry"));
    }
    group.primary_stored = true;
  }
  for (auto& group : *groups) {
    if (group.replica.empty()) continue;
    const std::string shards = absl::StrJoin(group.shards, ",");
    absl::Status status;
    absl::StatusOr<WorkerHandle> replica = find_live(group.replica, group.shards);
    if (replica.ok()) {
      group.request.set_replica(true);
      for (int shard : group.reset_replica_shards) group.request.add_reset_shards(shard);
      grpc::ClientContext context;
      context.set_deadline(deadline);
      Response ignored;
      status = failure(append(*replica, &context, group.request, &ignored), group.replica,
                       absl::StrCat("the replica copy of shards ", shards));
    } else {
      status = replica.status();
    }
    if (!status.ok()) {
      return absl::Status(
          status.code(),
          absl::StrCat(status.message(), ". The batch is not acknowledged, and its rows of "
                       "these shards are stored on the primary worker ", group.owner,
                       " only. Retry the batch: the rows that reach a worker twice then "
                       "follow the dataset's duplicate rule"));
    }
  }
  return absl::OkStatus();
}

}  // namespace cohort

#endif  // COHORT_COORDINATOR_REPLICATED_WRITE_H_
