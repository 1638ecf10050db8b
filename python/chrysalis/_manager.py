"""IndexManager: the roadmap's FAISSIndexManager, with true cosine similarity.

The roadmap's manager searched an L2 index and reported 1/(1+L2) as the similarity. For unit
vectors L2^2 = 2 - 2 cos, so 1/(1+L2) = 1/(1+sqrt(2-2cos)): a cosine of 0.85 becomes 0.6461, and
its threshold 0.85 on that score means L2 <= 0.1765, i.e. cos >= 0.9844 -- far stricter than the
0.85 it claims. Here the index uses the cosine metric, search returns the cosine itself and the
threshold means what it says.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _chrysalis as _c
from ._index import Index, InvalidInputError, DuplicateIdError, NotFoundError, _as_matrix

STORE_NAME = "index.chrys"


def _spec_for(index_type: str, nlist: int, n: Optional[int] = None) -> str:
    """The library spec for the roadmap's names (Flat, IVFFlat, HNSW) or any spec."""
    t = index_type.strip()
    low = t.lower()
    if low == "flat":
        return "Flat"
    if low in ("ivfflat", "ivf"):
        lists = nlist
        if n is not None and n < 39 * lists:
            lists = max(1, n // 39)  # FAISS's minimum of 39 training points per list
        return f"IVF{lists},Flat"
    if low == "hnsw":
        return "HNSW32"
    _c.spec_parse(t)  # raises InvalidInputError naming what is expected
    return t


class IndexManager:
    """A cosine index over string ids (legend or skill names), saved as one store file.

    IndexManager(dimension=1024, index_type="IVFFlat", nlist=100, use_gpu=False)

    index_type: "Flat" (exact), "IVFFlat" (IVF with nlist lists; fewer when there are fewer than 39
    vectors per list), "HNSW" (HNSW32) or any library spec ("IVF256,SQ8", "HNSW32,SQ8,RFlat" ...).
    use_gpu=True warns and runs on the CPU (this build has no GPU path).
    """

    def __init__(self, dimension: int = 1024, index_type: str = "IVFFlat", nlist: int = 100,
                 use_gpu: bool = False) -> None:
        if not isinstance(dimension, int) or isinstance(dimension, bool) or not 1 <= dimension <= _c.MAX_DIM:
            raise InvalidInputError(f"dimension: expected an integer in [1, {_c.MAX_DIM}], got {dimension!r}")
        if not isinstance(nlist, int) or isinstance(nlist, bool) or nlist < 1:
            raise InvalidInputError(f"nlist: expected a positive integer, got {nlist!r}")
        if not isinstance(index_type, str):
            raise TypeError("index_type: expected a string")
        _spec_for(index_type, nlist)  # validate now
        self.dimension = dimension
        self.index_type = index_type
        self.nlist = nlist
        self.use_gpu = bool(use_gpu)
        if use_gpu:
            warnings.warn("chrysalis has no GPU path; IndexManager runs on the CPU", RuntimeWarning, stacklevel=2)
        self.index: Optional[Index] = None
        self._names: List[str] = []
        self._rows: Dict[str, int] = {}

    def build_index(self, embeddings, ids: Sequence[str]) -> None:
        """(Re)build the index from embeddings (n, dimension) and their string ids (unique)."""
        ids = list(ids)
        a = _as_matrix(embeddings, self.dimension, "embeddings")
        if len(ids) != a.shape[0]:
            raise InvalidInputError(f"ids: {len(ids)} ids for {a.shape[0]} embeddings")
        rows: Dict[str, int] = {}
        for i, s in enumerate(ids):
            if not isinstance(s, str):
                raise TypeError(f"ids[{i}]: expected str, got {type(s).__name__}")
            if s in rows:
                raise DuplicateIdError(f"ids: row {i}: id {s!r} repeats row {rows[s]}")
            rows[s] = i
        ix = Index(self.dimension, "cosine", _spec_for(self.index_type, self.nlist, a.shape[0]))
        ix.add(a, np.arange(a.shape[0], dtype=np.uint64), meta=[json.dumps({"id": s}) for s in ids])
        self.index, self._names, self._rows = ix, ids, rows

    def add(self, embeddings, ids: Sequence[str]) -> None:
        """Add more embeddings under new string ids (the index must exist)."""
        if self.index is None:
            self.build_index(embeddings, ids)
            return
        ids = list(ids)
        a = _as_matrix(embeddings, self.dimension, "embeddings")
        if len(ids) != a.shape[0]:
            raise InvalidInputError(f"ids: {len(ids)} ids for {a.shape[0]} embeddings")
        seen = {}
        for i, s in enumerate(ids):
            if not isinstance(s, str):
                raise TypeError(f"ids[{i}]: expected str, got {type(s).__name__}")
            if s in self._rows or s in seen:
                raise DuplicateIdError(f"ids: row {i}: id {s!r} is already present")
            seen[s] = i
        base = len(self._names)
        self.index.add(a, np.arange(base, base + a.shape[0], dtype=np.uint64),
                       meta=[json.dumps({"id": s}) for s in ids])
        for i, s in enumerate(ids):
            self._rows[s] = base + i
        self._names.extend(ids)

    def search(self, query_vector, k: int = 10, similarity_threshold: float = 0.85) -> List[Tuple[str, float]]:
        """The up to k most similar ids with their cosine similarity, best first, keeping those with
        similarity >= similarity_threshold. An empty index gives []."""
        if self.index is None or len(self.index) == 0:
            return []
        q = np.asarray(query_vector, dtype=np.float32)
        if q.ndim != 1:
            raise InvalidInputError(f"query_vector: expected one vector, got shape {q.shape}")
        scores, rows = self.index.search(q, k=k, threshold=similarity_threshold)
        return [(self._names[int(r)], float(s)) for s, r in zip(scores[0], rows[0]) if r >= 0]

    def __len__(self) -> int:
        return 0 if self.index is None else len(self.index)

    def save(self, path) -> None:
        """Save to the directory path (created if needed): one store file, index.chrys, holding the
        vectors and each row's string id as metadata. No pickle."""
        if self.index is None:
            raise InvalidInputError("save: no index built yet")
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self.index.save(os.path.join(path, STORE_NAME))

    def load(self, path) -> None:
        """Load a directory written by save()."""
        path = os.fspath(path)
        ix = Index.load(os.path.join(path, STORE_NAME))
        if ix.dim != self.dimension:
            raise _c.DimensionError(f"{path}: the index has dimension {ix.dim}, this manager {self.dimension}")
        n = len(ix)
        names: List[str] = [""] * n
        for r in ix.ids():
            m = ix.get_meta(int(r))
            if not isinstance(m, dict) or not isinstance(m.get("id"), str) or int(r) >= n:
                raise _c.CorruptStoreError(f"{path}: row {int(r)} has no string id")
            names[int(r)] = m["id"]
        self.index, self._names = ix, names
        self._rows = {s: i for i, s in enumerate(names)}


FAISSIndexManager = IndexManager
