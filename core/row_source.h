// Feature rows read block by block, so kernels can work on features that are computed
// on demand (a transform of the stored raw columns) as well as on a stored matrix.
#ifndef COHORT_CORE_ROW_SOURCE_H_
#define COHORT_CORE_ROW_SOURCE_H_

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/matrix.h"

namespace cohort {

// Rows per block that kernels read from a RowSource at a time. Blocks start at multiples
// of it from row 0, whatever the thread count, so a row is always computed at the same
// place of a block. A block of 2048 rows of 64 features takes 512 KiB.
inline constexpr int64_t kRowBlockRows = 2048;
// Below this many rows, ForEachRowBlock stays on the calling thread: starting threads
// costs more than they save on a few blocks.
inline constexpr int64_t kRowBlockParallelMinRows = 4096;

// Requests the cache lines of `count` floats starting at `values`.
inline void PrefetchFloats(const float* values, int64_t count) {
  constexpr int64_t kFloatsPerLine = 64 / sizeof(float);
  for (int64_t t = 0; t < count; t += kFloatsPerLine) __builtin_prefetch(values + t);
}

// An n×d matrix of float32 rows that are copied out block by block.
//
// Thread safety: CopyRows is const and may run on many threads at once.
class RowSource {
 public:
  virtual ~RowSource() = default;

  virtual int64_t rows() const = 0;
  virtual int cols() const = 0;

  // Writes rows [begin, begin + count) to out (count×cols(), row-major). The values of a
  // row depend only on the row, not on `begin` or `count`.
  // REQUIRES: 0 <= begin, begin + count <= rows(), out has room for count × cols() floats.
  virtual void CopyRows(int64_t begin, int64_t count, float* out) const = 0;

  // Asks the memory system for the stored bytes of row `row` ahead of a CopyRows call.
  // Only a hint: it changes no result.
  virtual void PrefetchRow(int64_t /*row*/) const {}

  // Resizes `block` to count×cols() and copies rows [begin, begin + count) into it.
  void CopyBlock(int64_t begin, int64_t count, MatrixXfR* block) const {
    block->resize(count, cols());
    CopyRows(begin, count, block->data());
  }
};

// The rows of a stored matrix, which the source does not own and which must outlive it.
class MatrixRowSource final : public RowSource {
 public:
  explicit MatrixRowSource(const MatrixXfR* x) : x_(x) {}

  int64_t rows() const override { return x_->rows(); }
  int cols() const override { return static_cast<int>(x_->cols()); }
  void CopyRows(int64_t begin, int64_t count, float* out) const override {
    if (count == 0) return;
    std::memcpy(out, x_->data() + begin * x_->cols(),
                static_cast<size_t>(count * x_->cols()) * sizeof(float));
  }
  void PrefetchRow(int64_t row) const override {
    PrefetchFloats(x_->data() + row * x_->cols(), x_->cols());
  }

 private:
  const MatrixXfR* x_;
};

// Calls body(begin, count, block) for every block of rows [first, last), where block
// holds rows [begin, begin + count) of `rows`. Blocks start at first + multiples of
// kRowBlockRows and are spread over OpenMP threads when there are more than
// kRowBlockParallelMinRows rows, each thread reusing its own block matrix. `body` must not throw and must touch only state
// of its own rows, so results do not depend on the thread count.
// REQUIRES: 0 <= first <= last <= rows.rows().
template <typename Body>
void ForEachRowBlock(const RowSource& rows, int64_t first, int64_t last, Body body) {
  const int64_t num_blocks = (last - first + kRowBlockRows - 1) / kRowBlockRows;
#pragma omp parallel if (last - first > kRowBlockParallelMinRows)
  {
    MatrixXfR block;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < num_blocks; ++b) {
      const int64_t begin = first + b * kRowBlockRows;
      const int64_t count = std::min(kRowBlockRows, last - begin);
      rows.CopyBlock(begin, count, &block);
      body(begin, count, block);
    }
  }
}

}  // namespace cohort

#endif  // COHORT_CORE_ROW_SOURCE_H_
