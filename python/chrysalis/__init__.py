"""chrysalis: exact and approximate embedding search, the Chrysalis semantic merger and an
embedding cache, over the C library libchrysalis.

- Index: a numpy vector index (Flat, IVF, HNSW, SQ8; cosine, ip, l2), saved as one store file.
- Merger: the Chrysalis merger over numpy arrays, its state in one store file (as `chrysalis merge`).
- Embedder: text to vectors through an SQLite cache (deterministic, OpenAI-compatible, Ollama).
- EmbeddingMerger, SkillMerger: drop-in replacements for the pipeline's classes (same calls, same
  entries, much faster).
- IndexManager (also FAISSIndexManager): the roadmap's manager over string ids, with true cosine.
- chrysalis.distributed (import it explicitly; needs dask.distributed): ShardedIndex, ShardedMerger
  (the exact merger's decisions over shards on Dask workers) and embed.

Every error derives from chrysalis.Error; bad input raises ValueError subclasses naming the row;
a damaged store raises CorruptStoreError. See docs/PYTHON.md.
"""
from ._chrysalis import (CorruptStoreError, DimensionError, DuplicateIdError, Error, InvalidInputError,
                         LimitError, NotFoundError, StoreIOError, StoreLockedError, UnsupportedFormatError)
from ._chrysalis import version as _version, simd_name
from ._index import Embedder, Index, Merger, StoreLock, embed_deterministic, store_lock
from ._dropin import EmbeddingMerger, SkillMerger
from ._manager import FAISSIndexManager, IndexManager

__version__ = _version()

__all__ = [
    "Index", "Merger", "Embedder", "EmbeddingMerger", "SkillMerger", "IndexManager", "FAISSIndexManager",
    "embed_deterministic", "simd_name", "store_lock", "StoreLock", "StoreLockedError",
    "Error", "InvalidInputError", "DimensionError", "DuplicateIdError", "NotFoundError", "StoreIOError",
    "CorruptStoreError", "UnsupportedFormatError", "LimitError",
]
