#include "coordinator/worker_registry.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/log.h"

namespace cohort {
namespace {

// Matches the worker's own limit.
constexpr int kMaxMessageBytes = 256 << 20;

std::shared_ptr<v1::Worker::Stub> MakeStub(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  auto channel =
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  return std::shared_ptr<v1::Worker::Stub>(v1::Worker::NewStub(channel));
}

}  // namespace

WorkerRegistry::WorkerRegistry(absl::Duration probe_interval, absl::Duration probe_timeout,
                               int probe_failures)
    : probe_interval_(probe_interval),
      probe_timeout_(probe_timeout),
      probe_failures_(probe_failures) {}

WorkerRegistry::~WorkerRegistry() { Stop(); }

absl::Status WorkerRegistry::Register(const std::string& worker_id, const std::string& address,
                                      uint64_t instance) {
  if (worker_id.empty() || address.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("worker registration needs an id and an address; got id '",
                                                   worker_id, "' and address '", address, "'"));
  }
  std::vector<RegistrationListener> to_notify;
  {
    absl::MutexLock lock(&mutex_);
    auto known = workers_.find(worker_id);
    if (known != workers_.end() && known->second.live &&
        known->second.handle.address == address && instance != 0 &&
        known->second.instance == instance) {
      return absl::OkStatus();
    }
    // Another process at another address while the known one still passes probes: two
    // workers share the id. Accepting both would swap the id between them at every
    // registration, each time as a restart that loses the shards. A restarted worker at
    // a new address is accepted once its old process fails a probe.
    if (known != workers_.end() && known->second.live &&
        known->second.consecutive_failures == 0 && known->second.handle.address != address &&
        instance != 0 && known->second.instance != 0 && known->second.instance != instance) {
      COHORT_LOG_WARN("registration of worker {} at {} rejected: the id is in use by the live "
                      "worker at {}",
                      worker_id, address, known->second.handle.address);
      return absl::AlreadyExistsError(absl::StrCat(
          "worker id '", worker_id, "' is in use by the live worker at ",
          known->second.handle.address,
          "; give each worker its own --id (a restarted worker at a new address is accepted "
          "once its old process fails a probe)"));
    }
    for (const auto& [token, listener] : registration_listeners_) to_notify.push_back(listener);
  }
  // The listeners run before the worker is marked live, so no job can reach a restarted
  // worker before the service has marked its shards as gone.
  for (const auto& listener : to_notify) listener(worker_id, instance);

  absl::MutexLock lock(&mutex_);
  // One process, one id. A worker listed by address in --workers that also registers
  // under its own id would otherwise host shards twice, and its second load would
  // replace the first.
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->first != worker_id && it->second.handle.address == address) {
      COHORT_LOG_WARN("worker {} at {} re-registered as {}; the old id is dropped", it->first,
                      address, worker_id);
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  auto known = workers_.find(worker_id);
  if (known == workers_.end()) {
    COHORT_LOG_INFO("worker {} registered at {} ({} known)", worker_id, address,
                    workers_.size() + 1);
  } else if (known->second.instance != 0 && instance != 0 &&
             instance != known->second.instance) {
    COHORT_LOG_INFO("worker {} restarted, now at {}: its process is new, so the shards it "
                    "held are gone from its memory; marked live",
                    worker_id, address);
  } else if (known->second.handle.address != address) {
    COHORT_LOG_INFO("worker {} moved from {} to {}; marked live", worker_id,
                    known->second.handle.address, address);
  } else {
    COHORT_LOG_INFO("worker {} at {} registered again; marked live", worker_id, address);
  }
  Entry& entry = workers_[worker_id];
  // A new channel every time: a restarted worker at the same address would otherwise
  // wait for the old channel's reconnect backoff.
  entry.handle = WorkerHandle{worker_id, address, MakeStub(address)};
  entry.instance = instance;
  entry.live = true;
  entry.consecutive_failures = 0;
  entry.probe_log.Reset();
  return absl::OkStatus();
}

std::vector<WorkerHandle> WorkerRegistry::LiveWorkers() const {
  absl::MutexLock lock(&mutex_);
  std::vector<WorkerHandle> live;
  for (const auto& [id, entry] : workers_) {
    if (entry.live) live.push_back(entry.handle);
  }
  return live;
}

std::vector<WorkerRegistry::Info> WorkerRegistry::AllWorkers() const {
  absl::MutexLock lock(&mutex_);
  std::vector<Info> all;
  for (const auto& [id, entry] : workers_) {
    all.push_back(Info{entry.handle, entry.live, entry.consecutive_failures});
  }
  return all;
}

bool WorkerRegistry::IsLive(const std::string& worker_id) const {
  absl::MutexLock lock(&mutex_);
  auto it = workers_.find(worker_id);
  return it != workers_.end() && it->second.live;
}

int WorkerRegistry::AddLossListener(std::function<void(const std::string&)> listener) {
  absl::MutexLock lock(&mutex_);
  const int token = next_token_++;
  listeners_[token] = std::move(listener);
  return token;
}

void WorkerRegistry::RemoveLossListener(int token) {
  absl::MutexLock lock(&mutex_);
  listeners_.erase(token);
}

int WorkerRegistry::AddRegistrationListener(RegistrationListener listener) {
  absl::MutexLock lock(&mutex_);
  const int token = next_token_++;
  registration_listeners_[token] = std::move(listener);
  return token;
}

void WorkerRegistry::RemoveRegistrationListener(int token) {
  absl::MutexLock lock(&mutex_);
  registration_listeners_.erase(token);
}

uint64_t WorkerRegistry::Instance(const std::string& worker_id) const {
  absl::MutexLock lock(&mutex_);
  auto it = workers_.find(worker_id);
  return it == workers_.end() ? 0 : it->second.instance;
}

void WorkerRegistry::Start() {
  absl::MutexLock lock(&mutex_);
  if (probe_thread_.joinable() || stopping_) return;
  probe_thread_ = std::thread([this] { ProbeLoop(); });
}

void WorkerRegistry::Stop() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  if (probe_thread_.joinable()) probe_thread_.join();
}

void WorkerRegistry::ProbeLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      auto stop_requested = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return stopping_; };
      if (mutex_.AwaitWithTimeout(absl::Condition(&stop_requested), probe_interval_)) return;
    }
    ProbeOnce();
  }
}

void WorkerRegistry::ProbeOnce() {
  std::vector<WorkerHandle> targets;
  {
    absl::MutexLock lock(&mutex_);
    for (const auto& [id, entry] : workers_) targets.push_back(entry.handle);
  }
  for (const WorkerHandle& target : targets) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoNanoseconds(probe_timeout_));
    v1::PingRequest request;
    v1::PingResponse response;
    const grpc::Status status = target.stub->Ping(&context, request, &response);

    std::vector<std::function<void(const std::string&)>> to_notify;
    {
      absl::MutexLock lock(&mutex_);
      auto it = workers_.find(target.worker_id);
      if (it == workers_.end() || it->second.handle.stub != target.stub) continue;
      Entry& entry = it->second;
      if (status.ok()) {
        if (!entry.live) {
          COHORT_LOG_INFO("worker {} at {} answers again; marked live", target.worker_id,
                          target.address);
        }
        entry.live = true;
        entry.consecutive_failures = 0;
        entry.probe_log.Reset();
        continue;
      }
      ++entry.consecutive_failures;
      // A dead worker fails a probe every probe_interval until it comes back.
      int64_t suppressed = 0;
      if (entry.probe_log.ShouldLog(absl::Now(), &suppressed)) {
        COHORT_LOG_WARN("probe of worker {} at {} failed ({} in a row, {} not logged since the "
                        "last warning): {}",
                        target.worker_id, target.address, entry.consecutive_failures, suppressed,
                        status.error_message());
      }
      if (entry.live && entry.consecutive_failures >= probe_failures_) {
        entry.live = false;
        COHORT_LOG_WARN("worker {} at {} declared lost after {} failed probes",
                        target.worker_id, target.address, entry.consecutive_failures);
        for (const auto& [token, listener] : listeners_) to_notify.push_back(listener);
      }
    }
    for (const auto& listener : to_notify) listener(target.worker_id);
  }
}

}  // namespace cohort
