// Allocator settings for processes that hold large columns that grow while they load.
#ifndef COHORT_CORE_ALLOCATOR_H_
#define COHORT_CORE_ALLOCATOR_H_

#include <cstddef>

namespace cohort {

// Allocations of at least this many bytes get their own memory mapping.
inline constexpr size_t kOwnMappingBytes = size_t{1} << 20;

// Makes glibc serve every allocation of at least kOwnMappingBytes from its own memory
// mapping, which goes back to the system as soon as it is freed. By default glibc raises
// that threshold each time it frees such a block (up to 32 MiB). The blocks of growing
// columns then come from the heap, and the blocks they replace stay resident as free
// heap until malloc_trim. At 10M users this kept a worker at 1.4 times its data until
// the load ended. Call once, at the start of a process, before other threads start.
void ReturnLargeBlocksWhenFreed();

}  // namespace cohort

#endif  // COHORT_CORE_ALLOCATOR_H_
