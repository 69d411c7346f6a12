"""An embedding cache keyed by (model id, SHA-256 of the text), in SQLite.

Wrap any embedder: unchanged text is never embedded twice, across runs and processes. Only the
texts missing from the cache reach the inner embedder, in the batch the caller asked for.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rag.embeddings.base import Embedder, InputKind, Vectors


class CachedEmbedder:
    """An Embedder that consults a cache first. Opens its database on first use."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        self._inner = inner
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._deferred: dict[tuple[str, str], Vectors] | None = None  # see batched_writes
        self.hits = 0
        self.misses = 0

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self._path)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, text_sha256 TEXT "
                "NOT NULL, kind TEXT NOT NULL, vector BLOB NOT NULL, "
                "PRIMARY KEY (model, text_sha256, kind))"
            )
        return self._db

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        found = self._lookup(keys, kind)
        missing = [i for i, key in enumerate(keys) if key not in found]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, key in enumerate(keys):
            if key in found:
                out[i] = found[key]
        if missing:
            vectors = self._inner.embed_batch([texts[i] for i in missing], kind=kind)
            out[missing] = vectors
            self._store([(keys[i], vectors[j]) for j, i in enumerate(missing)], kind)
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        return out

    def missing(self, texts: Sequence[str], kind: InputKind = "document") -> list[int]:
        """Indexes of the texts that are not cached yet (they would reach the provider)."""
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        found = self._lookup(keys, kind)
        return [i for i, key in enumerate(keys) if key not in found]

    @contextmanager
    def batched_writes(self) -> Iterator[None]:
        """Within the block, new vectors are kept in memory (and found by later lookups) and
        written in one transaction at its end, not one per ``embed_batch``: each commit is a
        synced write. The provider sees the same calls; a failure inside the block still
        writes what was embedded before it; a crash loses only cache entries (re-embedded)."""
        if self._deferred is not None:  # nested: the outer block writes
            yield
            return
        self._deferred = {}
        try:
            yield
        finally:
            rows, self._deferred = self._deferred, None
            by_kind: dict[str, list[tuple[str, Vectors]]] = {}
            for (kind, key), vector in rows.items():
                by_kind.setdefault(kind, []).append((key, vector))
            for kind, part in by_kind.items():
                self._store(part, kind)

    def _lookup(self, keys: list[str], kind: str) -> dict[str, Vectors]:
        found: dict[str, Vectors] = {}
        if self._deferred:
            for key in keys:
                vector = self._deferred.get((kind, key))
                if vector is not None:
                    found[key] = vector
        db = self._conn()
        unique = sorted(set(keys) - set(found))
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = db.execute(
                f"SELECT text_sha256, vector FROM embeddings WHERE model = ? AND kind = ? "  # noqa: S608 - placeholders only
                f"AND text_sha256 IN ({marks})",
                [self.model_id, kind, *part],
            )
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def _store(self, rows: list[tuple[str, Vectors]], kind: str) -> None:
        if self._deferred is not None:
            for key, vector in rows:
                self._deferred[(kind, key)] = np.array(vector, dtype=np.float32)
            return
        db = self._conn()
        with db:
            db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
                [
                    (self.model_id, key, kind, np.asarray(v, np.float32).tobytes())
                    for key, v in rows
                ],
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@contextmanager
def batched_writes(embedder: Any) -> Iterator[None]:
    """``CachedEmbedder.batched_writes`` where ``embedder`` is one; otherwise nothing."""
    if isinstance(embedder, CachedEmbedder):
        with embedder.batched_writes():
            yield
    else:
        yield
