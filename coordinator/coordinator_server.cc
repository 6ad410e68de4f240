#include "coordinator/coordinator_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/cohort_service.h"
#include "coordinator/worker_registry.h"
#include "core/log.h"
#include "core/status_macros.h"

namespace cohort {
namespace {

// Requests and replies of the public API stay below this size (models of large k × d).
constexpr int kMaxMessageBytes = 256 << 20;

class CoordinatorServerImpl final : public CoordinatorServer {
 public:
  CoordinatorServerImpl(std::unique_ptr<WorkerRegistry> registry,
                        std::unique_ptr<CohortServiceImpl> cohort,
                        std::unique_ptr<RegistryServiceImpl> registry_service,
                        std::unique_ptr<grpc::Server> server, std::string address)
      : registry_(std::move(registry)),
        cohort_(std::move(cohort)),
        registry_service_(std::move(registry_service)),
        server_(std::move(server)),
        address_(std::move(address)) {}

  ~CoordinatorServerImpl() override { Shutdown(absl::Seconds(1)); }

  std::string address() const override { return address_; }

  void Shutdown(absl::Duration grace) override {
    {
      absl::MutexLock lock(&mutex_);
      if (shut_down_) return;
      shut_down_ = true;
    }
    COHORT_LOG_INFO("coordinator at {} shutting down", address_);
    cohort_->CancelAllJobs();
    server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(grace));
    registry_->Stop();
  }

  void Wait() override { server_->Wait(); }

 private:
  std::unique_ptr<WorkerRegistry> registry_;
  std::unique_ptr<CohortServiceImpl> cohort_;
  std::unique_ptr<RegistryServiceImpl> registry_service_;
  std::unique_ptr<grpc::Server> server_;
  const std::string address_;
  absl::Mutex mutex_;
  bool shut_down_ ABSL_GUARDED_BY(mutex_) = false;
};

}  // namespace

absl::Status CoordinatorServerOptions::Validate() const {
  if (listen_address.empty() || listen_address.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address '", listen_address, "' is invalid; use host:port, e.g. 127.0.0.1:7070"));
  }
  for (const std::string& worker : worker_addresses) {
    if (worker.empty() || worker.rfind(':') == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("worker address '", worker, "' is invalid; use host:port"));
    }
  }
  if (probe_interval <= absl::ZeroDuration() || probe_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("probe_interval and probe_timeout must be positive");
  }
  if (probe_failures < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("probe_failures = ", probe_failures, " is invalid; use >= 1"));
  }
  if (worker_call_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("worker_call_timeout must be positive");
  }
  if (step_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step_timeout = ", absl::FormatDuration(step_timeout), " is invalid; use > 0"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const CoordinatorServerOptions& options) {
  COHORT_RETURN_IF_ERROR(options.Validate());
  auto registry = std::make_unique<WorkerRegistry>(options.probe_interval, options.probe_timeout,
                                                   options.probe_failures);
  for (size_t i = 0; i < options.worker_addresses.size(); ++i) {
    COHORT_RETURN_IF_ERROR(
        registry->Register(absl::StrCat("worker-", i), options.worker_addresses[i]));
  }
  CohortServiceOptions service_options;
  service_options.state_dir = options.state_dir;
  service_options.worker_call_timeout = options.worker_call_timeout;
  service_options.step_timeout = options.step_timeout;
  auto cohort = std::make_unique<CohortServiceImpl>(registry.get(), service_options);
  COHORT_RETURN_IF_ERROR(cohort->LoadState());
  auto registry_service = std::make_unique<RegistryServiceImpl>(registry.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(), &port);
  // gRPC sets SO_REUSEPORT by default, which lets a second server start on a port in use
  // and split the calls with the first.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.RegisterService(cohort.get());
  builder.RegisterService(registry_service.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("coordinator could not listen on '",
                                               options.listen_address,
                                               "'; is the port free and the host local?"));
  }
  const std::string address =
      absl::StrCat(options.listen_address.substr(0, options.listen_address.rfind(':')), ":", port);
  registry->Start();
  COHORT_LOG_INFO("coordinator listening on {} with {} configured workers", address,
                  options.worker_addresses.size());
  return std::unique_ptr<CoordinatorServer>(
      new CoordinatorServerImpl(std::move(registry), std::move(cohort),
                                std::move(registry_service), std::move(server), address));
}

}  // namespace cohort
