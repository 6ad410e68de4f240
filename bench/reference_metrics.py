#!/usr/bin/python3
"""Print scikit-learn's cluster metrics for the small data sets of cluster_metrics_test.

tests/core/cluster_metrics_test.cc embeds the values this script prints. The data sets
below must stay identical to the ones in that test. Every matrix is rounded to float32
(cohort stores features as float32) and then cast to float64, which is what
scikit-learn receives.

The printed expressions are:
  inertia            ((X - means[labels]) ** 2).sum(), means = per-label row means
  calinski_harabasz  sklearn.metrics.calinski_harabasz_score(X, labels)
  davies_bouldin     sklearn.metrics.davies_bouldin_score(X, labels)
  silhouette_<m>     sklearn.metrics.silhouette_score(X, labels, metric=<m>)

Run it with /usr/bin/python3, the interpreter for which Debian's python3-sklearn and
python3-numpy are installed. The test values were printed by scikit-learn 1.2.1.
"""

import numpy as np
import sklearn
from sklearn.metrics import (calinski_harabasz_score, davies_bouldin_score,
                             silhouette_score)

# Four clusters in 3 dimensions, and cluster 3 has one row.
FOUR_WITH_SINGLETON_X = [
    [0.1, 0.2, 0.3], [0.4, -0.1, 0.2], [0.2, 0.3, -0.2],
    [3.1, 2.9, 3.3], [2.7, 3.2, 2.8], [3.4, 3.0, 2.6],
    [-2.2, 4.1, 0.5], [-1.8, 3.7, 0.9], [-2.5, 3.9, 1.2],
    [6.0, -5.0, 1.5],
]
FOUR_WITH_SINGLETON_LABELS = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]

# Clusters 0 and 1 have the same mean (1, 1), and cluster 2 is three copies of one row.
COINCIDENT_X = [
    [0, 0], [2, 2],
    [0, 2], [2, 0],
    [5, 5], [5, 5], [5, 5],
    [-3, 4], [-4, 3], [-3.5, 3.5],
]
COINCIDENT_LABELS = [0, 0, 1, 1, 2, 2, 2, 3, 3, 3]

# Six rows in five clusters: the largest number of clusters sklearn accepts for n = 6.
N_MINUS_ONE_X = [[0, 0], [0.5, 0.25], [3, 1], [-2, 2], [4, -3], [1, 5]]
N_MINUS_ONE_LABELS = [0, 0, 1, 2, 3, 4]

# Every cluster is copies of one row: zero within-cluster dispersion.
ZERO_SPREAD_X = [[0, 0], [0, 0], [1, 1], [1, 1], [1, 1]]
ZERO_SPREAD_LABELS = [0, 0, 1, 1, 1]

# Rows for the cosine distance: rows 2, 5 and 7 are zero vectors.
WITH_ZERO_ROWS_X = [
    [1, 0, 0], [0.9, 0.1, 0], [0, 0, 0],
    [0, 1, 0.2], [0.1, 0.8, 0], [0, 0, 0],
    [-1, -1, 1], [0, 0, 0],
]
WITH_ZERO_ROWS_LABELS = [0, 0, 0, 1, 1, 1, 2, 2]


def lcg_offset_data(n=40, d=5, k=4, offset=1000.0, seed=12345):
    """40 rows near 1000 in 5 dimensions, 4 labels, from a 64-bit LCG.

    Coordinates are offset + v / 64 with v an integer in [-1000, 1000], so they are
    exact in float32 and the C++ test builds the same matrix.
    """
    mask = (1 << 64) - 1
    state = seed

    def draw(modulus):
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) & mask
        return (state >> 33) % modulus

    x = []
    labels = []
    for _ in range(n):
        x.append([offset + (draw(2001) - 1000) / 64.0 for _ in range(d)])
        labels.append(draw(k))
    return x, labels


def as_float32_rows(rows):
    return np.array(rows, dtype=np.float32).astype(np.float64)


def inertia(x, labels):
    total = 0.0
    for label in np.unique(labels):
        rows = x[labels == label]
        total += ((rows - rows.mean(axis=0)) ** 2).sum()
    return total


def print_case(name, rows, labels, metrics):
    x = as_float32_rows(rows)
    labels = np.asarray(labels)
    print(f"{name}: n={len(labels)} d={x.shape[1]} labels={len(np.unique(labels))}")
    print(f"  inertia = {inertia(x, labels):.17g}")
    print(f"  calinski_harabasz = {calinski_harabasz_score(x, labels):.17g}")
    print(f"  davies_bouldin = {davies_bouldin_score(x, labels):.17g}")
    for metric in metrics:
        value = silhouette_score(x, labels, metric=metric)
        print(f"  silhouette_{metric} = {value:.17g}")


def main():
    print(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}")
    all_metrics = ["sqeuclidean", "euclidean", "cosine"]
    print_case("four_with_singleton", FOUR_WITH_SINGLETON_X, FOUR_WITH_SINGLETON_LABELS,
               all_metrics)
    print_case("coincident", COINCIDENT_X, COINCIDENT_LABELS, ["sqeuclidean", "euclidean"])
    print_case("n_minus_one", N_MINUS_ONE_X, N_MINUS_ONE_LABELS, ["sqeuclidean"])
    print_case("zero_spread", ZERO_SPREAD_X, ZERO_SPREAD_LABELS, ["sqeuclidean"])
    lcg_x, lcg_labels = lcg_offset_data()
    print(f"lcg_offset labels: {lcg_labels}")
    print_case("lcg_offset", lcg_x, lcg_labels, all_metrics)
    zero_x = as_float32_rows(WITH_ZERO_ROWS_X)
    value = silhouette_score(zero_x, WITH_ZERO_ROWS_LABELS, metric="cosine")
    print(f"with_zero_rows: silhouette_cosine = {value:.17g}")

    # sklearn rejects these clusterings, and cohort reports their metrics as undefined.
    for name, labels in [("one_cluster", [0] * 10), ("k_equals_n", list(range(10)))]:
        try:
            silhouette_score(as_float32_rows(FOUR_WITH_SINGLETON_X), labels)
        except ValueError as error:
            print(f"{name}: ValueError: {error}")


if __name__ == "__main__":
    main()
