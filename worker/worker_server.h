// A cohort worker: hosts virtual shards of datasets in memory and answers the
// coordinator's job commands with one partial result per shard.
#ifndef COHORT_WORKER_WORKER_SERVER_H_
#define COHORT_WORKER_WORKER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cohort {

struct WorkerServerOptions {
  // host:port to listen on; port 0 picks a free port (see WorkerServer::address()).
  std::string listen_address = "127.0.0.1:0";
  // Unique id of this worker. Empty: "worker-<port>".
  std::string worker_id;
  // Coordinator to register with (host:port). Empty: the coordinator's --workers list
  // names this worker.
  std::string coordinator_address;
  // The address the coordinator should dial; empty means the listen address with the
  // bound port.
  std::string advertise_address;
  // How long registration keeps retrying before Start() fails.
  absl::Duration register_timeout = absl::Seconds(30);
  // Pause between the registrations that follow the first one. A worker keeps
  // registering while it runs, so a coordinator that restarted learns it again within
  // this time. Must be positive.
  absl::Duration register_interval = absl::Seconds(5);

  // Errors: InvalidArgument naming the field and value.
  [[nodiscard]] absl::Status Validate() const;
};

// Thread safety: all methods may be called from any thread.
class WorkerServer {
 public:
  // Starts serving. Errors: InvalidArgument for bad options, Unavailable when the address
  // cannot be bound or the coordinator does not accept the registration in time.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<WorkerServer>> Start(
      const WorkerServerOptions& options);

  virtual ~WorkerServer() = default;

  // host:port the server is bound to.
  virtual std::string address() const = 0;
  virtual const std::string& worker_id() const = 0;
  // Stops registering, stops accepting calls and waits up to `grace` for running ones to
  // end.
  virtual void Shutdown(absl::Duration grace) = 0;
  // Blocks until Shutdown() has completed.
  virtual void Wait() = 0;
};

}  // namespace cohort

#endif  // COHORT_WORKER_WORKER_SERVER_H_
