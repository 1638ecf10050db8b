#!/usr/bin/python3
"""numpy linear semantic merger (baseline) and the shared helpers of the merge benchmark.

  merge_numpy.py run   --data X.fvecs --n N [--dtype float32|float64] [--ref STORE] [--time-limit S] --json OUT
  merge_numpy.py store STORE [--json OUT] [--assign-out FILE.i32]   (per-record assignments of a chrysalis store)
  merge_numpy.py collect --runs bench/out/merge_runs --results bench/out/merge_results.json --table bench/out/merge_table.txt

`run` merges the first N vectors one at a time, with the original's decisions (docs/MERGER.md):
a preallocated entry matrix E (dtype float32 or float64) and its row norms; per record
    sims = (E[:m] @ x) / (norms[:m] * |x|)
the best entry is the first index of the maximum (np.argmax) provided it is > 0 (the original's
best starts at 0.0 with a strict >); merged when best >= threshold:
E[j] = (0.4 E[j] + 0.6 x) / (0.4 + 0.6), not renormalised, norms[j] recomputed; else appended.
This is how a numpy user writes the loop: one matrix-vector product per record, the whole entry
matrix read once per record.

With --ref STORE (a `chrysalis merge` store of the same N records) the per-record decisions are
compared with chrysalis's. With --time-limit S the loop stops after S seconds and the rest is
extrapolated (labelled) from the measured cost per scanned row, using the entry-count trace of
--ref (the decisions are the same, so the number of entries each remaining record would scan is
known).
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np

# ---------------------------------------------------------------- helpers


def read_fvecs(path, n=None):
    """First n rows of an fvecs file as float32 (n, d)."""
    with open(path, "rb") as f:
        d = struct.unpack("<i", f.read(4))[0]
    row = 4 * (d + 1)
    size = os.path.getsize(path)
    total = size // row
    if n is None or n > total:
        n = total
    a = np.fromfile(path, dtype=np.float32, count=n * (d + 1)).reshape(n, d + 1)
    assert np.all(a[:, 0].view(np.int32) == d), "not an fvecs file of constant dimension"
    return np.ascontiguousarray(a[:, 1:])


def read_store_sections(path):
    """{tag: payload bytes} of a chrysalis store (docs/FORMAT.md; checksums not verified here,
    `chrysalis info` does that)."""
    with open(path, "rb") as f:
        buf = f.read()
    assert buf[:8] == b"\x89CHRY\r\n\x1a", f"{path}: not a chrysalis store"
    nsec = struct.unpack_from("<I", buf, 24)[0]
    toff = struct.unpack_from("<Q", buf, 32)[0]
    out = {}
    for s in range(nsec):
        tag, _flags, off, length, _crc, _res = struct.unpack_from("<4sIQQII", buf, toff + 32 * s)
        out[tag.decode("ascii", "replace")] = buf[off:off + length]
    return out


def store_assignments(path):
    """(record_ids sorted, entry per record) from the store's MASN section (u64 record, u64 entry)."""
    masn = read_store_sections(path)["MASN"]
    a = np.frombuffer(masn, dtype="<u8").reshape(-1, 2)
    order = np.argsort(a[:, 0], kind="stable")
    return a[order, 0].astype(np.int64), a[order, 1].astype(np.int64)


def entries_before(assign):
    """entries_before[i] = number of entries when record i is merged (entries are numbered in
    creation order, so it is 1 + max entry id among the earlier records)."""
    assign = np.asarray(assign, dtype=np.int64)
    run_max = np.maximum.accumulate(assign)
    eb = np.empty(len(assign), dtype=np.int64)
    if len(assign):
        eb[0] = 0
        eb[1:] = run_max[:-1] + 1
    return eb


def canonical(assign):
    """Relabel entries by order of first appearance (so two mergers that number entries the same
    way, in creation order, give identical arrays)."""
    m = {}
    return np.array([m.setdefault(int(e), len(m)) for e in assign], dtype=np.int64)


def compare_assign(a, b):
    a = canonical(a)
    b = canonical(b)
    if len(a) != len(b):
        return dict(equal=False, reason=f"lengths {len(a)} != {len(b)}")
    diff = np.nonzero(a != b)[0]
    return dict(equal=bool(len(diff) == 0), records=int(len(a)), differing=int(len(diff)),
                first_difference=(int(diff[0]) if len(diff) else None))


def creators(assign):
    """For each record, the record that created the entry it ended in (itself when appended).
    Unlike canonical labels, one extra or missing entry does not shift every later label."""
    assign = np.asarray(assign, dtype=np.int64)
    first = {}
    return np.array([first.setdefault(int(e), i) for i, e in enumerate(assign)], dtype=np.int64)


def agreement(a, b):
    """Decision agreement of two runs over the same records: a record agrees when it ended in the
    entry created by the same record in both (both appended, or both merged into that entry)."""
    if len(a) != len(b):
        return dict(records=0, agree=0, rate=0.0, reason=f"lengths {len(a)} != {len(b)}")
    ca, cb = creators(a), creators(b)
    same = ca == cb
    diff = np.nonzero(~same)[0]
    return dict(records=int(len(a)), agree=int(same.sum()), rate=float(same.mean()) if len(a) else 1.0,
                appended_in_one_only=int(((ca == np.arange(len(a))) != (cb == np.arange(len(b)))).sum()),
                first_difference=(int(diff[0]) if len(diff) else None))


def histogram(assign):
    counts = np.bincount(canonical(assign))
    h = np.bincount(counts)
    return {str(k): int(v) for k, v in enumerate(h) if v}


def loadavg():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return None


# ---------------------------------------------------------------- numpy merger


def merge_numpy(X, thr, w_old=0.4, w_new=0.6, dtype=np.float32, time_limit=None):
    n, d = X.shape
    wsum = w_old + w_new
    wo, wn = dtype(w_old / wsum), dtype(w_new / wsum)
    E = np.empty((n, d), dtype=dtype)
    norms = np.empty(n, dtype=dtype)
    assign = np.empty(n, dtype=np.int64)
    m = 0
    merges = 0
    scanned = 0
    t0 = time.perf_counter()
    done = n
    checkpoints = []
    for i in range(n):
        if i and (i & 1023) == 0:
            t = time.perf_counter() - t0
            checkpoints.append((i, scanned, t))
            if time_limit is not None and t > time_limit:
                done = i
                break
        x = X[i].astype(dtype)
        nx = np.sqrt(x @ x)
        if m:
            s = (E[:m] @ x) / (norms[:m] * nx)
            scanned += m
            j = int(np.argmax(s))          # first index of the maximum
            if s[j] > 0 and s[j] >= thr:
                E[j] = wo * E[j] + wn * x
                norms[j] = np.sqrt(E[j] @ E[j])
                merges += 1
                assign[i] = j
                continue
        E[m] = x
        norms[m] = nx
        assign[i] = m
        m += 1
    secs = time.perf_counter() - t0
    return dict(done=done, seconds=secs, merges=merges, entries=m, scanned_rows=scanned,
                checkpoints=checkpoints), assign[:done]


def cmd_run(a):
    dtype = {"float32": np.float32, "float64": np.float64}[a.dtype]
    X = read_fvecs(a.data, a.n)
    n = len(X)
    la = loadavg()
    r, assign = merge_numpy(X, a.threshold, dtype=dtype, time_limit=a.time_limit)
    out = dict(method=f"numpy_{a.dtype}", n=n, dtype=a.dtype, threshold=a.threshold,
               loadavg1_start=la, measured_records=r["done"], measured_seconds=round(r["seconds"], 3),
               scanned_rows_measured=int(r["scanned_rows"]))
    ref = None
    if a.ref:
        _, ref = store_assignments(a.ref)
        out["agreement_vs_chrysalis"] = compare_assign(assign, ref[:len(assign)])
        if r["done"] < n:
            out["agreement_vs_chrysalis"]["note"] = f"first {r['done']} records only (run stopped)"
    if r["done"] == n:
        out.update(seconds=round(r["seconds"], 3), extrapolated=False, merges=r["merges"],
                   entries=r["entries"], merged_count_histogram=histogram(assign))
    else:
        # extrapolate: cost of the rest = (remaining scanned rows) x (s/row measured on the last
        # quarter of the run, where the rows scanned per record are largest) + per-record overhead
        assert ref is not None and len(ref) >= n, "--time-limit needs --ref with all N records"
        eb = entries_before(ref[:n])
        cps = r["checkpoints"]
        k = max(0, int(len(cps) * 0.75) - 1)
        i0, s0, t0 = cps[k] if k < len(cps) - 1 else (0, 0, 0.0)
        i1, s1, t1 = cps[-1]
        # fit t = a*rows + b*records on the tail window; use rows only (overhead included per row)
        sec_per_row = (t1 - t0) / max(1, s1 - s0)
        rest_rows = int(eb[r["done"]:].sum())
        est = r["seconds"] + rest_rows * sec_per_row
        out.update(seconds=round(est, 1), extrapolated=True, measured_until_record=r["done"],
                   sec_per_scanned_row=sec_per_row, remaining_scanned_rows=rest_rows,
                   merges=int(n - (ref[:n].max() + 1)),
                   entries=int(ref[:n].max() + 1),
                   note="seconds extrapolated beyond measured_until_record; merges/entries from chrysalis (decisions agree on the measured part)")
    print(json.dumps(out), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    if a.assign_out:
        assign.astype("<i4").tofile(a.assign_out)
    if ref is not None and not out["agreement_vs_chrysalis"]["equal"]:
        return 1
    return 0


def cmd_store(a):
    rec, ent = store_assignments(a.store)
    eb = entries_before(ent)
    n_entries = int(ent.max() + 1) if len(ent) else 0
    out = dict(store=a.store, records=int(len(rec)), first_record_id=int(rec[0]) if len(rec) else None,
               consecutive_ids=bool(np.all(np.diff(rec) == 1)), entries=n_entries,
               merges=int(len(rec) - n_entries),
               cosine_calls=int(eb.sum()),   # what the original makes: every entry, every record
               merged_count_histogram=histogram(ent))
    print(json.dumps(out), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    if a.assign_out:
        ent.astype("<i4").tofile(a.assign_out)
    return 0


# ---------------------------------------------------------------- collect + report


def fmt_s(s, extrap):
    if s is None:
        return "-"
    if s >= 1000:
        t = f"{s:,.0f}"
    elif s >= 10:
        t = f"{s:.1f}"
    elif s >= 0.1:
        t = f"{s:.2f}"
    else:
        t = f"{s:.3f}"
    return ("~" + t) if extrap else t


def human(s):
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.2f} s"


ORDER = ["python_original", "numpy_float64", "numpy_float32", "merge_anchor_numpy_norenorm",
         "chrysalis_t1", "chrysalis_t2", "merge_anchor_faiss_inplace_renorm", "chrysalis_t2_renorm"]


def cmd_collect(a):
    runs = {}
    for fn in sorted(os.listdir(a.runs)):
        if fn.endswith(".json"):
            runs[fn[:-5]] = json.load(open(os.path.join(a.runs, fn)))
    rows = [dict(r) for k, r in runs.items() if "method" in r and "n" in r]
    traces = {r["records"]: r for k, r in runs.items() if k.startswith("trace_")}
    notes = []
    # the pure-Python original beyond what was really run: cosine calls x measured s per call
    py = sorted([r for r in rows if r["method"] == "python_original"], key=lambda r: r["n"])
    if py:
        # the smallest measured cost per call (the most favourable to the original)
        ref = min(py, key=lambda r: r["seconds"] / r["cosine_calls"])
        spc = ref["seconds"] / ref["cosine_calls"]
        for n, tr in sorted(traces.items()):
            if any(r["n"] == n for r in py):
                continue
            rows.append(dict(method="python_original", n=n, seconds=round(tr["cosine_calls"] * spc, 1),
                             extrapolated=True, cosine_calls=tr["cosine_calls"],
                             merges=tr["merges"], entries=tr["entries"],
                             basis=f"{tr['cosine_calls']:,} cosine calls (sum over records of the entries "
                                   f"at that step, from the chrysalis store; same decisions) x "
                                   f"{spc * 1e6:.1f} us per call measured at N={ref['n']}"))
        notes.append(f"python_original beyond N={py[-1]['n']}: extrapolated = cosine calls x {spc * 1e6:.1f} us/call "
                     f"(the smallest measured, at N={ref['n']}; measured: "
                     + ", ".join(f"{1e6 * r['seconds'] / r['cosine_calls']:.1f} at N={r['n']}" for r in py)
                     + "; golden check on the real rows: "
                     f"{runs.get('golden_python', {}).get('us_per_cosine', '?')}). A lower bound: the "
                     f"original keeps every entry as a list of 1024 Python floats (~32 KB), 1.5+ GB at 100k.")
    for r in rows:
        r.setdefault("ratio_base", "chrysalis_t2_renorm" if r["method"].endswith("_renorm") and
                     r["method"] != "chrysalis_t2_renorm" else "chrysalis_t2")
    base = {(r["n"], r["method"]): r for r in rows}
    for r in rows:
        b = base.get((r["n"], r["ratio_base"]))
        if b and r["method"] != r["ratio_base"] and r.get("seconds"):
            r["ratio_vs_base"] = round(r["seconds"] / b["seconds"], 1)
    rows.sort(key=lambda r: (r["n"], ORDER.index(r["method"]) if r["method"] in ORDER else 99))

    # targets at 10,000
    targets = {}
    b = base.get((10000, "chrysalis_t2"))
    if b:
        p = base.get((10000, "python_original"))
        nps = [base[k] for k in [(10000, "numpy_float32"), (10000, "numpy_float64")] if k in base]
        if p:
            targets["vs_python_10k"] = dict(ratio=round(p["seconds"] / b["seconds"], 1), target=1000,
                                            met=p["seconds"] / b["seconds"] >= 1000,
                                            python_seconds_extrapolated=bool(p.get("extrapolated")))
        if nps:
            f = min(nps, key=lambda r: r["seconds"])
            targets["vs_numpy_10k"] = dict(ratio=round(f["seconds"] / b["seconds"], 1), target=10,
                                           met=f["seconds"] / b["seconds"] >= 10, numpy=f["method"],
                                           numpy_seconds_extrapolated=bool(f.get("extrapolated")))
    checks = {k: v for k, v in runs.items() if k.startswith(("golden_", "same_", "breakdown_"))}
    for r in rows:
        if "agreement_vs_chrysalis" in r:
            checks[f"{r['method']}_{r['n']}_vs_chrysalis"] = r["agreement_vs_chrysalis"]
    meta = json.load(open(a.data_meta)) if a.data_meta and os.path.exists(a.data_meta) else {}
    data_desc = (f"gen_clustered.py n={meta.get('n')} d={meta.get('d')} clusters={meta.get('clusters')} "
                 f"s in [{meta.get('s_min')}, {meta.get('s_max')}] seed={meta.get('seed')}; "
                 f"N = first N records of that stream")
    try:
        cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
        machine = f"{cpu[0]} x{len(cpu)}"
    except OSError:
        machine = "?"
    res = dict(data_desc=data_desc, threshold=0.85, d=meta.get("d", 1024), machine=machine,
               library=a.librev, targets_at_10000=targets, checks=checks, notes=notes, rows=rows)
    with open(a.results, "w") as f:
        json.dump(res, f, indent=1)

    libs = sorted({r["library"] for r in rows if r.get("library")})
    L = [f"# merge benchmark: {data_desc}",
         f"# chrysalis measured at: {', '.join(libs) or a.librev}",
         f"# threshold 0.85, weights 0.4/0.6, d=1024; {machine}",
         "# seconds: merge loop (python, numpy, merge_anchor) or whole `chrysalis merge` process (read input,",
         "# merge, atomic save; best of 3 at N <= 10k). ratio = seconds / chrysalis_t2 (the default, 2 threads)",
         "# seconds at the same N (the _renorm FAISS row: / chrysalis_t2_renorm). ~ = extrapolated, not measured.",
         ""]
    hdr = f"{'N':>7}  {'method':<34} {'seconds':>12} {'records/s':>11} {'merges':>7} {'entries':>7} {'ratio':>10}"
    L.append(hdr)
    L.append("-" * len(hdr))
    last = None
    for r in rows:
        if last is not None and r["n"] != last:
            L.append("")
        last = r["n"]
        ex = bool(r.get("extrapolated"))
        s = r.get("seconds")
        rps = ("~" if ex else "") + ((f"{r['n'] / s:,.0f}" if r["n"] / s >= 10 else f"{r['n'] / s:.2g}")
                                     if s else "-")
        if r["method"] == r["ratio_base"]:
            ratio = "1"
        elif "ratio_vs_base" in r:
            ratio = ("~" if ex else "") + f"{r['ratio_vs_base']:,.1f}x"
        else:
            ratio = "-"
        L.append(f"{r['n']:>7}  {r['method']:<34} {fmt_s(s, ex):>12} {rps:>11} "
                 f"{r.get('merges', '-')!s:>7} {r.get('entries', '-')!s:>7} {ratio:>10}")
    L.append("")
    for k, t in targets.items():
        what = "python" if k.startswith("vs_python") else t["numpy"]
        exf = t.get("python_seconds_extrapolated") or t.get("numpy_seconds_extrapolated")
        L.append(f"target {k}: {t['ratio']:,.1f}x (target {t['target']}x: {'met' if t['met'] else 'NOT met'}; "
                 f"{what} {'extrapolated' if exf else 'measured'})")
    for r in rows:
        if r.get("extrapolated") and r.get("seconds"):
            L.append(f"~ {r['method']} N={r['n']}: {human(r['seconds'])}; "
                     + r.get("basis", r.get("note", "")))
    for k, v in sorted(runs.items()):
        if k.startswith("breakdown_"):
            L.append(f"chrysalis N={v['n']}: whole merge {v['merge_wall_s']} s, of which the searches "
                     f"{v['search_seconds']} s ({v['searches']} searches: {v['search_seconds_by_path']}); "
                     f"`chrysalis build` of the same file (read + save, no merge) {v['build_same_file_wall_s']} s")
    for k, v in checks.items():
        if k.startswith("breakdown_"):
            continue
        ok = v.get("ok", v.get("equal"))
        L.append(f"check {k}: {'OK' if ok else 'DIFFERS'}"
                 + (f" ({v.get('note')})" if v.get("note") else ""))
    for t in notes:
        L.append("note: " + t)
    txt = "\n".join(L) + "\n"
    with open(a.table, "w") as f:
        f.write(txt)
    print(txt, end="")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--threshold", type=float, default=0.85)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--ref", help="chrysalis store of the same N records (decisions compared)")
    p.add_argument("--time-limit", type=float, help="stop after S seconds and extrapolate the rest")
    p.add_argument("--json")
    p.add_argument("--assign-out")
    p = sub.add_parser("store")
    p.add_argument("store")
    p.add_argument("--json")
    p.add_argument("--assign-out")
    p = sub.add_parser("collect")
    p.add_argument("--runs", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--data-meta")
    p.add_argument("--librev", default="")
    a = ap.parse_args()
    return {"run": cmd_run, "store": cmd_store, "collect": cmd_collect}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
