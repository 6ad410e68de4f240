#include "worker/worker_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "cohort/v1/worker.grpc.pb.h"
#include "core/csv.h"
#include "core/features.h"
#include "core/kmeans_kernels.h"
#include "core/log.h"
#include "core/raw_table.h"
#include "core/schema.h"
#include "core/status_macros.h"
#include "core/transactions.h"
#include "proto/convert.h"
#include "worker/interaction_store.h"
#include "worker/job_session.h"
#include "worker/shard_store.h"

namespace cohort {
namespace {

using v1::JobCommand;
using v1::ShardResult;

// Largest message the worker accepts or sends; centroid and partial-sum messages of big
// k × d stay below it.
constexpr int kMaxMessageBytes = 256 << 20;
// Interactions per ReadShards message: about 1 MB for short ids.
constexpr size_t kReadChunkInteractions = 16384;

class WorkerServiceImpl final : public v1::Worker::Service {
 public:
  // The id depends on the bound port when none is configured, so it is set after start.
  void set_worker_id(const std::string& worker_id) ABSL_LOCKS_EXCLUDED(id_mutex_) {
    absl::MutexLock lock(&id_mutex_);
    worker_id_ = worker_id;
  }

  grpc::Status Ping(grpc::ServerContext*, const v1::PingRequest*,
                    v1::PingResponse* response) override {
    response->set_worker_id(worker_id());
    response->set_hosted_shards(store_.HostedShardCount() + interactions_.HostedShardCount());
    return grpc::Status::OK;
  }

  grpc::Status InferSchema(grpc::ServerContext*, const v1::InferSchemaRequest* request,
                           v1::Schema* response) override {
    absl::StatusOr<Schema> schema = InferSchemaFromSource(*request);
    if (!schema.ok()) return ToGrpcStatus(schema.status());
    ToProto(*schema, response);
    return grpc::Status::OK;
  }

  grpc::Status LoadShards(grpc::ServerContext*, const v1::LoadShardsRequest* request,
                          v1::LoadShardsResponse* response) override {
    COHORT_LOG_INFO("worker {}: loading dataset {} ({} shards) from {}", worker_id(),
                    request->dataset_id(), request->shards_size(), request->source());
    absl::Status status = request->kind() == v1::DATASET_KIND_INTERACTIONS
                              ? interactions_.Load(*request, response)
                              : store_.Load(*request, response);
    if (!status.ok()) {
      COHORT_LOG_WARN("worker {}: load of dataset {} failed: {}", worker_id(),
                      request->dataset_id(), status.ToString());
    } else {
      COHORT_LOG_INFO("worker {}: dataset {} loaded, {} rows read", worker_id(),
                      request->dataset_id(), response->rows_read());
    }
    return ToGrpcStatus(status);
  }

  grpc::Status AppendRows(grpc::ServerContext*, const v1::AppendRowsRequest* request,
                          v1::AppendRowsResponse* response) override {
    return ToGrpcStatus(store_.Append(*request, response));
  }

  grpc::Status AppendInteractions(grpc::ServerContext*,
                                  const v1::AppendInteractionsRequest* request,
                                  v1::AppendInteractionsResponse* response) override {
    return ToGrpcStatus(interactions_.Append(*request, response));
  }

  grpc::Status RunJob(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<ShardResult, JobCommand>* stream) override {
    JobSession session(&store_, worker_id(), &interactions_);
    session.set_result_writer([stream](const ShardResult& result) {
      if (!stream->Write(result)) {
        return absl::CancelledError("coordinator closed the job stream");
      }
      return absl::OkStatus();
    });
    JobCommand command;
    std::vector<ShardResult> results;
    while (stream->Read(&command)) {
      results.clear();
      absl::Status status = session.Handle(command, &results);
      if (!status.ok()) {
        COHORT_LOG_WARN("worker {}: job {} command {} failed: {}", worker_id(),
                        session.job_id(), command.seq(), status.ToString());
        return ToGrpcStatus(status);
      }
      for (const ShardResult& result : results) {
        if (!stream->Write(result)) {
          return grpc::Status(grpc::StatusCode::CANCELLED, "coordinator closed the job stream");
        }
      }
      if (context->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "job stream cancelled");
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status ExportAssignments(grpc::ServerContext* context, const v1::ExportRequest* request,
                                 grpc::ServerWriter<v1::ExportChunk>* writer) override {
    return ToGrpcStatus(store_.ExportAssignments(*request, context, writer));
  }

  grpc::Status PromoteReplicas(grpc::ServerContext*, const v1::PromoteReplicasRequest* request,
                               v1::PromoteReplicasResponse* response) override {
    const absl::Status status = request->kind() == v1::DATASET_KIND_INTERACTIONS
                                    ? interactions_.PromoteReplicas(*request, response)
                                    : store_.PromoteReplicas(*request, response);
    if (status.ok()) {
      COHORT_LOG_INFO("worker {}: replicas of shards {} of dataset {} promoted", worker_id(),
                      absl::StrJoin(request->shards(), ","), request->dataset_id());
    } else {
      COHORT_LOG_WARN("worker {}: promoting replicas of dataset {} failed: {}", worker_id(),
                      request->dataset_id(), status.ToString());
    }
    return ToGrpcStatus(status);
  }

  grpc::Status ReadShards(grpc::ServerContext* context, const v1::ReadShardsRequest* request,
                          grpc::ServerWriter<v1::ShardRowsChunk>* writer) override {
    if (request->kind() != v1::DATASET_KIND_INTERACTIONS) {
      return ToGrpcStatus(store_.ReadShards(*request, context, writer));
    }
    for (int shard_id : request->shards()) {
      absl::StatusOr<std::vector<v1::Interaction>> rows =
          interactions_.ShardInteractionRows(request->dataset_id(), shard_id);
      if (!rows.ok()) return ToGrpcStatus(rows.status());
      size_t begin = 0;
      do {
        const size_t end = std::min(rows->size(), begin + kReadChunkInteractions);
        v1::ShardRowsChunk chunk;
        chunk.set_shard_id(shard_id);
        for (size_t i = begin; i < end; ++i) *chunk.add_interactions() = std::move((*rows)[i]);
        if (context->IsCancelled() || !writer->Write(chunk)) {
          return grpc::Status(grpc::StatusCode::CANCELLED, "read stream closed by the coordinator");
        }
        begin = end;
      } while (begin < rows->size());
    }
    return grpc::Status::OK;
  }

  grpc::Status DropJob(grpc::ServerContext*, const v1::DropJobRequest* request,
                       v1::DropJobResponse*) override {
    store_.DropJob(request->job_id());
    return grpc::Status::OK;
  }

 private:
  absl::StatusOr<Schema> InferSchemaFromSource(const v1::InferSchemaRequest& request) {
    COHORT_ASSIGN_OR_RETURN(std::vector<std::string> paths, ExpandPaths(request.source()));
    COHORT_ASSIGN_OR_RETURN(CsvOptions csv, FromProto(request.csv()));
    if (!csv.has_header) {
      return absl::InvalidArgumentError(
          "a schema cannot be inferred from files without a header; pass the schema");
    }
    COHORT_ASSIGN_OR_RETURN(std::unique_ptr<CsvReader> reader, CsvReader::Open(paths[0], csv));
    const int sample_rows = request.sample_rows() > 0 ? request.sample_rows() : 1000;
    std::vector<std::vector<std::string>> sample;
    std::vector<std::string> fields;
    while (static_cast<int>(sample.size()) < sample_rows) {
      COHORT_ASSIGN_OR_RETURN(bool more, reader->Next(&fields));
      if (!more) break;
      sample.push_back(fields);
    }
    SchemaOverrides overrides;
    overrides.id_column = request.id_column();
    for (const auto& [name, type] : request.overrides()) {
      COHORT_ASSIGN_OR_RETURN(overrides.types[name], FromProto(type));
    }
    return cohort::InferSchema(reader->header(), sample, overrides);
  }

  std::string worker_id() const ABSL_LOCKS_EXCLUDED(id_mutex_) {
    absl::MutexLock lock(&id_mutex_);
    return worker_id_;
  }

  mutable absl::Mutex id_mutex_;
  std::string worker_id_ ABSL_GUARDED_BY(id_mutex_);
  ShardStore store_;
  InteractionStore interactions_;
};

// Deadline of one RegisterWorker call.
constexpr absl::Duration kRegisterCallTimeout = absl::Seconds(5);
// While the coordinator stays unreachable, one failed registration per this interval is
// logged.
constexpr absl::Duration kRegisterLogInterval = absl::Minutes(1);

// Sends RegisterWorker to the coordinator: once with retries at start, then every
// `register_interval` on a thread of its own until Stop().
// Thread safety: all methods may be called from any thread.
class Registration {
 public:
  Registration(const WorkerServerOptions& options, const std::string& worker_id,
               const std::string& advertise)
      : coordinator_(options.coordinator_address),
        register_timeout_(options.register_timeout),
        register_interval_(options.register_interval),
        stub_(v1::Registry::NewStub(RegistryChannel(coordinator_, register_interval_))) {
    request_.set_worker_id(worker_id);
    request_.set_address(advertise);
    // Two 32-bit draws; a worker id reused by a restarted process gets a new value.
    std::random_device random;
    uint64_t instance = 0;
    while (instance == 0) instance = (uint64_t{random()} << 32) | random();
    request_.set_instance(instance);
  }

  ~Registration() { Stop(); }

  // Registers, retrying with backoff for up to register_timeout. Errors: Unavailable
  // when the coordinator does not accept the registration in that time, at once for
  // InvalidArgument; AlreadyExists when another live worker kept the id all that time.
  [[nodiscard]] absl::Status RegisterFirst() {
    const absl::Time give_up = absl::Now() + register_timeout_;
    absl::Duration backoff = absl::Milliseconds(100);
    grpc::Status last;
    while (true) {
      last = Send();
      if (last.ok()) {
        COHORT_LOG_INFO("worker {} registered with coordinator {} as {}", request_.worker_id(),
                        coordinator_, request_.address());
        return absl::OkStatus();
      }
      if (last.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
          absl::Now() + backoff > give_up) {
        break;
      }
      COHORT_LOG_WARN("worker {}: registration with {} failed ({}); retrying in {}",
                      request_.worker_id(), coordinator_, last.error_message(),
                      absl::FormatDuration(backoff));
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(2));
    }
    if (last.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
      // Another live worker uses the id; the coordinator replied, so its address is right.
      return absl::AlreadyExistsError(absl::StrCat("worker ", request_.worker_id(),
                                                   " could not register with coordinator ",
                                                   coordinator_, ": ", last.error_message()));
    }
    return absl::UnavailableError(absl::StrCat(
        "worker ", request_.worker_id(), " could not register with coordinator ", coordinator_,
        ": ", last.error_message(), "; check that the coordinator runs and the address is right"));
  }

  // Starts the thread that registers again every register_interval.
  void StartRepeating() ABSL_LOCKS_EXCLUDED(mutex_) {
    absl::MutexLock lock(&mutex_);
    if (stopping_ || thread_.joinable()) return;
    thread_ = std::thread([this] { RepeatUntilStopped(); });
  }

  // Ends the thread, cancelling a call in flight. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mutex_) {
    {
      absl::MutexLock lock(&mutex_);
      stopping_ = true;
      if (in_flight_ != nullptr) in_flight_->TryCancel();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  // One RegisterWorker call with its own deadline.
  grpc::Status Send() ABSL_LOCKS_EXCLUDED(mutex_) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoNanoseconds(kRegisterCallTimeout));
    {
      absl::MutexLock lock(&mutex_);
      if (stopping_) return grpc::Status(grpc::StatusCode::CANCELLED, "worker is stopping");
      in_flight_ = &context;
    }
    v1::RegisterWorkerResponse response;
    const grpc::Status status = stub_->RegisterWorker(&context, request_, &response);
    absl::MutexLock lock(&mutex_);
    in_flight_ = nullptr;
    return status;
  }

  void RepeatUntilStopped() ABSL_LOCKS_EXCLUDED(mutex_) {
    LogRateLimit failure_log(kRegisterLogInterval);
    bool failing = false;
    while (true) {
      {
        absl::MutexLock lock(&mutex_);
        auto stop_requested = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return stopping_; };
        if (mutex_.AwaitWithTimeout(absl::Condition(&stop_requested), register_interval_)) return;
      }
      const grpc::Status status = Send();
      if (status.ok()) {
        if (failing) {
          COHORT_LOG_INFO("worker {} registered again with coordinator {}", request_.worker_id(),
                          coordinator_);
        }
        failing = false;
        failure_log.Reset();
        continue;
      }
      if (status.error_code() == grpc::StatusCode::CANCELLED) continue;
      failing = true;
      int64_t suppressed = 0;
      if (failure_log.ShouldLog(absl::Now(), &suppressed)) {
        COHORT_LOG_WARN("worker {}: registration with {} failed ({} not logged since the last "
                        "warning): {}; retrying every {}",
                        request_.worker_id(), coordinator_, suppressed, status.error_message(),
                        absl::FormatDuration(register_interval_));
      }
    }
  }

  // A channel whose reconnect backoff stays at or below `interval`. gRPC's default
  // backoff (its connection-backoff spec: from 1 s, times 1.6, up to 120 s) grows while
  // the coordinator is down, which would delay the first registration with a restarted
  // coordinator by up to 120 s.
  static std::shared_ptr<grpc::Channel> RegistryChannel(const std::string& coordinator,
                                                        absl::Duration interval) {
    const int64_t max_ms = std::clamp<int64_t>(absl::ToInt64Milliseconds(interval), 100,
                                               std::numeric_limits<int>::max());
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                static_cast<int>(std::min<int64_t>(max_ms, 1000)));
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(max_ms));
    return grpc::CreateCustomChannel(coordinator, grpc::InsecureChannelCredentials(), args);
  }

  const std::string coordinator_;
  const absl::Duration register_timeout_;
  const absl::Duration register_interval_;
  const std::unique_ptr<v1::Registry::Stub> stub_;
  v1::RegisterWorkerRequest request_;  // const after construction

  absl::Mutex mutex_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  grpc::ClientContext* in_flight_ ABSL_GUARDED_BY(mutex_) = nullptr;
  std::thread thread_;
};

class WorkerServerImpl final : public WorkerServer {
 public:
  WorkerServerImpl(std::string worker_id, std::unique_ptr<WorkerServiceImpl> service,
                   std::unique_ptr<grpc::Server> server, std::string address)
      : worker_id_(std::move(worker_id)),
        service_(std::move(service)),
        server_(std::move(server)),
        address_(std::move(address)) {}

  ~WorkerServerImpl() override { Shutdown(absl::Seconds(1)); }

  std::string address() const override { return address_; }
  const std::string& worker_id() const override { return worker_id_; }

  // Registers with the coordinator, then keeps registering until Shutdown. Errors: as
  // Registration::RegisterFirst.
  [[nodiscard]] absl::Status Register(const WorkerServerOptions& options,
                                      const std::string& advertise) {
    registration_ = std::make_unique<Registration>(options, worker_id_, advertise);
    COHORT_RETURN_IF_ERROR(registration_->RegisterFirst());
    registration_->StartRepeating();
    return absl::OkStatus();
  }

  void Shutdown(absl::Duration grace) override {
    absl::MutexLock lock(&mutex_);
    if (shut_down_) return;
    shut_down_ = true;
    // A stopping worker must not announce itself to the coordinator again.
    if (registration_ != nullptr) registration_->Stop();
    server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(grace));
    COHORT_LOG_INFO("worker {} at {} stopped", worker_id_, address_);
  }

  void Wait() override { server_->Wait(); }

 private:
  const std::string worker_id_;
  std::unique_ptr<WorkerServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  const std::string address_;
  // Set by Register before the server is handed out, so const afterwards.
  std::unique_ptr<Registration> registration_;
  absl::Mutex mutex_;
  bool shut_down_ ABSL_GUARDED_BY(mutex_) = false;
};

// Replaces the port of host:port (or [v6]:port).
std::string WithPort(const std::string& address, int port) {
  const size_t colon = address.rfind(':');
  return absl::StrCat(address.substr(0, colon), ":", port);
}

}  // namespace

absl::Status WorkerServerOptions::Validate() const {
  if (listen_address.empty() || listen_address.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address '", listen_address, "' is invalid; use host:port, e.g. 127.0.0.1:7071"));
  }
  if (register_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("register_timeout must be positive");
  }
  // Below 10 ms a worker would send the coordinator a registration call every few
  // milliseconds for no gain: a restarted coordinator needs seconds to start anyway.
  if (register_interval < absl::Milliseconds(10)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "register_interval = ", absl::FormatDuration(register_interval),
        " is invalid; use at least 10ms (the default is 5s)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(
    const WorkerServerOptions& options) {
  COHORT_RETURN_IF_ERROR(options.Validate());
  grpc::EnableDefaultHealthCheckService(true);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(), &port);
  // gRPC sets SO_REUSEPORT by default, which lets a second server start on a port in use
  // and split the calls with the first.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  auto service = std::make_unique<WorkerServiceImpl>();
  builder.RegisterService(service.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("worker could not listen on '",
                                               options.listen_address,
                                               "'; is the port free and the host local?"));
  }
  const std::string address = WithPort(options.listen_address, port);
  const std::string worker_id =
      options.worker_id.empty() ? absl::StrCat("worker-", port) : options.worker_id;
  service->set_worker_id(worker_id);
  COHORT_LOG_INFO("worker {} listening on {}", worker_id, address);
  auto result = std::make_unique<WorkerServerImpl>(worker_id, std::move(service),
                                                   std::move(server), address);
  if (!options.coordinator_address.empty()) {
    const std::string advertise =
        options.advertise_address.empty() ? address : options.advertise_address;
    absl::Status registered = result->Register(options, advertise);
    if (!registered.ok()) {
      result->Shutdown(absl::ZeroDuration());
      return registered;
    }
  }
  return result;
}

}  // namespace cohort
