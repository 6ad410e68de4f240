#!/usr/bin/python3
"""Time cohort's K-means side by side with FAISS and scikit-learn on the same data.

Sections (--sections, all by default):

lloyd      n×d Gaussian blobs, k initial centroids drawn from the rows. cohort
           (cohort_kmeans_speed: RunLloyd on one KMeansShard), FAISS (faiss.Kmeans) and
           scikit-learn (KMeans, algorithm "lloyd") each run the same number of Lloyd
           iterations from the same centroids. Reported: the median seconds of iterations
           2 to N, GFLOP/s at 2·n·k·d flops per iteration, and the inertia of each tool's
           final centroids, recomputed here the same way for all tools.
minibatch  scikit-learn MiniBatchKMeans (batch 4096, its default stopping rule) from the
           same centroids sets the target: the recomputed inertia of its final centroids.
           cohort's mini-batch K-means (RunMiniBatch) then runs from the same centroids
           with snapshots of its centroids after every step, and the time is the one of
           the first step whose centroids reach the target.
cluster    a seeded users CSV data set (cohort_blobs_csv) loaded and segmented by a real
           `cohort coordinator` with W `cohort worker` processes on loopback, and the
           same job with one worker. Reported: ingest rows/s, seconds per Lloyd iteration,
           peak RSS per worker (VmHWM from /proc) and the overhead of W workers over one.
gemm       the assignment kernel alone (AssignNearest) in builds with each GEMM library
           (COHORT_GEMM=Eigen, OpenBLAS or BLIS), given with --gemm-build NAME=DIR.

The recomputed inertia assigns every row to its nearest centroid with float64 distances
and sums the exact squared differences (x − c)² in float64.

cohort picks its assignment kernel at run time: int8 dot products on a CPU with AVX-512
VNNI, the float GEMM elsewhere or with COHORT_ASSIGN_KERNEL=float in the environment.
Both give the same labels, so the inertia does not depend on the kernel.

Generated data stays in --work-dir and is reused when its parameters match. Run with
/usr/bin/python3, for which Debian's python3-faiss, python3-sklearn and python3-numpy
are installed. Every tool runs in its own process with OMP_NUM_THREADS = --threads,
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, and FAISS with OMP_WAIT_POLICY=PASSIVE.
"""

import argparse
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = pathlib.Path(__file__).resolve()

FULL_SIZES = {
    "rows": 1_000_000,
    "dim": 64,
    "k": 256,
    "iterations": 10,
    "cluster_rows": 10_000_000,
    "cluster_dim": 32,
    "cluster_k": 100,
}
QUICK_SIZES = {
    "rows": 60_000,
    "dim": 64,
    "k": 64,
    "iterations": 10,
    "cluster_rows": 200_000,
    "cluster_dim": 32,
    "cluster_k": 20,
}
SECTIONS = ("lloyd", "minibatch", "cluster", "gemm")
# Blob centres are drawn in [-BLOB_SPREAD, BLOB_SPREAD) per column around unit-variance
# noise, so the blobs overlap and Lloyd does not converge within the timed iterations.
BLOB_SPREAD = 1.0
MINIBATCH_BATCH_SIZE = 4096
# Targets of the comparison: how many times faster cohort should be.
TARGET_LLOYD_VS_FAISS = 2.5
TARGET_LLOYD_VS_SKLEARN = 2.8
TARGET_MINIBATCH_VS_SKLEARN = 3.0
TARGET_CLUSTER_OVERHEAD = 0.15
# Seconds to wait for a server process to print its address.
SERVER_START_TIMEOUT = 60


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--build-dir",
        default=str(REPO_ROOT / "build" / "release"),
        help="CMake build folder with bench/cohort_kmeans_speed, bench/cohort_cluster_bench, "
        "bench/cohort_blobs_csv and cli/cohort (default: build/release)",
    )
    parser.add_argument(
        "--work-dir",
        default="/tmp/cohort-bench",
        help="folder for generated data, tool outputs and results.json (default /tmp/cohort-bench)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="comma-separated sections to run, of " + ", ".join(SECTIONS) + " (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for development")
    for name, value in FULL_SIZES.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            help=f"override the size {name} (full {value:,}, quick {QUICK_SIZES[name]:,})",
        )
    parser.add_argument("--threads", type=int, default=2, help="OpenMP threads per tool (default 2)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the generated data (default 42)")
    parser.add_argument("--workers", type=int, default=4, help="cluster: worker processes (default 4)")
    parser.add_argument(
        "--worker-threads",
        type=int,
        help="cluster: OpenMP threads per worker (default: --threads / workers, at least 1)",
    )
    parser.add_argument("--csv-files", type=int, default=16, help="cluster: CSV files (default 16)")
    parser.add_argument(
        "--gemm-build",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="gemm: a build folder and its label, e.g. openblas=build/gemm-OpenBLAS; "
        "repeatable. --build-dir is always timed as its own GEMM",
    )
    parser.add_argument("--gemm-repeat", type=int, default=5, help="gemm: calls per build (default 5)")
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="lloyd: runs per tool, taken in turns; the median is over all their iterations "
        "(default 1)")
    parser.add_argument("--tool", help=argparse.SUPPRESS)  # internal: run one reference tool
    args = parser.parse_args()

    sizes = dict(QUICK_SIZES if args.quick else FULL_SIZES)
    for name in FULL_SIZES:
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name.replace('_', '-')} {value} is invalid; use at least 1")
            sizes[name] = value
    args.sizes = sizes
    args.section_list = [s for s in args.sections.split(",") if s]
    for section in args.section_list:
        if section not in SECTIONS:
            parser.error(f"--sections: unknown section '{section}'; use " + ", ".join(SECTIONS))
    if min(args.threads, args.workers, args.csv_files, args.repeat, args.gemm_repeat) < 1:
        parser.error("--threads, --workers, --csv-files, --repeat and --gemm-repeat must be "
                     "at least 1")
    if args.worker_threads is None:
        args.worker_threads = max(1, args.threads // args.workers)
    return args


# ---------------------------------------------------------------------------------------
# Data and the shared inertia


def blobs(rows, dim, k, seed):
    """Return rows×dim float32 Gaussian blobs around k centres (see BLOB_SPREAD)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-BLOB_SPREAD, BLOB_SPREAD, size=(k, dim))
    x = np.empty((rows, dim), dtype=np.float32)
    chunk = 1 << 18
    for begin in range(0, rows, chunk):
        end = min(rows, begin + chunk)
        labels = rng.integers(0, k, size=end - begin)
        x[begin:end] = centres[labels] + rng.standard_normal((end - begin, dim))
    return x


def prepare_lloyd_data(args):
    """Write x.f32 and init.f32 to the work folder unless they match; return the spec."""
    sizes = args.sizes
    spec = {
        "rows": sizes["rows"],
        "dim": sizes["dim"],
        "k": sizes["k"],
        "seed": args.seed,
        "spread": BLOB_SPREAD,
        "data": str(pathlib.Path(args.work_dir) / "x.f32"),
        "init": str(pathlib.Path(args.work_dir) / "init.f32"),
    }
    manifest = pathlib.Path(args.work_dir) / "x.json"
    if manifest.exists() and json.loads(manifest.read_text()) == spec:
        return spec
    print(f"generating {spec['rows']:,}×{spec['dim']} blobs ...", file=sys.stderr)
    x = blobs(spec["rows"], spec["dim"], spec["k"], args.seed)
    rng = np.random.default_rng(args.seed + 1)
    init = x[np.sort(rng.choice(spec["rows"], size=spec["k"], replace=False))]
    x.tofile(spec["data"])
    init.tofile(spec["init"])
    manifest.write_text(json.dumps(spec))
    return spec


def load_matrix(path, cols):
    return np.fromfile(path, dtype=np.float32).reshape(-1, cols)


def exact_inertia(x, centroids, chunk=1 << 16):
    """Return Σ over rows of the squared distance to the nearest centroid, in float64.

    The nearest centroid comes from float64 distances (‖x‖² − 2x·c + ‖c‖²), and the
    distance to it from exact differences, summed in float64.
    """
    c = np.asarray(centroids, dtype=np.float64)
    c_sq = np.einsum("ij,ij->i", c, c)
    total = 0.0
    for begin in range(0, x.shape[0], chunk):
        xb = x[begin:begin + chunk].astype(np.float64)
        dist = c_sq[None, :] - 2.0 * (xb @ c.T)
        nearest = dist.argmin(axis=1)
        diff = xb - c[nearest]
        total += float(np.einsum("ij,ij->i", diff, diff).sum())
    return total


# ---------------------------------------------------------------------------------------
# Processes


def tool_env(args, threads, extra=None):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    env["OMP_NUM_THREADS"] = str(threads)
    env.update(extra or {})
    return env


def run_json(command, env):
    """Run a command and return the JSON object on the last line of its stdout."""
    completed = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with status {completed.returncode}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def own_peak_rss_mib():
    """Peak RSS of this process in MiB: VmHWM, which counts only memory used after exec."""
    return peak_rss_mib("self")


def run_reference_tool(args, tool, spec, extra_env=None):
    command = [sys.executable, str(SCRIPT), "--tool", tool, "--work-dir", args.work_dir,
               "--threads", str(args.threads)]
    for name, value in args.sizes.items():
        command += ["--" + name.replace("_", "-"), str(value)]
    return run_json(command, tool_env(args, args.threads, extra_env))


def binary(args, name, build_dir=None):
    path = pathlib.Path(build_dir or args.build_dir) / name
    if not path.exists():
        sys.exit(f"{path} not found; build it first (cmake --build {build_dir or args.build_dir} "
                 f"--target {pathlib.Path(name).name})")
    return str(path)


def cohort_speed(args, spec, mode, extra, build_dir=None):
    command = [binary(args, "bench/cohort_kmeans_speed", build_dir), "--mode", mode,
               "--data", spec["data"], "--rows", str(spec["rows"]), "--dim", str(spec["dim"]),
               "--init", spec["init"], "--k", str(spec["k"])] + extra
    return run_json(command, tool_env(args, args.threads))


# ---------------------------------------------------------------------------------------
# Reference tools, each run in its own process (python3 compare_kmeans_speed.py --tool ...)


def tool_main(args):
    spec = prepare_lloyd_data(args)
    x = load_matrix(spec["data"], spec["dim"])
    init = load_matrix(spec["init"], spec["dim"])
    iterations = args.sizes["iterations"]
    out_path = pathlib.Path(args.work_dir) / f"{args.tool}.f32"
    result = {"tool": args.tool}

    if args.tool == "faiss-lloyd":
        import faiss

        faiss.omp_set_num_threads(args.threads)
        n, d, k = spec["rows"], spec["dim"], spec["k"]
        # max_points_per_centroid above n / k, so FAISS trains on every row instead of
        # a sample of 256 rows per centroid.
        kmeans = faiss.Kmeans(d, k, niter=iterations, seed=1, verbose=False,
                              max_points_per_centroid=n // k + 1)
        kmeans.train(x, init_centroids=init)
        stats = kmeans.iteration_stats
        # The "time" entry is cumulative seconds since the start of train().
        cumulative = [s["time"] for s in stats]
        result["iteration_seconds"] = [cumulative[0]] + [
            b - a for a, b in zip(cumulative, cumulative[1:])]
        result["version"] = faiss.__version__
        kmeans.centroids.astype(np.float32).tofile(out_path)

    elif args.tool == "sklearn-lloyd":
        import sklearn
        from sklearn.cluster import KMeans
        import sklearn.cluster._kmeans as kmeans_module

        # Each Lloyd iteration of KMeans calls lloyd_iter_chunked_dense once, and one more
        # call assigns the labels at the end. The times between call starts are the
        # iteration times.
        starts = []
        original = kmeans_module.lloyd_iter_chunked_dense

        def timed(*call_args, **call_kwargs):
            starts.append(time.perf_counter())
            return original(*call_args, **call_kwargs)

        kmeans_module.lloyd_iter_chunked_dense = timed
        model = KMeans(n_clusters=spec["k"], init=init, n_init=1, max_iter=iterations, tol=0,
                       algorithm="lloyd")
        model.fit(x)
        result["iteration_seconds"] = [b - a for a, b in zip(starts, starts[1:])][:iterations]
        result["version"] = sklearn.__version__
        model.cluster_centers_.astype(np.float32).tofile(out_path)

    elif args.tool == "sklearn-minibatch":
        import sklearn
        from sklearn.cluster import MiniBatchKMeans

        model = MiniBatchKMeans(n_clusters=spec["k"], init=init, n_init=1,
                                batch_size=MINIBATCH_BATCH_SIZE, random_state=0,
                                compute_labels=False)
        start = time.perf_counter()
        model.fit(x)
        result["fit_seconds"] = time.perf_counter() - start
        result["steps"] = int(model.n_steps_)
        result["version"] = sklearn.__version__
        model.cluster_centers_.astype(np.float32).tofile(out_path)
    else:
        sys.exit(f"unknown --tool {args.tool}")

    result["centroids"] = str(out_path)
    result["peak_rss_mib"] = own_peak_rss_mib()
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------
# Sections


def median_after_first(seconds):
    """Median of the iteration times without the first, which includes one-time work."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def run_lloyd(args):
    spec = prepare_lloyd_data(args)
    n, d, k = spec["rows"], spec["dim"], spec["k"]
    iterations = args.sizes["iterations"]
    flops = 2.0 * n * k * d
    x = load_matrix(spec["data"], d)

    cohort_out = str(pathlib.Path(args.work_dir) / "cohort-lloyd.f32")
    runs = {"cohort": [], "FAISS": [], "scikit-learn": []}
    # The tools take turns, so a change of machine load during the run spreads over all.
    for repetition in range(args.repeat):
        print(f"lloyd {repetition + 1}/{args.repeat}: cohort ...", file=sys.stderr)
        cohort = cohort_speed(args, spec, "lloyd",
                              ["--iterations", str(iterations), "--out", cohort_out])
        cohort["centroids"] = cohort_out
        runs["cohort"].append(cohort)
        print(f"lloyd {repetition + 1}/{args.repeat}: FAISS ...", file=sys.stderr)
        runs["FAISS"].append(
            run_reference_tool(args, "faiss-lloyd", spec, {"OMP_WAIT_POLICY": "PASSIVE"}))
        print(f"lloyd {repetition + 1}/{args.repeat}: scikit-learn ...", file=sys.stderr)
        runs["scikit-learn"].append(run_reference_tool(args, "sklearn-lloyd", spec))

    rows = {}
    for name, results in runs.items():
        # Iteration 1 of every run is left out, and the median is over the rest of all runs.
        seconds_list = [s for result in results for s in result["iteration_seconds"][1:]]
        seconds = statistics.median(seconds_list)
        last = results[-1]  # the inertia is that of the last run's centroids
        rows[name] = {
            "seconds_per_iteration": seconds,
            "gflops": flops / seconds / 1e9,
            "inertia": exact_inertia(x, load_matrix(last["centroids"], d)),
            "peak_rss_mib": max(result["peak_rss_mib"] for result in results),
            "iteration_seconds": [result["iteration_seconds"] for result in results],
            "version": last.get("version", ""),
        }
    base = rows["cohort"]["seconds_per_iteration"]
    for name in rows:
        rows[name]["cohort_speedup"] = rows[name]["seconds_per_iteration"] / base
    return {"n": n, "d": d, "k": k, "iterations": iterations, "gemm": cohort.get("gemm"),
            "tools": rows}


def first_reaching(x, snapshots, steps, target, d, k):
    """Return (index, inertia) of the first snapshot with inertia <= target.

    When no snapshot reaches the target, return (None, the lowest inertia checked).

    Inertia falls with noise along a mini-batch run, so the snapshots are checked at a
    coarse stride first, then bisected between the last miss and the first hit.
    """
    cache = {}

    def inertia(i):
        if i not in cache:
            cache[i] = exact_inertia(x, snapshots[i * k:(i + 1) * k])
        return cache[i]

    count = len(steps)
    stride = max(1, count // 16)
    previous_miss = -1
    hit = None
    for i in list(range(stride - 1, count, stride)) + [count - 1]:
        if inertia(i) <= target:
            hit = i
            break
        previous_miss = i
    if hit is None:
        return None, min(cache.values())
    low, high = previous_miss, hit  # inertia(high) <= target; low is a miss or -1
    while high - low > 1:
        middle = (low + high) // 2
        if inertia(middle) <= target:
            high = middle
        else:
            low = middle
    return high, inertia(high)


def run_minibatch(args):
    spec = prepare_lloyd_data(args)
    n, d, k = spec["rows"], spec["dim"], spec["k"]
    x = load_matrix(spec["data"], d)

    print("minibatch: scikit-learn ...", file=sys.stderr)
    sklearn_result = run_reference_tool(args, "sklearn-minibatch", spec)
    target = exact_inertia(x, load_matrix(sklearn_result["centroids"], d))
    steps_per_pass = -(-n // MINIBATCH_BATCH_SIZE)
    passes = -(-sklearn_result["steps"] // steps_per_pass) + 1

    print(f"minibatch: cohort, up to {passes} passes ...", file=sys.stderr)
    snapshot_path = str(pathlib.Path(args.work_dir) / "cohort-minibatch.f32")
    cohort = cohort_speed(args, spec, "minibatch",
                          ["--batch-size", str(MINIBATCH_BATCH_SIZE), "--passes", str(passes),
                           "--out", snapshot_path])
    snapshots = load_matrix(snapshot_path, d)
    steps = cohort["snapshot_steps"]
    index, inertia = first_reaching(x, snapshots, steps, target, d, k)
    result = {
        "n": n, "d": d, "k": k, "batch_size": MINIBATCH_BATCH_SIZE,
        "target_inertia": target,
        "sklearn_seconds": sklearn_result["fit_seconds"],
        "sklearn_steps": sklearn_result["steps"],
        "sklearn_peak_rss_mib": sklearn_result["peak_rss_mib"],
        "cohort_steps_run": cohort["steps"],
        "cohort_peak_rss_mib": cohort["peak_rss_mib"],
    }
    if index is None:
        result["cohort_reached"] = False
        result["cohort_best_inertia"] = inertia
        return result
    step = steps[index]
    result.update({
        "cohort_reached": True,
        "cohort_steps": step,
        "cohort_inertia": inertia,
        "cohort_seconds": cohort["step_elapsed_seconds"][step - 1],
    })
    result["cohort_speedup"] = result["sklearn_seconds"] / result["cohort_seconds"]
    return result


def prepare_cluster_data(args):
    sizes = args.sizes
    folder = pathlib.Path(args.work_dir) / "blobs-csv"
    spec = {"rows": sizes["cluster_rows"], "dim": sizes["cluster_dim"],
            "centers": sizes["cluster_k"], "spread": BLOB_SPREAD, "files": args.csv_files,
            "seed": args.seed}
    manifest = folder / "blobs.json"
    if manifest.exists() and json.loads(manifest.read_text()) == spec:
        return folder
    print(f"generating {spec['rows']:,}×{spec['dim']} CSV files ...", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.csv"):
        old.unlink()
    subprocess.run([binary(args, "bench/cohort_blobs_csv"), "--rows", str(spec["rows"]),
                    "--dim", str(spec["dim"]), "--centers", str(spec["centers"]),
                    "--spread", str(spec["spread"]), "--files", str(spec["files"]),
                    "--seed", str(spec["seed"]),
                    "--out", str(folder)], check=True, env=tool_env(args, args.threads),
                   stdout=subprocess.DEVNULL)
    manifest.write_text(json.dumps(spec))
    return folder


def start_server(command, log_path, env, marker):
    """Start a server with its stderr in log_path; return (process, address)."""
    log = open(log_path, "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        for line in pathlib.Path(log_path).read_text().splitlines():
            if marker in line:
                return process, line.rsplit(" ", 1)[-1]
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{command[0]} {command[1:3]} did not start; see {log_path}")


def peak_rss_mib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def mean_id_chars(n):
    """Mean length of the ids u0 .. u(n-1) that cohort_blobs_csv writes."""
    total, digits, start = 0, 1, 0
    while start < n:
        end = min(n, 10 ** digits)
        total += (end - start) * (digits + 1)
        start, digits = end, digits + 1
    return total / n if n else 0.0


def run_cluster_job(args, source, workers, threads_per_worker):
    cohort = binary(args, "cli/cohort")
    logs = pathlib.Path(args.work_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    try:
        addresses = []
        for w in range(workers):
            process, address = start_server(
                [cohort, "--log-level", "warn", "worker", "--listen", "127.0.0.1:0",
                 "--id", f"bench-{w}"],
                logs / f"worker-{workers}-{w}.log", tool_env(args, threads_per_worker),
                "listening on")
            processes.append(process)
            addresses.append(address)
        coordinator, coordinator_address = start_server(
            [cohort, "--log-level", "warn", "coordinator", "--listen", "127.0.0.1:0",
             "--workers", ",".join(addresses)],
            logs / f"coordinator-{workers}.log", tool_env(args, args.threads), "listening on")
        processes.append(coordinator)

        command = [binary(args, "bench/cohort_cluster_bench"), "--coordinator",
                   coordinator_address, "--source", source, "-k", str(args.sizes["cluster_k"]),
                   "--max-iter", str(args.sizes["iterations"]),
                   "--worker-pids", ",".join(str(p.pid) for p in processes[:workers])]
        result = run_json(command, tool_env(args, 1))
        result["worker_peak_rss_mib"] = [peak_rss_mib(p.pid) for p in processes[:workers]]
        # Raw bytes of the rows each worker hosts: float32 cells and id characters. The
        # hash spreads users evenly over the shards, so a worker hosts about its share.
        users = result["num_users"]
        raw_per_user = 4 * args.sizes["cluster_dim"] + mean_id_chars(users)
        # Workers listed in --workers are named worker-<index> by the coordinator.
        hosted = result["hosted_shards"]
        result["worker_raw_mib"] = [
            hosted.get(f"worker-{w}", hosted.get(f"bench-{w}", 0)) / result["num_shards"]
            * users * raw_per_user / 2**20 for w in range(workers)]
        result["coordinator_peak_rss_mib"] = peak_rss_mib(coordinator.pid)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    events = result["lloyd_events"]
    if len(events) >= 2:
        first, last = events[0], events[-1]
        iterations = last["iteration"] - first["iteration"]
        result["seconds_per_iteration"] = (
            (last["elapsed_seconds"] - first["elapsed_seconds"]) / iterations)
        # CPU time of all workers together: the work per iteration, which the load of
        # other processes on the machine changes far less than the elapsed time.
        result["worker_cpu_seconds_per_iteration"] = (
            (last["worker_cpu_seconds"] - first["worker_cpu_seconds"]) / iterations)
    else:
        result["seconds_per_iteration"] = float("nan")
        result["worker_cpu_seconds_per_iteration"] = float("nan")
    result["ingest_rows_per_second"] = result["rows_read"] / result["load_seconds"]
    result["workers"] = workers
    result["threads_per_worker"] = threads_per_worker
    return result


def run_cluster(args):
    folder = prepare_cluster_data(args)
    source = str(folder / "part-*.csv")
    runs = []
    for workers, threads in ((args.workers, args.worker_threads), (1, args.threads)):
        print(f"cluster: {workers} worker(s) × {threads} thread(s) ...", file=sys.stderr)
        run = run_cluster_job(args, source, workers, threads)
        print(f"cluster: {workers} worker(s): {run['seconds_per_iteration']:.3f} s per "
              f"iteration, load {run['load_seconds']:.1f} s", file=sys.stderr)
        runs.append(run)
    multi_worker, single_worker = runs
    overhead = (multi_worker["seconds_per_iteration"] / single_worker["seconds_per_iteration"]
                - 1.0)
    cpu_overhead = (multi_worker["worker_cpu_seconds_per_iteration"]
                    / single_worker["worker_cpu_seconds_per_iteration"] - 1.0)
    return {
        "rows": args.sizes["cluster_rows"], "d": args.sizes["cluster_dim"],
        "k": args.sizes["cluster_k"], "iterations": args.sizes["iterations"],
        "runs": runs,
        "overhead": overhead,
        "cpu_overhead": cpu_overhead,
    }


def run_gemm(args):
    spec = prepare_lloyd_data(args)
    flops = 2.0 * spec["rows"] * spec["k"] * spec["dim"]
    builds = [("build-dir", args.build_dir)]
    for entry in args.gemm_build:
        name, _, folder = entry.partition("=")
        if not folder:
            sys.exit(f"--gemm-build '{entry}' is invalid; use NAME=DIR")
        builds.append((name, folder))
    rows = []
    for name, folder in builds:
        print(f"gemm: {name} ({folder}) ...", file=sys.stderr)
        result = cohort_speed(args, spec, "assign", ["--repeat", str(args.gemm_repeat)], folder)
        seconds = median_after_first(result["call_seconds"])
        rows.append({"build": name, "gemm": result["gemm"], "seconds": seconds,
                     "gflops": flops / seconds / 1e9})
    return {"n": spec["rows"], "d": spec["dim"], "k": spec["k"], "builds": rows}


# ---------------------------------------------------------------------------------------
# Report


def print_lloyd(result):
    print(f"\nLloyd iteration, n = {result['n']:,}, d = {result['d']}, k = {result['k']}, "
          f"{result['iterations']} iterations from the same centroids "
          f"(cohort GEMM: {result['gemm']})")
    print("| Tool | s / iteration | GFLOP/s | Inertia | Peak RSS MiB | cohort speed-up |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, row in result["tools"].items():
        print(f"| {name} | {row['seconds_per_iteration']:.3f} | {row['gflops']:.1f} | "
              f"{row['inertia']:.6g} | {row['peak_rss_mib']:.0f} | {row['cohort_speedup']:.2f}× |")
    tools = result["tools"]
    print(f"targets: ≥ {TARGET_LLOYD_VS_FAISS}× FAISS: "
          f"{'met' if tools['FAISS']['cohort_speedup'] >= TARGET_LLOYD_VS_FAISS else 'MISSED'}; "
          f"≥ {TARGET_LLOYD_VS_SKLEARN}× scikit-learn: "
          f"{'met' if tools['scikit-learn']['cohort_speedup'] >= TARGET_LLOYD_VS_SKLEARN else 'MISSED'}")


def print_minibatch(result):
    print(f"\nMini-batch, n = {result['n']:,}, d = {result['d']}, k = {result['k']}, "
          f"batch {result['batch_size']}: target inertia {result['target_inertia']:.6g} "
          f"(scikit-learn's final)")
    print("| Tool | Seconds to the target | Steps | Peak RSS MiB |")
    print("|---|--:|--:|--:|")
    print(f"| scikit-learn MiniBatchKMeans | {result['sklearn_seconds']:.3f} | "
          f"{result['sklearn_steps']} | {result['sklearn_peak_rss_mib']:.0f} |")
    if not result["cohort_reached"]:
        print(f"| cohort | not reached in {result['cohort_steps_run']} steps (best "
              f"{result['cohort_best_inertia']:.6g}) | | {result['cohort_peak_rss_mib']:.0f} |")
        print(f"target: ≥ {TARGET_MINIBATCH_VS_SKLEARN}× scikit-learn: MISSED")
        return
    print(f"| cohort | {result['cohort_seconds']:.3f} | {result['cohort_steps']} | "
          f"{result['cohort_peak_rss_mib']:.0f} |")
    speedup = result["cohort_speedup"]
    print(f"cohort speed-up {speedup:.2f}×; target ≥ {TARGET_MINIBATCH_VS_SKLEARN}×: "
          f"{'met' if speedup >= TARGET_MINIBATCH_VS_SKLEARN else 'MISSED'}")


def print_cluster(result):
    print(f"\nCluster, {result['rows']:,} users × {result['d']}, k = {result['k']}, "
          f"{result['iterations']} Lloyd iterations, CSV load through LoadDataset")
    print("| Workers × threads | s / iteration | Worker CPU s / iteration | Ingest rows/s | "
          "Load s | Peak RSS per worker MiB | Peak ÷ raw bytes hosted | Coordinator MiB |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for run in result["runs"]:
        rss = ", ".join(f"{value:.0f}" for value in run["worker_peak_rss_mib"])
        ratios = ", ".join(f"{peak / raw:.2f}×" if raw > 0 else "—" for peak, raw in
                           zip(run["worker_peak_rss_mib"], run["worker_raw_mib"]))
        print(f"| {run['workers']} × {run['threads_per_worker']} | "
              f"{run['seconds_per_iteration']:.3f} | "
              f"{run['worker_cpu_seconds_per_iteration']:.3f} | "
              f"{run['ingest_rows_per_second']:,.0f} | "
              f"{run['load_seconds']:.1f} | {rss} | {ratios} | "
              f"{run['coordinator_peak_rss_mib']:.0f} |")
    overhead = result["overhead"]
    print(f"distributed overhead {100 * overhead:+.1f} % in elapsed time, "
          f"{100 * result['cpu_overhead']:+.1f} % in worker CPU time; target ≤ "
          f"{100 * TARGET_CLUSTER_OVERHEAD:.0f} % (elapsed): "
          f"{'met' if overhead <= TARGET_CLUSTER_OVERHEAD else 'MISSED'}")


def print_gemm(result):
    print(f"\nAssignNearest alone, n = {result['n']:,}, d = {result['d']}, k = {result['k']}")
    print("| Build | GEMM | s / call | GFLOP/s |")
    print("|---|---|--:|--:|")
    for row in result["builds"]:
        print(f"| {row['build']} | {row['gemm']} | {row['seconds']:.3f} | {row['gflops']:.1f} |")


def main():
    args = parse_args()
    pathlib.Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    if args.tool:
        tool_main(args)
        return

    load = os.getloadavg()
    results = {"sizes": args.sizes, "threads": args.threads,
               "load_average_at_start": load}
    runners = {"lloyd": (run_lloyd, print_lloyd), "minibatch": (run_minibatch, print_minibatch),
               "cluster": (run_cluster, print_cluster), "gemm": (run_gemm, print_gemm)}
    for section in args.section_list:
        run, report = runners[section]
        results[section] = run(args)
        results[section]["load_average_after"] = os.getloadavg()
        report(results[section])
        sys.stdout.flush()
    results["load_average_at_end"] = os.getloadavg()
    print(f"\nload average at start {load[0]:.2f}, at end {results['load_average_at_end'][0]:.2f}")
    (pathlib.Path(args.work_dir) / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
