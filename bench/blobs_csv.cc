// cohort_blobs_csv: writes a seeded users CSV data set of Gaussian blobs for the cluster
// part of bench/compare_kmeans_speed.py, split over several files that workers can load
// with one glob.
//
// Every row is centre + N(0, 1) noise in each column. The --centers centres are drawn
// uniformly in [-spread, spread) per column. Row i belongs to file i × files / rows, and its
// centre and noise come from a generator seeded by (seed, i / kRowsPerStream), so the
// values do not depend on the number of files or threads. Columns: user_id (u<i>), then
// f0 … f<dim-1> with 4 decimals.
#include <omp.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include <CLI/CLI.hpp>

namespace {

// Rows drawn from one generator stream.
constexpr int64_t kRowsPerStream = 4096;

struct BlobsOptions {
  int64_t rows = 1000;
  int dim = 32;
  int centers = 100;
  double spread = 10.0;
  int files = 8;
  uint64_t seed = 42;
  std::string out_dir = "blobs";
};

uint64_t SplitMix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) from 53 random bits: the same on every platform, unlike
// std::uniform_real_distribution and std::normal_distribution.
double Uniform(std::mt19937_64& engine) { return static_cast<double>(engine() >> 11) * 0x1.0p-53; }

// Standard normal by the Box-Muller transform (one value per call, the other dropped).
double Normal(std::mt19937_64& engine) {
  const double u1 = 1.0 - Uniform(engine);  // (0, 1], so the log is finite
  const double u2 = Uniform(engine);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

void AppendNumber(double value, std::string* line) {
  char buffer[32];
  const std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::fixed, 4);
  line->append(buffer, result.ptr);
}

bool WriteFile(const BlobsOptions& options, const std::vector<double>& centres, int file) {
  const int64_t begin = options.rows * file / options.files;
  const int64_t end = options.rows * (file + 1) / options.files;
  char name[32];
  std::snprintf(name, sizeof(name), "part-%04d.csv", file);
  const std::filesystem::path path = std::filesystem::path(options.out_dir) / name;
  std::FILE* out = std::fopen(path.c_str(), "w");
  if (out == nullptr) return false;

  std::string text = "user_id";
  for (int j = 0; j < options.dim; ++j) text += ",f" + std::to_string(j);
  text += '\n';
  std::mt19937_64 engine;
  for (int64_t i = begin; i < end; ++i) {
    if (i == begin || i % kRowsPerStream == 0) {
      engine.seed(SplitMix64(SplitMix64(options.seed) ^ static_cast<uint64_t>(i / kRowsPerStream)));
      // A file may start inside a stream: skip the draws of the stream's earlier rows,
      // one for the centre and two per column.
      engine.discard(static_cast<uint64_t>(i % kRowsPerStream) *
                     (1 + 2 * static_cast<uint64_t>(options.dim)));
    }
    const int centre =
        static_cast<int>(std::min<double>(options.centers - 1, Uniform(engine) * options.centers));
    text += 'u';
    text += std::to_string(i);
    for (int j = 0; j < options.dim; ++j) {
      text += ',';
      AppendNumber(centres[static_cast<size_t>(centre) * options.dim + j] + Normal(engine), &text);
    }
    text += '\n';
    if (text.size() > (1 << 20)) {
      if (std::fwrite(text.data(), 1, text.size(), out) != text.size()) break;
      text.clear();
    }
  }
  const bool written = std::fwrite(text.data(), 1, text.size(), out) == text.size();
  return std::fclose(out) == 0 && written;
}

}  // namespace

int main(int argc, char** argv) {
  BlobsOptions options;
  CLI::App app{"Writes a seeded CSV data set of Gaussian blobs (user_id, f0, f1, ...)"};
  app.add_option("--rows", options.rows, "rows over all files")->capture_default_str();
  app.add_option("--dim", options.dim, "feature columns")->capture_default_str();
  app.add_option("--centers", options.centers, "blob centres")->capture_default_str();
  app.add_option("--spread", options.spread, "centre coordinates are in [-spread, spread)")
      ->capture_default_str();
  app.add_option("--files", options.files, "output files part-0000.csv, ...")
      ->capture_default_str();
  app.add_option("--seed", options.seed, "random seed")->capture_default_str();
  app.add_option("--out", options.out_dir, "output folder (created)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (options.rows < 1 || options.dim < 1 || options.centers < 1 || options.files < 1) {
    std::fprintf(stderr, "cohort_blobs_csv: --rows, --dim, --centers and --files must be >= 1\n");
    return 2;
  }
  std::error_code error;
  std::filesystem::create_directories(options.out_dir, error);
  if (error) {
    std::fprintf(stderr, "cohort_blobs_csv: cannot create %s: %s\n", options.out_dir.c_str(),
                 error.message().c_str());
    return 1;
  }

  std::mt19937_64 centre_engine(SplitMix64(options.seed));
  std::vector<double> centres(static_cast<size_t>(options.centers) * options.dim);
  for (double& value : centres) value = options.spread * (2.0 * Uniform(centre_engine) - 1.0);

  int failed = 0;
#pragma omp parallel for schedule(dynamic) reduction(+ : failed)
  for (int file = 0; file < options.files; ++file) {
    if (!WriteFile(options, centres, file)) ++failed;
  }
  if (failed > 0) {
    std::fprintf(stderr, "cohort_blobs_csv: writing %d of %d files in %s failed\n", failed,
                 options.files, options.out_dir.c_str());
    return 1;
  }
  std::printf("wrote %lld rows of %d features to %d files in %s\n",
              static_cast<long long>(options.rows), options.dim, options.files,
              options.out_dir.c_str());
  return 0;
}
