// Early-return helpers for absl::Status and absl::StatusOr. Abseil 20220623 (Debian 12)
// ships neither ABSL_RETURN_IF_ERROR nor ASSIGN_OR_RETURN, so the project defines its own.
#ifndef COHORT_CORE_STATUS_MACROS_H_
#define COHORT_CORE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define COHORT_CONCAT_INNER_(a, b) a##b
#define COHORT_CONCAT_(a, b) COHORT_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define COHORT_RETURN_IF_ERROR(expr)                  \
  do {                                                \
    ::absl::Status cohort_status_ = (expr);           \
    if (!cohort_status_.ok()) return cohort_status_;  \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status when not OK, otherwise
// moves the value into `lhs`, which may be a declaration such as `auto x`.
#define COHORT_ASSIGN_OR_RETURN(lhs, rexpr) \
  COHORT_ASSIGN_OR_RETURN_IMPL_(COHORT_CONCAT_(cohort_statusor_, __LINE__), lhs, rexpr)

#define COHORT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return statusor.status();             \
  lhs = std::move(statusor).value()

#endif  // COHORT_CORE_STATUS_MACROS_H_
