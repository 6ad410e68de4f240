#!/usr/bin/python3
"""Print scikit-learn's LogisticRegression fits on the small data of logistic_test.

tests/core/logistic_test.cc embeds the values this script prints; the data below must
stay identical to the test's. scikit-learn's lbfgs solver also stops when the objective
decreases by less than 64 machine epsilons per step, which can leave a gradient of 1e-7
and coefficients 1e-5 from the optimum even with tol=1e-10. So the script takes
scikit-learn's fit and polishes it on scikit-learn's own objective (LinearModelLoss with
HalfBinomialLoss, sample weights divided by their sum and then multiplied by the class
weights, L2 strength 1 / (C · sum of sample weights), as _logistic.py sets them up) until
the gradient is below 1e-12, and prints both.

Run it with /usr/bin/python3 (Debian's python3-sklearn). The test values were printed by
scikit-learn 1.2.1.
"""

import numpy as np
import scipy.optimize
import sklearn
from sklearn._loss.loss import HalfBinomialLoss
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._linear_loss import LinearModelLoss
from sklearn.utils.class_weight import compute_class_weight

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


def polish(model, kwargs, sample_weight):
    """Minimises scikit-learn's objective from the model's coefficients."""
    fit_intercept = kwargs.get("fit_intercept", True)
    sw = np.ones(len(Y)) if sample_weight is None else sample_weight.copy()
    sw_sum = sw.sum()
    sw = sw / sw_sum
    class_weight = kwargs.get("class_weight")
    if class_weight is not None:
        sw = sw * compute_class_weight(class_weight, classes=np.array([0, 1]), y=Y)[Y]
    loss = LinearModelLoss(base_loss=HalfBinomialLoss(), fit_intercept=fit_intercept)
    l2 = 1.0 / (kwargs["C"] * sw_sum)
    start = np.append(model.coef_[0], model.intercept_[0]) if fit_intercept else model.coef_[0]
    result = scipy.optimize.minimize(
        lambda c: loss.loss_gradient(c, X, Y.astype(np.float64), sw, l2_reg_strength=l2),
        start, jac=True, method="L-BFGS-B",
        options={"gtol": 1e-13, "ftol": 0, "maxiter": 10000})
    _, gradient = loss.loss_gradient(result.x, X, Y.astype(np.float64), sw, l2_reg_strength=l2)
    _, start_gradient = loss.loss_gradient(start, X, Y.astype(np.float64), sw,
                                           l2_reg_strength=l2)
    return result.x, np.abs(start_gradient).max(), np.abs(gradient).max()


def main():
    print(f"scikit-learn {sklearn.__version__}")
    for name, kwargs in FITS.items():
        for weighted in (False, True):
            sample_weight = SAMPLE_WEIGHT if weighted else None
            model = LogisticRegression(penalty="l2", solver="lbfgs", tol=1e-10,
                                       max_iter=10000, **kwargs)
            model.fit(X, Y, sample_weight=sample_weight)
            optimum, fit_gradient, optimum_gradient = polish(model, kwargs, sample_weight)
            coef = ", ".join(repr(v) for v in model.coef_[0])
            label = f"{name}{'_sample_weights' if weighted else ''}"
            print(f"{label}: sklearn coef [{coef}] intercept {model.intercept_[0]!r} "
                  f"(gradient {fit_gradient:.1e})")
            print(f"{label}: optimum {', '.join(repr(v) for v in optimum)} "
                  f"(gradient {optimum_gradient:.1e})")


if __name__ == "__main__":
    main()
