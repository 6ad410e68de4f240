// Files of the coordinator's state folder. Internal to coordinator/.
#ifndef COHORT_COORDINATOR_STATE_FILE_H_
#define COHORT_COORDINATOR_STATE_FILE_H_

#include <google/protobuf/message.h>

#include <string>

#include "absl/status/status.h"

namespace cohort {

// Writes `message` to `path` through a temporary file and a rename, so a reader never
// sees half a file. Errors: Internal naming the file that cannot be written or renamed.
[[nodiscard]] absl::Status WriteMessageAtomically(const std::string& path,
                                                  const google::protobuf::Message& message);

}  // namespace cohort

#endif  // COHORT_COORDINATOR_STATE_FILE_H_
