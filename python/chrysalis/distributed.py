"""chrysalis.distributed: sharded search, an exact sharded merger and spread-out embedding, on Dask.

The client drives; the workers hold the shards as chrysalis stores inside their own processes.

- ShardedIndex(client, dim, n_shards=None, spec="Flat", metric="cosine", **opts): vectors placed by
  id (shard = id % n_shards); search fans out, every shard returns its top k with exact (double)
  scores (Index.score), and the client merges them by (score, smaller id): for exact specs the
  result is one process's, ties included.
- ShardedMerger(client, directory, dim, threshold=0.85, n_shards=None, **merge_opts): the decisions
  of the single-process exact merger (chrysalis.Merger(exact=True)), record for record. Per block
  of records, every shard returns each record's best candidates (exact double scores) within it;
  the client settles the block in record order (rescoring the entries changed earlier in the block
  in a local scratch index, with the library's arithmetic for the 0.4/0.6 update), then sends the
  merges and appends to the owning shards (entry e lives on shard e % n_shards). Each call is
  atomic: shards save to a new generation of files, the manifest is rewritten last (rename).
- embed(client, texts, provider="deterministic", cache=None, **opts): texts de-duplicated by
  SHA-256 before anything is sent, the unique ones spread over the workers, each through
  chrysalis.Embedder and its cache.

Faults: a shard whose worker is gone (or restarted) is noticed at the next call touching it; a
shard with a saved store is reloaded on a live worker and the call completes exactly (a merge call
in progress is restarted from the last saved state); otherwise chrysalis.Error names the shard.
Bad input is refused before any shard changes. See docs/DISTRIBUTED.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _index as _ix
from ._chrysalis import DimensionError, DuplicateIdError, Error, InvalidInputError, NotFoundError
from ._index import Embedder, Index, Merger, _as_ids, _as_matrix, _check_rows

__all__ = ["ShardedIndex", "ShardedMerger", "embed", "ShardLostError"]

MANIFEST = "MANIFEST.json"
_K = 8  # candidates per record and shard (the library's MERGE_K)


class ShardLostError(Error):
    """A shard's worker was lost and the shard could not be restored (no saved store, or it had
    changed since it was saved). The message names the shard."""


class _Missing(Exception):
    """Raised inside a worker when the shard (with this token) is not held by this process."""


# ------------------------------------------------------------------------------------------------
# Worker side: shards live in this module's dictionary inside each worker process.
# ------------------------------------------------------------------------------------------------
_HELD: Dict[str, Dict[str, Any]] = {}


def _w_get(key: str, token: str) -> Dict[str, Any]:
    sh = _HELD.get(key)
    if sh is None or sh["token"] != token:
        raise _Missing(key)
    return sh


def _w_create(key, token, dim, metric, spec, opts):
    _HELD[key] = {"token": token, "ix": Index(dim, metric, spec, **opts), "mc": {}, "sim": {}, "first": {}}
    return True


def _w_load(key, token, path, side):
    sh = {"token": token, "ix": Index.load(path), "mc": {}, "sim": {}, "first": {}}
    if side is not None:
        z = np.load(side)
        ids = z["ids"].tolist()
        sh["mc"] = dict(zip(ids, z["mc"].tolist()))
        sh["sim"] = dict(zip(ids, z["sim"].tolist()))
        sh["first"] = dict(zip(ids, z["first"].tolist()))
    _HELD[key] = sh
    return len(sh["ix"])


def _w_drop(key):
    _HELD.pop(key, None)
    return True


def _w_count(key, token):
    return len(_w_get(key, token)["ix"])


def _w_contains(key, token, ids):
    ix = _w_get(key, token)["ix"]
    return [int(i) for i in ids if int(i) in ix]


def _w_add(key, token, vectors, ids, meta):
    _w_get(key, token)["ix"].add(vectors, ids=ids, meta=meta)
    return True


def _w_search(key, token, q, k, search_opts):
    """Top k of this shard with exact double scores (ids -1 / score NaN in unused slots)."""
    ix = _w_get(key, token)["ix"]
    n = len(ix)
    kk = min(k, n)
    if kk == 0:
        return np.full((q.shape[0], 0), -1, np.int64), np.zeros((q.shape[0], 0))
    _, ids = ix.search(q, k=kk, **search_opts)
    sc = np.full(ids.shape, np.nan)
    ok = ids >= 0
    if ok.all():
        sc = ix.score(q, ids)
    else:
        for r in range(ids.shape[0]):
            m = ok[r]
            if m.any():
                sc[r, m] = ix.score(q[r:r + 1], ids[r, m])[0]
    return ids, sc


def _w_save(key, token, path, side):
    sh = _w_get(key, token)
    sh["ix"].save(path)
    if side is not None:
        ids = np.array(sorted(sh["mc"]), dtype=np.int64)
        with open(side + ".tmp", "wb") as f:
            np.savez(f, ids=ids, mc=np.array([sh["mc"][i] for i in ids.tolist()], np.int64),
                     sim=np.array([sh["sim"][i] for i in ids.tolist()], np.float64),
                     first=np.array([sh["first"][i] for i in ids.tolist()], np.uint64))
            f.flush()
            os.fsync(f.fileno())
        os.replace(side + ".tmp", side)
    return True


def _w_candidates(key, token, q, excl, k, threshold):
    """Per record: this shard's candidates in (score desc, id asc) order, best k not in excl[r]
    (entries the client is settling), with exact scores; and for candidates reaching the threshold
    their current vector, metadata and merged_count (the client may merge into them)."""
    sh = _w_get(key, token)
    ix = sh["ix"]
    n = len(ix)
    out = []
    for r in range(q.shape[0]):
        ex = excl[r] if excl is not None else ()
        kk = min(n, k + len(ex))
        if kk == 0:
            out.append((np.zeros(0, np.int64), np.zeros(0), []))
            continue
        _, ids = ix.search(q[r:r + 1], k=kk)
        ids = ids[0]
        ids = ids[ids >= 0]
        if ex:
            ids = ids[~np.isin(ids, np.fromiter(ex, np.int64, len(ex)))]
        ids = ids[:k]
        sc = ix.score(q[r:r + 1], ids)[0] if len(ids) else np.zeros(0)
        rows = []
        for e, s in zip(ids.tolist(), sc.tolist()):
            if s >= threshold:
                rows.append((e, ix.get([e])[0], ix._meta(e), sh["mc"][e]))
        out.append((ids, sc, rows))
    return out, n


def _w_apply(key, token, adds, updates):
    """adds: [(entry, vector, meta, first_record)], updates: [(entry, vector, meta, merged_count, sim)]."""
    sh = _w_get(key, token)
    ix = sh["ix"]
    if adds:
        ix.add(np.stack([a[1] for a in adds]), ids=[a[0] for a in adds], meta=[a[2] for a in adds])
        for e, _v, _m, fr, mc, sim in adds:
            sh["mc"][e], sh["sim"][e], sh["first"][e] = mc, sim, fr
    for e, v, meta, mc, sim in updates:
        if meta == ix._meta(e):
            ix.update(e, v)
        else:  # new metadata: the row again under its id (the same normalisation as update)
            ix.remove(e)
            ix.add(v, ids=[e], meta=[meta])
        sh["mc"][e], sh["sim"][e] = mc, sim
    return True


def _w_entries(key, token, with_vectors):
    sh = _w_get(key, token)
    ix = sh["ix"]
    out = []
    for e in sorted(sh["mc"]):
        out.append((e, sh["mc"][e], sh["sim"][e], sh["first"][e], ix._meta(e),
                    ix.get([e])[0] if with_vectors else None))
    return out


# ------------------------------------------------------------------------------------------------
# Client side: shard handles, placement and recovery.
# ------------------------------------------------------------------------------------------------
class _Shards:
    """The client's view of n shards: where each lives, its token, and the store it can be reloaded
    from (None when it has changed since it was saved, or was never saved)."""

    def __init__(self, client, n: int, prefix: str):
        self.client = client
        self.n = n
        self.keys = [f"{prefix}-{s}" for s in range(n)]
        self.token = [""] * n
        self.where: List[Optional[str]] = [None] * n
        self.saved: List[Optional[Tuple[str, Optional[str]]]] = [None] * n
        self.round_trips = 0
        self.reloads = 0
        self.measure = False  # count the bytes of arguments and results (pickled), for benchmarks
        self.bytes_sent = 0
        self.bytes_received = 0

    def _live(self) -> List[str]:
        ws = sorted(self.client.scheduler_info()["workers"])
        if not ws:
            raise Error("no Dask workers are connected to the scheduler")
        return ws

    def place(self) -> List[str]:
        """A worker for every shard, deterministically (shard s on live worker s % workers)."""
        ws = self._live()
        return [ws[s % len(ws)] for s in range(self.n)]

    def _submit(self, s: int, fn, *args):
        return self.client.submit(fn, self.keys[s], self.token[s], *args, workers=[self.where[s]],
                                  allow_other_workers=True, pure=False)

    def create(self, fn, *args) -> None:
        dest = self.place()
        futs = []
        for s in range(self.n):
            self.token[s] = uuid.uuid4().hex
            self.where[s] = dest[s]
            futs.append(self._submit(s, fn, *args))
        self.client.gather(futs)
        self.round_trips += 1

    def load(self, s: int, path: str, side: Optional[str], dest: Optional[str] = None) -> None:
        self.token[s] = uuid.uuid4().hex
        self.where[s] = dest or self.place()[s]
        f = self._submit(s, _w_load, path, side)
        f.result()
        self.saved[s] = (path, side)

    def _restore(self, s: int, cause: BaseException) -> None:
        if self.saved[s] is None:
            raise ShardLostError(f"shard {s}: its worker was lost ({type(cause).__name__}) and it has changed "
                                 f"since it was last saved (or was never saved): cannot be restored") from None
        path, side = self.saved[s]
        live = self._live()
        self.load(s, path, side, dest=live[s % len(live)])
        self.reloads += 1

    def call(self, fn, per_shard_args, shards=None, retry=True):
        """Run fn on every shard (or those listed) with its arguments; a shard found missing is
        restored from its saved store and the call repeated on it (once)."""
        shards = list(range(self.n)) if shards is None else list(shards)
        live = set(self._live())
        for s in shards:  # a worker gone since the last call: restore before submitting
            if self.where[s] not in live:
                if not retry:
                    raise ShardLostError(f"shard {s}: its worker {self.where[s]} is gone")
                self._restore(s, ConnectionError("worker gone"))
        args = {s: per_shard_args(s) for s in shards}
        if self.measure:
            import pickle
            self.bytes_sent += sum(len(pickle.dumps(a, protocol=5)) for a in args.values())
        futs = {s: self._submit(s, fn, *args[s]) for s in shards}
        out = {}
        self.round_trips += 1
        for s, f in futs.items():
            try:
                out[s] = f.result()
            except (_Missing, KeyError, OSError, EOFError) + _dask_errors() as e:
                if isinstance(e, (DimensionError, DuplicateIdError, InvalidInputError, NotFoundError)):
                    raise
                if not retry:
                    raise ShardLostError(f"shard {s}: lost during the call ({type(e).__name__}: {e})") from None
                self._restore(s, e)
                out[s] = self._submit(s, fn, *args[s]).result()
        if self.measure:
            import pickle
            self.bytes_received += sum(len(pickle.dumps(v, protocol=5)) for v in out.values())
        return [out[s] for s in shards]

    def drop(self) -> None:
        try:
            futs = [self.client.submit(_w_drop, self.keys[s], workers=[w], pure=False)
                    for s in range(self.n) for w in self._live()]
            self.client.gather(futs)
        except Exception:  # best effort
            pass


def _dask_errors() -> tuple:
    errs = []
    try:
        from distributed.scheduler import KilledWorker
        errs.append(KilledWorker)
    except ImportError:  # pragma: no cover
        pass
    try:
        from distributed.comm.core import CommClosedError
        errs.append(CommClosedError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def _default_shards(client) -> int:
    return max(1, len(client.scheduler_info()["workers"]))


def _write_manifest(directory: str, data: Dict[str, Any]) -> None:
    tmp = os.path.join(directory, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, MANIFEST))
    try:
        fd = os.open(directory, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:  # pragma: no cover
        pass


def _read_manifest(directory: str, kind: str) -> Dict[str, Any]:
    p = os.path.join(directory, MANIFEST)
    try:
        with open(p) as f:
            m = json.load(f)
    except FileNotFoundError:
        raise NotFoundError(f"{p}: no manifest (not a chrysalis.distributed directory, or never saved)") from None
    except ValueError as e:
        raise Error(f"{p}: manifest is not valid JSON ({e})") from None
    if m.get("kind") != kind:
        raise Error(f"{p}: holds a {m.get('kind')!r}, not a {kind!r}")
    return m


def _remove_stale(directory: str, keep: Sequence[str]) -> None:
    keep = set(keep) | {MANIFEST}
    for f in os.listdir(directory):
        if (f.startswith("shard-") or f.startswith("client.")) and f not in keep and not f.endswith(".lock"):
            try:
                os.remove(os.path.join(directory, f))
            except OSError:
                pass


# ------------------------------------------------------------------------------------------------
# ShardedIndex
# ------------------------------------------------------------------------------------------------
class ShardedIndex:
    """An index split over Dask workers: vector id i lives on shard i % n_shards.

    ShardedIndex(client, dim, n_shards=None, spec="Flat", metric="cosine", **opts): opts go to each
    shard's chrysalis.Index (seed, auto_threshold, ...). n_shards defaults to the number of workers.
    """

    def __init__(self, client, dim: int, n_shards: Optional[int] = None, spec: str = "Flat",
                 metric: str = "cosine", _create: bool = True, **opts) -> None:
        Index(dim, metric, spec, **opts)  # validates every argument here, before any worker is asked
        self.client, self.dim, self.spec, self.metric, self.opts = client, int(dim), spec, metric, opts
        n = _default_shards(client) if n_shards is None else _ix._posint(n_shards, "n_shards", 1, 1 << 16)
        self._sh = _Shards(client, n, f"chrysalis-ix-{uuid.uuid4().hex[:12]}")
        self._next_id = 0
        self._count = 0
        self._gen = 0
        if _create:
            self._sh.create(_w_create, self.dim, metric, spec, opts)

    @property
    def n_shards(self) -> int:
        return self._sh.n

    def __len__(self) -> int:
        return self._count

    def add(self, vectors, ids=None, meta=None) -> np.ndarray:
        """Add vectors (n, dim) under ids (default: consecutive after the largest added). All or
        nothing: every row is checked (NaN/Inf, zero vectors under cosine, dimension, ids repeated
        in the batch or already present on their shard) before any shard changes."""
        a = _as_matrix(vectors, self.dim, "vectors")
        n = a.shape[0]
        _check_rows(a, "vectors", self.metric == "cosine")
        if ids is None:
            idarr = np.arange(self._next_id, self._next_id + n, dtype=np.uint64)
        else:
            idarr = _as_ids(ids, n)
            u, counts = np.unique(idarr, return_counts=True)
            if (counts > 1).any():
                dup = u[counts > 1][0]
                rows = np.nonzero(idarr == dup)[0]
                raise DuplicateIdError(f"ids: row {int(rows[1])}: id {int(dup)} repeats row {int(rows[0])}")
        metas = _ix._meta_strings(meta, n)
        if n == 0:
            return idarr
        owner = (idarr % np.uint64(self._sh.n)).astype(np.int64)
        rows = {s: np.nonzero(owner == s)[0] for s in range(self._sh.n)}
        present = self._sh.call(_w_contains, lambda s: (idarr[rows[s]].tolist(),))
        for s, p in enumerate(present):
            if p:
                r = int(rows[s][np.nonzero(idarr[rows[s]] == np.uint64(p[0]))[0][0]])
                raise DuplicateIdError(f"ids: row {r}: duplicate id {p[0]} (already in the index, shard {s})")
        active = [s for s in range(self._sh.n) if len(rows[s])]
        self._sh.call(_w_add, lambda s: (a[rows[s]], idarr[rows[s]],
                                         None if metas is None else [metas[i] for i in rows[s]]), shards=active)
        for s in active:
            self._sh.saved[s] = None  # changed since saved: a lost shard now cannot be restored
        self._count += n
        self._next_id = max(self._next_id, int(idarr.max()) + 1)
        return idarr

    def search(self, queries, k: int = 10, **search_opts) -> Tuple[np.ndarray, np.ndarray]:
        """(scores float32 (nq, k), ids int64 (nq, k)), best first, ties by smaller id, padded with
        -inf/+inf and -1, as chrysalis.Index.search. search_opts (threshold, nprobe, ef_search,
        threads) go to every shard; for exact specs the result is one process's."""
        q = _as_matrix(queries, self.dim, "queries")
        _check_rows(q, "queries", self.metric == "cosine")
        k = _ix._posint(k, "k", 1, 1 << 20)
        parts = self._sh.call(_w_search, lambda s: (q, k, search_opts))
        nq = q.shape[0]
        ids = np.concatenate([p[0] for p in parts], axis=1)
        sc = np.concatenate([p[1] for p in parts], axis=1)
        l2 = self.metric == "l2"
        pad = np.inf if l2 else -np.inf
        out_s = np.full((nq, k), pad, np.float32)
        out_i = np.full((nq, k), -1, np.int64)
        for r in range(nq):
            ok = ids[r] >= 0
            i, s = ids[r][ok], sc[r][ok]
            order = np.lexsort((i, s if l2 else -s))[:k]
            out_i[r, :len(order)] = i[order]
            out_s[r, :len(order)] = s[order].astype(np.float32)
        return out_s, out_i

    def save(self, directory) -> None:
        """Write one store per shard into directory (a path every worker can reach), then the
        manifest, atomically: a failed save leaves the previous save readable."""
        d = os.fspath(directory)
        os.makedirs(d, exist_ok=True)
        gen = self._gen + 1
        names = [f"shard-{s:04d}.g{gen}.chrys" for s in range(self._sh.n)]
        self._sh.call(_w_save, lambda s: (os.path.join(d, names[s]), None), retry=False)
        _write_manifest(d, {"kind": "index", "format": 1, "dim": self.dim, "metric": self.metric, "spec": self.spec,
                            "opts": self.opts, "n_shards": self._sh.n, "generation": gen, "count": self._count,
                            "next_id": self._next_id, "shards": names})
        for s in range(self._sh.n):
            self._sh.saved[s] = (os.path.join(d, names[s]), None)
        self._gen = gen
        _remove_stale(d, names)

    @classmethod
    def load(cls, client, directory) -> "ShardedIndex":
        """Open a directory written by save(): each shard is loaded on a worker."""
        d = os.fspath(directory)
        m = _read_manifest(d, "index")
        self = cls(client, m["dim"], m["n_shards"], m["spec"], m["metric"], _create=False, **m["opts"])
        dest = self._sh.place()
        for s, name in enumerate(m["shards"]):
            self._sh.load(s, os.path.join(d, name), None, dest=dest[s])
        self._count, self._next_id, self._gen = m["count"], m["next_id"], m["generation"]
        return self

    def stats(self) -> Dict[str, int]:
        """count, n_shards, round_trips (client <-> shards so far), reloads (shards restored)."""
        return {"count": self._count, "n_shards": self._sh.n, "round_trips": self._sh.round_trips,
                "reloads": self._sh.reloads}

    def close(self) -> None:
        """Drop the shards from the workers' memory."""
        self._sh.drop()


# ------------------------------------------------------------------------------------------------
# ShardedMerger
# ------------------------------------------------------------------------------------------------
def _merged_meta(variant: str, old: Optional[str], rec: Optional[str]) -> Optional[str]:
    """The library's metadata of an entry `old` merged with a record's `rec` (descriptor / salts
    union, last_merged_at), computed by the library itself: a one-dimensional merger that merges
    two records carrying them."""
    if old is None and rec is None:
        return None
    m = Merger(None, dim=1, threshold=0.5, variant=variant)
    m.merge(np.ones((2, 1), np.float32), ids=[0, 1], meta=[old, rec])
    return m._entries(None)[0][3]


_MERGER_OPTS = {"weights", "mean_update", "batch_size", "variant"}


class ShardedMerger:
    """The Chrysalis merger with its entries split over Dask workers (entry e on shard e % n_shards),
    deciding exactly as the single-process exact merger (chrysalis.Merger(..., exact=True)).

    ShardedMerger(client, directory, dim, threshold=0.85, n_shards=None, variant="embedding",
                  weights=(0.4, 0.6), mean_update=False, batch_size=1024): directory (reachable by
    every worker) holds one store per shard, each shard's bookkeeping, the client's record map and
    a manifest written last. An existing directory is opened (as ShardedMerger.open).
    """

    def __init__(self, client, directory, dim: Optional[int] = None, threshold: Optional[float] = None,
                 n_shards: Optional[int] = None, _open: bool = False, **merge_opts) -> None:
        unknown = set(merge_opts) - _MERGER_OPTS
        if unknown:
            raise TypeError(f"ShardedMerger: unknown or unsupported option(s) {', '.join(sorted(unknown))} "
                            f"(supported: {', '.join(sorted(_MERGER_OPTS))}; renormalize is not)")
        self.client = client
        self.directory = os.fspath(directory)
        self.rechecks = 0  # shards asked again because every candidate they listed had changed
        if os.path.exists(os.path.join(self.directory, MANIFEST)):
            self._open_dir(dim, threshold, merge_opts)
            return
        if _open:
            _read_manifest(self.directory, "merger")  # raises NotFoundError naming the path
        if dim is None:
            raise InvalidInputError("dim is required for a new sharded merger")
        variant = merge_opts.get("variant", "embedding")
        if threshold is None:
            threshold = 0.90 if variant == "skill" else 0.85
        # every option checked by the library's own merger before any worker is asked
        Merger(None, dim=dim, threshold=threshold, variant=variant,
               **{k: v for k, v in merge_opts.items() if k in ("weights", "mean_update", "batch_size")})
        w = merge_opts.get("weights", (0.4, 0.6))
        n = _default_shards(client) if n_shards is None else _ix._posint(n_shards, "n_shards", 1, 1 << 16)
        self.st: Dict[str, Any] = {
            "kind": "merger", "format": 1, "dim": int(dim), "threshold": float(threshold), "variant": variant,
            "weights": [float(w[0]), float(w[1])], "mean_update": bool(merge_opts.get("mean_update", False)),
            "batch_size": int(merge_opts.get("batch_size", 1024)) or 1024, "n_shards": n, "generation": 0,
            "entries": 0, "records": 0, "merged": 0, "added": 0, "skipped": 0, "hist": {}, "history": [],
            "next_record_id": 0}
        self._rec = np.zeros((0, 2), np.uint64)
        self._seen: Dict[int, int] = {}
        self._sh = _Shards(client, n, f"chrysalis-mg-{uuid.uuid4().hex[:12]}")
        os.makedirs(self.directory, exist_ok=True)
        self._sh.create(_w_create, int(dim), "cosine", "Flat", {})
        self._save_generation()

    @classmethod
    def open(cls, client, directory, **opts) -> "ShardedMerger":
        """Open a directory a ShardedMerger saved (threshold/variant/weights given replace the stored)."""
        return cls(client, directory, _open=True, **opts)

    # -- persistence ------------------------------------------------------------------------
    def _names(self, gen: int):
        shards = [f"shard-{s:04d}.g{gen}.chrys" for s in range(self._sh.n)]
        sides = [f"shard-{s:04d}.g{gen}.npz" for s in range(self._sh.n)]
        return shards, sides, f"client.g{gen}.npy"

    def _open_dir(self, dim, threshold, opts) -> None:
        st = _read_manifest(self.directory, "merger")
        if dim is not None and int(dim) != st["dim"]:
            raise DimensionError(f"{self.directory} holds dimension {st['dim']}, not {dim}")
        if threshold is not None:
            st["threshold"] = float(threshold)
        for k in ("variant", "mean_update", "batch_size"):
            if k in opts:
                st[k] = opts[k]
        if "weights" in opts:
            st["weights"] = [float(x) for x in opts["weights"]]
        self.st = st
        self._sh = _Shards(self.client, st["n_shards"], f"chrysalis-mg-{uuid.uuid4().hex[:12]}")
        self._load_generation()

    def _load_generation(self) -> None:
        """Every shard and the client's record map from the manifest's generation."""
        st = self.st
        shards, sides, cl = self._names(st["generation"])
        dest = self._sh.place()
        for s in range(self._sh.n):
            self._sh.load(s, os.path.join(self.directory, shards[s]), os.path.join(self.directory, sides[s]),
                          dest=dest[s])
        self._rec = np.load(os.path.join(self.directory, cl))
        self._seen = dict(zip(self._rec[:, 0].tolist(), self._rec[:, 1].tolist()))

    def _save_generation(self) -> None:
        gen = self.st["generation"] + 1
        shards, sides, cl = self._names(gen)
        d = self.directory
        self._sh.call(_w_save, lambda s: (os.path.join(d, shards[s]), os.path.join(d, sides[s])), retry=False)
        with open(os.path.join(d, cl + ".tmp"), "wb") as f:
            np.save(f, self._rec)
            f.flush()
            os.fsync(f.fileno())
        os.replace(os.path.join(d, cl + ".tmp"), os.path.join(d, cl))
        st = dict(self.st, generation=gen)
        _write_manifest(d, st)  # the commit point
        self.st = st
        for s in range(self._sh.n):
            self._sh.saved[s] = (os.path.join(d, shards[s]), os.path.join(d, sides[s]))
        _remove_stale(d, shards + sides + [cl])

    # -- merging ----------------------------------------------------------------------------
    def merge(self, vectors, ids=None, meta=None) -> Dict[str, Any]:
        """Merge records (n, dim) in order; returns the summary of `chrysalis merge --json`
        (plus "distributed": round trips, bytes, reloads). Every record is checked first (NaN/Inf,
        zero vector, dimension, ids repeated or already merged, metadata not a JSON object): on
        any error nothing changes. Atomic: the directory holds the state before or after the call."""
        t0 = time.perf_counter()
        dim = self.st["dim"]
        a = _as_matrix(vectors, dim, "vectors") if np.size(vectors) else np.zeros((0, dim), np.float32)
        n = a.shape[0]
        _check_rows(a, "vectors", True)
        if ids is None:
            idarr = np.arange(self.st["next_record_id"], self.st["next_record_id"] + n, dtype=np.uint64)
        else:
            idarr = _as_ids(ids, n)
        seen_batch: Dict[int, int] = {}
        for i, r in enumerate(idarr.tolist()):
            if r in self._seen:
                raise DuplicateIdError(f"record {i} (id {r}): id {r} was already merged")
            if r in seen_batch:
                raise DuplicateIdError(f"record {i} (id {r}): id {r} appears twice in the batch")
            seen_batch[r] = i
        metas = _ix._meta_strings(meta, n)
        if metas is not None:
            for i, m in enumerate(metas):
                if m is not None:
                    try:
                        ok = isinstance(json.loads(m), dict)
                    except ValueError:
                        ok = False
                    if not ok:
                        raise InvalidInputError(f"record {i} (id {int(idarr[i])}): metadata is not a JSON object")
        before = (dict(self.st), self._rec, dict(self._seen))
        rt0 = self._sh.round_trips
        restarted = 0
        if n:
            self._sh.call(_w_count, lambda s: ())  # heal: a shard lost since the last call is reloaded
            for attempt in (0, 1):
                try:
                    self._merge_blocks(a, idarr, metas)
                    self.st["records"] += n
                    self.st["history"].append([int(time.time()), n, self.st["merged"] - before[0]["merged"],
                                               self.st["added"] - before[0]["added"], 0])
                    self._save_generation()
                    break
                except (ShardLostError, _Missing, OSError, EOFError) + _dask_errors() as e:
                    self.st, self._rec, self._seen = dict(before[0]), before[1], dict(before[2])
                    try:
                        self._load_generation()  # every shard back to the state before the call
                    except Exception as e2:
                        raise ShardLostError(f"merge failed ({e}) and the shards could not be reloaded from "
                                             f"{self.directory} ({e2}); the directory holds the state before "
                                             f"the call") from None
                    if attempt:
                        raise ShardLostError(f"merge failed twice ({e}); the shards were reloaded from "
                                             f"{self.directory} (the state before the call)") from None
                    restarted += 1
        st = self.st
        hist = {k: st["hist"][k] for k in sorted(st["hist"], key=int) if st["hist"][k]}
        return {"store": self.directory, "records": n, "merged": st["merged"] - before[0]["merged"],
                "added": st["added"] - before[0]["added"], "skipped": 0, "entries": st["entries"],
                "threshold": st["threshold"], "variant": st["variant"],
                "seconds": round(time.perf_counter() - t0, 3), "searches": self._sh.round_trips - rt0,
                "slow_searches": 0, "merged_count_histogram": hist,
                "index_backed": {"records": 0, "confirmed": 0, "verified": 0, "disagreements": 0, "relinked": 0},
                "distributed": {"n_shards": self._sh.n, "round_trips": self._sh.round_trips - rt0,
                                "restarted": restarted, "reloads": self._sh.reloads, "rechecks": self.rechecks}}

    def _weights(self, c: int) -> Tuple[float, float]:
        if self.st["mean_update"]:
            return c / (c + 1.0), 1.0 / (c + 1.0)
        wo, wn = self.st["weights"]
        tot = wo + wn
        return wo / tot, wn / tot

    def _merge_blocks(self, a: np.ndarray, idarr: np.ndarray, metas) -> None:
        st = self.st
        ns = self._sh.n
        thr = st["threshold"]
        hist = st["hist"]
        B = st["batch_size"]
        rec_rows = []
        for b0 in range(0, a.shape[0], B):
            blk = np.ascontiguousarray(a[b0:b0 + B])
            nb = blk.shape[0]
            res = self._sh.call(_w_candidates, lambda s: (blk, None, _K, thr), retry=False)
            counts = [r[1] for r in res]
            lists = [[res[s][0][j] for s in range(ns)] for j in range(nb)]  # lists[j][s] = (ids, sc, rows)
            rows: Dict[int, Tuple[np.ndarray, Optional[str], int]] = {}
            for s in range(ns):
                for ids_, sc_, rw in res[s][0]:
                    for e, v, m, mc in rw:
                        rows[e] = (v, m, mc)
            scratch = Index(st["dim"], "cosine", "Flat")
            dirty: Dict[int, Dict[str, Any]] = {}
            e_before = st["entries"]
            for j in range(nb):
                q = blk[j:j + 1]
                rid = int(idarr[b0 + j])
                rmeta = None if metas is None else metas[b0 + j]
                best, bs = self._untouched_best(j, q, lists, counts, dirty, e_before, rows, thr)
                if dirty:
                    dids = np.fromiter(dirty, np.uint64, len(dirty))
                    dsc = scratch.score(q, dids)[0]
                    for e, sc in zip(dids.tolist(), dsc.tolist()):
                        if sc > bs or (sc == bs and best is not None and e < best):
                            best, bs = e, sc
                if best is not None and bs >= thr:
                    if best in dirty:
                        d = dirty[best]
                        old = scratch.get([best])[0]
                    else:
                        v, m, mc = rows[best]
                        d = {"meta": m, "mc": mc, "new": False, "first": None}
                        old = v
                    c = d["mc"]
                    wo, wn = self._weights(c)
                    new = (old.astype(np.float64) * wo + q[0].astype(np.float64) * wn).astype(np.float32)
                    if not new.any():  # cancelled out exactly: the library keeps the old vector
                        new = old.copy()
                    d["meta"] = _merged_meta(st["variant"], d["meta"], rmeta)
                    d["mc"], d["sim"], d["vec"] = c + 1, float(bs), new
                    if best in dirty:
                        scratch.update(best, new)
                    else:
                        scratch.add(new, ids=[best])
                    dirty[best] = d
                    hist[str(c)] = hist.get(str(c), 0) - 1
                    hist[str(c + 1)] = hist.get(str(c + 1), 0) + 1
                    st["merged"] += 1
                    entry = best
                else:
                    entry = st["entries"]
                    st["entries"] += 1
                    st["added"] += 1
                    dirty[entry] = {"meta": rmeta, "mc": 1, "sim": float("nan"), "new": True, "first": rid,
                                    "vec": q[0].copy()}
                    scratch.add(q, ids=[entry])
                    hist["1"] = hist.get("1", 0) + 1
                self._seen[rid] = entry
                rec_rows.append((rid, entry))
            adds = {s: [] for s in range(ns)}
            upd = {s: [] for s in range(ns)}
            for e in sorted(dirty):
                d = dirty[e]
                if d["new"]:
                    adds[e % ns].append((e, d["vec"], d["meta"], d["first"], d["mc"], d["sim"]))
                else:
                    upd[e % ns].append((e, d["vec"], d["meta"], d["mc"], d["sim"]))
            touched = [s for s in range(ns) if adds[s] or upd[s]]
            self._sh.call(_w_apply, lambda s: (adds[s], upd[s]), shards=touched, retry=False)
        st["next_record_id"] = max(st["next_record_id"], int(idarr.max()) + 1)
        self._rec = np.concatenate([self._rec, np.array(rec_rows, np.uint64).reshape(-1, 2)])

    def _untouched_best(self, j, q, lists, counts, dirty, e_before, rows, thr):
        """The best entry of the state before the block that no earlier record of the block changed
        (score > 0, ties by smaller id), from the shards' candidate lists; a shard whose listed
        candidates were all changed (and that has more entries) is asked again, excluding them."""
        ns = self._sh.n
        while True:
            cand = []
            for s in range(ns):
                ids_, sc_, _ = lists[j][s]
                for e, sc in zip(ids_.tolist(), sc_.tolist()):
                    if e not in dirty:
                        cand.append((-sc, e))
                        break
            first = min(cand) if cand else None
            need = []
            for s in range(ns):
                ids_, sc_, _ = lists[j][s]
                if len(ids_) == 0 or len(ids_) >= counts[s]:
                    continue  # the list holds every entry of the shard (or all were excluded)
                if all(e in dirty for e in ids_.tolist()):
                    last = (-sc_[-1], int(ids_[-1]))
                    if first is None or first > last:
                        need.append(s)
            if not need:
                break
            excl = {s: sorted(e for e in dirty if e % ns == s and e < e_before) for s in need}
            self.rechecks += len(need)
            res = self._sh.call(_w_candidates, lambda s: (q, [excl[s]], _K, thr), shards=need, retry=False)
            for s, r in zip(need, res):
                lists[j][s] = r[0][0]
                for e, v, m, mc in r[0][0][2]:
                    rows[e] = (v, m, mc)
        if first is None or -first[0] <= 0:
            return None, 0.0
        return first[1], -first[0]

    # -- reading ----------------------------------------------------------------------------
    def stats(self) -> Dict[str, Any]:
        """entries, records, merged, added, skipped, runs, next_record_id, n_shards, round_trips,
        reloads."""
        st = self.st
        return {"entries": st["entries"], "records": st["records"], "merged": st["merged"], "added": st["added"],
                "skipped": st["skipped"], "runs": len(st["history"]), "next_record_id": st["next_record_id"],
                "n_shards": self._sh.n, "round_trips": self._sh.round_trips, "reloads": self._sh.reloads}

    def entries(self, vectors: bool = True) -> List[Dict[str, Any]]:
        """The entries in creation order, as chrysalis.Merger.entries(): entry, merged_count,
        similarity_score (None if never merged), first_record, meta, embedding."""
        parts = self._sh.call(_w_entries, lambda s: (vectors,))
        rows = sorted((r for p in parts for r in p), key=lambda r: r[0])
        out = []
        for e, mc, sim, first, meta, vec in rows:
            d = {"entry": e, "merged_count": mc, "similarity_score": None if sim != sim else sim,
                 "first_record": first, "meta": json.loads(meta) if meta else None}
            if vectors:
                d["embedding"] = vec
            out.append(d)
        return out

    def lookup(self, record_id: int) -> int:
        """The entry a record id ended in (NotFoundError if it was never merged)."""
        e = self._seen.get(int(record_id))
        if e is None:
            raise NotFoundError(f"record {record_id} was never merged")
        return e

    def history(self) -> List[List[int]]:
        """One row per merge() call: time, records, merged, added, skipped."""
        return [list(h) for h in self.st["history"]]

    def close(self) -> None:
        """Drop the shards from the workers' memory (the directory stays)."""
        self._sh.drop()


# ------------------------------------------------------------------------------------------------
# embed
# ------------------------------------------------------------------------------------------------
def _w_embed(texts, provider, cache, opts):
    e = Embedder(provider, cache=cache, **opts)
    return e.embed(texts), e.stats()


def embed(client, texts, provider: str = "deterministic", cache=None, chunk: int = 256, return_stats: bool = False,
          **opts):
    """Embed texts over the Dask workers: (n, dim) float32 in input order. Texts are de-duplicated
    by SHA-256 of their UTF-8 bytes before anything is sent; the unique ones go out in chunks of
    `chunk`, each embedded by a chrysalis.Embedder(provider, cache=cache, **opts) on a worker, so
    every result lands in the cache (a path all workers reach; SQLite) and a second call pays
    nothing. return_stats=True also returns {texts, unique, sent_chunks, cache_hits, cache_misses,
    provider_texts}."""
    texts = _ix._as_texts(texts)
    dim = Embedder(provider, cache=None, **opts).dim  # options checked here, before anything is sent
    first: Dict[bytes, int] = {}
    slot = np.empty(len(texts), np.int64)
    uniq: List[str] = []
    for i, t in enumerate(texts):
        h = hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest()
        u = first.get(h)
        if u is None:
            u = first[h] = len(uniq)
            uniq.append(t)
        slot[i] = u
    chunks = [uniq[c:c + chunk] for c in range(0, len(uniq), max(1, int(chunk)))]
    cpath = None if cache is None else os.fspath(cache)
    futs = [client.submit(_w_embed, ch, provider, cpath, opts, pure=False) for ch in chunks]
    res = client.gather(futs)
    U = np.concatenate([r[0] for r in res]) if res else np.zeros((0, dim), np.float32)
    out = U[slot] if len(texts) else np.zeros((0, dim), np.float32)
    if return_stats:
        agg = {"texts": len(texts), "unique": len(uniq), "sent_chunks": len(chunks), "cache_hits": 0,
               "cache_misses": 0, "provider_texts": 0}
        for _, s in res:
            for k in ("cache_hits", "cache_misses", "provider_texts"):
                agg[k] += s.get(k, 0)
        return out, agg
    return out
