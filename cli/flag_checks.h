// CLI11 checks for numeric flags. The API reads 0 in many numeric fields as "use the
// default", so a flag given as 0 would silently run with the default. These checks reject
// it instead, naming the flag (CLI11 prefixes its name) and the allowed range.
#ifndef COHORT_CLI_FLAG_CHECKS_H_
#define COHORT_CLI_FLAG_CHECKS_H_

#include <CLI/CLI.hpp>

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace cohort {

// Accepts numbers >= `min`; `inclusive` false accepts only numbers > `min`. Text that is
// not a number passes, so CLI11's type conversion reports it.
inline CLI::Validator NumberFrom(double min, bool inclusive) {
  const std::string range = absl::StrCat(inclusive ? ">= " : "> ", min);
  return CLI::Validator(
      [min, inclusive, range](std::string& text) -> std::string {
        double value = 0;
        if (!absl::SimpleAtod(text, &value)) return "";
        if (inclusive ? value >= min : value > min) return "";
        return absl::StrCat("value ", text, " is invalid; use a value ", range,
                            ", or leave the flag out for the default");
      },
      range);
}

inline CLI::Validator AtLeast(double min) { return NumberFrom(min, true); }
inline CLI::Validator Above(double min) { return NumberFrom(min, false); }

}  // namespace cohort

#endif  // COHORT_CLI_FLAG_CHECKS_H_
