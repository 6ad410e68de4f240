// API request fields named by the CLI flags that set them, for error messages.
#ifndef COHORT_CLI_FLAG_NAMES_H_
#define COHORT_CLI_FLAG_NAMES_H_

#include <string>
#include <vector>

namespace cohort {

// An API request field and the CLI flag that sets it.
struct FlagName {
  std::string field;  // as named in error messages, e.g. "max_iter"
  std::string flag;   // e.g. "--max-iter"
};

// Returns `message` with the API field names of `flags` replaced by their CLI flags, so
// a command's user reads the flag they typed: "options.max_iter = 0 is invalid;
// max_iter must be >= 1" becomes "--max-iter = 0 is invalid; --max-iter must be >= 1".
// A field is replaced where it is a whole word and either contains an underscore, is
// preceded by "options.", or is followed by " = ", " is ", " must", " contains " or
// "['", so the same word in running text ("the cosine distance") stays. A word in single
// quotes is a value (a column or a value the user gave) and stays too.
std::string NameFlags(const std::string& message, const std::vector<FlagName>& flags);

}  // namespace cohort

#endif  // COHORT_CLI_FLAG_NAMES_H_
