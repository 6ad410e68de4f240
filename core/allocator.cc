#include "core/allocator.h"

#include <malloc.h>

namespace cohort {

void ReturnLargeBlocksWhenFreed() {
  // Setting the threshold also stops glibc from moving it.
  mallopt(M_MMAP_THRESHOLD, static_cast<int>(kOwnMappingBytes));
}

}  // namespace cohort
