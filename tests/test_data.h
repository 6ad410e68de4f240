// Locating the public data sets used by the real-input tests.
#ifndef COHORT_TESTS_TEST_DATA_H_
#define COHORT_TESTS_TEST_DATA_H_

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace cohort::testing {

// Data folder: $COHORT_DATA_DIR, else the folder configured at build time.
inline std::string DataDir() {
  const char* env = std::getenv("COHORT_DATA_DIR");
  if (env != nullptr && env[0] != '\0') return env;
  return COHORT_DEFAULT_DATA_DIR;
}

inline bool RunningInCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

}  // namespace cohort::testing

// Sets `var` to the full path of data file `relative`. When the file is missing the
// test fails under CI=true and is skipped elsewhere, with the path in the message.
#define COHORT_REQUIRE_DATA_FILE(var, relative)                                        \
  const std::string var = ::cohort::testing::DataDir() + "/" + (relative);             \
  if (!std::filesystem::exists(var)) {                                                 \
    if (::cohort::testing::RunningInCi()) {                                            \
      FAIL() << "data file " << var << " is missing (set COHORT_DATA_DIR)";            \
    } else {                                                                           \
      GTEST_SKIP() << "data file " << var << " is missing; set COHORT_DATA_DIR to run"; \
    }                                                                                  \
  }

#endif  // COHORT_TESTS_TEST_DATA_H_
