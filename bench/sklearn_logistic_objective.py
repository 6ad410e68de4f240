"""scikit-learn 1.2.1's binary LogisticRegression objective, and a polish to its optimum.

scikit-learn's lbfgs solver stops when the objective falls by less than 64 machine
epsilons per step (scipy's ftol), which can leave coefficients 1e-3 from the optimum
along nearly flat directions, such as a full one-hot block next to the intercept.
polish() restarts from scikit-learn's fit and minimises the same objective (LinearModelLoss
with HalfBinomialLoss; sample weights divided by their sum, then multiplied by the class
weights; L2 strength 1 / (C · sum of sample weights), as sklearn/linear_model/_logistic.py
sets them up) until the gradient's largest entry is below 1e-10 or stops falling.
"""

import numpy as np
import scipy.optimize
from sklearn._loss.loss import HalfBinomialLoss
from sklearn.linear_model._linear_loss import LinearModelLoss
from sklearn.utils.class_weight import compute_class_weight


def polish(model, x, y, c, sample_weight=None, class_weight=None, fit_intercept=True):
    """Returns (optimum, max |gradient| at the fit, max |gradient| at the optimum).

    optimum is [coef..., intercept] with fit_intercept, else [coef...].
    """
    y = np.asarray(y, dtype=np.float64)
    sw = np.ones(len(y)) if sample_weight is None else np.array(sample_weight, dtype=np.float64)
    sw_sum = sw.sum()
    sw = sw / sw_sum
    if class_weight is not None:
        sw = sw * compute_class_weight(class_weight, classes=np.array([0.0, 1.0]), y=y)[
            y.astype(int)]
    loss = LinearModelLoss(base_loss=HalfBinomialLoss(), fit_intercept=fit_intercept)
    l2 = 1.0 / (c * sw_sum)
    start = np.append(model.coef_[0], model.intercept_[0]) if fit_intercept else model.coef_[0]

    def objective(coef):
        return loss.loss_gradient(coef, x, y, sw, l2_reg_strength=l2)

    result = scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B",
                                     options={"gtol": 1e-13, "ftol": 0, "maxiter": 100000})
    return (result.x, np.abs(objective(start)[1]).max(), np.abs(objective(result.x)[1]).max())
