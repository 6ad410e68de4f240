// The cohort coordinator: the public Cohort API, the worker registry and the job drivers.
#ifndef COHORT_COORDINATOR_COORDINATOR_SERVER_H_
#define COHORT_COORDINATOR_COORDINATOR_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cohort {

struct CoordinatorServerOptions {
  // host:port to listen on; port 0 picks a free port (see CoordinatorServer::address()).
  std::string listen_address = "127.0.0.1:0";
  // Workers known at start, as host:port; more may register through the Registry service.
  // Their ids are "worker-<i>" in list order.
  std::vector<std::string> worker_addresses;
  // Folder for finished models and dataset records (one protobuf file each, written
  // atomically), read back at start. Empty: both are kept in memory only.
  std::string state_dir;
  // Liveness probing of workers: one Ping per interval, each with `probe_timeout`; a
  // worker is declared lost after `probe_failures` consecutive failures.
  absl::Duration probe_interval = absl::Seconds(1);
  absl::Duration probe_timeout = absl::Seconds(2);
  int probe_failures = 3;
  // Deadline of one unary call to a worker (dataset loading can be long).
  absl::Duration worker_call_timeout = absl::Minutes(30);
  // Time a worker has to return the results of all its shards for one job step before it
  // is declared lost, so that a worker that keeps its connection but stops responding (a
  // stopped or hung process) cannot stall the job. Its shards then move as for any lost
  // worker. Must exceed the longest step on the largest shard set of one worker.
  absl::Duration step_timeout = absl::Minutes(10);

  // Errors: InvalidArgument naming the field and value.
  [[nodiscard]] absl::Status Validate() const;
};

// Thread safety: all methods may be called from any thread.
class CoordinatorServer {
 public:
  // Starts serving. Errors: InvalidArgument for bad options, Unavailable when the address
  // cannot be bound, Internal when the state folder cannot be read.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      const CoordinatorServerOptions& options);

  virtual ~CoordinatorServer() = default;

  // host:port the server is bound to.
  virtual std::string address() const = 0;
  // Cancels running jobs, stops accepting calls and waits up to `grace` for running ones.
  virtual void Shutdown(absl::Duration grace) = 0;
  // Blocks until Shutdown() has completed.
  virtual void Wait() = 0;
};

}  // namespace cohort

#endif  // COHORT_COORDINATOR_COORDINATOR_SERVER_H_
