#!/usr/bin/python3
"""Compare cohort's similarity kernels with scipy and FAISS on the same inputs.

Three comparisons, each run side by side in one process tree on the same numbers:

1. All-items item-item cosine top-20 on sparse interactions: cohort_cf_bench sparse
   (ComputeAllItemNeighbors) against scipy.sparse (columns scaled to unit norm, X^T X,
   diagonal dropped, top-20 per row by argpartition). Inputs: a synthetic 100,000 users x
   20,000 items x 2,000,000 interactions (uniform items, ratings 1-5, seed 0), and
   MovieLens 100k (u.data). The neighbour lists are compared as sets.
2. Exact dense top-10 by inner product on unit rows: cohort_cf_bench exact
   (ExactDenseTopK) against faiss.IndexFlatIP, n base rows x q queries x d.
3. Exact all-pairs top-10 (every row's neighbours among the other rows, as user-user
   neighbours within one set): ExactDenseAllPairsTopK, which computes each pair once,
   against faiss.IndexFlatIP searching the rows for k + 1 and dropping each row itself.
4. Approximate top-10: cohort_cf_bench ivf (IvfIndex over given centroids) against
   faiss.IndexIVFFlat with the same centroids in its quantizer (so both have the same
   lists), at several nprobe. Recall@10 is measured against the exact result.

Threads: both tools use OMP_NUM_THREADS (default 2); FAISS runs with
OMP_WAIT_POLICY=PASSIVE. Times are medians of --repeats runs.

Run with /usr/bin/python3 (Debian's python3-numpy, python3-scipy and python3-faiss).
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
import scipy
import scipy.sparse as sp

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import faiss  # noqa: E402  (reads OMP_WAIT_POLICY when its OpenMP runtime starts)

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", default=str(REPO_ROOT / "build" / "release"),
                        help="CMake build folder containing bench/cohort_cf_bench")
    parser.add_argument("--data-dir",
                        default=os.environ.get("COHORT_DATA_DIR") or str(REPO_ROOT.parent / "shared" / "data"),
                        help="folder of the public data sets")
    parser.add_argument("--threads", type=int, default=2, help="OpenMP threads for both tools")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--dense-n", type=int, default=1_000_000, help="base rows of the dense cases")
    parser.add_argument("--dense-q", type=int, default=2048, help="queries of the exact case")
    parser.add_argument("--ivf-q", type=int, default=10_000, help="queries of the IVF case")
    parser.add_argument("--dense-d", type=int, default=64, help="dimension of the dense cases")
    parser.add_argument("--lists", type=int, default=1024, help="IVF lists (centroids)")
    parser.add_argument("--all-pairs-n", type=int, default=100_000, help="rows of the all-pairs case")
    parser.add_argument("--skip", nargs="*", default=[], choices=["sparse", "exact", "all-pairs", "ivf"],
                        help="comparisons to skip")
    return parser.parse_args()


def run_cohort(binary, subcommand, options, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [str(binary), subcommand] + [str(o) for o in options]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_time(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


# ---------------------------------------------------------------------------------------
# Sparse item-item.

def synthetic_interactions(users, items, nnz, seed=0):
    rng = np.random.default_rng(seed)
    # Draw 5 % extra pairs, drop repeated (user, item) pairs, keep the first nnz.
    u = rng.integers(0, users, size=int(nnz * 1.05), dtype=np.int64)
    i = rng.integers(0, items, size=int(nnz * 1.05), dtype=np.int64)
    _, first = np.unique(u * items + i, return_index=True)
    first = np.sort(first)[:nnz]
    values = rng.integers(1, 6, size=first.size).astype(np.float32)
    return u[first].astype(np.int32), i[first].astype(np.int32), values


def movielens_interactions(data_dir):
    table = np.loadtxt(pathlib.Path(data_dir) / "movielens-100k" / "u.data", dtype=np.int64)
    return (table[:, 0].astype(np.int32), table[:, 1].astype(np.int32),
            table[:, 2].astype(np.float32))


def scipy_item_topk(users, items, values, k):
    """Cosine top-k of every item: ids (items x k, -1 pads) in dense item index order."""
    n_users = int(users.max()) + 1
    n_items = int(items.max()) + 1
    x = sp.csr_matrix((values.astype(np.float64), (users, items)), shape=(n_users, n_items))
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0))).ravel()
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    xn = x @ sp.diags(inverse)
    s = (xn.T @ xn).tocsr()
    s.setdiag(0)
    s.eliminate_zeros()
    ids = np.full((n_items, k), -1, dtype=np.int64)
    for row in range(n_items):
        start, end = s.indptr[row], s.indptr[row + 1]
        if start == end:
            continue
        data = s.data[start:end]
        cols = s.indices[start:end]
        if end - start > k:
            part = np.argpartition(-data, k - 1)[:k]
        else:
            part = np.arange(end - start)
        order = part[np.argsort(-data[part], kind="stable")]
        ids[row, :order.size] = cols[order]
    return ids


def exact_top_scores(users, items, values, cohort_ids, max_items=5000):
    """Counts cohort lists whose scores are exactly the k largest of a dense X^T X (to 1e-6).

    Lists that differ from scipy's can then differ only among tied similarities. Only
    for catalogues of at most max_items, because the check builds the dense matrix."""
    n_items = int(items.max()) + 1
    if n_items > max_items:
        return "not checked"
    x = sp.csr_matrix((values.astype(np.float64), (users, items)))
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0))).ravel()
    xn = x @ sp.diags(1.0 / norms)
    dense = (xn.T @ xn).toarray()
    np.fill_diagonal(dense, -np.inf)
    k = cohort_ids.shape[1]
    good = 0
    for row in range(n_items):
        ids = cohort_ids[row][cohort_ids[row] >= 0]
        positive = dense[row][dense[row] > 0]
        best = np.sort(positive)[::-1][:k]
        got = np.sort(dense[row][ids])[::-1]
        good += got.size == best.size and (got.size == 0 or np.max(np.abs(got - best)) <= 1e-6)
    return f"{good:,} of {n_items:,}"


def compare_sparse(args, binary, work):
    cases = [("synthetic 100k x 20k x 2M", synthetic_interactions(100_000, 20_000, 2_000_000)),
             ("MovieLens 100k", movielens_interactions(args.data_dir))]
    rows = []
    for name, (users, items, values) in cases:
        # Dense item numbering shared by both tools: present items in ascending id order.
        present, item_index = np.unique(items, return_inverse=True)
        _, user_index = np.unique(users, return_inverse=True)
        triplets = np.empty((users.size, 3), dtype=np.int32)
        triplets[:, 0] = user_index
        triplets[:, 1] = item_index
        triplets[:, 2] = values.view(np.int32)
        path = work / "triplets.bin"
        triplets.tofile(path)
        threads_note = {}
        cohort_ids = None
        for shards in (1, 64):
            out = work / f"sparse_{shards}.ids"
            result = run_cohort(binary, "sparse",
                                ["--triplets", path, "--nnz", users.size, "--k", 20, "--shards", shards,
                                 "--repeats", args.repeats, "--out", out], args.threads)
            threads_note[shards] = result
            if shards == 1:
                cohort_ids = np.fromfile(out, dtype=np.int64).reshape(-1, 20)
        scipy_seconds, scipy_ids = median_time(
            lambda: scipy_item_topk(user_index, item_index, values, 20), args.repeats)
        same = overlap = 0
        for a, b in zip(cohort_ids, scipy_ids):
            sa, sb = set(a[a >= 0]), set(b[b >= 0])
            same += sa == sb
            overlap += len(sa & sb) / max(1, len(sb))
        exact_scores = exact_top_scores(user_index, item_index, values, cohort_ids)
        rows.append({"case": name, "items": int(present.size), "nnz": int(users.size),
                     "cohort_1_shard_s": threads_note[1]["seconds"],
                     "cohort_64_shards_s": threads_note[64]["seconds"],
                     "scipy_s": scipy_seconds,
                     "identical_lists": same / len(scipy_ids),
                     "exact_scores": exact_scores,
                     "mean_overlap": overlap / len(scipy_ids)})
    print("\n### Item-item cosine top-20, all items (cohort 2 threads; scipy 1 thread)\n")
    print("| data | items | interactions | cohort, 1 shard | cohort, 64 shards | scipy | "
          "scipy / cohort (1 shard) | identical lists | mean overlap | cohort lists with the "
          "true top-20 scores |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['items']:,} | {r['nnz']:,} | {r['cohort_1_shard_s']:.2f} s | "
              f"{r['cohort_64_shards_s']:.2f} s | {r['scipy_s']:.2f} s | "
              f"{r['scipy_s'] / r['cohort_1_shard_s']:.2f}x | {100 * r['identical_lists']:.1f} % | "
              f"{100 * r['mean_overlap']:.2f} % | {r['exact_scores']} |")


# ---------------------------------------------------------------------------------------
# Dense.

def clustered_unit_rows(n, d, seed, centers=4096):
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(12345).standard_normal((centers, d)).astype(np.float32)
    x = means[rng.integers(0, centers, size=n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def recall_at_k(found, truth):
    hits = 0
    for a, b in zip(found, truth):
        hits += len(set(a[a >= 0]) & set(b))
    return hits / truth.size


def compare_exact(args, binary, work, base):
    d = base.shape[1]
    queries = clustered_unit_rows(args.dense_q, d, seed=2)
    base.tofile(work / "base.f32")
    queries.tofile(work / "queries.f32")
    result = run_cohort(binary, "exact",
                        ["--base", work / "base.f32", "--n", base.shape[0], "--queries", work / "queries.f32",
                         "--q", queries.shape[0], "--d", d, "--k", 10, "--repeats", args.repeats,
                         "--out", work / "exact.ids"], args.threads)
    cohort_ids = np.fromfile(work / "exact.ids", dtype=np.int64).reshape(-1, 10)
    faiss.omp_set_num_threads(args.threads)
    index = faiss.IndexFlatIP(d)
    index.add(base)
    faiss_seconds, (_, faiss_ids) = median_time(lambda: index.search(queries, 10), args.repeats)
    q = queries.shape[0]
    print(f"\n### Exact top-10, inner product of unit rows, {base.shape[0]:,} x {d} base, "
          f"{q:,} queries, {args.threads} threads\n")
    print("| tool | time | queries/s | recall@10 vs FAISS |")
    print("|---|---|---|---|")
    print(f"| cohort ExactDenseTopK | {result['seconds']:.2f} s | {q / result['seconds']:,.0f} | "
          f"{recall_at_k(cohort_ids, faiss_ids):.4f} |")
    print(f"| FAISS IndexFlatIP | {faiss_seconds:.2f} s | {q / faiss_seconds:,.0f} | 1 |")
    print(f"\ncohort / FAISS queries per second: {faiss_seconds / result['seconds']:.2f}x")


def compare_all_pairs(args, binary, work):
    n, d = args.all_pairs_n, args.dense_d
    base = clustered_unit_rows(n, d, seed=5)
    base.tofile(work / "all_pairs.f32")
    result = run_cohort(binary, "exact",
                        ["--base", work / "all_pairs.f32", "--n", n, "--queries", work / "all_pairs.f32",
                         "--q", n, "--d", d, "--k", 10, "--all-pairs", "--repeats", args.repeats,
                         "--out", work / "all_pairs.ids"], args.threads)
    cohort_ids = np.fromfile(work / "all_pairs.ids", dtype=np.int64).reshape(-1, 10)
    faiss.omp_set_num_threads(args.threads)
    index = faiss.IndexFlatIP(d)
    index.add(base)
    # FAISS has no all-pairs search: every row queries the index for k + 1 and drops itself.
    faiss_seconds, (_, faiss_ids) = median_time(lambda: index.search(base, 11), args.repeats)
    truth = np.array([[j for j in row if j != i][:10] for i, row in enumerate(faiss_ids)])
    print(f"\n### Exact all-pairs top-10 (every row against the others), {n:,} x {d}, "
          f"inner product of unit rows, {args.threads} threads\n")
    print("| tool | time | rows/s | recall@10 vs FAISS |")
    print("|---|---|---|---|")
    print(f"| cohort ExactDenseAllPairsTopK | {result['seconds']:.2f} s | {n / result['seconds']:,.0f} | "
          f"{recall_at_k(cohort_ids, truth):.4f} |")
    print(f"| FAISS IndexFlatIP, k = 11 without self | {faiss_seconds:.2f} s | {n / faiss_seconds:,.0f} | 1 |")
    print(f"\ncohort / FAISS rows per second: {faiss_seconds / result['seconds']:.2f}x")


def compare_ivf(args, binary, work, base):
    d = base.shape[1]
    queries = clustered_unit_rows(args.ivf_q, d, seed=3)
    faiss.omp_set_num_threads(args.threads)
    # Ground truth by exact search.
    flat = faiss.IndexFlatIP(d)
    flat.add(base)
    _, truth = flat.search(queries, 10)
    # One segmentation model for both: K-means centroids trained on a sample.
    kmeans = faiss.Kmeans(d, args.lists, niter=10, seed=1, max_points_per_centroid=64)
    kmeans.train(base[np.random.default_rng(4).choice(base.shape[0], 64 * args.lists, replace=False)])
    quantizer = faiss.IndexFlatL2(d)
    quantizer.add(kmeans.centroids)
    _, assign = quantizer.search(base, 1)
    ivf = faiss.IndexIVFFlat(quantizer, d, args.lists, faiss.METRIC_INNER_PRODUCT)
    ivf.is_trained = True
    ivf.add(base)

    base.tofile(work / "base.f32")
    queries.tofile(work / "ivf_queries.f32")
    kmeans.centroids.astype(np.float32).tofile(work / "centroids.f32")
    assign.astype(np.int32).ravel().tofile(work / "assign.i32")
    nprobes = [1, 2, 4, 8, 16, 32]
    result = run_cohort(binary, "ivf",
                        ["--base", work / "base.f32", "--n", base.shape[0], "--queries", work / "ivf_queries.f32",
                         "--q", queries.shape[0], "--d", d, "--centroids", work / "centroids.f32",
                         "--lists", args.lists, "--assign", work / "assign.i32", "--k", 10,
                         "--repeats", args.repeats, "--out", work / "ivf.ids", "--nprobe"] + nprobes,
                        args.threads)
    q = queries.shape[0]
    print(f"\n### Approximate top-10 (IVF, {args.lists} lists from the same K-means centroids), "
          f"{base.shape[0]:,} x {d} base, {q:,} queries, {args.threads} threads\n")
    print("| nprobe | cohort IvfIndex q/s | recall@10 | FAISS IndexIVFFlat q/s | recall@10 | "
          "cohort / FAISS |")
    print("|---|---|---|---|---|---|")
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        faiss_seconds, (_, faiss_ids) = median_time(lambda: ivf.search(queries, 10), args.repeats)
        cohort_seconds = result["seconds_by_nprobe"][str(nprobe)]
        cohort_ids = np.fromfile(work / f"ivf.ids.nprobe{nprobe}", dtype=np.int64).reshape(-1, 10)
        print(f"| {nprobe} | {q / cohort_seconds:,.0f} | {recall_at_k(cohort_ids, truth):.4f} | "
              f"{q / faiss_seconds:,.0f} | {recall_at_k(faiss_ids, truth):.4f} | "
              f"{faiss_seconds / cohort_seconds:.2f}x |")


def main():
    args = parse_args()
    binary = pathlib.Path(args.build_dir) / "bench" / "cohort_cf_bench"
    if not binary.exists():
        print(f"compare_cf.py: {binary} not found; build the target cohort_cf_bench first",
              file=sys.stderr)
        return 2
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"Machine: {cpu}, {os.cpu_count()} CPUs, {platform.platform()}; numpy {np.__version__}, "
          f"scipy {scipy.__version__}, faiss {faiss.__version__}")
    with tempfile.TemporaryDirectory(prefix="cohort_cf_bench_") as folder:
        work = pathlib.Path(folder)
        if "sparse" not in args.skip:
            compare_sparse(args, binary, work)
        if "all-pairs" not in args.skip:
            compare_all_pairs(args, binary, work)
        if "exact" not in args.skip or "ivf" not in args.skip:
            base = clustered_unit_rows(args.dense_n, args.dense_d, seed=1)
            if "exact" not in args.skip:
                compare_exact(args, binary, work, base)
            if "ivf" not in args.skip:
                compare_ivf(args, binary, work, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
