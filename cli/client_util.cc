#include "cli/client_util.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/segment_summary.h"

namespace cohort {
namespace {

constexpr int kBarWidth = 30;

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : tty_(enabled && isatty(STDERR_FILENO) == 1) {}

  void Update(const v1::JobEvent& event) {
    std::string line;
    double fraction = 0;
    if (event.phase() == "init") {
      fraction = event.k() > 0 ? static_cast<double>(event.centers_chosen()) / event.k() : 0;
      line = absl::StrFormat("seeding  run %d  centers %d/%d", event.run() + 1,
                             event.centers_chosen(), event.k());
    } else if (event.phase() == "lloyd" || event.phase() == "final") {
      fraction = event.max_iter() > 0 ? static_cast<double>(event.iteration()) / event.max_iter() : 0;
      line = absl::StrFormat("lloyd    run %d  iter %d/%d  inertia %s  shift %.3g  %s rows/s",
                             event.run() + 1, event.iteration(), event.max_iter(),
                             FormatReadable(event.inertia()), event.max_shift(),
                             FormatReadable(event.rows_per_second()));
    } else if (event.phase() == "lbfgs") {
      fraction = event.max_iter() > 0 ? static_cast<double>(event.iteration()) / event.max_iter() : 0;
      line = absl::StrFormat("l-bfgs   evaluation %d  loss %.6g  |gradient| %.3g  %s rows/s",
                             event.iteration(), event.loss(), event.gradient_norm(),
                             FormatReadable(event.rows_per_second()));
    } else {
      line = absl::StrCat(event.phase(), "  ", event.message());
    }
    if (tty_) {
      const int filled = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * kBarWidth);
      std::string bar(filled, '#');
      bar.append(kBarWidth - filled, '.');
      std::fprintf(stderr, "\r\033[K[%s] %s", bar.c_str(), line.c_str());
      std::fflush(stderr);
      drawn_ = true;
    } else if (event.phase() != last_phase_ || event.state() != v1::JOB_STATE_RUNNING) {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    last_phase_ = event.phase();
  }

  void Finish() {
    if (tty_ && drawn_) std::fprintf(stderr, "\n");
  }

 private:
  const bool tty_;
  bool drawn_ = false;
  std::string last_phase_;
};

std::atomic<bool> interrupted{false};

extern "C" void OnInterrupt(int) { interrupted.store(true); }

// While alive, SIGINT and SIGTERM set `interrupted` instead of ending the process, so the
// job being watched can be cancelled on the cluster first.
class InterruptScope {
 public:
  InterruptScope() {
    interrupted.store(false);
    struct sigaction action = {};
    action.sa_handler = OnInterrupt;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~InterruptScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ = {};
  struct sigaction old_term_ = {};
};

}  // namespace

// Adds the step to a failed call's status: "loading the dataset: <message>".
absl::Status CallError(const grpc::Status& status, const std::string& step,
                       const std::vector<FlagName>& flags) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(step, ": ", NameFlags(status.error_message(), flags)));
}

absl::Status CheckNoLoadFlags(const std::string& dataset_id,
                              const std::vector<std::pair<bool, std::string>>& given_flags) {
  for (const auto& [given, flag] : given_flags) {
    if (given) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, " applies when a file is loaded, but --dataset '", dataset_id,
          "' is loaded already; drop ", flag));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Dataset> GetGivenDataset(Client& client, const std::string& dataset_id) {
  v1::GetDatasetRequest get;
  get.set_dataset_id(dataset_id);
  v1::Dataset dataset;
  const grpc::Status status = client.stub()->GetDataset(client.Context().get(), get, &dataset);
  if (!status.ok()) return CallError(status, "reading the dataset given in --dataset");
  std::fprintf(stderr, "using dataset %s: %lld users\n", dataset.dataset_id().c_str(),
               static_cast<long long>(dataset.num_users()));
  return dataset;
}

std::string CsvField(const std::string& value) {
  if (value.find_first_of(",\"\r\n") == std::string::npos) return value;
  std::string quoted = "\"";
  for (char c : value) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  quoted += '"';
  return quoted;
}

// Draws the job's progress until it ends; returns the finished job or its error. Ctrl-C
// (or SIGTERM) cancels the job on the cluster and returns Cancelled.
absl::StatusOr<v1::Job> WatchToEnd(Client& client, v1::Job job, bool progress_bar) {
  ProgressBar bar(progress_bar);
  v1::WatchJobRequest watch;
  watch.set_job_id(job.job_id());
  auto context = client.Context();
  InterruptScope interrupt_scope;
  std::atomic<bool> watching{true};
  std::thread canceller([&] {
    while (watching.load()) {
      if (interrupted.load()) {
        v1::CancelJobRequest cancel;
        cancel.set_job_id(job.job_id());
        v1::Job ignored;
        (void)client.stub()->CancelJob(client.Context().get(), cancel, &ignored);
        context->TryCancel();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  auto reader = client.stub()->WatchJob(context.get(), watch);
  v1::JobEvent event;
  while (reader->Read(&event)) bar.Update(event);
  bar.Finish();
  grpc::Status status = reader->Finish();
  watching.store(false);
  canceller.join();
  if (interrupted.load()) {
    return absl::CancelledError(
        absl::StrCat("interrupted; job ", job.job_id(), " was cancelled on the cluster"));
  }
  if (!status.ok()) return CallError(status, "watching the job");

  v1::GetJobRequest get;
  get.set_job_id(job.job_id());
  status = client.stub()->GetJob(client.Context().get(), get, &job);
  if (!status.ok()) return CallError(status, "reading the job");
  if (job.state() != v1::JOB_STATE_SUCCEEDED) {
    return absl::Status(static_cast<absl::StatusCode>(job.error_code()),
                        absl::StrCat("job ", job.job_id(), " ", v1::JobState_Name(job.state()),
                                     ": ", job.error_message()));
  }
  return job;
}

}  // namespace cohort
