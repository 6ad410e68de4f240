// Google Benchmark of the K-means kernels: AssignNearest and KMeansShard::LloydStep.
// The GFLOP/s counter counts 2·n·k·d flops per call (the distance products), so it can
// be compared with the float32 FMA peak of the machine. Other work (norms, argmin, the
// centroid sums of LloydStep) is not counted.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "core/kmeans_kernels.h"
#include "core/matrix.h"

namespace cohort {
namespace {

// Returns an n×d matrix of uniform values in [-1, 1), the same for the same seed.
MatrixXfR RandomMatrix(int64_t n, int64_t d, uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  MatrixXfR x(n, d);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) x(i, j) = uniform(engine);
  }
  return x;
}

void SetFlopCounter(benchmark::State& state, int64_t n, int64_t d, int64_t k) {
  const double flops_per_call = 2.0 * static_cast<double>(n) * static_cast<double>(k) *
                                static_cast<double>(d);
  // kIsIterationInvariantRate multiplies the value by the iteration count and divides it
  // by the elapsed time. kIs1000 prints it with k/M/G prefixes of 1000.
  state.counters["FLOP/s"] = benchmark::Counter(
      flops_per_call, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// Arguments: n, d, k.
void BM_AssignNearest(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int64_t d = state.range(1);
  const int64_t k = state.range(2);
  const MatrixXfR x = RandomMatrix(n, d, 1);
  const MatrixXfR centroids = RandomMatrix(k, d, 2);
  const Eigen::VectorXf x_sq_norms = RowSquaredNorms(x);
  const Eigen::VectorXf c_sq_norms = RowSquaredNorms(centroids);
  std::vector<int32_t> labels(n);
  std::vector<float> sq_dist(n);
  for (auto _ : state) {
    AssignNearest(x, x_sq_norms, centroids, c_sq_norms, labels.data(), sq_dist.data());
    benchmark::DoNotOptimize(labels.data());
    benchmark::DoNotOptimize(sq_dist.data());
    benchmark::ClobberMemory();
  }
  SetFlopCounter(state, n, d, k);
}

// Arguments: n, d, k. The step includes the assignment, the per-centroid sums in double
// and the inertia. num_farthest is 0, as in a Lloyd iteration without empty clusters.
void BM_LloydStep(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int64_t d = state.range(1);
  const int64_t k = state.range(2);
  const MatrixXfR x = RandomMatrix(n, d, 1);
  const MatrixXfR centroids = RandomMatrix(k, d, 2);
  const KMeansShard shard(0, &x);
  for (auto _ : state) {
    LloydPartial partial = shard.LloydStep(centroids, 0);
    benchmark::DoNotOptimize(partial.inertia);
    benchmark::DoNotOptimize(partial.sums.data());
  }
  SetFlopCounter(state, n, d, k);
}

BENCHMARK(BM_AssignNearest)
    ->ArgNames({"n", "d", "k"})
    ->Args({200000, 64, 256})
    ->Args({100000, 32, 16})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_LloydStep)
    ->ArgNames({"n", "d", "k"})
    ->Args({200000, 64, 256})
    ->Args({100000, 32, 16})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace cohort

BENCHMARK_MAIN();
