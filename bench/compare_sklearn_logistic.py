#!/usr/bin/python3
"""Compare cohort's logistic regression with scikit-learn's on the same design matrix.

cohort_logistic_quality builds the design matrix of a labelled data set with the profile
pipeline (bench/profile_data.h), splits users by hashed id, fits cohort's L-BFGS logistic
regression on the training rows and writes the matrix and split to a CSV file. This script
reads that file and fits sklearn.linear_model.LogisticRegression(penalty="l2", C,
solver="lbfgs", tol=1e-8, max_iter=10000) on the same float32 values cast to float64, then
compares test ROC-AUC and coefficients. scikit-learn's fit stops on a relative change of
the objective and ends up to 1e-2 from its own optimum along the flat direction that a full
one-hot block makes with the intercept, so the script also polishes that fit on
scikit-learn's objective (sklearn_logistic_objective.polish) and compares the coefficients
with both.

A data set passes when the ROC-AUCs differ by at most 0.002 and every coefficient and the
intercept differ from the optimum of scikit-learn's objective by at most 1e-3. The exit status is 1 when a data set fails and 2 when a tool or
input fails. With --print-cpp the script also prints scikit-learn's numbers as C++
initialisers (the AUC of scikit-learn's fit, the coefficients of its objective's optimum)
for tests/core/profile_data_test.cc.

Run it with /usr/bin/python3 (Debian's python3-sklearn) from the repository root:
  /usr/bin/python3 bench/compare_sklearn_logistic.py --binary build/core/bench/cohort_logistic_quality
"""

import argparse
import csv
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from sklearn_logistic_objective import polish

DATASETS = ["bank-marketing", "telco-churn"]
AUC_TOLERANCE = 0.002
COEF_TOLERANCE = 1e-3


def read_design(path):
    with open(path, newline="") as file:
        reader = csv.reader(file)
        header = next(reader)
        rows = list(reader)
    names = header[2:]
    split = np.array([row[0] for row in rows])
    y = np.array([int(row[1]) for row in rows])
    x = np.array([[float(v) for v in row[2:]] for row in rows], dtype=np.float32).astype(np.float64)
    return names, split, y, x


def parse_cohort(output):
    auc = None
    intercept = None
    coefs = []
    for line in output.splitlines():
        if line.startswith("test ROC-AUC"):
            auc = float(line.split()[2])
        elif line.startswith("intercept "):
            intercept = float(line.split()[1])
        elif line.startswith("coef "):
            coefs.append(float(line.split()[-1]))
    return auc, intercept, np.array(coefs)


def compare(binary, dataset, c, print_cpp):
    with tempfile.TemporaryDirectory() as folder:
        out = pathlib.Path(folder) / "design.csv"
        start = time.perf_counter()
        result = subprocess.run([binary, "--dataset", dataset, "--c", str(c), "--out", str(out)],
                                capture_output=True, text=True, check=False)
        cohort_seconds = time.perf_counter() - start
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            sys.exit(2)
        names, split, y, x = read_design(out)
    cohort_auc, cohort_intercept, cohort_coefs = parse_cohort(result.stdout)
    train = split == "train"
    test = split == "test"
    start = time.perf_counter()
    model = LogisticRegression(penalty="l2", C=c, solver="lbfgs", tol=1e-8, max_iter=10000)
    model.fit(x[train], y[train])
    sklearn_seconds = time.perf_counter() - start
    sklearn_auc = roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])
    fit_diff = max(np.abs(model.coef_[0] - cohort_coefs).max(),
                   abs(model.intercept_[0] - cohort_intercept))
    optimum, fit_gradient, optimum_gradient = polish(model, x[train], y[train], c)
    coef_diff = np.abs(optimum[:-1] - cohort_coefs).max()
    intercept_diff = abs(optimum[-1] - cohort_intercept)
    passed = (abs(sklearn_auc - cohort_auc) <= AUC_TOLERANCE
              and max(coef_diff, intercept_diff) <= COEF_TOLERANCE)
    print(f"{dataset}: {train.sum()} train / {test.sum()} test rows, {x.shape[1]} features, C {c}")
    print(f"  ROC-AUC   cohort {cohort_auc:.6f}  scikit-learn {sklearn_auc:.6f}  "
          f"difference {abs(sklearn_auc - cohort_auc):.2e}")
    print(f"  against scikit-learn's fit (max |gradient| {fit_gradient:.1e}): "
          f"max |coefficient or intercept difference| {fit_diff:.2e}")
    print(f"  against its objective's optimum (max |gradient| {optimum_gradient:.1e}): "
          f"max |coefficient difference| {coef_diff:.2e}, intercept {intercept_diff:.2e}")
    print(f"  scikit-learn {model.n_iter_[0]} iterations; wall time including cohort's loading: "
          f"cohort {cohort_seconds:.2f} s, scikit-learn fit {sklearn_seconds:.2f} s")
    print(f"  {'PASS' if passed else 'FAIL'}")
    if print_cpp:
        print(f"  // {dataset}: scikit-learn {sklearn.__version__}, C {c}")
        print(f"  constexpr double kSklearnAuc = {sklearn_auc!r};")
        print(f"  constexpr double kSklearnIntercept = {optimum[-1]!r};")
        values = ",\n      ".join(
            ", ".join(repr(v) for v in optimum[i:min(i + 4, len(names))])
            for i in range(0, len(names), 4))
        print(f"  const std::vector<double> kSklearnCoefficients = {{\n      {values}}};")
    return passed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="build/core/bench/cohort_logistic_quality",
                        help="path of the cohort_logistic_quality executable")
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 strength")
    parser.add_argument("--print-cpp", action="store_true",
                        help="print scikit-learn's numbers as C++ initialisers")
    args = parser.parse_args()
    print(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    results = [compare(args.binary, dataset, args.c, args.print_cpp) for dataset in DATASETS]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
