// The workers a coordinator knows, their liveness and their stubs. Internal to
// coordinator/.
#ifndef COHORT_COORDINATOR_WORKER_REGISTRY_H_
#define COHORT_COORDINATOR_WORKER_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cohort/v1/worker.grpc.pb.h"
#include "core/log.h"

namespace cohort {

struct WorkerHandle {
  std::string worker_id;
  std::string address;
  std::shared_ptr<v1::Worker::Stub> stub;
};

// Thread safety: all methods may be called concurrently. Loss listeners run on the probe
// thread and must not call back into the registry while holding their own locks in an
// order that the registry could invert.
class WorkerRegistry {
 public:
  WorkerRegistry(absl::Duration probe_interval, absl::Duration probe_timeout, int probe_failures);
  ~WorkerRegistry();

  // Adds or updates a worker and marks it live. `instance` identifies the worker process
  // (0: unknown). A live worker registering again with the same address and the same
  // non-zero instance, as workers do every few seconds, changes nothing and logs
  // nothing. Any other registration of a known id (a new address, a new instance after
  // a restart, or a worker that probes declared lost) replaces its channel, so calls do
  // not wait for the old channel's reconnect backoff. A known non-zero instance that
  // changes is a restarted worker, whose memory is empty. For every registration that
  // is not such a repeat, the registration listeners run first, outside the registry's
  // lock and before the worker is marked live. Errors: InvalidArgument for an empty id
  // or address; AlreadyExists for a new non-zero instance at another address while the
  // known instance is live and passed its last probe.
  [[nodiscard]] absl::Status Register(const std::string& worker_id, const std::string& address,
                                      uint64_t instance = 0) ABSL_LOCKS_EXCLUDED(mutex_);

  // Live workers sorted by id.
  std::vector<WorkerHandle> LiveWorkers() const ABSL_LOCKS_EXCLUDED(mutex_);
  // Every known worker with its state, sorted by id.
  struct Info {
    WorkerHandle handle;
    bool live = false;
    int consecutive_failures = 0;
  };
  std::vector<Info> AllWorkers() const ABSL_LOCKS_EXCLUDED(mutex_);
  bool IsLive(const std::string& worker_id) const ABSL_LOCKS_EXCLUDED(mutex_);

  // Calls `listener(worker_id)` each time a worker is declared lost. Returns a token for
  // RemoveLossListener.
  int AddLossListener(std::function<void(const std::string&)> listener)
      ABSL_LOCKS_EXCLUDED(mutex_);
  void RemoveLossListener(int token) ABSL_LOCKS_EXCLUDED(mutex_);
  // Calls `listener(worker_id, instance)` for each registration that changes the
  // registry (see Register), on the registering gRPC thread. Returns a token for
  // RemoveRegistrationListener.
  using RegistrationListener = std::function<void(const std::string&, uint64_t)>;
  int AddRegistrationListener(RegistrationListener listener) ABSL_LOCKS_EXCLUDED(mutex_);
  void RemoveRegistrationListener(int token) ABSL_LOCKS_EXCLUDED(mutex_);
  // The process number of the worker's last registration; 0 when unknown.
  uint64_t Instance(const std::string& worker_id) const ABSL_LOCKS_EXCLUDED(mutex_);

  // Starts the probe thread; Stop() ends it. Both are idempotent.
  void Start() ABSL_LOCKS_EXCLUDED(mutex_);
  void Stop() ABSL_LOCKS_EXCLUDED(mutex_);

 private:
  // Failed probes of a worker that stays down are logged once per this interval.
  static constexpr absl::Duration kProbeLogInterval = absl::Minutes(1);

  struct Entry {
    WorkerHandle handle;
    uint64_t instance = 0;
    bool live = true;
    int consecutive_failures = 0;
    LogRateLimit probe_log{kProbeLogInterval};
  };

  void ProbeLoop();
  void ProbeOnce();

  const absl::Duration probe_interval_;
  const absl::Duration probe_timeout_;
  const int probe_failures_;

  mutable absl::Mutex mutex_;
  std::map<std::string, Entry> workers_ ABSL_GUARDED_BY(mutex_);
  std::map<int, std::function<void(const std::string&)>> listeners_ ABSL_GUARDED_BY(mutex_);
  std::map<int, RegistrationListener> registration_listeners_ ABSL_GUARDED_BY(mutex_);
  int next_token_ ABSL_GUARDED_BY(mutex_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread probe_thread_;
};

}  // namespace cohort

#endif  // COHORT_COORDINATOR_WORKER_REGISTRY_H_
