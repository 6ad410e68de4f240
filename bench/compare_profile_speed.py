#!/usr/bin/python3
"""Time cohort's distributed profile training against scikit-learn's LogisticRegression.

The script writes a seeded synthetic data set (users with dense standard-normal features
and a 0/1 label drawn from a known logistic model), starts a cohort coordinator and
worker processes on loopback ports, and runs `cohort profile` on every user with the
default pipeline (impute mean + standardize) and C = 1. It reads the timestamps of the
job's phase lines on stderr: the load, the pipeline fit and design matrices, L-BFGS, and
the test metrics and score storage. Side by side, it fits
sklearn.linear_model.LogisticRegression(C=1, solver="lbfgs", tol=1e-4, max_iter=100) on
the first --sklearn-users users after StandardScaler, both in float64.

Both tools optimize the same objective, scikit-learn's (see core/logistic.h), with the
same stopping rule. The script prints the iterations and the test ROC-AUC of each, so
that the times compare like for like. The exit status is 2 when a tool or an input fails.

Run it with /usr/bin/python3, for which Debian's python3-sklearn and python3-numpy are
installed.
"""

import argparse
import json
import os
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
from sklearn.preprocessing import StandardScaler

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Rows written per np.savetxt call while generating the CSV file.
WRITE_CHUNK_ROWS = 250_000
SEED = 20251204
# Time allowed for a server to print its address, and for the whole profile command.
SERVER_TIMEOUT_S = 60
COMMAND_TIMEOUT_S = 4 * 3600


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000_000, help="users for cohort")
    parser.add_argument("--features", type=int, default=32, help="features per user")
    parser.add_argument("--workers", type=int, default=4, help="cohort worker processes")
    parser.add_argument("--worker-threads", type=int, default=0,
                        help="OpenMP threads per worker (default: CPUs / workers, at least 1, so "
                        "the workers do not oversubscribe the cores)")
    parser.add_argument("--sklearn-users", type=int, default=1_000_000,
                        help="users for scikit-learn (the first ones of the same data)")
    parser.add_argument("--quick", action="store_true",
                        help="200,000 users for cohort and 100,000 for scikit-learn")
    parser.add_argument("--cohort", default=str(REPO_ROOT / "build" / "release" / "cli" / "cohort"),
                        help="the cohort binary (default: build/release/cli/cohort)")
    parser.add_argument("--work-dir", default="",
                        help="folder for the data and the server logs (default: a new temp folder)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.users = 200_000
        args.sklearn_users = 100_000
    if args.worker_threads == 0:
        args.worker_threads = max(1, (os.cpu_count() or 1) // args.workers)
    if args.sklearn_users > args.users:
        parser.error("--sklearn-users must not exceed --users")
    return args


def write_data(path, users, features):
    """Writes id,f0..f{d-1},y and returns the true weights and intercept."""
    rng = np.random.default_rng(SEED)
    weights = rng.normal(0, 0.5, size=features)
    intercept = -1.0
    with open(path, "w") as out:
        out.write("id," + ",".join(f"f{j}" for j in range(features)) + ",y\n")
        for begin in range(0, users, WRITE_CHUNK_ROWS):
            end = min(users, begin + WRITE_CHUNK_ROWS)
            x = rng.standard_normal((end - begin, features)).astype(np.float32)
            p = 1 / (1 + np.exp(-(x.astype(np.float64) @ weights + intercept)))
            y = (rng.random(end - begin) < p).astype(np.int64)
            ids = np.arange(begin, end)
            table = np.column_stack([ids, x, y]).astype(object)
            np.savetxt(out, table, fmt=["u%d"] + ["%.6g"] * features + ["%d"], delimiter=",")
    return weights, intercept


def read_prefix(path, rows, features):
    data = np.loadtxt(path, delimiter=",", skiprows=1, max_rows=rows,
                      usecols=range(1, features + 2), dtype=np.float64)
    return data[:, :features], data[:, features].astype(np.int64)


def start_server(args, log_path, prefix, env=None):
    log = open(log_path, "w")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.time() + SERVER_TIMEOUT_S
    while time.time() < deadline:
        with open(log_path) as lines:
            for line in lines:
                if line.startswith(prefix):
                    return process, line[len(prefix):].strip()
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{args[3]} did not start; see {log_path}")


def run_cohort(args, csv_path, work_dir):
    servers = []
    try:
        coordinator, address = start_server(
            [args.cohort, "--log-level", "warn", "coordinator", "--listen", "127.0.0.1:0"],
            os.path.join(work_dir, "coordinator.log"), "coordinator listening on ")
        servers.append(coordinator)
        worker_env = dict(os.environ, OMP_NUM_THREADS=str(args.worker_threads),
                          OMP_WAIT_POLICY="PASSIVE")
        for i in range(args.workers):
            worker, _ = start_server(
                [args.cohort, "--log-level", "warn", "worker", "--listen", "127.0.0.1:0",
                 "--coordinator", address, "--id", f"w{i}"],
                os.path.join(work_dir, f"worker{i}.log"), f"worker w{i} listening on ", worker_env)
            servers.append(worker)
        command = [args.cohort, "profile", "--coordinator", address, "--data", csv_path,
                   "--id-column", "id", "--label", "y", "--positive", "1", "--top", "3"]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        marks = {}
        for line in process.stderr:
            now = time.perf_counter() - start
            for key, prefix in (("job_started", "profile job "), ("features", "features"),
                                ("design", "design"), ("lbfgs", "l-bfgs"),
                                ("metrics", "metrics"), ("scores", "scores"), ("done", "done")):
                if line.startswith(prefix) and key not in marks:
                    marks[key] = now
        out = process.stdout.read()
        process.wait(timeout=COMMAND_TIMEOUT_S)
        marks["exit"] = time.perf_counter() - start
        if process.returncode != 0:
            raise RuntimeError(f"cohort profile failed with code {process.returncode}")
    finally:
        for server in reversed(servers):
            server.terminate()
        for server in servers:
            server.wait(timeout=60)
    result = {
        "load_s": marks["job_started"],
        "pipeline_fit_s": marks["design"] - marks["features"],
        "design_s": marks["lbfgs"] - marks["design"],
        "lbfgs_s": marks["metrics"] - marks["lbfgs"],
        "metrics_and_scores_s": marks["done"] - marks["metrics"],
        "training_s": marks["done"] - marks["features"],
        "output": out,
    }
    for line in out.splitlines():
        if line.startswith("L-BFGS:"):
            result["iterations"] = int(line.split()[1])
        if "ROC-AUC" in line:
            result["roc_auc"] = float(line.split()[1])
    return result


def run_sklearn(csv_path, users, features):
    x, y = read_prefix(csv_path, users, features)
    test = np.zeros(users, dtype=bool)
    test[::5] = True  # every fifth user is held out
    start = time.perf_counter()
    scaler = StandardScaler().fit(x[~test])
    x_train = scaler.transform(x[~test])
    model = LogisticRegression(C=1.0, solver="lbfgs", tol=1e-4, max_iter=100)
    model.fit(x_train, y[~test])
    seconds = time.perf_counter() - start
    scores = model.predict_proba(scaler.transform(x[test]))[:, 1]
    return {
        "training_s": seconds,
        "iterations": int(model.n_iter_[0]),
        "roc_auc": float(roc_auc_score(y[test], scores)),
    }


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def main():
    args = parse_args()
    if not os.path.exists(args.cohort):
        print(f"cohort binary {args.cohort} not found; build it or pass --cohort", file=sys.stderr)
        return 2
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="cohort-profile-speed-")
    os.makedirs(work_dir, exist_ok=True)
    csv_path = os.path.join(work_dir, f"users_{args.users}x{args.features}.csv")
    try:
        if not os.path.exists(csv_path):
            start = time.perf_counter()
            write_data(csv_path, args.users, args.features)
            print(f"wrote {csv_path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        cohort = run_cohort(args, csv_path, work_dir)
        reference = run_sklearn(csv_path, args.sklearn_users, args.features)
    except (OSError, RuntimeError, subprocess.SubprocessError, KeyError) as error:
        print(f"compare_profile_speed: {error}", file=sys.stderr)
        return 2

    print(f"machine: {machine()}; scikit-learn {sklearn.__version__}, numpy {np.__version__}")
    print(f"cohort, {args.users:,} users x {args.features} features, {args.workers} workers "
          f"of {args.worker_threads} OpenMP threads:")
    print(f"  load {cohort['load_s']:.1f} s (not part of training)")
    print(f"  training {cohort['training_s']:.2f} s = pipeline fit {cohort['pipeline_fit_s']:.2f} s"
          f" + design matrices {cohort['design_s']:.2f} s + L-BFGS {cohort['lbfgs_s']:.2f} s"
          f" + test metrics and stored scores {cohort['metrics_and_scores_s']:.2f} s")
    print(f"  {cohort.get('iterations')} L-BFGS iterations, test ROC-AUC {cohort.get('roc_auc')}")
    print(f"scikit-learn, {args.sklearn_users:,} users: StandardScaler + LogisticRegression fit "
          f"{reference['training_s']:.2f} s, {reference['iterations']} iterations, "
          f"test ROC-AUC {reference['roc_auc']:.4f}")
    rate_cohort = args.users / cohort["training_s"]
    rate_sklearn = args.sklearn_users / reference["training_s"]
    print(f"users per second of training: cohort {rate_cohort:,.0f}, scikit-learn {rate_sklearn:,.0f}")
    if args.json:
        cohort.pop("output")
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "machine": machine(), "cohort": cohort,
                       "sklearn": reference}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
