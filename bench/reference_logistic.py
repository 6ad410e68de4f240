#!/usr/bin/python3
"""Print scikit-learn's LogisticRegression fits on the small data of logistic_test.

tests/core/logistic_test.cc embeds the values this script prints; the data below must
stay identical to the test's. scikit-learn's fit stops up to 2e-5 short of its optimum
here even with tol=1e-10, so the script also polishes it on scikit-learn's own objective
(sklearn_logistic_objective.polish) and prints both.

Run it with /usr/bin/python3 (Debian's python3-sklearn). The test values were printed by
scikit-learn 1.2.1.
"""

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

from sklearn_logistic_objective import polish

X = np.array([
    [0.5, 1.2], [1.5, -0.3], [-0.7, 0.8], [2.2, 1.1], [-1.3, -0.4], [0.1, 0.0],
    [1.9, 2.5], [-0.2, -1.7], [0.8, 0.9], [-1.6, 1.4], [2.8, -0.6], [0.3, 0.4],
], dtype=np.float32).astype(np.float64)
Y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 1])
SAMPLE_WEIGHT = np.array([1.0, 2.0, 0.5, 1.0, 1.0, 3.0, 1.0, 0.5, 1.0, 2.0, 1.0, 1.0])

FITS = {
    "c1": dict(C=1.0),
    "c0_1_balanced": dict(C=0.1, class_weight="balanced"),
    "c2_explicit_weights": dict(C=2.0, class_weight={0: 3.0, 1: 0.5}),
    "c1_no_intercept": dict(C=1.0, fit_intercept=False),
}


def main():
    print(f"scikit-learn {sklearn.__version__}")
    for name, kwargs in FITS.items():
        for weighted in (False, True):
            sample_weight = SAMPLE_WEIGHT if weighted else None
            model = LogisticRegression(penalty="l2", solver="lbfgs", tol=1e-10,
                                       max_iter=10000, **kwargs)
            model.fit(X, Y, sample_weight=sample_weight)
            optimum, fit_gradient, optimum_gradient = polish(
                model, X, Y, kwargs["C"], sample_weight, kwargs.get("class_weight"),
                kwargs.get("fit_intercept", True))
            coef = ", ".join(repr(v) for v in model.coef_[0])
            label = f"{name}{'_sample_weights' if weighted else ''}"
            print(f"{label}: sklearn coef [{coef}] intercept {model.intercept_[0]!r} "
                  f"(gradient {fit_gradient:.1e})")
            print(f"{label}: optimum {', '.join(repr(v) for v in optimum)} "
                  f"(gradient {optimum_gradient:.1e})")


if __name__ == "__main__":
    main()
