// Client helpers shared by the `cohort` client commands: a stub whose calls carry a
// deadline, error wrapping, CSV quoting and a job watcher with a progress bar.
#ifndef COHORT_CLI_CLIENT_UTIL_H_
#define COHORT_CLI_CLIENT_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/flag_names.h"
#include "cohort/v1/cohort.grpc.pb.h"

namespace cohort {

// Adds the step to a failed call's status: "loading the dataset: <message>", with the
// fields of `flags` named by their CLI flags (see NameFlags).
absl::Status CallError(const grpc::Status& status, const std::string& step,
                       const std::vector<FlagName>& flags = {});

// Fails when a loading flag is given together with --dataset: `given_flags` pairs
// whether a flag differs from its default with the flag's name. Errors:
// InvalidArgument naming the first such flag.
absl::Status CheckNoLoadFlags(const std::string& dataset_id,
                              const std::vector<std::pair<bool, std::string>>& given_flags);

// Quotes a CSV field when it contains a comma, a quote or a line break.
std::string CsvField(const std::string& value);

// Largest message a client sends or receives; models of large k × d can be big.
inline constexpr int kMaxMessageBytes = 256 << 20;

// A Cohort stub; every call made with Context() carries the client's deadline.
class Client {
 public:
  Client(const std::string& address, absl::Duration deadline) : deadline_(deadline) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    args.SetMaxSendMessageSize(kMaxMessageBytes);
    stub_ = v1::Cohort::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }

  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(deadline_));
    return context;
  }

  v1::Cohort::Stub* stub() { return stub_.get(); }

 private:
  const absl::Duration deadline_;
  std::unique_ptr<v1::Cohort::Stub> stub_;
};

// Reads the dataset named in --dataset and prints its size on stderr. Errors: the
// GetDataset status (NotFound for an unknown id), with the flag named.
[[nodiscard]] absl::StatusOr<v1::Dataset> GetGivenDataset(Client& client,
                                                          const std::string& dataset_id);

// Draws the job's progress until it ends; returns the finished job or its error. Ctrl-C
// (or SIGTERM) cancels the job on the cluster and returns Cancelled.
[[nodiscard]] absl::StatusOr<v1::Job> WatchToEnd(Client& client, v1::Job job, bool progress_bar);

}  // namespace cohort

#endif  // COHORT_CLI_CLIENT_UTIL_H_
