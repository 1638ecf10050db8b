#!/usr/bin/python3
"""bench/REPORT.md and its plots (bench/report/*.png) from one run, side by side on this machine.

  make bench-report                               quick, complete (under the heavy lock; ~10 min on 2 cores)
  bash bench/report.sh --full                     the large points (1,000,000 items etc.), by hand
  /usr/bin/python3 bench/report.py --ci --out DIR tiny sizes, every part (CI: errors fail, speed never)

Parts, each in this process (in-process against in-process), 1 thread for every library
(OPENBLAS_NUM_THREADS / OMP_NUM_THREADS pinned before numpy and faiss are imported):
  search   recall@10 against QPS: chrysalis Flat / HNSW16 / IVF,Flat against FAISS IndexFlatIP,
           IndexHNSWFlat, IndexIVFFlat, hnswlib 0.6.2 (Debian's Python module) and hnswlib's header
           compiled with -march=native (../shared/tools/hnswlib_native.cpp, when present), on a seeded
           clustered set and on the shared real set (../shared/data/luceneutil-minilm-384-cosine) when present.
  merge    merge time against N: `chrysalis merge --exact` and default (whole CLI process, I/O included),
           bench/merge_numpy.py, bench/merge_faiss.py (IndexFlatIP k=1), bench/merge_python.py (the
           original's pure-Python loop) measured up to a size, beyond it extrapolated from its measured
           seconds per cosine x the exact cosine count (from the exact merger's decisions).
  memory   bytes per vector for Flat, SQ8, IVF,SQ8, IVF,SQ8,RFlat, HNSW16: store file size and the
           process's RSS growth while adding.
  roadmap  the roadmap's "Performance Comparison" (100 ... 1,000,000 items, linear search vs FAISS CPU):
           single-query latency of the original's linear scan (a Python cosine loop), FAISS IndexFlatIP
           and chrysalis Flat; which cells are extrapolated, and from what, is said in the table.
Data: ../shared/tools/gen_clustered.py when present, else a built-in seeded clustered generator
(so --ci needs nothing beside the checkout).
"""
import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
sys.path.insert(0, os.path.join(ROOT, "python"))

import chrysalis  # noqa: E402

MODES = {
    # search: (n, d, nq); merge Ns, python merger measured up to; memory n; roadmap Ns measured for
    # FAISS/ours, python linear scan measured up to
    "ci": dict(search=(2000, 64, 100), real=False, merge=[200, 500, 1000], merge_d=64, py_upto=500,
               memory=(2000, 64), roadmap_d=64, roadmap=[100, 1000, 10000], py_scan_upto=1000, nlist=32),
    "quick": dict(search=(20000, 1024, 500), real=True, merge=[300, 1000, 3000, 10000, 20000], merge_d=1024,
                  py_upto=300, memory=(20000, 1024), roadmap_d=1024, roadmap=[100, 1000, 10000, 100000],
                  py_scan_upto=1000, nlist=128),
    "full": dict(search=(100000, 1024, 1000), real=True, merge=[1000, 3000, 10000, 20000, 100000],
                 merge_d=1024, py_upto=3000, memory=(100000, 1024), roadmap_d=1024,
                 roadmap=[100, 1000, 10000, 100000, 1000000], py_scan_upto=10000, nlist=512),
}
ROADMAP_NS = [100, 1000, 10000, 100000, 1000000]


def log(*a):
    print("[report %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def read_vecs(path, dtype=np.float32):
    raw = np.fromfile(path, dtype=dtype)
    d = raw[:1].view(np.int32)[0]
    return np.ascontiguousarray(raw.reshape(-1, d + 1)[:, 1:])


def write_fvecs(path, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    out[:, 0] = np.array([x.shape[1]], dtype=np.int32).view(np.float32)[0]
    out[:, 1:] = x
    out.tofile(path)


def builtin_clustered(n, d, nq, seed):
    """Seeded clustered unit vectors: centres with a shared mean direction, per-cluster spread."""
    rng = np.random.default_rng(seed)
    k = max(8, int(math.sqrt(n)))
    mean = rng.standard_normal(d).astype(np.float32)
    c = rng.standard_normal((k, d)).astype(np.float32) + 0.6 * mean
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    spread = np.exp(rng.uniform(np.log(0.25), np.log(1.2), k)).astype(np.float32)

    def draw(m):
        lab = rng.integers(0, k, m)
        x = c[lab] + spread[lab, None] * rng.standard_normal((m, d)).astype(np.float32) / np.sqrt(d)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return draw(n).astype(np.float32), draw(nq).astype(np.float32)


def clustered(work, name, n, d, nq, seed=1234):
    """(base, queries, source) -- gen_clustered.py when present, else the built-in generator."""
    tool = os.path.join(SHARED, "tools", "gen_clustered.py")
    out = os.path.join(work, name)
    if os.path.exists(tool):
        if not os.path.exists(os.path.join(out, "base.fvecs")):
            subprocess.run([PY, tool, "--n", str(n), "--d", str(d), "--nq", str(nq), "--seed", str(seed),
                            "--out", out], check=True, stdout=subprocess.DEVNULL)
        return read_vecs(os.path.join(out, "base.fvecs")), read_vecs(os.path.join(out, "query.fvecs")), \
            "gen_clustered.py --n %d --d %d --nq %d --seed %d" % (n, d, nq, seed)
    b, q = builtin_clustered(n, d, nq, seed)
    os.makedirs(out, exist_ok=True)
    write_fvecs(os.path.join(out, "base.fvecs"), b)
    return b, q, "bench/report.py built-in clustered generator (n %d, d %d, seed %d)" % (n, d, seed)


def exact_gt(base, q, k=10):
    import faiss
    ix = faiss.IndexFlatIP(base.shape[1])
    ix.add(base)
    return ix.search(q, k)[1]


def recall10(ids, gt):
    ids = np.asarray(ids)[:, :10]
    gt = np.asarray(gt)[:, :10]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / 10.0 for a, b in zip(ids, gt)]))


def best_of(fn, reps=3, budget=2.0):
    best, out = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        e = time.perf_counter() - t
        best = min(best, e)
        if e > budget:
            break
    return best, out


# ---------------------------------------------------------------------------------------------- search
def search_part(base, q, gt, nlist, work, tag):
    import faiss
    import hnswlib
    faiss.omp_set_num_threads(1)
    n, d = base.shape
    nq = q.shape[0]
    res = {}   # name -> list of dict(param, qps, recall)
    build = {}

    def sweep(name, params, fn):
        pts = []
        for p in params:
            t, ids = best_of(lambda: fn(p))
            pts.append(dict(param=p, qps=nq / t, recall=recall10(ids, gt)))
        res[name] = pts
        log("  %s %s: %s" % (tag, name, ", ".join("%s %.0f QPS r%.3f" % (x["param"], x["qps"], x["recall"]) for x in pts)))

    efs = [10, 16, 32, 64, 128, 256]
    nprobes = [1, 2, 4, 8, 16, 32, 64]
    nprobes = [p for p in nprobes if p <= nlist]
    # exact
    ix = chrysalis.Index(d, "cosine", "Flat")
    ix.add(base)
    sweep("chrysalis Flat", ["exact"], lambda p: ix.search(q, 10, threads=1)[1])
    del ix
    fx = faiss.IndexFlatIP(d)
    fx.add(base)
    sweep("FAISS IndexFlatIP", ["exact"], lambda p: fx.search(q, 10)[1])
    del fx
    # HNSW, M 16, ef_construction 200
    t = time.perf_counter()
    ix = chrysalis.Index(d, "cosine", "HNSW16", ef_construction=200, build_threads=1)
    ix.add(base)
    build["chrysalis HNSW16"] = time.perf_counter() - t
    sweep("chrysalis HNSW16", efs, lambda p: ix.search(q, 10, ef_search=p, threads=1)[1])
    del ix
    t = time.perf_counter()
    hx = hnswlib.Index(space="ip", dim=d)
    hx.init_index(max_elements=n, ef_construction=200, M=16, random_seed=100)
    hx.add_items(base, np.arange(n), num_threads=1)
    build["hnswlib (Debian, Python)"] = time.perf_counter() - t

    def hq(p):
        hx.set_ef(max(p, 10))
        return hx.knn_query(q, k=10, num_threads=1)[0]
    sweep("hnswlib (Debian, Python)", efs, hq)
    del hx
    t = time.perf_counter()
    fh = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
    fh.hnsw.efConstruction = 200
    fh.add(base)
    build["FAISS IndexHNSWFlat"] = time.perf_counter() - t

    def fhq(p):
        fh.hnsw.efSearch = p
        return fh.search(q, 10)[1]
    sweep("FAISS IndexHNSWFlat", efs, fhq)
    del fh
    native = hnswlib_native(work)
    if native:
        bf, qf, od = (os.path.join(work, "%s_%s.fvecs" % (tag, s)) for s in ("base", "query", "native"))
        write_fvecs(bf, base)
        write_fvecs(qf, q)
        os.makedirs(od, exist_ok=True)
        t = time.perf_counter()
        subprocess.run([native, "--base", bf, "--query", qf, "--k", "10", "--threads", "1", "--out", od,
                        "--M", "16", "--efc", "200", "--efs", ",".join(map(str, efs))], check=True,
                       stdout=subprocess.DEVNULL)
        r = json.load(open(os.path.join(od, "result.json")))
        pts = []
        for row in r.get("runs", r.get("results", [])) if isinstance(r, dict) else r:
            ids = read_vecs(os.path.join(od, row["ids"]), np.int32)
            pts.append(dict(param=row["param"], qps=row["nq"] / row["search_s"], recall=recall10(ids, gt)))
        if pts:
            res["hnswlib native (-march=native, C++)"] = pts
            build["hnswlib native (-march=native, C++)"] = r.get("build_s", time.perf_counter() - t)
            log("  %s native: %s" % (tag, ", ".join("%s %.0f r%.3f" % (x["param"], x["qps"], x["recall"]) for x in pts)))
    # IVF,Flat
    t = time.perf_counter()
    ix = chrysalis.Index(d, "cosine", "IVF%d,Flat" % nlist, build_threads=1)
    ix.add(base)
    build["chrysalis IVF%d,Flat" % nlist] = time.perf_counter() - t
    sweep("chrysalis IVF%d,Flat" % nlist, nprobes, lambda p: ix.search(q, 10, nprobe=p, threads=1)[1])
    del ix
    t = time.perf_counter()
    quant = faiss.IndexFlatIP(d)
    fi = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
    fi.train(base)
    fi.add(base)
    build["FAISS IndexIVFFlat %d" % nlist] = time.perf_counter() - t

    def fiq(p):
        fi.nprobe = p
        return fi.search(q, 10)[1]
    sweep("FAISS IndexIVFFlat %d" % nlist, nprobes, fiq)
    del fi, quant
    return dict(n=n, d=d, nq=nq, curves=res, build_s=build)


_NATIVE = []


def hnswlib_native(work):
    if _NATIVE:
        return _NATIVE[0]
    src = os.path.join(SHARED, "tools", "hnswlib_native.cpp")
    exe = os.path.join(work, "hnswlib_native")
    ok = None
    if os.path.exists(src) and shutil.which("g++") and os.path.exists("/usr/include/hnswlib/hnswlib.h"):
        r = subprocess.run(["g++", "-O3", "-march=native", "-std=c++17", "-pthread", src, "-o", exe],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ok = exe if r.returncode == 0 else None
        if not ok:
            log("hnswlib_native did not compile: " + r.stderr[-300:])
    _NATIVE.append(ok)
    return ok


# ----------------------------------------------------------------------------------------------- merge
def merge_part(work, ns, d, py_upto, cli):
    nmax = max(ns)
    base, _, src = clustered(work, "merge_%d_%d" % (nmax, d), nmax, d, 10, seed=4321)
    rows = []
    py_spc = None   # seconds per cosine of the original, from its largest measured run
    for n in ns:
        sub = os.path.join(work, "merge_in_%d.fvecs" % n)
        write_fvecs(sub, base[:n])
        row = dict(n=n)
        for name, extra in (("ours exact", ["--exact"]), ("ours default", [])):
            store = os.path.join(work, "m_%d_%s.chrys" % (n, extra and "exact" or "default"))
            if os.path.exists(store):
                os.remove(store)
            t = time.perf_counter()
            r = subprocess.run([cli, "merge", store, sub, "--json"] + extra, check=True, capture_output=True,
                               text=True)
            row[name] = time.perf_counter() - t
            try:
                row[name + " entries"] = json.loads(r.stdout).get("entries")
            except ValueError:
                pass
        # the exact merger's decisions give the original's cosine count: one per existing entry
        assign_f = os.path.join(work, "assign_%d.i32" % n)
        subprocess.run([PY, os.path.join(HERE, "merge_numpy.py"), "store",
                        os.path.join(work, "m_%d_exact.chrys" % n), "--assign-out", assign_f],
                       check=True, stdout=subprocess.DEVNULL)
        assign = np.fromfile(assign_f, dtype=np.int32)
        seen = np.maximum.accumulate(np.concatenate([[-1], assign[:-1]])) + 1   # entries before record i
        row["cosines"] = int(seen.sum())
        for name, script, extra in (("numpy", "merge_numpy.py", ["run", "--data", sub, "--n", str(n)]),
                                    ("FAISS IndexFlatIP", "merge_faiss.py",
                                     ["--base", sub, "--n", str(n), "--index", "flat"])):
            j = os.path.join(work, "mr_%s_%d.json" % (script, n))
            t = time.perf_counter()
            subprocess.run([PY, os.path.join(HERE, script)] + extra + ["--json", j], check=True,
                           stdout=subprocess.DEVNULL, env=dict(os.environ, OPENBLAS_NUM_THREADS="2",
                                                               OMP_NUM_THREADS="2"))
            row[name + " process"] = time.perf_counter() - t
            jr = json.load(open(j))
            row[name] = jr.get("seconds", jr.get("total_s", row[name + " process"]))
            row[name + " entries"] = json.load(open(j)).get("entries")
        if n <= py_upto:
            j = os.path.join(work, "mr_python_%d.json" % n)
            subprocess.run([PY, os.path.join(HERE, "merge_python.py"), "run", "--data", sub, "--n", str(n),
                            "--json", j], check=True, stdout=subprocess.DEVNULL)
            r = json.load(open(j))
            row["original Python"] = r["seconds"]
            row["original Python entries"] = r.get("entries")
            py_spc = r["seconds"] / max(1, r["cosine_calls"])
            row["python_cosines_measured"] = r["cosine_calls"]
        rows.append(row)
        log("  merge %d: %s" % (n, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
    for row in rows:
        if "original Python" not in row and py_spc:
            row["original Python"] = row["cosines"] * py_spc
            row["original Python extrapolated"] = True
    return dict(d=d, source=src, rows=rows, python_s_per_cosine=py_spc, py_upto=py_upto)


# ---------------------------------------------------------------------------------------------- memory
def memory_one(spec, data, path):
    base = read_vecs(data)
    n, d = base.shape
    r0 = rss_kb()
    ix = chrysalis.Index(d, "cosine", spec, build_threads=1)
    ix.add(base)
    r1 = rss_kb()
    ix.save(path)
    size = os.path.getsize(path)
    os.remove(path)
    print(json.dumps(dict(spec=spec, disk_bytes_per_vec=size / n, rss_bytes_per_vec=(r1 - r0) * 1024.0 / n)))


def memory_part(work, n, d, nlist):
    base, _, src = clustered(work, "mem_%d_%d" % (n, d), n, d, 10, seed=99)
    specs = ["Flat", "SQ8", "IVF%d,SQ8" % nlist, "IVF%d,SQ8,RFlat" % nlist, "HNSW16"]
    data = os.path.join(work, "mem_%d_%d" % (n, d), "base.fvecs")
    del base
    out = []
    for spec in specs:
        # a fresh process per storage, so no allocator reuse from an earlier one hides its growth
        r = subprocess.run([PY, os.path.abspath(__file__), "--memory-one", spec, data, os.path.join(work, "mem.chrys")],
                           check=True, capture_output=True, text=True)
        row = json.loads(r.stdout.strip().splitlines()[-1])
        out.append(row)
        log("  memory %s: disk %.0f B/vec, RSS %.0f B/vec" % (spec, row["disk_bytes_per_vec"], row["rss_bytes_per_vec"]))
    return dict(n=n, d=d, source=src, rows=out, raw_bytes=4 * d)


# --------------------------------------------------------------------------------------------- roadmap
def python_linear_query(items, q):
    """The original's linear scan: a pure-Python cosine against every item, best kept."""
    best, bi = 0.0, -1
    qn = math.sqrt(sum(a * a for a in q))
    for i, e in enumerate(items):
        dot = sum(a * b for a, b in zip(q, e))
        s = dot / (qn * math.sqrt(sum(b * b for b in e)))
        if s > best:
            best, bi = s, i
    return bi


def roadmap_part(ns_measured, d, py_upto, nq_lat=20):
    import faiss
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(7)
    nmax = max(ns_measured)
    base = rng.standard_normal((nmax, d)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    q = rng.standard_normal((nq_lat, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rows = {}
    py_spc = None
    for n in ns_measured:
        b = base[:n]
        fx = faiss.IndexFlatIP(d)
        fx.add(b)
        ix = chrysalis.Index(d, "cosine", "Flat")
        ix.add(b)

        def lat(fn):
            fn(q[:1])
            t = time.perf_counter()
            for i in range(nq_lat):
                fn(q[i:i + 1])
            return (time.perf_counter() - t) / nq_lat
        r = dict(n=n, faiss=lat(lambda x: fx.search(x, 10)), ours=lat(lambda x: ix.search(x, 10, threads=1)))
        fi, ci = fx.search(q, 10)[1], ix.search(q, 10, threads=1)[1]
        r["ours_agrees_with_faiss_top1"] = float(np.mean(fi[:, 0] == ci[:, 0]))
        del fx, ix
        if n <= py_upto:
            items = b.astype(np.float64).tolist()
            qq = q[:3].astype(np.float64).tolist()
            t = time.perf_counter()
            for x in qq:
                python_linear_query(items, x)
            r["python"] = (time.perf_counter() - t) / len(qq)
            py_spc = r["python"] / n
        rows[n] = r
        log("  roadmap %d: %s" % (n, r))
    table = []
    mx = max(ns_measured)
    for n in ROADMAP_NS:
        r = dict(rows.get(n, {"n": n}))
        for key in ("faiss", "ours"):
            if key not in r:
                r[key] = rows[mx][key] * n / mx
                r[key + "_from"] = "linear from the measured %s-item figure" % format(mx, ",")
        if "python" not in r:
            r["python"] = py_spc * n
            r["python_from"] = "linear from its measured seconds per cosine at %s items" % format(
                max(k for k in rows if "python" in rows[k]), ",")
        table.append(r)
    return dict(d=d, nq=nq_lat, rows=table, python_s_per_cosine=py_spc)


# ---------------------------------------------------------------------------------------------- output
def machine_info():
    info = dict(python=platform.python_version(), numpy=np.__version__, chrysalis=chrysalis.__version__,
                simd=chrysalis.simd_name())
    try:
        import faiss
        info["faiss"] = faiss.__version__
    except Exception as e:   # noqa: BLE001
        info["faiss"] = "unavailable (%s)" % e
    try:
        import hnswlib  # noqa: F401
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-hnswlib"], capture_output=True, text=True)
        info["hnswlib"] = v.stdout.strip() or "present"
    except Exception as e:   # noqa: BLE001
        info["hnswlib"] = "unavailable (%s)" % e
    import matplotlib
    info["matplotlib"] = matplotlib.__version__
    cpu = {}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            k, _, v = line.partition(":")
            cpu[k.strip()] = v.strip()
    except OSError:
        pass
    flags = cpu.get("Flags", "").split()
    info["cpu"] = cpu.get("Model name", platform.processor())
    info["cores"] = os.cpu_count()
    info["flags"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16")
                             if f in flags)
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    try:
        info["commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        info["commit"] += " (with uncommitted changes)" if dirty else ""
    except OSError:
        info["commit"] = "unknown"
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return info


def plots(res, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(outdir, exist_ok=True)
    files = []
    for key, s in res["search"].items():
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for name, pts in s["curves"].items():
            # colour: the library; marker and line: the index kind
            colour = ("tab:blue" if name.startswith("chrysalis") else "tab:orange" if name.startswith("FAISS")
                      else "tab:red" if "native" in name else "tab:green")
            kind = "Flat" if ("Flat" in name and "IVF" not in name and "HNSW" not in name) else \
                "IVF" if "IVF" in name else "HNSW"
            mk = {"Flat": "*", "IVF": "^", "HNSW": "o"}[kind]
            ls = {"Flat": "none", "IVF": "--", "HNSW": "-"}[kind]
            ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts], marker=mk, ls=ls, color=colour,
                    ms=14 if kind == "Flat" else 6, lw=2.2 if name.startswith("chrysalis") else 1.3,
                    label=name + (" (exact)" if kind == "Flat" else ""))
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 (against exact ground truth)")
        ax.set_ylabel("queries per second, 1 thread (log)")
        ax.set_title("Search: recall@10 vs QPS, %s (%s x %d, %d queries)" % (s["label"], format(s["n"], ","),
                                                                          s["d"], s["nq"]))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        f = "search_%s.png" % key
        fig.savefig(os.path.join(outdir, f), dpi=110)
        plt.close(fig)
        files.append(f)
    m = res["merge"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name in ("ours exact", "ours default", "numpy", "FAISS IndexFlatIP", "original Python"):
        meas = [(r["n"], r.get(name)) for r in m["rows"]
                if r.get(name) is not None and not (name == "original Python" and r.get("original Python extrapolated"))]
        lab = {"ours exact": "chrysalis merge --exact (whole process)", "ours default": "chrysalis merge (default; whole process)",
               "numpy": "numpy merger (loop)", "FAISS IndexFlatIP": "FAISS IndexFlatIP merger (loop)",
               "original Python": "original Python (loop, measured)"}[name]
        ax.plot([p[0] for p in meas], [p[1] for p in meas], marker="o", label=lab,
                **({"lw": 2.4} if name.startswith("ours") else {}))
        if name == "original Python":
            ex = [(r["n"], r[name]) for r in m["rows"] if r.get("original Python extrapolated")]
            if ex:
                last = [(r["n"], r[name]) for r in m["rows"] if not r.get("original Python extrapolated")][-1:]
                pts = last + ex
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="x", ls="--", color=ax.lines[-1].get_color(),
                        label="original Python (extrapolated: s/cosine x cosines)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("records merged, N (log)")
    ax.set_ylabel("merge time, seconds (log)")
    ax.set_title("Semantic merge (threshold 0.85), %d-d clustered stream" % m["d"])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "merge_vs_n.png"), dpi=110)
    plt.close(fig)
    files.append("merge_vs_n.png")
    mem = res["memory"]
    fig, ax = plt.subplots(figsize=(8, 5))
    xs = np.arange(len(mem["rows"]))
    ax.bar(xs - 0.2, [r["disk_bytes_per_vec"] for r in mem["rows"]], 0.4, label="store file on disk")
    ax.bar(xs + 0.2, [r["rss_bytes_per_vec"] for r in mem["rows"]], 0.4, label="RSS growth while adding")
    ax.axhline(mem["raw_bytes"], color="k", ls=":", label="raw float32 vector (%d B)" % mem["raw_bytes"])
    ax.set_xticks(xs)
    ax.set_xticklabels([r["spec"] for r in mem["rows"]])
    ax.set_ylabel("bytes per vector")
    ax.set_xlabel("storage")
    ax.set_title("Memory per vector (%s x %d)" % (format(mem["n"], ","), mem["d"]))
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "memory.png"), dpi=110)
    plt.close(fig)
    files.append("memory.png")
    return files


def fmt_s(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return "%.1f us" % (s * 1e6)
    if s < 1:
        return "%.2f ms" % (s * 1e3)
    if s < 3600:
        return "%.2f s" % s
    return "%.1f h" % (s / 3600)


def table16_section():
    """The performance issue's table as bench/table16.sh last measured it (its own run, its own
    commit and machine line), when bench/out/table16 holds one."""
    d = os.path.join(HERE, "out", "table16")
    if not os.path.exists(os.path.join(d, "machine.txt")):
        return []
    L = ["## The performance issue's table (`bash bench/table16.sh`, a run of its own)", "",
         "```", open(os.path.join(d, "machine.txt")).read().strip(), "```", ""]
    for fname in ("exact100k.json", "exact200k.json"):
        try:
            ex = json.load(open(os.path.join(d, fname)))
        except (OSError, ValueError):
            continue
        try:
            L += ["Exact batch, %s x %d, %d queries, chrysalis.Index(\"Flat\") vs FAISS IndexFlatIP in one "
                  "process, calls alternating (median call; best call):" % (format(ex["n"], ","), ex["d"], ex["nq"]), "",
                  "| method | threads | QPS | best | recall@10 |", "|---|---|---|---|---|"]
            for r in ex["results"]:
                L.append("| %s | %d | %.0f | %.0f | %.3f |" % (r["method"], r["threads"], r["qps"], r.get("qps_best", r["qps"]),
                                                             r["recall10"]))
            L.append("")
        except KeyError:
            pass
    f = os.path.join(d, "exact_real.txt")
    if os.path.exists(f):
        L += ["Exact batch on the shared real sets (MiniLM 1,580 x 384 cosine, SIFT 4,000 x 128 L2; 1,000 queries, k = 10; "
              "`bench/exact_real.py`, one process per line, best of 7 calls, two rounds):", "",
              "```", open(f).read().strip(), "```", ""]
    for t in (1, 2):
        f = os.path.join(d, "membw_%dt.txt" % t)
        if os.path.exists(f):
            keep = [x for x in open(f).read().splitlines() if x.startswith("membw") or " 4K pages" in x and
                    x.split()[0] in ("read", "read4") or x.strip().startswith("search")]
            L += ["One query, %d thread(s), against the read bandwidth of the same rows (`bench/membw.c`, reps alternating; "
                  "`search` is chrys_index_search with one query):" % t, "", "```"] + keep + ["```", ""]
    for name, title in (("merge.txt", "Merges (whole `chrysalis merge` process vs the numpy merger's loop):"),
                        ("ivf_train.txt", "IVF train + add against FAISS:"),
                        ("cli_path.txt", "The CLI path (one query, whole process, against the same work in one process):")):
        f = os.path.join(d, name)
        if os.path.exists(f):
            L += [title, "", "```", open(f).read().strip(), "```", ""]
    f = os.path.join(d, "embed.log")
    if os.path.exists(f):
        keep = [x for x in open(f).read().splitlines() if "concurrency" in x]
        L += ["Embedding requests in flight (200 ms loopback provider, 10,000 texts in batches of 128):", "",
              "```"] + keep + ["```", ""]
    f = os.path.join(HERE, "out", "merge_scale_ab", "table.txt")
    if os.path.exists(f):
        L += ["The merger-at-scale points, this tree's default merge against the commit before the "
              "performance issue's work, alternating (`bash bench/merge_scale_ab.sh OLD`, a run of its own):", "",
              "```", open(f).read().strip(), "```", ""]
    return L


def write_md(res, path, plotdir_rel):
    i = res["machine"]
    L = ["# chrysalis benchmark report", "",
         "Written by `bench/report.py` (`make bench-report`; `bash bench/report.sh --full` for the large points). "
         "Every figure below comes from one run of mode **%s** unless marked otherwise." % res["mode"], "",
         "| | |", "|---|---|",
         "| commit | %s |" % i["commit"], "| date | %s |" % i["date"],
         "| machine | %s, %s cores, flags: %s; OPENBLAS_CORETYPE=%s |" % (i["cpu"], i["cores"], i["flags"],
                                                                        i["OPENBLAS_CORETYPE"]),
         "| libraries | chrysalis %s (kernels: %s), FAISS %s, hnswlib %s, numpy %s, matplotlib %s, Python %s |" % (
             i["chrysalis"], i["simd"], i["faiss"], i["hnswlib"], i["numpy"], i["matplotlib"], i["python"]),
         "| run time | %.0f s |" % res["elapsed_s"], "",
         "All searches run in this one Python process, 1 thread each (OPENBLAS_NUM_THREADS=1 and "
         "OMP_NUM_THREADS=1 set before numpy and FAISS are imported); hnswlib native is its C++ header "
         "compiled with -march=native, driven by its own process and timed inside it. QPS is the best of up "
         "to 3 passes over the whole query batch; recall@10 is against exact ground truth.", ""]
    L += ["## Search: recall@10 against QPS", ""]
    for key, s in res["search"].items():
        L += ["![search %s](%s/search_%s.png)" % (key, plotdir_rel, key), "",
              "%s: %s vectors x %d, %d queries. Data: %s." % (s["label"], format(s["n"], ","), s["d"], s["nq"], s["source"]), "",
              "| index | param | QPS (1 thread) | recall@10 |", "|---|---|---|---|"]
        for name, pts in s["curves"].items():
            for p in pts:
                L.append("| %s | %s | %.0f | %.3f |" % (name, p["param"], p["qps"], p["recall"]))
        L += ["", "Build time (1 thread): " + ", ".join("%s %.2f s" % (k, v) for k, v in s["build_s"].items()) + ".", ""]
    m = res["merge"]
    L += ["## Merge time against N", "", "![merge](%s/merge_vs_n.png)" % plotdir_rel, "",
          "Records are the first N of a %d-d clustered stream (%s), merged at threshold 0.85. Ours: the whole "
          "`chrysalis merge` process (reading the input and writing the store included), default threads. "
          "numpy (bench/merge_numpy.py) and FAISS IndexFlatIP k=1 (bench/merge_faiss.py) with 2 BLAS threads: "
          "their merge loop. The original Python (bench/merge_python.py): its merge loop, measured up to "
          "%s records; beyond that **extrapolated** (marked *) as %.3g us per cosine x the exact cosine count "
          "(one cosine per existing entry per record, from the exact merger's decisions)." % (
              m["d"], m["source"], format(m["py_upto"], ","), (m["python_s_per_cosine"] or 0) * 1e6), "",
          "| N | ours exact | ours default | numpy | FAISS flat | original Python | entries (exact / default / numpy / FAISS) |",
          "|---|---|---|---|---|---|---|"]
    for r in m["rows"]:
        L.append("| %s | %s | %s | %s | %s | %s%s | %s / %s / %s / %s |" % (
            format(r["n"], ","), fmt_s(r.get("ours exact")), fmt_s(r.get("ours default")), fmt_s(r.get("numpy")),
            fmt_s(r.get("FAISS IndexFlatIP")), fmt_s(r.get("original Python")),
            " *" if r.get("original Python extrapolated") else "", r.get("ours exact entries"),
            r.get("ours default entries"), r.get("numpy entries"), r.get("FAISS IndexFlatIP entries")))
    mem = res["memory"]
    L += ["", "## Memory per vector", "", "![memory](%s/memory.png)" % plotdir_rel, "",
          "%s x %d vectors (%s); raw float32 is %d bytes. Disk: the saved store file / N. RSS: the process's "
          "resident-set growth while the index was built and filled / N (includes allocator slack)." % (
              format(mem["n"], ","), mem["d"], mem["source"], mem["raw_bytes"]), "",
          "| storage | on disk, bytes/vector | RSS growth, bytes/vector |", "|---|---|---|"]
    for r in mem["rows"]:
        L.append("| %s | %.0f | %.0f |" % (r["spec"], r["disk_bytes_per_vec"], r["rss_bytes_per_vec"]))
    rm = res["roadmap"]
    L += ["", "## The roadmap's \"Performance Comparison\", measured", "",
          "Single-query top-10 latency (mean of %d queries, 1 thread) over N random unit %d-d vectors: the "
          "original's linear scan (a pure-Python cosine loop over every item, as its merger scans), FAISS CPU "
          "(IndexFlatIP) and chrysalis (Flat, exact). Cells marked * are extrapolated linearly (search cost is "
          "linear in N): %s." % (rm["nq"], rm["d"], "; ".join(
              "%s %s" % (col, next(r[key + "_from"] for r in rm["rows"] if key + "_from" in r))
              for col, key in (("linear search:", "python"), ("FAISS CPU:", "faiss"), ("chrysalis:", "ours"))
              if any(key + "_from" in r for r in rm["rows"])) or "none"), "",
          "| items | linear search (original, Python) | FAISS CPU | chrysalis | FAISS / chrysalis | Python / chrysalis |",
          "|---|---|---|---|---|---|"]
    for r in rm["rows"]:
        star = lambda k: " *" if (k + "_from") in r else ""  # noqa: E731
        L.append("| %s | %s%s | %s%s | %s%s | %.2fx | %.0fx |" % (
            format(r["n"], ","), fmt_s(r["python"]), star("python"), fmt_s(r["faiss"]), star("faiss"),
            fmt_s(r["ours"]), star("ours"), r["faiss"] / r["ours"], r["python"] / r["ours"]))
    L += ["", "For the merge workload at these sizes see the merge table above (the roadmap's merge is one "
          "such search per record against the entries so far).", "",
          "Regenerate: `make bench-report` (quick, ~10 min on 2 cores, under the heavy lock); "
          "`bash bench/report.sh --full` for the large points.", ""]
    L += table16_section()
    with open(path, "w") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--ci", action="store_true", help="tiny sizes (a couple of minutes); writes to --out")
    g.add_argument("--full", action="store_true", help="the large points (1M items etc.), by hand")
    ap.add_argument("--out", help="output folder (REPORT.md, report/*.png, report.json); default bench/")
    ap.add_argument("--cli", default=os.environ.get("CHRYS_CLI", os.path.join(ROOT, "build", "release", "chrysalis")))
    ap.add_argument("--work", help="scratch folder for data and stores (default: a temp dir, removed)")
    ap.add_argument("--replot", metavar="REPORT_JSON", help="redraw the plots and REPORT.md from a report.json")
    ap.add_argument("--memory-one", nargs=3, metavar=("SPEC", "FVECS", "STORE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_one:
        memory_one(*a.memory_one)
        return 0
    if a.replot:
        # plots and REPORT.md again from a run's report.json (same figures; presentation only)
        res = json.load(open(a.replot))
        out = os.path.abspath(a.out or HERE)
        plots(res, os.path.join(out, "report"))
        write_md(res, os.path.join(out, "REPORT.md"), "report")
        return 0
    mode = "ci" if a.ci else "full" if a.full else "quick"
    if a.ci and not a.out:
        ap.error("--ci writes to a scratch folder: give --out DIR (the committed bench/REPORT.md stays)")
    if not os.path.exists(a.cli):
        ap.error("--cli: %s not found (build it: make cli)" % a.cli)
    cfg = MODES[mode]
    out = os.path.abspath(a.out or HERE)
    work = a.work or tempfile.mkdtemp(prefix="chrys-report-")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    res = dict(mode=mode, machine=machine_info(), search={})
    try:
        n, d, nq = cfg["search"]
        log("search: clustered %d x %d" % (n, d))
        b, q, src = clustered(work, "search_%d_%d" % (n, d), n, d, nq)
        s = search_part(b, q, exact_gt(b, q), cfg["nlist"], work, "clustered")
        s.update(label="seeded clustered", source=src)
        res["search"]["clustered"] = s
        del b, q
        real = os.path.join(SHARED, "data", "luceneutil-minilm-384-cosine")
        if cfg["real"] and os.path.exists(os.path.join(real, "base.fvecs")):
            log("search: shared real set MiniLM")
            b, q = read_vecs(os.path.join(real, "base.fvecs")), read_vecs(os.path.join(real, "query.fvecs"))
            b /= np.linalg.norm(b, axis=1, keepdims=True)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            s = search_part(b, q, exact_gt(b, q), max(8, int(math.sqrt(b.shape[0]) / 2)), work, "minilm")
            s.update(label="MiniLM-384 real set", source="../shared/data/luceneutil-minilm-384-cosine")
            res["search"]["minilm"] = s
        log("merge")
        res["merge"] = merge_part(work, cfg["merge"], cfg["merge_d"], cfg["py_upto"], a.cli)
        log("memory")
        res["memory"] = memory_part(work, cfg["memory"][0], cfg["memory"][1], cfg["nlist"])
        log("roadmap table")
        res["roadmap"] = roadmap_part(cfg["roadmap"], cfg["roadmap_d"], cfg["py_scan_upto"])
        res["elapsed_s"] = time.perf_counter() - t0
        files = plots(res, os.path.join(out, "report"))
        write_md(res, os.path.join(out, "REPORT.md"), "report")
        with open(os.path.join(out, "report", "report.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
        log("wrote %s/REPORT.md and %s in %.0f s" % (out, ", ".join("report/" + x for x in files), res["elapsed_s"]))
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
