// Seeded random draws for test data. Both use only raw generator bits, so the data is
// the same with every standard library (std::uniform_real_distribution is not).
#ifndef COHORT_TESTS_CORE_RANDOM_DATA_H_
#define COHORT_TESTS_CORE_RANDOM_DATA_H_

#include <cmath>
#include <random>

namespace cohort::testing {

// Uniform double in [0, 1).
inline double Uniform(std::mt19937_64& engine) {
  return static_cast<double>(engine() >> 11) * 0x1.0p-53;
}

// Standard normal by Box–Muller.
inline double Normal(std::mt19937_64& engine) {
  const double u1 = 1.0 - Uniform(engine);
  const double u2 = Uniform(engine);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace cohort::testing

#endif  // COHORT_TESTS_CORE_RANDOM_DATA_H_
