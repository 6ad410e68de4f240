#!/usr/bin/python3
"""Print scikit-learn's binary metrics for the fixed inputs of binary_metrics_test.

tests/core/binary_metrics_test.cc embeds the values this script prints; the inputs below
must stay identical to the ones in that test. Predictions are score > 0.5, as
LogisticRegression.predict does for the decision function > 0.

Run it with /usr/bin/python3 (Debian's python3-sklearn). The test values were printed by
scikit-learn 1.2.1.
"""

import warnings

import numpy as np
import sklearn
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score,
                             log_loss, precision_score, recall_score, roc_auc_score)

CASES = {
    # Mixed labels with tied scores across classes.
    "mixed": ([1, 0, 1, 1, 0, 0, 1, 0, 1, 0],
              [0.9, 0.8, 0.8, 0.6, 0.55, 0.4, 0.4, 0.2, 0.1, 0.05]),
    # Every score below the threshold: no positive prediction.
    "no_positive_prediction": ([1, 0, 1, 0], [0.4, 0.3, 0.2, 0.1]),
    # Only negative labels, some predicted positive.
    "only_negatives": ([0, 0, 0, 0], [0.9, 0.2, 0.6, 0.1]),
    # Only positive labels.
    "only_positives": ([1, 1, 1], [0.9, 0.2, 0.7]),
    # Scores of exactly 0 and 1, which log loss clips.
    "extreme_scores": ([1, 0, 1, 0, 1], [1.0, 0.0, 0.0, 1.0, 0.5]),
}


def report(name, y, p):
    y = np.array(y)
    p = np.array(p, dtype=np.float64)
    pred = (p > 0.5).astype(int)
    out = {"accuracy": accuracy_score(y, pred)}
    for zd in (0, 1):
        out[f"precision_zd{zd}"] = precision_score(y, pred, zero_division=zd)
        out[f"recall_zd{zd}"] = recall_score(y, pred, zero_division=zd)
        out[f"f1_zd{zd}"] = f1_score(y, pred, zero_division=zd)
    try:
        out["roc_auc"] = roc_auc_score(y, p)
    except ValueError as error:
        out["roc_auc"] = f"undefined ({error})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["average_precision"] = average_precision_score(y, p)
    out["log_loss"] = log_loss(y, p, labels=[0, 1])
    print(name)
    for key, value in out.items():
        print(f"  {key:20s} {value!r}")


def main():
    print(f"scikit-learn {sklearn.__version__}")
    for name, (y, p) in CASES.items():
        report(name, y, p)


if __name__ == "__main__":
    main()
