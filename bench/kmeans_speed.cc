// cohort_kmeans_speed: the cohort side of bench/compare_kmeans_speed.py. Reads a data
// matrix and initial centroids written by the script, runs cohort's K-means code in this
// process on one KMeansShard, and prints one JSON object with the timings.
//
// Modes:
//   lloyd      RunLloyd from the given centroids for --iterations iterations (tol 0),
//              timing each iteration; writes the final centroids.
//   minibatch  RunMiniBatch from the given centroids for --passes passes over the data
//              (max_no_improvement 0), recording the elapsed time after every step and
//              the centroids every --snapshot-every steps.
//   assign     AssignNearest of all rows to the given centroids, --repeat times.
//
// Files are raw little-endian float32, row-major: --data is rows×dim, --init is k×dim.
// Loading the data and the per-shard row norms are not timed.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "core/block_gemm.h"
#include "core/kmeans.h"
#include "core/kmeans_kernels.h"
#include "core/matrix.h"
#include "core/status_macros.h"

namespace cohort {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct SpeedOptions {
  std::string mode;
  std::string data_path;
  int64_t rows = 0;
  int64_t dim = 0;
  std::string init_path;
  int64_t k = 0;
  int iterations = 10;
  int batch_size = 4096;
  int passes = 3;
  int snapshot_every = 1;
  uint64_t seed = 42;
  int repeat = 3;
  std::string out_path;  // lloyd: final centroids; minibatch: snapshots
};

absl::StatusOr<MatrixXfR> ReadMatrix(const std::string& path, int64_t rows, int64_t cols) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrFormat("cannot open %s", path));
  const int64_t expected = rows * cols * static_cast<int64_t>(sizeof(float));
  const int64_t size = static_cast<int64_t>(in.tellg());
  if (size != expected) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has %d bytes; %d×%d float32 values need %d", path, size, rows, cols, expected));
  }
  MatrixXfR matrix(rows, cols);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(matrix.data()), expected);
  if (!in) return absl::DataLossError(absl::StrFormat("reading %s failed", path));
  return matrix;
}

absl::Status WriteFloats(const std::string& path, const std::vector<float>& values) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(values.data()),
            static_cast<std::streamsize>(values.size() * sizeof(float)));
  if (!out) return absl::InternalError(absl::StrFormat("writing %s failed", path));
  return absl::OkStatus();
}

// Peak resident set size of this process in MiB (VmHWM of /proc/self/status), or -1.
double PeakRssMib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

std::vector<float> Flatten(const MatrixXfR& matrix) {
  return std::vector<float>(matrix.data(), matrix.data() + matrix.size());
}

absl::StatusOr<nlohmann::json> RunLloydMode(const SpeedOptions& options, const MatrixXfR& x,
                                            const MatrixXfR& init) {
  KMeansShard shard(0, &x);
  InProcessKMeansBackend backend({&shard});
  KMeansOptions kmeans;
  kmeans.max_iter = options.iterations;
  kmeans.tol = 0;

  std::vector<double> iteration_seconds;
  const Clock::time_point start = Clock::now();
  Clock::time_point last = start;
  auto on_progress = [&](const KMeansProgress& event) {
    if (event.phase != "lloyd") return;
    const Clock::time_point now = Clock::now();
    iteration_seconds.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
  };
  COHORT_ASSIGN_OR_RETURN(KMeansResult result, RunLloyd(backend, init, kmeans, on_progress));
  if (!options.out_path.empty()) {
    COHORT_RETURN_IF_ERROR(WriteFloats(options.out_path, Flatten(result.centroids)));
  }
  nlohmann::json out;
  // The first entry also contains the data moments pass of RunLloyd.
  out["iteration_seconds"] = iteration_seconds;
  out["iterations"] = result.iterations;
  out["inertia"] = result.inertia;
  return out;
}

absl::StatusOr<nlohmann::json> RunMiniBatchMode(const SpeedOptions& options,
                                                const MatrixXfR& x, const MatrixXfR& init) {
  KMeansShard shard(0, &x);
  InProcessKMeansBackend backend({&shard});
  KMeansOptions kmeans;
  kmeans.algorithm = KMeansAlgorithm::kMiniBatch;
  kmeans.max_iter = options.passes;
  kmeans.batch_size = options.batch_size;
  kmeans.max_no_improvement = 0;
  kmeans.seed = options.seed;

  std::vector<double> step_elapsed;
  std::vector<int> snapshot_steps;
  std::vector<float> snapshots;
  snapshots.reserve(static_cast<size_t>(init.size()) * 64);
  Clock::time_point start = Clock::now();
  auto on_progress = [&](const KMeansProgress& event) {
    if (event.phase != "minibatch" || event.centroids == nullptr) return;
    step_elapsed.push_back(SecondsSince(start));
    if (event.iteration % options.snapshot_every != 0) return;
    // The copy is not timed: the clock restarts later by the time the copy took.
    const Clock::time_point copy_start = Clock::now();
    snapshot_steps.push_back(event.iteration);
    snapshots.insert(snapshots.end(), event.centroids->data(),
                     event.centroids->data() + event.centroids->size());
    start += Clock::now() - copy_start;
  };
  COHORT_ASSIGN_OR_RETURN(KMeansResult result,
                          RunMiniBatch(backend, init, kmeans, on_progress));
  if (!options.out_path.empty()) {
    COHORT_RETURN_IF_ERROR(WriteFloats(options.out_path, snapshots));
  }
  nlohmann::json out;
  // Elapsed seconds from the start of RunMiniBatch (data moments included) to the end
  // of each step.
  out["step_elapsed_seconds"] = step_elapsed;
  out["snapshot_steps"] = snapshot_steps;
  out["steps"] = result.iterations;
  out["inertia"] = result.inertia;
  return out;
}

absl::StatusOr<nlohmann::json> RunAssignMode(const SpeedOptions& options, const MatrixXfR& x,
                                             const MatrixXfR& init) {
  const Eigen::VectorXf x_sq_norms = RowSquaredNorms(x);
  const Eigen::VectorXf c_sq_norms = RowSquaredNorms(init);
  std::vector<int32_t> labels(x.rows());
  std::vector<float> sq_dist(x.rows());
  std::vector<double> call_seconds;
  for (int r = 0; r < options.repeat; ++r) {
    const Clock::time_point start = Clock::now();
    AssignNearest(x, x_sq_norms, init, c_sq_norms, labels.data(), sq_dist.data());
    call_seconds.push_back(SecondsSince(start));
  }
  double inertia = 0;
  for (float value : sq_dist) inertia += value;
  nlohmann::json out;
  out["call_seconds"] = call_seconds;
  out["inertia"] = inertia;
  return out;
}

absl::Status Run(const SpeedOptions& options) {
  if (options.rows < 1 || options.dim < 1 || options.k < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--rows %d, --dim %d and --k %d must all be >= 1", options.rows,
                        options.dim, options.k));
  }
  if (options.snapshot_every < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--snapshot-every %d is invalid; it must be >= 1", options.snapshot_every));
  }
  COHORT_ASSIGN_OR_RETURN(const MatrixXfR x,
                          ReadMatrix(options.data_path, options.rows, options.dim));
  COHORT_ASSIGN_OR_RETURN(const MatrixXfR init,
                          ReadMatrix(options.init_path, options.k, options.dim));

  nlohmann::json out;
  if (options.mode == "lloyd") {
    COHORT_ASSIGN_OR_RETURN(out, RunLloydMode(options, x, init));
  } else if (options.mode == "minibatch") {
    COHORT_ASSIGN_OR_RETURN(out, RunMiniBatchMode(options, x, init));
  } else if (options.mode == "assign") {
    COHORT_ASSIGN_OR_RETURN(out, RunAssignMode(options, x, init));
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--mode %s is invalid; use lloyd, minibatch or assign", options.mode));
  }
  out["tool"] = "cohort";
  out["mode"] = options.mode;
  out["threads"] = omp_get_max_threads();
  out["gemm"] = BlockGemmBackend();
  out["peak_rss_mib"] = PeakRssMib();
  std::printf("%s\n", out.dump().c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) {
  cohort::SpeedOptions options;
  CLI::App app{"Times cohort's K-means on a raw float32 matrix"};
  app.add_option("--mode", options.mode, "lloyd, minibatch or assign")->required();
  app.add_option("--data", options.data_path, "rows×dim float32 file")->required();
  app.add_option("--rows", options.rows, "rows of --data")->required();
  app.add_option("--dim", options.dim, "columns of --data and --init")->required();
  app.add_option("--init", options.init_path, "k×dim float32 initial centroids")->required();
  app.add_option("--k", options.k, "rows of --init")->required();
  app.add_option("--iterations", options.iterations, "lloyd: iterations")->capture_default_str();
  app.add_option("--batch-size", options.batch_size, "minibatch: rows per step")
      ->capture_default_str();
  app.add_option("--passes", options.passes, "minibatch: passes over the data")
      ->capture_default_str();
  app.add_option("--snapshot-every", options.snapshot_every,
                 "minibatch: steps between centroid snapshots")
      ->capture_default_str();
  app.add_option("--seed", options.seed, "minibatch: seed of the batch draws")
      ->capture_default_str();
  app.add_option("--repeat", options.repeat, "assign: calls to time")->capture_default_str();
  app.add_option("--out", options.out_path,
                 "lloyd: final centroids file; minibatch: snapshots file (one k×dim block "
                 "per snapshot)");
  CLI11_PARSE(app, argc, argv);
  const absl::Status status = cohort::Run(options);
  if (!status.ok()) {
    std::fprintf(stderr, "cohort_kmeans_speed: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
