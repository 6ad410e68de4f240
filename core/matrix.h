// Dense matrix aliases shared by every module. All feature matrices are row-major:
// x is n×d (n rows, d features), centroids are k×d.
#ifndef COHORT_CORE_MATRIX_H_
#define COHORT_CORE_MATRIX_H_

#include <Eigen/Core>

namespace cohort {

using MatrixXfR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixXdR = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace cohort

#endif  // COHORT_CORE_MATRIX_H_
