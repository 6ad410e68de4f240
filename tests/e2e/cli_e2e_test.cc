// End-to-end tests of the `cohort` command: a coordinator and two workers as separate
// processes on loopback ports, driven by the client commands.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/csv.h"
#include "core/synthetic.h"
#include "tests/e2e/subprocess.h"

namespace cohort {
namespace {

constexpr int64_t kCustomers = 3000;
// Time allowed for a server to print its address, and for a stopped server to exit.
constexpr absl::Duration kServerTimeout = absl::Seconds(30);

using ::cohort::testing::ReadTextFile;
using ::cohort::testing::Subprocess;

// Records of a CSV file with a header, or -1 when it cannot be read.
int64_t CountCsvRecords(const std::string& path) {
  absl::StatusOr<std::unique_ptr<CsvReader>> reader = CsvReader::Open(path, CsvOptions());
  if (!reader.ok()) return -1;
  std::vector<std::string> fields;
  int64_t records = 0;
  while (true) {
    absl::StatusOr<bool> more = (*reader)->Next(&fields);
    if (!more.ok()) return -1;
    if (!*more) return records;
    ++records;
  }
}

// Lines of the segment list that the segment table ends with: "Segment <i>: ...".
int CountSegmentLines(const std::string& text) {
  static const std::regex kSegmentLine("^Segment [0-9]+: .*");
  int count = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (std::regex_match(line.begin(), line.end(), kSegmentLine)) ++count;
  }
  return count;
}

class CliEndToEndTest : public testing::CliProcessTest {};

TEST_F(CliEndToEndTest, ServersAndClientCommands) {
  SyntheticShopOptions shop_options;
  shop_options.num_customers = kCustomers;
  absl::StatusOr<SyntheticShopFiles> shop = WriteSyntheticShop(PathIn("shop"), shop_options);
  ASSERT_TRUE(shop.ok()) << shop.status();

  // The servers print their bound address on stderr once they serve.
  Subprocess* coordinator = Spawn("coordinator", {"coordinator", "--listen", "127.0.0.1:0"});
  ASSERT_NE(coordinator, nullptr);
  const std::optional<std::string> address =
      coordinator->AwaitStderrLine("coordinator listening on ", kServerTimeout);
  ASSERT_TRUE(address.has_value()) << "coordinator printed no address:\n" << coordinator->Stderr();
  ASSERT_TRUE(absl::StartsWith(*address, "127.0.0.1:")) << *address;

  std::vector<Subprocess*> workers;
  for (int i = 0; i < 2; ++i) {
    const std::string id = absl::StrCat("w", i);
    Subprocess* worker = Spawn(absl::StrCat("worker", i), {"worker", "--listen", "127.0.0.1:0",
                                                           "--coordinator", *address, "--id", id});
    ASSERT_NE(worker, nullptr);
    // The line is printed after the worker has registered with the coordinator.
    const std::optional<std::string> listening =
        worker->AwaitStderrLine(absl::StrCat("worker ", id, " listening on "), kServerTimeout);
    ASSERT_TRUE(listening.has_value()) << "worker " << id << " did not start:\n"
                                       << worker->Stderr();
    workers.push_back(worker);
  }

  // Client mode: segment the synthetic customers and write the result files.
  const std::string out_dir = PathIn("out");
  const CommandResult segment =
      Run("segment", {"segment", "--coordinator", *address, "--data", shop->customers_csv,
                      "--id-column", "customer_id", "--ignore", "segment_truth", "-k", "4",
                      "--out", out_dir, "--no-progress"});
  ASSERT_EQ(segment.exit_code, 0) << segment.err;
  EXPECT_TRUE(absl::StrContains(segment.out, "Segments of dataset")) << segment.out;
  EXPECT_EQ(CountSegmentLines(segment.out), 4) << segment.out;
  EXPECT_TRUE(std::filesystem::exists(out_dir + "/model.json"));
  EXPECT_EQ(CountCsvRecords(out_dir + "/segments.csv"), 4);
  EXPECT_EQ(CountCsvRecords(out_dir + "/centroids.csv"), 4);
  EXPECT_EQ(CountCsvRecords(out_dir + "/assignments.csv"), kCustomers);

  // A missing input file fails the command with a message that names it.
  const CommandResult missing = Run(
      "missing", {"segment", "--coordinator", *address, "--data", "/nonexistent.csv",
                  "--no-progress", "--out", PathIn("missing-out")});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.exit_code, -1) << "the command did not end";
  EXPECT_TRUE(absl::StrContains(missing.err, "/nonexistent.csv")) << missing.err;
  EXPECT_TRUE(absl::StrContains(missing.err, "NOT_FOUND")) << missing.err;

  // SIGTERM drains the servers, which then exit with code 0.
  for (Subprocess* worker : workers) worker->Signal(SIGTERM);
  coordinator->Signal(SIGTERM);
  for (size_t i = 0; i < workers.size(); ++i) {
    EXPECT_EQ(workers[i]->WaitForExit(kServerTimeout), std::optional<int>(0))
        << "worker " << i << ":\n"
        << workers[i]->Stderr();
  }
  EXPECT_EQ(coordinator->WaitForExit(kServerTimeout), std::optional<int>(0))
      << coordinator->Stderr();
}

TEST_F(CliEndToEndTest, LocalSegmentWithoutDataUsesSyntheticShop) {
  const std::string cwd = PathIn("local");
  std::filesystem::create_directories(cwd);
  const CommandResult local = Run("local", {"local", "segment", "--no-progress"}, cwd);
  ASSERT_EQ(local.exit_code, 0) << local.err;
  EXPECT_TRUE(absl::StrContains(local.out, "Segments of dataset")) << local.out;
  EXPECT_EQ(CountSegmentLines(local.out), 5) << local.out;
  EXPECT_TRUE(std::filesystem::exists(cwd + "/cohort-out/model.json"));
}

TEST_F(CliEndToEndTest, LocalSegmentReportsDuplicateRule) {
  const std::string cwd = PathIn("dupes");
  std::filesystem::create_directories(cwd);
  std::string csv = "id,x,y\n";
  for (int i = 0; i < 100; ++i) absl::StrAppend(&csv, "u", i, ",", i % 10, ",", i % 7, "\n");
  for (int i = 0; i < 100; i += 4) absl::StrAppend(&csv, "u", i, ",", 50, ",", 50, "\n");
  const std::string path = cwd + "/users.csv";
  std::ofstream(path) << csv;

  const CommandResult rejected =
      Run("dupes-rejected", {"local", "segment", "--data", path, "-k", "2", "--no-progress"}, cwd);
  EXPECT_NE(rejected.exit_code, 0);
  EXPECT_NE(rejected.exit_code, -1) << "the command did not end";
  EXPECT_TRUE(absl::StrContains(rejected.err, "already appeared at")) << rejected.err;

  const CommandResult kept =
      Run("dupes-kept", {"local", "segment", "--data", path, "-k", "2", "--duplicate-ids",
                         "keep-first", "--no-progress"},
          cwd);
  ASSERT_EQ(kept.exit_code, 0) << kept.err;
  EXPECT_TRUE(absl::StrContains(kept.err, "100 users from 125 rows")) << kept.err;
  EXPECT_TRUE(absl::StrContains(kept.err, "(dropped: 25 duplicate ids, first row kept)"))
      << kept.err;
}

TEST_F(CliEndToEndTest, SegmentWithoutCoordinatorFails) {
  // Port 1 of the loopback address has no listener.
  const CommandResult result =
      Run("unreachable", {"segment", "--coordinator", "127.0.0.1:1", "--data", "/nonexistent.csv",
                          "--no-progress", "--out", PathIn("unreachable-out")});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.exit_code, -1) << "the command did not end";
  EXPECT_TRUE(absl::StrContains(result.err, "UNAVAILABLE")) << result.err;
}

TEST_F(CliEndToEndTest, ColumnInTwoTypeFlagsRejected) {
  // The check runs before the command connects, so no coordinator is needed.
  const std::vector<std::vector<std::string>> conflicts = {
      {"--categorical", "a", "--numeric", "a"},
      {"--ignore", "w", "--weight", "w"},
      {"--id-column", "a", "--numeric", "a"},
  };
  for (const std::vector<std::string>& flags : conflicts) {
    std::vector<std::string> args = {"segment", "--coordinator", "127.0.0.1:1", "--data",
                                     "/nonexistent.csv", "--no-progress"};
    args.insert(args.end(), flags.begin(), flags.end());
    const CommandResult result = Run("conflict", args);
    EXPECT_NE(result.exit_code, 0);
    EXPECT_TRUE(absl::StrContains(result.err, absl::StrCat("column '", flags[1], "'")))
        << result.err;
    EXPECT_TRUE(absl::StrContains(result.err, "INVALID_ARGUMENT")) << result.err;
  }
}

TEST_F(CliEndToEndTest, ZeroNumericFlagsRejected) {
  // 0 would mean the coordinator's default; the check runs before the command connects.
  struct Case {
    std::vector<std::string> args;
    std::string flag;
    std::string range;
  };
  const std::vector<std::string> segment = {"segment", "--coordinator", "127.0.0.1:1",
                                            "--data", "/nonexistent.csv", "--no-progress"};
  const std::vector<Case> cases = {
      {{"--max-iter", "0"}, "--max-iter", ">= 1"},
      {{"--n-init", "0"}, "--n-init", ">= 1"},
      {{"--shards", "0"}, "--shards", ">= 1"},
      {{"--batch-size", "-5"}, "--batch-size", ">= 1"},
      {{"--reassignment-ratio", "0"}, "--reassignment-ratio", "> 0"},
      {{"--min-divisible-size", "1"}, "--min-divisible-size", ">= 2"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = segment;
    args.insert(args.end(), c.args.begin(), c.args.end());
    const CommandResult result = Run("zero-flag", args);
    EXPECT_NE(result.exit_code, 0) << c.flag;
    EXPECT_NE(result.exit_code, -1) << c.flag << ": the command did not end";
    EXPECT_TRUE(absl::StrContains(result.err, c.flag)) << result.err;
    EXPECT_TRUE(absl::StrContains(result.err, c.range)) << result.err;
  }
  const CommandResult worker =
      Run("zero-interval", {"worker", "--listen", "127.0.0.1:0", "--register-interval", "0"});
  EXPECT_NE(worker.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(worker.err, "--register-interval")) << worker.err;
}

TEST_F(CliEndToEndTest, UnwritableOutFolderFailsFirst) {
  // A file where the folder should be: the command fails before it connects.
  const std::string file = PathIn("not-a-folder");
  std::ofstream(file) << "x";
  const CommandResult result =
      Run("bad-out", {"segment", "--coordinator", "127.0.0.1:1", "--data", "/nonexistent.csv",
                      "--no-progress", "--out", file});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(result.err, absl::StrCat("--out '", file, "'"))) << result.err;
  EXPECT_TRUE(absl::StrContains(result.err, "INVALID_ARGUMENT")) << result.err;
}

TEST_F(CliEndToEndTest, InterruptCancelsRunningJob) {
  const CommandResult generated =
      Run("generate", {"generate", "--out", PathIn("big"), "--customers", "200000",
                       "--transactions-per-customer", "0"});
  ASSERT_EQ(generated.exit_code, 0) << generated.err;
  // A job that runs far longer than the test: many segments and a tolerance it never meets.
  Subprocess* job = Spawn(
      "interrupted", {"local", "segment", "--data", PathIn("big") + "/customers.csv",
                      "--id-column", "customer_id", "--ignore", "segment_truth", "-k", "60",
                      "--max-iter", "100000", "--tol", "1e-12", "--out", PathIn("big-out")});
  ASSERT_NE(job, nullptr);
  // Without a terminal the progress goes to stderr one line per phase.
  ASSERT_TRUE(job->AwaitStderrLine("lloyd", kServerTimeout).has_value()) << job->Stderr();
  job->Signal(SIGINT);
  const std::optional<int> exit_code = job->WaitForExit(kServerTimeout);
  ASSERT_TRUE(exit_code.has_value()) << "the command did not end after SIGINT";
  EXPECT_EQ(*exit_code, 1);
  EXPECT_TRUE(absl::StrContains(job->Stderr(), "was cancelled on the cluster")) << job->Stderr();
  EXPECT_TRUE(absl::StrContains(job->Stderr(), "JOB_STATE_CANCELLED")) << job->Stderr();
}

}  // namespace
}  // namespace cohort
