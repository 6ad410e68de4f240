// cohort_cluster_bench: the client side of the cluster part of
// bench/compare_kmeans_speed.py. It loads a users CSV source on a running coordinator
// through the public API (LoadDataset, timed) and runs one K-means segmentation job.
// It prints one JSON object with the load time, the rows read, and the elapsed job time
// of every Lloyd iteration event the job sent, with the CPU time the workers had used by
// then.
//
// The coordinator sends at most one progress event per 100 ms and WatchJob returns the
// latest one, so an iteration can be missing from the list when iterations are faster
// than that. The script therefore divides the time between the first and the last
// reported iteration by the iterations between them.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cohort/v1/cohort.grpc.pb.h"

namespace cohort {
namespace {

constexpr int kMaxMessageBytes = 256 << 20;
constexpr auto kCallDeadline = std::chrono::hours(6);

struct ClusterBenchOptions {
  std::string coordinator = "127.0.0.1:7070";
  std::string source;
  std::string id_column = "user_id";
  int num_shards = 64;
  int k = 100;
  int max_iter = 10;
  std::string init = "kmeans||";
  uint64_t seed = 42;
  // Processes whose CPU time is read at every Lloyd event (the workers on this machine).
  std::vector<int> worker_pids;
};

// User plus system CPU seconds of the processes, from /proc/<pid>/stat, or -1 when a
// process cannot be read.
double CpuSeconds(const std::vector<int>& pids) {
  const double ticks_per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
  double total = 0;
  for (int pid : pids) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    if (!std::getline(stat, text)) return -1;
    // The command name (field 2) may contain spaces, so fields are counted after its ')'.
    std::istringstream fields(text.substr(text.rfind(')') + 2));
    std::string field;
    double utime = 0;
    double stime = 0;
    for (int index = 3; index <= 15 && fields >> field; ++index) {
      if (index == 14) utime = std::stod(field);
      if (index == 15) stime = std::stod(field);
    }
    total += (utime + stime) / ticks_per_second;
  }
  return total;
}

std::unique_ptr<grpc::ClientContext> NewContext() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  return context;
}

int Fail(const std::string& step, const grpc::Status& status) {
  std::fprintf(stderr, "cohort_cluster_bench: %s failed: %s (code %d)\n", step.c_str(),
               status.error_message().c_str(), static_cast<int>(status.error_code()));
  return 1;
}

int Run(const ClusterBenchOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  auto stub = v1::Cohort::NewStub(grpc::CreateCustomChannel(
      options.coordinator, grpc::InsecureChannelCredentials(), args));

  v1::CreateDatasetRequest create;
  create.set_kind(v1::DATASET_KIND_USERS);
  create.set_num_shards(options.num_shards);
  v1::Dataset dataset;
  grpc::Status status = stub->CreateDataset(NewContext().get(), create, &dataset);
  if (!status.ok()) return Fail("CreateDataset", status);

  v1::LoadDatasetRequest load;
  load.set_dataset_id(dataset.dataset_id());
  load.set_source(options.source);
  load.set_id_column(options.id_column);
  const auto load_start = std::chrono::steady_clock::now();
  status = stub->LoadDataset(NewContext().get(), load, &dataset);
  if (!status.ok()) return Fail("LoadDataset", status);
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  // Shards per worker, so the caller can divide each worker's memory by the rows it hosts.
  v1::ListWorkersResponse workers;
  status = stub->ListWorkers(NewContext().get(), v1::ListWorkersRequest(), &workers);
  if (!status.ok()) return Fail("ListWorkers", status);
  nlohmann::json hosted_shards = nlohmann::json::object();
  for (const v1::WorkerInfo& worker : workers.workers()) {
    hosted_shards[worker.worker_id()] = worker.hosted_shards();
  }

  v1::StartSegmentationRequest start;
  start.set_dataset_id(dataset.dataset_id());
  v1::SegmentationOptions* job_options = start.mutable_options();
  job_options->set_k(options.k);
  job_options->set_max_iter(options.max_iter);
  // tol 0 selects the default 1e-4, so the smallest positive double keeps every
  // iteration running.
  job_options->set_tol(1e-300);
  job_options->set_seed(options.seed);
  job_options->set_init(options.init);
  v1::Job job;
  const auto job_start = std::chrono::steady_clock::now();
  status = stub->StartSegmentation(NewContext().get(), start, &job);
  if (!status.ok()) return Fail("StartSegmentation", status);

  nlohmann::json iterations = nlohmann::json::array();
  v1::WatchJobRequest watch;
  watch.set_job_id(job.job_id());
  auto watch_context = NewContext();
  auto reader = stub->WatchJob(watch_context.get(), watch);
  v1::JobEvent event;
  while (reader->Read(&event)) {
    if (event.phase() != "lloyd") continue;
    iterations.push_back({{"iteration", event.iteration()},
                          {"elapsed_seconds", event.elapsed_seconds()},
                          {"worker_cpu_seconds", CpuSeconds(options.worker_pids)}});
  }
  status = reader->Finish();
  if (!status.ok()) return Fail("WatchJob", status);
  const double job_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - job_start).count();

  v1::GetJobRequest get;
  get.set_job_id(job.job_id());
  status = stub->GetJob(NewContext().get(), get, &job);
  if (!status.ok()) return Fail("GetJob", status);
  if (job.state() != v1::JOB_STATE_SUCCEEDED) {
    std::fprintf(stderr, "cohort_cluster_bench: job %s ended %s: %s\n", job.job_id().c_str(),
                 v1::JobState_Name(job.state()).c_str(), job.error_message().c_str());
    return 1;
  }
  v1::GetSegmentModelRequest get_model;
  get_model.set_model_id(job.model_id());
  v1::SegmentModel model;
  status = stub->GetSegmentModel(NewContext().get(), get_model, &model);
  if (!status.ok()) return Fail("GetSegmentModel", status);

  nlohmann::json out;
  out["load_seconds"] = load_seconds;
  out["rows_read"] = dataset.rows_read();
  out["num_shards"] = options.num_shards;
  out["hosted_shards"] = hosted_shards;
  out["num_users"] = dataset.num_users();
  out["job_seconds"] = job_seconds;
  out["lloyd_events"] = iterations;
  out["iterations"] = model.iterations();
  out["inertia"] = model.inertia();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) {
  cohort::ClusterBenchOptions options;
  CLI::App app{"Loads a users CSV source on a running coordinator and times a K-means job"};
  app.add_option("--coordinator", options.coordinator, "coordinator host:port")
      ->capture_default_str();
  app.add_option("--source", options.source, "CSV path or glob every worker can read")
      ->required();
  app.add_option("--id-column", options.id_column, "user id column")->capture_default_str();
  app.add_option("--shards", options.num_shards, "virtual shards")->capture_default_str();
  app.add_option("-k,--k", options.k, "segments")->capture_default_str();
  app.add_option("--max-iter", options.max_iter, "Lloyd iterations")->capture_default_str();
  app.add_option("--init", options.init, "kmeans++ or kmeans||")->capture_default_str();
  app.add_option("--seed", options.seed, "job seed")->capture_default_str();
  app.add_option("--worker-pids", options.worker_pids,
                 "worker process ids whose CPU time is read at every Lloyd event")
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  return cohort::Run(options);
}
