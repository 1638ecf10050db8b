#!/usr/bin/python3
"""Corruption detection, side by side: chrysalis stores against FAISS and hnswlib index files.

    /usr/bin/python3 bench/reliability_flips.py [--cli build/rel/chrysalis] [--json out.json]

Builds the same seeded data (2,000 x 128 float32, L2) as a chrysalis store of each kind (Flat,
HNSW32, IVF16,Flat, SQ8) with the CLI, as FAISS 1.7.3 indexes (IndexFlatL2, IndexFlatIP,
IndexHNSWFlat M=32, IndexIVFFlat 16 lists, IndexScalarQuantizer SQ8; faiss.write_index) and as an
hnswlib 0.6.2 index (M=32, save_index). Then, for each file, from a seeded generator:
  - FLIPS single-bit flips at random byte offsets over the whole file,
  - HEADER_FLIPS single-bit flips in the header (the first 64 bytes; hnswlib: its 96-byte header),
  - TRUNCS truncations at random lengths in [0, size),
  - chrysalis only, PAD_FLIPS flips in padding bytes (random flips over a whole file almost never
    land there; the format requires padding to be zero, so these must be detected too),
and loads every corrupted copy in a child process, so a crash is counted, not fatal:
  - chrysalis: `chrysalis info FILE` (exit 4 = corrupt), and when it loads, `chrysalis search`;
    `search` and `search --mmap` are also run on every copy and must agree with `info`;
  - FAISS / hnswlib: a forked child reads the file and searches 10 queries (k = 5).
Each copy is classified: detected (the load fails with an error), loaded but the search fails,
silent (loaded and searched; results the same as the intact file's, or different), crash (killed by
a signal) or hang (no answer within --timeout seconds). Children run under an address-space limit
(--mem-mib above the parent's size) so a corrupted length that asks for terabytes fails
(std::bad_alloc, counted as "detected", and listed) instead of taking the machine's memory.

For chrysalis, every silent load is located in the file (header, table, a section's payload or
padding) from the intact file's section table; docs/FORMAT.md says every byte is covered, so the
expected number is zero. Prints a Markdown table and writes every trial to --json.
"""
import argparse
import json
import os
import random
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

# Single-threaded libraries in the parent, so forking children is safe (no OpenMP or OpenBLAS
# thread pools to inherit half-alive).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402

OURS = [("Flat", "Flat"), ("HNSW32", "HNSW32"), ("IVF16,Flat", "IVF16,Flat"), ("SQ8", "SQ8")]
FAISS = [("IndexFlatL2", "Flat"), ("IndexFlatIP", "FlatIP"), ("IndexHNSWFlat", "HNSW32"),
         ("IndexIVFFlat", "IVF16,Flat"), ("IndexScalarQuantizer", "SQ8")]
HNSWLIB_HEADER = 96  # offsetLevel0 .. ef_construction_, hnswalg.h saveIndex (0.6.2)


def write_fvecs(path, x):
    d = x.shape[1]
    rows = np.empty((x.shape[0], d + 1), dtype=np.float32)
    rows[:, 0] = np.array([d], dtype=np.int32).view(np.float32)[0]
    rows[:, 1:] = x
    rows.tofile(path)


def build_anchors(work, seed, n, d):
    """Run in its own process: FAISS trains with OpenMP/BLAS, which must not touch the parent."""
    import faiss
    import hnswlib
    x, q = make_data(seed, n, d)
    files = {}
    for name, spec in FAISS:
        if name == "IndexFlatL2":
            ix = faiss.IndexFlatL2(d)
        elif name == "IndexFlatIP":
            ix = faiss.IndexFlatIP(d)
        elif name == "IndexHNSWFlat":
            ix = faiss.IndexHNSWFlat(d, 32)
        elif name == "IndexIVFFlat":
            ix = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, 16)
            ix.train(x)
        else:
            ix = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit)
            ix.train(x)
        ix.add(x)
        p = os.path.join(work, "faiss_%s.index" % name)
        faiss.write_index(ix, p)
        files[name] = p
    h = hnswlib.Index(space="l2", dim=d)
    h.init_index(max_elements=n, M=32, ef_construction=200, random_seed=seed)
    h.add_items(x, np.arange(n), num_threads=1)
    p = os.path.join(work, "hnswlib_M32.bin")
    h.save_index(p)
    files["hnswlib"] = p
    return files


def make_data(seed, n, d):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    q = rng.standard_normal((10, d), dtype=np.float32)
    return x, q


# ---------------------------------------------------------------------------------------------
# Children

def py_load_search(lib, path, q, d):
    """In the forked child: load and search; returns (stage, text)."""
    if lib == "faiss":
        import faiss
        try:
            ix = faiss.read_index(path)
        except BaseException as e:  # noqa: BLE001 - every failure is a result here
            return "load-error", "%s: %s" % (type(e).__name__, str(e).strip().splitlines()[-1][-220:] if str(e).strip() else "")
        try:
            D, I = ix.search(q, 5)
        except BaseException as e:  # noqa: BLE001
            return "search-error", "%s: %s" % (type(e).__name__, str(e)[:160])
        return "ok", (I.tobytes() + D.tobytes()).hex()
    import hnswlib
    try:
        h = hnswlib.Index(space="l2", dim=d)
        h.load_index(path)
    except BaseException as e:  # noqa: BLE001
        return "load-error", "%s: %s" % (type(e).__name__, str(e)[:160])
    try:
        labels, dists = h.knn_query(q, k=5, num_threads=1)
    except BaseException as e:  # noqa: BLE001
        return "search-error", "%s: %s" % (type(e).__name__, str(e)[:160])
    return "ok", (labels.tobytes() + dists.tobytes()).hex()


def limit_memory(mib):
    def f():
        # the parent's address space plus mib, so the child can do what an intact file needs
        with open("/proc/self/status") as s:
            vm = [int(line.split()[1]) for line in s if line.startswith("VmSize:")][0] * 1024
        lim = vm + mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return f


def run_forked(lib, path, q, d, timeout, mem_mib):
    """Fork a child that loads and searches; returns (class, detail). The child's stderr goes to
    a file beside path, whose last line becomes the detail of a crash (glibc's or libstdc++'s
    reason for an abort)."""
    errpath = path + ".stderr"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            fd = os.open(errpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 2)
            os.close(fd)
            limit_memory(mem_mib)()
            stage, text = py_load_search(lib, path, q, d)
        except BaseException as e:  # noqa: BLE001
            stage, text = "load-error", "%s: %s" % (type(e).__name__, e)
        os.write(w, (stage + "\n" + text).encode())
        os._exit(0)
    os.close(w)
    buf, t_end, hung = b"", time.monotonic() + timeout, False
    while True:
        left = t_end - time.monotonic()
        if left <= 0:
            hung = True
            break
        ready, _, _ = select.select([r], [], [], left)
        if not ready:
            continue
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        buf += chunk
    os.close(r)
    if hung:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "hang", "no answer in %gs" % timeout
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        with open(errpath, "rb") as f:
            lines = [x for x in f.read().decode(errors="replace").splitlines() if x.strip()]
        why = (": " + lines[-1].strip()[-160:]) if lines else ""
        return "crash", signal.Signals(os.WTERMSIG(status)).name + why
    stage, _, text = buf.decode(errors="replace").partition("\n")
    return stage or "crash", text


def run_cli(args, timeout, mem_mib):
    try:
        p = subprocess.run(args, capture_output=True, timeout=timeout, preexec_fn=limit_memory(mem_mib),
                           env=dict(os.environ, CHRYS_NO_PROGRESS="1"))
    except subprocess.TimeoutExpired:
        return None, b"", b"timeout"
    return p.returncode, p.stdout, p.stderr


def ours_trial(cli, path, qpath, ref_out, ref_mmap, timeout, mem_mib):
    rc, _, err = run_cli([cli, "info", path], timeout, mem_mib)
    rs, out, _ = run_cli([cli, "search", path, qpath, "-k", "5", "--threads", "1"], timeout, mem_mib)
    rm, outm, _ = run_cli([cli, "search", path, qpath, "-k", "5", "--threads", "1", "--mmap"], timeout, mem_mib)
    msg = err.decode(errors="replace").strip().splitlines()[-1][:200] if err.strip() else ""
    agree = len({rc == 0, rs == 0, rm == 0}) == 1  # all three refuse the copy, or all accept it
    if rc is None:
        cls = "hang"
    elif rc < 0:
        cls, msg = "crash", signal.Signals(-rc).name
    elif rc == 4:
        cls = "load-error"
    elif rc != 0:
        cls, msg = "load-error", "exit %d: %s" % (rc, msg)
    elif rs is None or rm is None:
        cls = "hang"
    elif rs < 0 or rm < 0:
        cls, msg = "crash", "search: " + signal.Signals(-(rs if rs < 0 else rm)).name
    elif rs != 0 or rm != 0:
        cls = "search-error"
    else:
        cls, msg = "ok", "same" if (out == ref_out and outm == ref_mmap) else "different"
    return cls, msg, rc, agree


# ---------------------------------------------------------------------------------------------
# Where a byte of a chrysalis store lies (from the intact file's table)

def ours_regions(data):
    n = struct.unpack_from("<I", data, 24)[0]
    regions = [(0, 64, "header"), (64, 64 + 32 * n, "table")]
    secs = []
    for i in range(n):
        tag, _, off, length = struct.unpack_from("<4sIQQ", data, 64 + 32 * i)
        secs.append((off, length, tag.decode(errors="replace")))
    secs.sort()
    end = 64 + 32 * n
    for off, length, tag in secs:
        if off > end:
            regions.append((end, off, "padding"))
        regions.append((off, off + length, "section " + tag))
        end = off + length
    if end < len(data):
        regions.append((end, len(data), "padding"))
    return regions


def region_of(regions, off):
    for a, b, name in regions:
        if a <= off < b:
            return name
    return "?"


# ---------------------------------------------------------------------------------------------

def corruptions(data, header_len, rng, flips, header_flips, truncs, pad_flips=0, regions=None):
    size = len(data)
    pads = [(a, b) for a, b, name in (regions or []) if name == "padding"]
    for _ in range(pad_flips if pads else 0):  # chrysalis only: padding must be zero, so is checked
        a, b = pads[rng.randrange(len(pads))]
        yield "padding-flip", rng.randrange(a, b), rng.randrange(8)
    for _ in range(flips):
        off, bit = rng.randrange(size), rng.randrange(8)
        yield "flip", off, bit
    for _ in range(header_flips):
        off, bit = rng.randrange(min(header_len, size)), rng.randrange(8)
        yield "header-flip", off, bit
    for _ in range(truncs):
        yield "truncate", rng.randrange(size), None



def compact_table(trials):
    """The table of docs/RELIABILITY.md: per file and corruption, detected / silent (of which the
    results differ) / failed at search / crashed, and any hangs."""
    keys = []
    for t in trials:
        k = (t["library"], t["kind"], t["file_size"])
        if k not in keys:
            keys.append(k)

    def cell(ts):
        if not ts:
            return "-"
        n = lambda f: sum(1 for t in ts if f(t))  # noqa: E731
        dif = n(lambda t: t["result"] == "ok" and t["detail"] == "different")
        cr = n(lambda t: t["result"] == "crash")
        hg = n(lambda t: t["result"] == "hang")
        return "%d / %d%s / %d / %s%s" % (n(lambda t: t["result"] == "load-error"), n(lambda t: t["result"] == "ok"),
                                          " (%d)" % dif if dif else "", n(lambda t: t["result"] == "search-error"),
                                          "**%d**" % cr if cr else "0", " + %d hung" % hg if hg else "")
    whats = [("flip", "flips over the file"), ("header-flip", "header flips"), ("truncate", "truncations"),
             ("padding-flip", "padding flips")]
    count = {w: max([sum(1 for t in trials if t["what"] == w and (t["library"], t["kind"]) == k[:2]) for k in keys] or [0])
             for w, _ in whats}
    out = ["| library | file (bytes) | " + " | ".join("%d %s" % (count[w], name) for w, name in whats) + " |",
           "|---|---|" + "---|" * len(whats)]
    for lib, kind, size in keys:
        ts = [t for t in trials if (t["library"], t["kind"]) == (lib, kind)]
        out.append("| %s | %s (%s) | %s |" % (lib, kind, format(size, ","),
                                              " | ".join(cell([t for t in ts if t["what"] == w]) for w, _ in whats)))
    out.append("")
    out.append("Each cell: detected (load refused) / silent (loaded and searched; in brackets: results differ from the"
               " intact file's) / loaded but the search failed / crashed.")
    for lib in sorted({t["library"] for t in trials}):
        ts = [t for t in trials if t["library"] == lib]
        out.append("%s: %d copies, %d detected, %d silent, %d failed at search, %d crashed, %d hung" % (
            lib, len(ts), sum(t["result"] == "load-error" for t in ts), sum(t["result"] == "ok" for t in ts),
            sum(t["result"] == "search-error" for t in ts), sum(t["result"] == "crash" for t in ts),
            sum(t["result"] == "hang" for t in ts)))
    return "\n".join(out)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", default="build/rel/chrysalis")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--flips", type=int, default=80)
    ap.add_argument("--header-flips", type=int, default=80)
    ap.add_argument("--truncs", type=int, default=20)
    ap.add_argument("--pad-flips", type=int, default=20, help="chrysalis: flips in padding bytes")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--mem-mib", type=int, default=2048)
    ap.add_argument("--json", default=None, help="write every trial here")
    ap.add_argument("--summary", default=None, help="print the compact table of a --json file and exit")
    ap.add_argument("--build-anchors", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.summary:
        print(compact_table(json.load(open(a.summary))["trials"]))
        return 0
    if a.build_anchors:
        print(json.dumps(build_anchors(a.build_anchors, a.seed, a.n, a.dim)))
        return 0
    t0 = time.time()
    cli = os.path.abspath(a.cli)
    work = tempfile.mkdtemp(prefix="chrys_flips_")
    try:
        x, q = make_data(a.seed, a.n, a.dim)
        xpath, qpath = os.path.join(work, "x.fvecs"), os.path.join(work, "q.fvecs")
        write_fvecs(xpath, x)
        write_fvecs(qpath, q)
        targets = []  # (library, kind, path, header_len)
        for label, spec in OURS:
            p = os.path.join(work, "ours_%s.chrys" % label.replace(",", "_"))
            subprocess.run([cli, "build", p, xpath, "--metric", "l2", "--index", spec, "--threads", "1", "-q", "--force"],
                           check=True, env=dict(os.environ, CHRYS_NO_PROGRESS="1"))
            targets.append(("chrysalis", label, p, 64))
        anchors = json.loads(subprocess.run([sys.executable, os.path.abspath(__file__), "--build-anchors", work,
                                             "--seed", str(a.seed), "--n", str(a.n), "--dim", str(a.dim)],
                                            check=True, capture_output=True, text=True).stdout)
        for name, spec in FAISS:
            targets.append(("faiss", "%s (%s)" % (spec, name), anchors[name], 64))
        targets.append(("hnswlib", "HNSW M=32", anchors["hnswlib"], HNSWLIB_HEADER))

        import faiss  # noqa: F401  (imported once; the forked children reuse it)
        import hnswlib  # noqa: F401

        trials, summary = [], []
        bad = os.path.join(work, "bad")
        for lib, kind, path, hlen in targets:
            data = open(path, "rb").read()
            rng = random.Random("%d:%s:%s" % (a.seed, lib, kind))
            if lib == "chrysalis":
                rc0, ref_out, _ = run_cli([cli, "search", path, qpath, "-k", "5", "--threads", "1"], a.timeout, a.mem_mib)
                rcm, ref_mmap, _ = run_cli([cli, "search", path, qpath, "-k", "5", "--threads", "1", "--mmap"], a.timeout,
                                           a.mem_mib)
                assert rc0 == 0 and rcm == 0, "intact store does not search"
            else:
                st, ref = run_forked(lib, path, q, a.dim, a.timeout, a.mem_mib)
                assert st == "ok", "intact %s file does not load: %s" % (lib, ref)
            regions = ours_regions(data) if lib == "chrysalis" else None
            for what, off, bit in corruptions(data, hlen, rng, a.flips, a.header_flips, a.truncs,
                                              a.pad_flips if lib == "chrysalis" else 0, regions):
                if what == "truncate":
                    b = data[:off]
                else:
                    b = bytearray(data)
                    b[off] ^= 1 << bit
                with open(bad, "wb") as f:
                    f.write(b)
                t = {"library": lib, "kind": kind, "file_size": len(data), "what": what, "offset": off, "bit": bit}
                if lib == "chrysalis":
                    cls, msg, rc, agree = ours_trial(cli, bad, qpath, ref_out, ref_mmap, a.timeout, a.mem_mib)
                    t.update(info_exit=rc, search_agrees=agree, region=region_of(regions, off) if what != "truncate" else None)
                else:
                    cls, msg = run_forked(lib, bad, q, a.dim, a.timeout, a.mem_mib)
                    if cls == "ok":
                        msg = "same" if msg == ref else "different"
                t.update(result=cls, detail=msg)
                trials.append(t)
            summary.append((lib, kind, len(data)))
        rows = []
        for lib, kind, size in summary:
            for what in ("flip", "header-flip", "truncate", "padding-flip"):
                ts = [t for t in trials if t["library"] == lib and t["kind"] == kind and t["what"] == what]
                if not ts:
                    continue
                c = lambda cls, det=None: sum(1 for t in ts if t["result"] == cls and (det is None or t["detail"] == det))  # noqa: E731
                oom = sum(1 for t in ts if t["result"] == "load-error" and ("bad_alloc" in t["detail"] or "MemoryError" in t["detail"]))
                rows.append((lib, kind, size, what, len(ts), c("load-error"), c("ok", "same"), c("ok", "different"),
                             c("search-error"), c("crash"), c("hang"), oom))
        print("| library | file | bytes | corruption | copies | detected (load error) | silent, same results |"
              " silent, different results | loaded, search error | crash (signal) | hang | of detected: bad_alloc |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print("| %s | %s | %d | %s | %d | %d | %d | %d | %d | %d | %d | %d |" % r)
        print()
        print(compact_table(trials))
        ours_silent = [t for t in trials if t["library"] == "chrysalis" and t["result"] != "load-error"]
        print()
        print("chrysalis copies not rejected: %d%s" % (len(ours_silent), "".join(
            "\n  %s %s @%d bit %s (%s): %s %s" % (t["kind"], t["what"], t["offset"], t["bit"], t["region"], t["result"],
                                                 t["detail"]) for t in ours_silent)))
        hit = {}
        for t in trials:
            if t["library"] == "chrysalis" and t["what"] == "flip":
                r = t["region"].replace("section ", "")
                hit[r] = hit.get(r, 0) + 1
        print("chrysalis whole-file flips by region: " + ", ".join("%s %d" % kv for kv in sorted(hit.items())))
        disagree = [t for t in trials if t["library"] == "chrysalis" and not t["search_agrees"]]
        print("chrysalis copies where search / search --mmap disagree with info: %d" % len(disagree))
        signals = {}
        for t in trials:
            if t["result"] == "crash":
                signals.setdefault((t["library"], t["kind"]), []).append(t["detail"].split(":")[0])
        for k, v in signals.items():
            print("crash signals %s %s: %s" % (k[0], k[1], ", ".join("%s x%d" % (s, v.count(s)) for s in sorted(set(v)))))
        whys = {}
        for t in trials:
            if t["result"] == "crash" and ": " in t["detail"]:
                k = (t["library"], t["detail"].split(": ", 1)[1])
                whys[k] = whys.get(k, 0) + 1
        for (lib, why), cnt in sorted(whys.items()):
            print("  %s abort reason x%d: %s" % (lib, cnt, why))
        print("seed %d, %d x %d float32 (L2), %d trials in %.0f s" % (a.seed, a.n, a.dim, len(trials), time.time() - t0))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"seed": a.seed, "n": a.n, "dim": a.dim, "trials": trials}, f, indent=0)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
