// Naive references for the collaborative-filtering tests: similarities computed pair by
// pair from a dense rating table, straight from their definitions.
#ifndef COHORT_TESTS_CORE_CF_REFERENCE_H_
#define COHORT_TESTS_CORE_CF_REFERENCE_H_

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/interactions.h"
#include "core/similarity.h"
#include "tests/core/random_data.h"

namespace cohort::testing {

// Dense table: ratings[u][i], 0 = no interaction (test values are never 0).
using RatingTable = std::vector<std::vector<double>>;

// A random table of `users` × `items` with the given density and integer ratings 1..5
// (or, with `fractional`, float values in [0.5, 5]). Item ids are "i00".."iNN", so the
// dictionary order equals the column order; user ids are "u0".."uN".
inline RatingTable RandomRatings(int users, int items, double density, uint64_t seed,
                                 bool fractional = false) {
  std::mt19937_64 engine(seed);
  RatingTable table(users, std::vector<double>(items, 0.0));
  for (int u = 0; u < users; ++u) {
    for (int i = 0; i < items; ++i) {
      if (Uniform(engine) >= density) continue;
      // Values are float numbers, as the CSR stores them, so references see the same data.
      table[u][i] = fractional ? static_cast<float>(0.5 + 4.5 * Uniform(engine))
                               : 1.0 + std::floor(5.0 * Uniform(engine));
    }
  }
  return table;
}

inline std::string ItemName(int i) {
  return std::string("i") + (i < 10 ? "0" : "") + std::to_string(i);
}
inline std::string UserName(int u) { return "u" + std::to_string(u); }

inline std::vector<InteractionRow> TableRows(const RatingTable& table) {
  std::vector<InteractionRow> rows;
  for (size_t u = 0; u < table.size(); ++u) {
    for (size_t i = 0; i < table[u].size(); ++i) {
      if (table[u][i] != 0) {
        rows.push_back({UserName(static_cast<int>(u)), ItemName(static_cast<int>(i)),
                        table[u][i], kNoTime});
      }
    }
  }
  return rows;
}

// Similarity of columns (or rows) a and b of `vectors`, where vectors[v][c] is entry c
// of vector v and `centre[c]` is subtracted from entry c for adjusted cosine (the user
// mean for items, the item mean for users).
inline double NaiveSimilarity(const std::vector<double>& a, const std::vector<double>& b,
                              const std::vector<double>& centre, const SimilarityOptions& options) {
  std::vector<size_t> common;
  double norm_a = 0, norm_b = 0;
  int64_t count_a = 0, count_b = 0;
  for (size_t c = 0; c < a.size(); ++c) {
    if (a[c] != 0) {
      ++count_a;
      norm_a += a[c] * a[c];
    }
    if (b[c] != 0) {
      ++count_b;
      norm_b += b[c] * b[c];
    }
    if (a[c] != 0 && b[c] != 0) common.push_back(c);
  }
  const double n = static_cast<double>(common.size());
  if (common.empty() || static_cast<int>(common.size()) < options.min_support) return 0;
  double sim = 0;
  switch (options.measure) {
    case SimilarityMeasure::kCosine: {
      double dot = 0;
      for (size_t c : common) dot += a[c] * b[c];
      sim = norm_a > 0 && norm_b > 0 ? dot / std::sqrt(norm_a * norm_b) : 0;
      break;
    }
    case SimilarityMeasure::kPearson: {
      double mean_a = 0, mean_b = 0;
      for (size_t c : common) {
        mean_a += a[c];
        mean_b += b[c];
      }
      mean_a /= n;
      mean_b /= n;
      double cov = 0, var_a = 0, var_b = 0;
      for (size_t c : common) {
        cov += (a[c] - mean_a) * (b[c] - mean_b);
        var_a += (a[c] - mean_a) * (a[c] - mean_a);
        var_b += (b[c] - mean_b) * (b[c] - mean_b);
      }
      sim = var_a > 1e-9 && var_b > 1e-9 ? cov / std::sqrt(var_a * var_b) : 0;
      break;
    }
    case SimilarityMeasure::kAdjustedCosine: {
      double dot = 0, sq_a = 0, sq_b = 0;
      for (size_t c : common) {
        const double xa = a[c] - centre[c];
        const double xb = b[c] - centre[c];
        dot += xa * xb;
        sq_a += xa * xa;
        sq_b += xb * xb;
      }
      sim = sq_a > 0 && sq_b > 0 ? dot / std::sqrt(sq_a * sq_b) : 0;
      break;
    }
    case SimilarityMeasure::kJaccard:
      sim = n / (static_cast<double>(count_a + count_b) - n);
      break;
    case SimilarityMeasure::kMsd: {
      double squared_difference = 0;
      for (size_t c : common) squared_difference += (a[c] - b[c]) * (a[c] - b[c]);
      sim = 1.0 / (squared_difference / n + 1.0);
      break;
    }
  }
  sim = std::clamp(sim, -1.0, 1.0);
  return sim * n / (n + options.shrinkage);
}

// Column c of `table` as a vector over users.
inline std::vector<double> Column(const RatingTable& table, size_t c) {
  std::vector<double> column;
  for (const std::vector<double>& row : table) column.push_back(row[c]);
  return column;
}

// Mean of the non-zero entries of each row (users) or column (items).
inline std::vector<double> RowMeans(const RatingTable& table) {
  std::vector<double> means;
  for (const std::vector<double>& row : table) {
    double sum = 0;
    int count = 0;
    for (double v : row) {
      if (v != 0) {
        sum += v;
        ++count;
      }
    }
    means.push_back(count > 0 ? sum / count : 0);
  }
  return means;
}
inline std::vector<double> ColumnMeans(const RatingTable& table) {
  std::vector<double> means;
  for (size_t c = 0; c < table.front().size(); ++c) {
    double sum = 0;
    int count = 0;
    for (const std::vector<double>& row : table) {
      if (row[c] != 0) {
        sum += row[c];
        ++count;
      }
    }
    means.push_back(count > 0 ? sum / count : 0);
  }
  return means;
}

// Whether two vectors co-occur at least min_support (and at least once).
inline bool HasSupport(const std::vector<double>& a, const std::vector<double>& b, int min_support) {
  int n = 0;
  for (size_t c = 0; c < a.size(); ++c) n += a[c] != 0 && b[c] != 0;
  return n >= std::max(1, min_support);
}

}  // namespace cohort::testing

#endif  // COHORT_TESTS_CORE_CF_REFERENCE_H_
