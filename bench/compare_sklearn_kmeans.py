#!/usr/bin/python3
"""Compare cohort's K-means inertia with scikit-learn's on the segmentation features.

For each data set, cohort_kmeans_quality builds the feature matrix as a segmentation job
does and runs cohort K-means with n_init 1 and n_init 10. This script then runs
sklearn.cluster.KMeans (k-means++, n_init=10, random_state=0, algorithm="lloyd") on the
same float32 matrix cast to float64, and recomputes both inertias the same way: exact
squared differences in float64, nearest centroid per row, summed in float64.

A case passes when cohort's inertia is at most 1 % above scikit-learn's. The exit status
is 1 when any case fails and 2 when a tool or input fails.

With --seed-sweep N, the script also runs cohort with n_init 1 for N seeds and
scikit-learn with n_init 1 for N random states, and counts the runs within 1 % of the
scikit-learn n_init 10 inertia. The sweep is informational and does not change the exit
status.

Run it with /usr/bin/python3, the interpreter for which Debian's python3-sklearn and
python3-numpy are installed.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import statistics
import sys
import tempfile
import time

import numpy as np
import sklearn
from sklearn.cluster import KMeans

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# (data set name of cohort_kmeans_quality, k)
CASES = [("online-retail", 5), ("bank", 6), ("mall", 5)]
# --quick keeps the two smaller data sets.
QUICK_CASES = [("online-retail", 5), ("mall", 5)]
COHORT_N_INITS = (1, 10)
SKLEARN_N_INIT = 10
# cohort may be at most this fraction above scikit-learn's inertia.
MAX_EXCESS = 0.01


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--build-dir",
        default=str(REPO_ROOT / "build" / "release"),
        help="CMake build folder that contains bench/cohort_kmeans_quality "
        "(default: build/release under the repository root)",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("COHORT_DATA_DIR") or str(REPO_ROOT.parent / "shared" / "data"),
        help="folder of the public data sets (default: $COHORT_DATA_DIR, else "
        "../shared/data next to the repository root)",
    )
    parser.add_argument(
        "--work-dir",
        help="folder for the feature matrices and JSON files (default: a temporary "
        "folder, deleted at exit)",
    )
    parser.add_argument("--seed", type=int, default=42, help="cohort random seed (default 42)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="fits per tool and case; the median time is reported (default 1)",
    )
    parser.add_argument(
        "--seed-sweep",
        type=int,
        default=0,
        metavar="N",
        help="also count n_init 1 runs within 1%% of the reference over N seeds (default 0: off)",
    )
    parser.add_argument(
        "--raw-numeric",
        action="store_true",
        help="pass --raw-numeric to cohort_kmeans_quality: online-retail RFM columns without "
        "the job's default log1p",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run only online-retail and mall, skipping the 45,211-row bank data set",
    )
    args = parser.parse_args()

    if args.repeat < 1:
        parser.error(f"--repeat {args.repeat} is invalid; use at least 1")
    if args.seed_sweep < 0:
        parser.error(f"--seed-sweep {args.seed_sweep} is invalid; use 0 or more")
    return args


def exact_inertia(x64, centroids):
    """Return the sum over rows of the smallest squared distance to a centroid.

    x64 is n×d float64; centroids (k×d) are cast to float64. Distances come from exact
    differences, not from the ‖x‖² − 2x·c + ‖c‖² expansion, so no cancellation occurs.
    """
    centroids = np.asarray(centroids, dtype=np.float64)
    best = np.full(x64.shape[0], np.inf)
    for c in centroids:
        diff = x64 - c
        np.minimum(best, np.einsum("ij,ij->i", diff, diff), out=best)
    return float(best.sum(dtype=np.float64))


def run_cohort(args, tool, work_dir, dataset, k, n_init, seed, repeat=1, quiet=False):
    """Run cohort_kmeans_quality `repeat` times and return its JSON description.

    kmeans_seconds becomes the median over the runs. The inertia is the same in every
    run, because cohort K-means is deterministic for a seed.
    """
    prefix = pathlib.Path(work_dir) / f"{dataset}-k{k}-n{n_init}-s{seed}"
    command = [
        str(tool),
        "--dataset", dataset,
        "--data-dir", str(args.data_dir),
        "--out", str(prefix),
        "-k", str(k),
        "--n-init", str(n_init),
        "--seed", str(seed),
    ]
    if args.raw_numeric:
        command.append("--raw-numeric")
    seconds = []
    for _ in range(repeat):
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed with exit status {completed.returncode}:\n"
                f"{completed.stderr.strip()}"
            )
        if not quiet:
            print(completed.stdout.strip(), file=sys.stderr)
        with open(f"{prefix}.json", encoding="utf-8") as file:
            info = json.load(file)
        seconds.append(info["kmeans_seconds"])
    info["kmeans_seconds"] = statistics.median(seconds)
    return info


def load_matrix(info):
    x = np.fromfile(info["matrix"], dtype="<f4")
    n, d = info["n"], info["d"]
    if x.size != n * d:
        raise RuntimeError(
            f"{info['matrix']} has {x.size} float32 values but its JSON file gives "
            f"n×d = {n}×{d}; rerun cohort_kmeans_quality"
        )
    return x.reshape(n, d)


def run_sklearn(x32, k, n_init=SKLEARN_N_INIT, random_state=0, repeat=1):
    """Fit scikit-learn K-means on x32 cast to float64 `repeat` times.

    Returns (exact inertia, median fit seconds, n_iter_ of the best run). The fit is
    deterministic for a random_state, so every repeat gives the same centroids.
    """
    x64 = x32.astype(np.float64)
    seconds = []
    for _ in range(repeat):
        model = KMeans(
            n_clusters=k,
            init="k-means++",
            n_init=n_init,
            random_state=random_state,
            algorithm="lloyd",
        )
        start = time.perf_counter()
        model.fit(x64)
        seconds.append(time.perf_counter() - start)
    inertia = exact_inertia(x64, model.cluster_centers_)
    return inertia, statistics.median(seconds), int(model.n_iter_)


def sweep_seeds(args, tool, work_dir, dataset, k, x32, reference):
    """Return (cohort runs within target, scikit-learn runs within target, worst ratios)."""
    limit = reference * (1.0 + MAX_EXCESS)
    cohort = [
        run_cohort(args, tool, work_dir, dataset, k, 1, args.seed + i, quiet=True)[
            "inertia"
        ]
        for i in range(args.seed_sweep)
    ]
    sklearn_runs = [
        run_sklearn(x32, k, n_init=1, random_state=i)[0] for i in range(args.seed_sweep)
    ]
    return (
        sum(value <= limit for value in cohort),
        sum(value <= limit for value in sklearn_runs),
        max(cohort) / reference,
        max(sklearn_runs) / reference,
    )


def verdict(cohort_inertia, sklearn_inertia):
    ratio = cohort_inertia / sklearn_inertia
    return ratio, "PASS" if ratio <= 1.0 + MAX_EXCESS else "FAIL"


def main():
    args = parse_args()
    tool = pathlib.Path(args.build_dir) / "bench" / "cohort_kmeans_quality"
    if not tool.is_file():
        print(
            f"error: {tool} not found; build the cohort_kmeans_quality target and pass "
            "its build folder with --build-dir",
            file=sys.stderr,
        )
        return 2
    if not pathlib.Path(args.data_dir).is_dir():
        print(
            f"error: data folder {args.data_dir} not found; set COHORT_DATA_DIR or pass --data-dir",
            file=sys.stderr,
        )
        return 2

    print(
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}, cohort seed {args.seed}"
        f"{', raw-unit RFM features' if args.raw_numeric else ''}, "
        f"scikit-learn n_init {SKLEARN_N_INIT} random_state 0 on float64"
    )
    rows = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="cohort-kmeans-quality-") as temp_dir:
        work_dir = args.work_dir or temp_dir
        os.makedirs(work_dir, exist_ok=True)
        for dataset, k in QUICK_CASES if args.quick else CASES:
            try:
                cohort = {
                    n_init: run_cohort(
                        args, tool, work_dir, dataset, k, n_init, args.seed, args.repeat
                    )
                    for n_init in COHORT_N_INITS
                }
                # Both runs write the same matrix; the first one is read.
                x32 = load_matrix(cohort[COHORT_N_INITS[0]])
            except (RuntimeError, OSError) as error:
                print(f"error: {dataset}: {error}", file=sys.stderr)
                return 2
            sklearn_inertia, sklearn_seconds, sklearn_iter = run_sklearn(
                x32, k, repeat=args.repeat
            )
            row = {
                "dataset": dataset,
                "n": x32.shape[0],
                "d": x32.shape[1],
                "k": k,
                "sklearn": sklearn_inertia,
                "sklearn_seconds": sklearn_seconds,
                "sklearn_iter": sklearn_iter,
            }
            for n_init, info in cohort.items():
                ratio, result = verdict(info["inertia"], sklearn_inertia)
                failed |= result == "FAIL"
                row[f"cohort{n_init}"] = info["inertia"]
                row[f"ratio{n_init}"] = ratio
                row[f"result{n_init}"] = result
                row[f"seconds{n_init}"] = info["kmeans_seconds"]
                row[f"iter{n_init}"] = info["iterations"]
            if args.seed_sweep > 0:
                try:
                    row["sweep"] = sweep_seeds(args, tool, work_dir, dataset, k, x32, sklearn_inertia)
                except (RuntimeError, OSError) as error:
                    print(f"error: {dataset}: {error}", file=sys.stderr)
                    return 2
            rows.append(row)

    print()
    print(
        "| data set | n | d | k | cohort n_init 1 | cohort n_init 10 | scikit-learn n_init 10 "
        "| ratio n_init 1 | ratio n_init 10 | time cohort 1 / 10 / scikit-learn |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for row in rows:
        print(
            f"| {row['dataset']} | {row['n']:,} | {row['d']} | {row['k']} "
            f"| {row['cohort1']:,.2f} | {row['cohort10']:,.2f} | {row['sklearn']:,.2f} "
            f"| {row['ratio1']:.4f} {row['result1']} | {row['ratio10']:.4f} {row['result10']} "
            f"| {row['seconds1']:.3f} s / {row['seconds10']:.3f} s / {row['sklearn_seconds']:.3f} s |"
        )
    print()
    print(
        f"PASS: cohort inertia at most {MAX_EXCESS:.0%} above scikit-learn's. Times are the "
        "K-means fit only (feature building and file output excluded). Lloyd iterations "
        "of the winning run (cohort 1 / 10 / scikit-learn): "
        + "; ".join(
            f"{row['dataset']} {row['iter1']} / {row['iter10']} / {row['sklearn_iter']}"
            for row in rows
        )
    )
    if args.seed_sweep > 0:
        n = args.seed_sweep
        print()
        print(
            f"n_init 1 over {n} seeds (cohort seeds {args.seed}..{args.seed + n - 1}, "
            f"scikit-learn random_state 0..{n - 1}): runs within {MAX_EXCESS:.0%} of the "
            f"scikit-learn n_init {SKLEARN_N_INIT} inertia, and the worst ratio"
        )
        print()
        print("| data set | cohort within | cohort worst | scikit-learn within | scikit-learn worst |")
        print("|---|--:|--:|--:|--:|")
        for row in rows:
            cohort_ok, sklearn_ok, cohort_worst, sklearn_worst = row["sweep"]
            print(
                f"| {row['dataset']} | {cohort_ok}/{n} | {cohort_worst:.4f} "
                f"| {sklearn_ok}/{n} | {sklearn_worst:.4f} |"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
