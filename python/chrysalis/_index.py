"""The numpy API: Index, Merger and Embedder over the C library.

Input conventions: vectors are converted once with numpy.ascontiguousarray(..., float32), which
uses a C-contiguous float32 array as it is (no copy) and converts float64 or strided input once.
Ids are non-negative integers (uint64 in the library). Bad input raises a ValueError subclass that
names the row; every error derives from chrysalis.Error.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import _chrysalis as _c
from ._chrysalis import (CorruptStoreError, DimensionError, DuplicateIdError, Error,  # noqa: F401
                         InvalidInputError, LimitError, NotFoundError, StoreIOError,
                         StoreLockedError, UnsupportedFormatError)

_METRICS = {"cosine": 0, "ip": 1, "l2": 2, "inner_product": 1, "dot": 1, "l2sq": 2}
_NO_ID = np.uint64(2**64 - 1)


def _as_matrix(x, dim: int, what: str) -> np.ndarray:
    """(n, dim) C-contiguous float32 view or one-time copy of x; a 1-d x of length dim is one row."""
    try:
        a = np.ascontiguousarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{what}: cannot be read as float32 vectors ({e})") from None
    if a.ndim == 1:
        if a.shape[0] != dim:
            raise DimensionError(f"{what}: row 0 has dimension {a.shape[0]}, expected {dim}")
        a = a.reshape(1, dim)
    elif a.ndim != 2:
        raise InvalidInputError(f"{what}: expected a 2-d array (n, {dim}), got {a.ndim} dimensions")
    elif a.shape[1] != dim:
        raise DimensionError(f"{what}: rows have dimension {a.shape[1]}, expected {dim}")
    return a


def _check_rows(a: np.ndarray, what: str, cosine: bool) -> None:
    """Raise InvalidInputError naming the first row with NaN/Inf (or a zero vector under cosine)."""
    if a.size == 0:
        return
    finite = np.isfinite(a).all(axis=1)
    if not finite.all():
        r = int(np.argmin(finite))
        raise InvalidInputError(f"{what}: row {r} has a NaN or Inf component")
    if cosine:
        nz = (a != 0).any(axis=1)
        if not nz.all():
            r = int(np.argmin(nz))
            raise InvalidInputError(f"{what}: row {r} is a zero vector (no direction under cosine)")


def _as_ids(ids, n: int, what: str = "ids") -> np.ndarray:
    try:
        a = np.asarray(ids)
    except Exception as e:  # pragma: no cover
        raise InvalidInputError(f"{what}: {e}") from None
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1 or a.shape[0] != n:
        raise InvalidInputError(f"{what}: expected {n} ids, got shape {a.shape}")
    if n and a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.all(np.floor(a) == a):
            a = a.astype(np.int64)
        else:
            raise InvalidInputError(f"{what}: ids must be integers, got {a.dtype}")
    if n and a.dtype.kind == "i" and (a < 0).any():
        r = int(np.argmax(a < 0))
        raise InvalidInputError(f"{what}: row {r}: id {int(a[r])} is negative")
    a = np.ascontiguousarray(a, dtype=np.uint64)
    if n and (a == _NO_ID).any():
        r = int(np.argmax(a == _NO_ID))
        raise InvalidInputError(f"{what}: row {r}: id 2**64-1 is reserved")
    return a


def _meta_strings(meta, n: int) -> Optional[List[Optional[str]]]:
    if meta is None:
        return None
    if isinstance(meta, (str, bytes, dict)):
        raise InvalidInputError("meta: expected a sequence with one item per vector")
    meta = list(meta)
    if len(meta) != n:
        raise InvalidInputError(f"meta: expected {n} items, got {len(meta)}")
    out: List[Optional[str]] = []
    for i, m in enumerate(meta):
        if m is None or isinstance(m, str):
            out.append(m)
        else:
            try:
                out.append(json.dumps(m, separators=(",", ":")))
            except (TypeError, ValueError) as e:
                raise InvalidInputError(f"meta: row {i}: not JSON serialisable ({e})") from None
    return out


def _posint(v, name: str, lo: int = 0, hi: int = 2**32 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(v).__name__}")
    v = int(v)
    if v < lo or v > hi:
        raise InvalidInputError(f"{name}: {v} is out of range [{lo}, {hi}]")
    return v


_SID_KEY = "chrysalis_id"  # the key of a string-id row's metadata envelope


class _StringIds:
    """The string <-> integer id maps of an Index made with string_ids=True. Each row's metadata
    holds {"chrysalis_id": name, "meta": the caller's metadata}, so a saved store carries its
    names and load() rebuilds the maps from it."""

    def __init__(self) -> None:
        self.s2i: Dict[str, int] = {}
        self.i2s: Dict[int, str] = {}
        self.next = 0

    def ints(self, names, what: str = "ids") -> np.ndarray:
        """The integer ids of names (a str or a sequence of str); NotFoundError for an unknown one."""
        if isinstance(names, str):
            names = [names]
        out = np.empty(len(names), dtype=np.uint64)
        for i, nm in enumerate(names):
            if not isinstance(nm, str):
                raise TypeError(f"{what}[{i}]: expected str (the index has string ids), got {type(nm).__name__}")
            v = self.s2i.get(nm)
            if v is None:
                raise NotFoundError(f"{what}[{i}]: id {nm!r} not found")
            out[i] = v
        return out

    def names(self, ids: np.ndarray) -> np.ndarray:
        """An object array of the names of integer ids (None where the id is -1 or unknown)."""
        out = np.empty(ids.shape, dtype=object)
        flat, src = out.reshape(-1), ids.reshape(-1)
        for i, v in enumerate(src.tolist()):
            flat[i] = self.i2s.get(v) if v >= 0 else None
        return out


class Index(_c._Index):
    """A vector index: exact (Flat), IVF, HNSW or SQ8, in memory, saved as one store file.

    Index(dim, metric="cosine", spec="auto", seed=42, auto_threshold=1000, memory_budget=0,
          ef_construction=0, build_threads=0)

    metric: "cosine" (scores are cosine similarities; vectors are normalised once on insert),
    "ip" (inner product) or "l2" (squared L2 distance; lower is better). spec: an index
    specification as FAISS writes it ("Flat", "SQ8", "IVF1024,Flat", "IVF1024,SQ8", "HNSW32",
    "HNSW32,SQ8", "HNSW32,SQ8,RFlat") or "auto" (exact below auto_threshold vectors, then an
    approximate index chosen by the planner). Any number of threads may search at once; a thread
    adding or removing waits for the searches in progress and they for it (never a crash).

    string_ids=True: ids are strings (legend or skill names) instead of integers, everywhere: add
    takes them, search returns them (an object array, None in unused slots), remove, update, get,
    get_meta, `in` and filter take them. They are kept in the store file (each row's metadata),
    so save/load and pickling keep them.
    """

    _sids: Optional[_StringIds] = None

    def __init__(self, dim: int, metric: str = "cosine", spec: Optional[str] = "auto", *, seed: int = 42,
                 auto_threshold: int = 1000, memory_budget: int = 0, ef_construction: int = 0,
                 build_threads: int = 0, string_ids: bool = False) -> None:
        dim = _posint(dim, "dim", 1, _c.MAX_DIM)
        if metric not in _METRICS:
            raise InvalidInputError(f"metric: expected 'cosine', 'ip' or 'l2', got {metric!r}")
        if spec is not None and not isinstance(spec, str):
            raise TypeError(f"spec: expected a string, got {type(spec).__name__}")
        self._init(dim, _METRICS[metric], spec, _posint(seed, "seed", 0, 2**64 - 1),
                   _posint(auto_threshold, "auto_threshold", 0, 2**64 - 1),
                   _posint(memory_budget, "memory_budget", 0, 2**64 - 1),
                   _posint(ef_construction, "ef_construction"), _posint(build_threads, "build_threads"))
        self._sids = _StringIds() if string_ids else None

    # -- properties -------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._info()["dim"]

    @property
    def metric(self) -> str:
        """"cosine", "ip" or "l2"."""
        return self._info()["metric"]

    def info(self) -> Dict[str, Any]:
        """A dict describing the index: dim, metric, kind, spec, count, memory_bytes, nlist, HNSW
        parameters, the planner's reason, whether it is memory-mapped, the SIMD level, string_ids."""
        d = self._info()
        d["string_ids"] = self._sids is not None
        return d

    def __repr__(self) -> str:
        try:
            i = self._info()
        except Error:
            return "<chrysalis.Index (uninitialised)>"
        return f"<chrysalis.Index dim={i['dim']} metric={i['metric']} spec={i['spec']!r} count={i['count']}>"

    # -- adding and changing ----------------------------------------------------------------
    def add(self, vectors, ids=None, meta=None) -> np.ndarray:
        """Add vectors (n, dim) under ids (n non-negative integers; default: consecutive ids after the
        largest id ever added). meta: optional sequence of one str, JSON-serialisable object or None
        per vector. All or nothing: on any error nothing is added. Returns the ids (uint64 array).
        Raises InvalidInputError (NaN/Inf, zero vector under cosine), DimensionError,
        DuplicateIdError, each naming the row."""
        info = self._info()
        a = _as_matrix(vectors, info["dim"], "vectors")
        n = a.shape[0]
        _check_rows(a, "vectors", info["metric"] == "cosine")
        if self._sids is not None:
            return self._add_named(a, n, ids, meta)
        idarr = None if ids is None else _as_ids(ids, n)
        if idarr is not None and n:
            u, first, counts = np.unique(idarr, return_index=True, return_counts=True)
            if (counts > 1).any():
                dup = u[counts > 1][0]
                rows = np.nonzero(idarr == dup)[0]
                raise DuplicateIdError(f"ids: row {int(rows[1])}: id {int(dup)} repeats row {int(rows[0])}")
        out = np.empty(n, dtype=np.uint64)
        self._add(a, n, idarr, _meta_strings(meta, n), out)
        return out

    def _add_named(self, a: np.ndarray, n: int, ids, meta) -> List[str]:
        st = self._sids
        if ids is None or isinstance(ids, str) or len(ids) != n:
            raise InvalidInputError(f"ids: this index has string ids: expected {n} of them")
        names = list(ids)
        seen: Dict[str, int] = {}
        for i, nm in enumerate(names):
            if not isinstance(nm, str):
                raise TypeError(f"ids[{i}]: expected str, got {type(nm).__name__}")
            if nm in seen:
                raise DuplicateIdError(f"ids: row {i}: id {nm!r} repeats row {seen[nm]}")
            if nm in st.s2i:
                raise DuplicateIdError(f"ids: row {i}: duplicate id {nm!r} (already in the index)")
            seen[nm] = i
        user = [None] * n if meta is None else list(meta)
        if len(user) != n:
            raise InvalidInputError(f"meta: expected {n} items, got {len(user)}")
        env = []
        for i, (nm, m) in enumerate(zip(names, user)):
            try:
                env.append(json.dumps({_SID_KEY: nm, "meta": m} if m is not None else {_SID_KEY: nm}))
            except TypeError as e:
                raise TypeError(f"meta[{i}]: not JSON-serialisable: {e}") from None
        first = st.next
        idarr = np.arange(first, first + n, dtype=np.uint64)
        for i, nm in enumerate(names):  # named before the vectors exist: a search never sees an unnamed id
            st.s2i[nm] = first + i
            st.i2s[first + i] = nm
        try:
            out = np.empty(n, dtype=np.uint64)
            self._add(a, n, idarr, _meta_strings(env, n), out)
        except BaseException:
            for i, nm in enumerate(names):
                del st.s2i[nm]
                del st.i2s[first + i]
            raise
        st.next = first + n
        return names

    def _int_ids(self, ids) -> np.ndarray:
        if self._sids is not None:
            return self._sids.ints(ids)
        arr = np.atleast_1d(np.asarray(ids))
        return _as_ids(arr, arr.shape[0])

    def score(self, queries, ids) -> np.ndarray:
        """Exact scores (float64, (nq, m)) of the rows ids (an (nq, m) array: row i scored against
        query i; or a 1-d sequence scored against every query), the same bits exact search and the
        merger compute for each pair. Raises NotFoundError for an id not present."""
        info = self._info()
        q = _as_matrix(queries, info["dim"], "queries")
        _check_rows(q, "queries", info["metric"] == "cosine")
        nq = q.shape[0]
        if self._sids is not None:
            a = np.asarray(ids, dtype=object)
            flat = self._sids.ints(list(a.reshape(-1)))
            idarr = flat.reshape(a.shape)
        else:
            a = np.asarray(ids)
            idarr = _as_ids(a.reshape(-1), a.size).reshape(a.shape)
        if idarr.ndim == 1:
            idarr = np.broadcast_to(idarr, (nq, idarr.shape[0]))
        if idarr.ndim != 2 or idarr.shape[0] != nq:
            raise InvalidInputError(f"ids: expected shape ({nq}, m) or (m,), got {idarr.shape}")
        idarr = np.ascontiguousarray(idarr, dtype=np.uint64)
        m = idarr.shape[1]
        out = np.empty((nq, m), dtype=np.float64)
        if nq and m:
            self._score(q, nq, idarr, m, out)
        return out

    def remove(self, ids) -> None:
        """Remove the vectors stored under ids (an integer or a sequence). All or nothing; raises
        NotFoundError naming the first id not present."""
        if self._sids is not None:
            idarr = self._sids.ints(ids)
            self._remove(idarr, idarr.shape[0])
            for v in idarr.tolist():
                del self._sids.s2i[self._sids.i2s.pop(v)]
            return
        arr = np.atleast_1d(np.asarray(ids))
        idarr = _as_ids(arr, arr.shape[0])
        self._remove(idarr, idarr.shape[0])

    def update(self, ids, vectors) -> None:
        """Replace the vectors stored under ids (metadata kept). All or nothing for missing ids and
        bad vectors (both checked before anything changes)."""
        info = self._info()
        a = _as_matrix(vectors, info["dim"], "vectors")
        idarr = self._sids.ints(ids) if self._sids is not None else _as_ids(np.atleast_1d(np.asarray(ids)), a.shape[0])
        if idarr.shape[0] != a.shape[0]:
            raise InvalidInputError(f"ids: expected {a.shape[0]} ids, got {idarr.shape[0]}")
        _check_rows(a, "vectors", info["metric"] == "cosine")
        self._update(idarr, idarr.shape[0], a)

    def get(self, ids) -> np.ndarray:
        """The stored vectors for ids, (n, dim) float32 (a scalar id gives one row, shape (dim,)).
        Under cosine: the normalised vector times the norm kept at insert."""
        scalar = isinstance(ids, str) or (self._sids is None and np.ndim(ids) == 0)
        idarr = self._int_ids(ids)
        out = np.empty((idarr.shape[0], self._info()["dim"]), dtype=np.float32)
        self._get(idarr, idarr.shape[0], out)
        return out[0] if scalar else out

    def get_meta(self, id: int):
        """The metadata stored with id: the parsed JSON object, the string if it is not JSON, or None."""
        if self._sids is not None:
            env = json.loads(self._meta(int(self._sids.ints(id)[0])))
            return env.get("meta")
        s = self._meta(_posint(id, "id", 0, 2**64 - 2))
        if s is None:
            return None
        try:
            return json.loads(s)
        except ValueError:
            return s

    def ids(self):
        """Every id, in storage order (uint64; with string ids a list of str)."""
        n = len(self)
        out = np.empty(n, dtype=np.uint64)
        self._ids(out)
        if self._sids is not None:
            return [self._sids.i2s[v] for v in out.tolist()]
        return out

    def __contains__(self, id) -> bool:
        if self._sids is not None:
            return isinstance(id, str) and id in self._sids.s2i
        if isinstance(id, bool) or not isinstance(id, (int, np.integer)) or id < 0 or id >= 2**64 - 1:
            return False
        return self._contains(int(id))

    def compact(self) -> None:
        """HNSW: drop tombstones left by remove() and repair the links. Other kinds: nothing."""
        self._compact()

    def retrain(self) -> None:
        """IVF: retrain the lists with k-means on the vectors present."""
        self._retrain()

    # -- searching --------------------------------------------------------------------------
    def search(self, queries, k: int = 10, threshold: Optional[float] = None, ef_search: Optional[int] = None,
               nprobe: Optional[int] = None, filter=None, threads: Optional[int] = None
               ) -> Tuple[np.ndarray, np.ndarray]:
        """The k best vectors for each query: (scores float32 (nq, k), ids int64 (nq, k)), best first,
        ties broken by smaller id. Unused slots hold score -inf (+inf for l2) and id -1.
        threshold: keep hits with score >= threshold (cosine, ip) or <= threshold (l2).
        ef_search (HNSW candidates), nprobe (IVF lists), filter (ids allowed; any iterable of
        integers), threads (0 or None: all cores). The GIL is released while searching."""
        info = self._info()
        q = _as_matrix(queries, info["dim"], "queries")
        k = _posint(k, "k", 1, _c.MAX_K)
        _check_rows(q, "queries", info["metric"] == "cosine")
        if threshold is not None:
            threshold = float(threshold)
            if threshold != threshold:
                raise InvalidInputError("threshold: NaN")
        ef = 0 if ef_search is None else _posint(ef_search, "ef_search", 1)
        npb = 0 if nprobe is None else _posint(nprobe, "nprobe", 1)
        nt = 0 if threads is None else _posint(threads, "threads", 0, 4096)
        allow = None
        if filter is not None and self._sids is not None:
            allow = np.unique(np.array([self._sids.s2i[f] for f in filter if isinstance(f, str) and f in self._sids.s2i],
                                       dtype=np.uint64))
        elif filter is not None:
            fa = np.asarray(list(filter) if not isinstance(filter, np.ndarray) else filter)
            allow = np.unique(_as_ids(fa, fa.shape[0] if fa.ndim else 1, "filter"))
        nq = q.shape[0]
        scores = np.empty((nq, k), dtype=np.float32)
        ids = np.empty((nq, k), dtype=np.int64)
        self._search(q, nq, k, threshold, ef, npb, nt, allow, scores, ids)
        if self._sids is not None:
            return scores, self._sids.names(ids)
        return scores, ids

    # -- persistence ------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the index to one store file, atomically (a failure leaves any old file intact).
        The GIL is released while writing."""
        self._save(os.fspath(path))

    @classmethod
    def load(cls, path, mmap: bool = False, string_ids: Optional[bool] = None) -> "Index":
        """Load a store file (every checksum verified). mmap=True opens it read-only with the float32
        rows left in the file (fast open; add/remove/update then raise). string_ids: None finds out
        from the rows' metadata whether the index was saved with string ids; True requires them.
        Raises CorruptStoreError for a damaged or truncated file (or string ids missing or
        repeated), UnsupportedFormatError, StoreIOError."""
        ix = cls.__new__(cls)
        ix._load(os.fspath(path), bool(mmap))
        ix._restore_string_ids(string_ids, os.fspath(path))
        return ix

    def _restore_string_ids(self, want: Optional[bool], name: str) -> None:
        """Rebuild the string-id maps from the rows' metadata envelopes."""
        ids = np.empty(len(self), dtype=np.uint64)
        self._ids(ids)
        ids = ids.tolist()

        def name_of(v):
            m = self._meta(v)
            try:
                env = json.loads(m) if m is not None else None
            except ValueError:
                return None
            return env.get(_SID_KEY) if isinstance(env, dict) and isinstance(env.get(_SID_KEY), str) else None

        if want is False or (want is None and (not ids or name_of(ids[0]) is None)):
            self._sids = None
            return
        st = _StringIds()
        for v in ids:
            nm = name_of(v)
            if nm is None or nm in st.s2i:
                raise CorruptStoreError(f"{name}: row with id {v} has {'no' if nm is None else 'a repeated'} string id")
            st.s2i[nm] = v
            st.i2s[v] = nm
        st.next = max(ids) + 1 if ids else 0
        self._sids = st

    def to_bytes(self) -> bytes:
        """The store file's bytes, built in memory."""
        return self._to_bytes()

    @classmethod
    def from_bytes(cls, data) -> "Index":
        """An index from the bytes of a store file (to_bytes, or a file's contents)."""
        ix = cls.__new__(cls)
        ix._from_bytes(data)
        ix._restore_string_ids(None, "bytes")
        return ix

    def __reduce__(self):
        return (_index_from_bytes, (self.__class__, self._to_bytes()))


def _index_from_bytes(cls, data):
    return cls.from_bytes(data)


# ------------------------------------------------------------------------------------------------
# Store writer lock
# ------------------------------------------------------------------------------------------------

class StoreLock(_c._Lock):
    """The writer lock of a store file (PATH.lock beside it; see chrys_store_lock). Saves take it by
    themselves for the duration of the write; hold it yourself from before reading until after the
    save for read-modify-write safety against other processes:

        with chrysalis.store_lock("legends.chrys"):
            m = chrysalis.Merger.open("legends.chrys"); m.merge(X); m.save()

    Readers (load, open, mmap) never lock and never wait."""

    def __enter__(self) -> "StoreLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def store_lock(path, timeout: Optional[float] = None) -> StoreLock:
    """Take the writer lock of the store at path (the file need not exist). timeout: None waits as
    long as it takes, 0 fails at once, > 0 waits at most that many seconds; a lock not obtained
    raises StoreLockedError. The GIL is released while waiting. Use as a context manager or call
    release()."""
    lk = StoreLock()
    lk._acquire(os.fspath(path), -1.0 if timeout is None else float(timeout))
    return lk


# ------------------------------------------------------------------------------------------------
# Merger
# ------------------------------------------------------------------------------------------------

_MERGE_OPTS = {
    # python name: (library field, converter)
    "weights": None,  # (old, new)
    "renormalize": ("renormalize", int), "mean_update": ("mean_update", int),
    "skip_invalid": ("skip_invalid", int), "threads": ("n_threads", int), "batch_size": ("batch_size", int),
    "index": ("index_spec", str), "auto_threshold": ("auto_threshold", int),
    "memory_budget": ("memory_budget", int), "exact": ("exact", int), "nprobe": ("nprobe", int),
    "confirm_margin": ("confirm_margin", float), "verify": ("verify", int), "ef_search": ("ef_search", int),
    "ef_construction": ("ef_construction", int), "slow_search_s": ("slow_search_s", float),
}


def _merge_opts(threshold, variant, opts) -> Dict[str, Any]:
    d: Dict[str, Any] = {}
    if threshold is not None:
        t = float(threshold)
        if not (t == t):
            raise InvalidInputError("threshold: NaN")
        d["threshold"] = t
    if variant is not None:
        if variant not in ("embedding", "skill"):
            raise InvalidInputError(f"variant: expected 'embedding' or 'skill', got {variant!r}")
        d["variant"] = 0 if variant == "embedding" else 1
    for k, v in opts.items():
        if k not in _MERGE_OPTS:
            raise TypeError(f"Merger: unknown option {k!r} (known: {', '.join(sorted(_MERGE_OPTS))})")
        if k == "weights":
            w = list(v)
            if len(w) != 2:
                raise InvalidInputError("weights: expected (old, new)")
            d["weight_old"], d["weight_new"] = float(w[0]), float(w[1])
            continue
        field, conv = _MERGE_OPTS[k]
        if conv is int:
            if isinstance(v, bool):
                v = int(v)
            if not isinstance(v, (int, np.integer)) or v < 0:
                raise InvalidInputError(f"{k}: expected a non-negative integer, got {v!r}")
        d[field] = conv(v)
    return d


class Merger(_c._Merger):
    """The Chrysalis semantic merger over numpy arrays, with its state in one store file.

    Merger(path=None, dim=None, threshold=0.85, variant="embedding", **opts)

    Each record, in order, is folded into the most similar entry when their cosine reaches the
    threshold (entry := 0.4 entry + 0.6 record, merged_count + 1), else appended. Decisions are
    those of `chrysalis merge` (the same library call). With path naming an existing merger store,
    the state is opened from it (dim may be omitted); save() writes it back. opts: weights=(old,
    new), renormalize, mean_update, skip_invalid, threads, batch_size, index (spec for a new
    merger), auto_threshold, memory_budget, exact, nprobe, confirm_margin, verify, ef_search,
    ef_construction, slow_search_s. threshold defaults to 0.85 (0.90 for variant="skill").
    lock=True takes the store's writer lock before reading it and keeps it until close() (or the
    end of a with block), so no other writer can interleave its read-modify-write with this one
    (lock_timeout: as store_lock's timeout).
    """

    _lock = None

    def __init__(self, path=None, dim: Optional[int] = None, threshold: Optional[float] = None,
                 variant: str = "embedding", *, lock: bool = False, lock_timeout: Optional[float] = None,
                 **opts) -> None:
        self.path = None if path is None else os.fspath(path)
        if lock:
            if self.path is None:
                raise InvalidInputError("lock=True needs a path")
            self._lock = store_lock(self.path, lock_timeout)
        if threshold is None and variant == "skill":
            threshold = 0.90
        if self.path is not None and os.path.exists(self.path):
            self._open(self.path)
            if dim is not None and dim != self._opts()["dim"]:
                raise DimensionError(f"{self.path} holds dimension {self._opts()['dim']}, not {dim}")
            d = _merge_opts(threshold, variant, opts)
            if d:
                self._configure(d)
        else:
            if dim is None:
                raise InvalidInputError("dim is required for a new merger")
            d = _merge_opts(0.85 if threshold is None else threshold, variant, opts)
            d["dim"] = _posint(dim, "dim", 1, _c.MAX_DIM)
            self._init(d)

    @classmethod
    def open(cls, path, *, lock: bool = False, lock_timeout: Optional[float] = None, **opts) -> "Merger":
        """Open a merger store written by save() or `chrysalis merge` (options given replace the
        stored ones). lock=True: as for the constructor."""
        path = os.fspath(path)
        m = cls.__new__(cls)
        m.path = path
        if lock:
            m._lock = store_lock(path, lock_timeout)
        m._open(path)
        threshold = opts.pop("threshold", None)
        variant = opts.pop("variant", None)
        d = _merge_opts(threshold, variant, opts)
        if d:
            m._configure(d)
        return m

    def close(self) -> None:
        """Release the writer lock taken with lock=True (the merger stays usable)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Merger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def dim(self) -> int:
        return self._opts()["dim"]

    @property
    def threshold(self) -> float:
        return self._opts()["threshold"]

    def options(self) -> Dict[str, Any]:
        """The merger's current options."""
        return self._opts()

    def configure(self, threshold=None, variant=None, **opts) -> None:
        """Replace options (the same names as the constructor's)."""
        self._configure(_merge_opts(threshold, variant, opts))

    def merge(self, vectors, ids=None, meta=None, return_results: bool = False):
        """Merge records (n, dim) in order. ids: record ids (default: after the largest merged so
        far), unique over the merger's life. meta: per record a dict (or JSON string) kept on a new
        entry; descriptors / salts_used / processed_at are used when merged. A row that is None or
        empty in a list input is an empty record (skipped and counted).
        Returns the summary of `chrysalis merge --json` (store, records, merged, added, skipped,
        entries, threshold, variant, seconds, searches, slow_searches, merged_count_histogram,
        index_backed); with return_results=True, (summary, entry int64 (n,), score float64 (n,),
        action int32 (n,): 0 skipped, 1 added, 2 merged). The GIL is released while merging."""
        t0 = time.perf_counter()
        dim = self._opts()["dim"]
        empty = None
        if isinstance(vectors, (list, tuple)) and any(v is None or len(v) == 0 for v in vectors):
            empty = np.array([v is None or len(v) == 0 for v in vectors], dtype=np.uint8)
            rows = [np.zeros(dim, np.float32) if e else v for v, e in zip(vectors, empty)]
            a = _as_matrix(rows if rows else np.zeros((0, dim), np.float32), dim, "vectors")
        else:
            a = _as_matrix(vectors, dim, "vectors") if np.size(vectors) else np.zeros((0, dim), np.float32)
        n = a.shape[0]
        idarr = None if ids is None else _as_ids(ids, n)
        before = self._stats()
        entry = np.empty(n, dtype=np.int64)
        score = np.empty(n, dtype=np.float64)
        action = np.empty(n, dtype=np.int32)
        self._merge(a, n, dim, idarr, empty, _meta_strings(meta, n), entry, score, action)
        after = self._stats()
        o = self._opts()
        counts: Dict[str, int] = {}
        for mc, *_ in self._entries(None):
            counts[str(mc)] = counts.get(str(mc), 0) + 1
        hist = {k: counts[k] for k in sorted(counts, key=int)}
        summary = {
            "store": self.path or "",
            "records": n,
            "merged": after["merged"] - before["merged"],
            "added": after["added"] - before["added"],
            "skipped": after["skipped"] - before["skipped"],
            "entries": after["entries"],
            "threshold": o["threshold"],
            "variant": o["variant"],
            "seconds": round(time.perf_counter() - t0, 3),
            "searches": after["searches"],
            "slow_searches": after["slow_searches"],
            "merged_count_histogram": hist,
            "index_backed": {"records": after["approx_records"], "confirmed": after["confirmations"],
                             "verified": after["verified"], "disagreements": after["disagreements"],
                             "relinked": after["relinks"]},
            "index": {"spec": after["index_spec"], "graph": after["index_graph"],
                      "exact": not after["index_graph"] or bool(o["exact"]), "plan_reason": after["plan_reason"]},
        }
        if return_results:
            return summary, entry, score, action
        return summary

    def entries(self, vectors: bool = True) -> List[Dict[str, Any]]:
        """The entries in creation order: dicts with entry, merged_count, similarity_score (None if
        never merged), first_record, meta (the parsed JSON object or None) and, with vectors=True,
        embedding (float32 array, not renormalised)."""
        st = self._stats()
        vec = np.empty((st["entries"], self._opts()["dim"]), dtype=np.float32) if vectors else None
        rows = self._entries(vec)
        out = []
        for e, (mc, sim, first, meta) in enumerate(rows):
            d: Dict[str, Any] = {"entry": e, "merged_count": mc,
                                 "similarity_score": None if sim != sim else sim, "first_record": first,
                                 "meta": json.loads(meta) if meta else None}
            if vec is not None:
                d["embedding"] = vec[e]
            out.append(d)
        return out

    def vectors(self) -> np.ndarray:
        """The entries' vectors, (entries, dim) float32."""
        st = self._stats()
        vec = np.empty((st["entries"], self._opts()["dim"]), dtype=np.float32)
        self._entries(vec)
        return vec

    def lookup(self, record_id: int) -> int:
        """The entry a record id ended in (NotFoundError if it was never merged)."""
        return self._lookup(_posint(record_id, "record_id", 0, 2**64 - 2))

    def stats(self) -> Dict[str, Any]:
        """Counters: entries, records, merged, added, skipped, runs, next_record_id, index-backed
        counters."""
        s = self._stats()
        s.pop("searches", None)
        s.pop("slow_searches", None)
        return s

    def history(self) -> List[Dict[str, int]]:
        """One row per merge() call (run): time, records, merged, added, skipped."""
        return self._history()

    def search(self, queries, k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
        """Search the entries (cosine): (scores (nq, k), entry numbers (nq, k))."""
        dim = self._opts()["dim"]
        q = _as_matrix(queries, dim, "queries")
        _check_rows(q, "queries", True)
        k = _posint(k, "k", 1, _c.MAX_K)
        scores = np.empty((q.shape[0], k), dtype=np.float32)
        ids = np.empty((q.shape[0], k), dtype=np.int64)
        self._search(q, q.shape[0], k, scores, ids)
        return scores, ids

    def save(self, path=None) -> None:
        """Write the state to path (default: the path given at construction), atomically."""
        p = self.path if path is None else os.fspath(path)
        if p is None:
            raise InvalidInputError("save: no path (give one here or to the constructor)")
        self._save(p)
        if self.path is None:
            self.path = p


# ------------------------------------------------------------------------------------------------
# Embedder
# ------------------------------------------------------------------------------------------------

_PROVIDERS = {"deterministic": 0, "openai": 1, "voyage": 1, "ollama": 2}
_DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "voyage": "https://api.voyageai.com/v1",
                 "ollama": "http://localhost:11434"}
_DEFAULT_KEYS = {"openai": "OPENAI_API_KEY", "voyage": "VOYAGE_API_KEY"}


def _as_texts(texts) -> List[str]:
    """A str or a sequence of str as a list; TypeError naming the first item that is not a str."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(t).__name__}")
    return texts


class Embedder(_c._Embedder):
    """Text in, vectors out, through an optional SQLite cache (unchanged text is never embedded twice).

    Embedder(provider="deterministic", model=None, cache=None, dim=1024, base_url=None,
             api_key_env=None, send_dimensions=False, batch=128, timeout=30.0, retries=5,
             rate=0.0, fallback_deterministic=False, cache_ttl=0.0, cache_max_entries=0, seed=42, concurrency=4)

    concurrency: HTTP requests in flight at once (1..256), results in input order.
    provider: "deterministic" (offline, bit for bit the Chrysalis pipeline's), "openai", "voyage"
    (OpenAI-compatible /embeddings) or "ollama". The API key is read from the environment variable
    api_key_env (never passed or logged).
    """

    def __init__(self, provider: str = "deterministic", model: Optional[str] = None, cache=None, *,
                 dim: int = 1024, base_url: Optional[str] = None, api_key_env: Optional[str] = None,
                 send_dimensions: bool = False, batch: int = 128, timeout: float = 30.0, retries: int = 5,
                 rate: float = 0.0, fallback_deterministic: bool = False, cache_ttl: float = 0.0,
                 cache_max_entries: int = 0, seed: int = 42, concurrency: int = 4) -> None:
        if provider not in _PROVIDERS:
            raise InvalidInputError(f"provider: expected one of {', '.join(_PROVIDERS)}, got {provider!r}")
        self.provider = provider
        self.dim = _posint(dim, "dim", 1, _c.MAX_DIM)
        self._init(_PROVIDERS[provider], base_url or _DEFAULT_URLS.get(provider), model, self.dim,
                   bool(send_dimensions), api_key_env or _DEFAULT_KEYS.get(provider), _posint(batch, "batch"),
                   float(timeout), _posint(retries, "retries"), float(rate), bool(fallback_deterministic),
                   None if cache is None else os.fspath(cache), float(cache_ttl),
                   _posint(cache_max_entries, "cache_max_entries", 0, 2**64 - 1), _posint(seed, "seed", 0, 2**64 - 1),
                   _posint(concurrency, "concurrency", 1, 256))

    def embed(self, texts) -> np.ndarray:
        """Embed texts (a str or a sequence of str): (n, dim) float32. The GIL is released while the
        provider and the cache work."""
        texts = _as_texts(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if texts:
            self._embed(texts, out)
        return out

    def stats(self) -> Dict[str, int]:
        """texts, cache_hits, cache_misses, requests, retries, provider_texts, fallback_texts."""
        return self._stats()


def embed_deterministic(text: str, dim: int = 1024) -> np.ndarray:
    """The Chrysalis deterministic embedding of one text (float32, unit length)."""
    out = np.empty(dim, dtype=np.float32)
    _c.embed_deterministic(text, _posint(dim, "dim", 1, _c.MAX_DIM), out)
    return out
