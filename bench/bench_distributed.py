"""chrysalis.distributed on this machine: build, search and merge with 1 and 2 Dask worker
processes beside one in-process chrysalis.Index / chrysalis.Merger(exact=True) (the anchor), with
the round trips per merge block and the bytes moved per record (pickled arguments and results).

  flock /tmp/chrys-heavy.lock env PYTHONPATH=python /usr/bin/python3 bench/bench_distributed.py [--quick]

Prints one JSON line per measurement and a Markdown table (bench/DISTRIBUTED.md holds the figures).
Sharded results are checked against the anchor (search ids equal, merge entries bit for bit equal).
"""
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ["PYTHONPATH"] = os.path.join(ROOT, "python") + os.pathsep + os.environ.get("PYTHONPATH", "")

import numpy as np  # noqa: E402


def clustered(rng, n, dim, centres, spread):
    c = rng.standard_normal((centres, dim))
    lab = rng.integers(0, centres, n)
    return (c[lab] + spread * rng.standard_normal((n, dim))).astype(np.float32)


def main():
    import chrysalis
    from chrysalis import distributed as cd
    from distributed import Client, LocalCluster

    quick = "--quick" in sys.argv
    dim = 128
    n_build, nq = (50_000, 200) if quick else (200_000, 1000)
    n_merge = 4_000 if quick else 20_000
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n_build, dim)).astype(np.float32)
    Q = rng.standard_normal((nq, dim)).astype(np.float32)
    R = clustered(rng, n_merge, dim, centres=n_merge // 4, spread=0.45)
    rows = []

    # the anchor: one process, one thread (as each worker has)
    t = time.perf_counter()
    ix = chrysalis.Index(dim, spec="Flat")
    ix.add(X)
    tb = time.perf_counter() - t
    t = time.perf_counter()
    s0, i0 = ix.search(Q, k=10, threads=1)
    ts = time.perf_counter() - t
    t = time.perf_counter()
    m = chrysalis.Merger(None, dim=dim, exact=True, threads=1, batch_size=1024)
    sm0 = m.merge(R)
    tm = time.perf_counter() - t
    ref = m.entries()
    rows.append({"setup": "one process (anchor)", "workers": 0, "build_s": tb, "search_qps": nq / ts,
                 "merge_rec_s": n_merge / tm, "entries": sm0["entries"], "merged": sm0["merged"]})
    print(json.dumps(rows[-1]), flush=True)

    for workers in (1, 2):
        cl = LocalCluster(n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=None,
                          silence_logs=50)
        c = Client(cl)
        sx = cd.ShardedIndex(c, dim, n_shards=workers)
        t = time.perf_counter()
        for b in range(0, n_build, 50_000):
            sx.add(X[b:b + 50_000])
        tb = time.perf_counter() - t
        t = time.perf_counter()
        s1, i1 = sx.search(Q, k=10, threads=1)
        ts = time.perf_counter() - t
        assert np.array_equal(i1, i0) and np.array_equal(s1, s0), "sharded search differs from one process"
        import tempfile
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
            sm = cd.ShardedMerger(c, os.path.join(d, "m"), dim=dim, n_shards=workers, batch_size=1024)
            sm._sh.measure = True
            rt0, bs0, br0 = sm._sh.round_trips, sm._sh.bytes_sent, sm._sh.bytes_received
            t = time.perf_counter()
            s = sm.merge(R)
            tm = time.perf_counter() - t
            blocks = -(-n_merge // 1024)
            got = sm.entries()
            same = len(got) == len(ref) and all(a["merged_count"] == b["merged_count"] and
                                                np.array_equal(a["embedding"], b["embedding"]) for a, b in zip(got, ref))
            assert same, "sharded merge differs from one process"
            rt = sm._sh.round_trips - rt0
            moved = (sm._sh.bytes_sent - bs0) + (sm._sh.bytes_received - br0)
            sm.close()
        rows.append({"setup": f"{workers} worker process(es)", "workers": workers, "build_s": tb,
                     "search_qps": nq / ts, "merge_rec_s": n_merge / tm, "entries": s["entries"],
                     "merged": s["merged"], "round_trips_per_block": rt / blocks,
                     "bytes_per_record": moved / n_merge, "search_equal": True, "merge_equal": True})
        print(json.dumps(rows[-1]), flush=True)
        sx.close()
        c.close()
        cl.close()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"\ncommit {commit}; dim {dim}; build {n_build} vectors; {nq} queries k=10 (Flat, exact); "
          f"merge {n_merge} clustered records, batch 1024\n")
    print("| setup | build s | search q/s | merge records/s | round trips / block | bytes / record |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['setup']} | {r['build_s']:.2f} | {r['search_qps']:.0f} | {r['merge_rec_s']:.0f} | "
              f"{r.get('round_trips_per_block', 0):.2f} | {r.get('bytes_per_record', 0):.0f} |")


if __name__ == "__main__":
    main()
