"""An offline cross-encoder: a (query, passage) relevance model exported to ONNX, run in process
with ONNX Runtime and a Hugging Face ``tokenizers`` tokenizer (torch-free, as the offline
embedder).

The model folder is the operator's (nothing is downloaded): ``model.onnx`` (or ``onnx/model.onnx``,
as Hugging Face repositories lay it out) and ``tokenizer.json``, e.g. an export of
``cross-encoder/ms-marco-MiniLM-L-6-v2`` or ``BAAI/bge-reranker-base``. The model takes
``input_ids`` and ``attention_mask`` (and ``token_type_ids`` when it declares them) and returns
one logit per pair (shape (n, 1) or (n,)) or two class logits (n, 2). Scores are the sigmoid of
the logit (for two classes: the softmax probability of the second), as sentence-transformers'
``CrossEncoder`` and text-embeddings-inference report them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rag.errors import EmbeddingError
from rag.rerank import Ranking, rank, sigmoid
from rag.rerank.onnx_folder import open_model_folder


class OnnxCrossEncoder:
    """A cross-encoder from a model folder; loads on first use (thread-safe)."""

    def __init__(
        self,
        model_dir: Path | str,
        *,
        max_sequence_tokens: int = 512,
        batch_size: int = 16,
        threads: int = 0,
        device: str = "cpu",
        model_sha256: str | None = None,
        model_id: str | None = None,
    ) -> None:
        self._dir = Path(model_dir)
        self._max_tokens = max_sequence_tokens
        self._batch = batch_size
        self._threads = threads
        self._device = device
        self._sha256 = model_sha256
        self._model_id = model_id or f"onnx/{self._dir.name}"
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            # longest_first trims the longer of query and passage: in practice the passage
            opened = open_model_folder(
                self._dir,
                what="cross-encoder",
                setting="rerank.local",
                max_tokens=self._max_tokens,
                threads=self._threads,
                device=self._device,
                sha256=self._sha256,
            )
            self._tokenizer, self._inputs = opened.tokenizer, opened.inputs
            self._session = opened.session

    def logits(self, pairs: Sequence[tuple[str, str]]) -> NDArray[np.float32]:
        """One relevance logit per (query, passage) pair; shorter pairs are batched together."""
        if self._session is None:
            self._load()
        out = np.zeros(len(pairs), dtype=np.float32)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        for start in range(0, len(order), self._batch):
            rows = order[start : start + self._batch]
            out[rows] = self._run([pairs[i] for i in rows])
        return out

    def _run(self, pairs: list[tuple[str, str]]) -> NDArray[np.float32]:
        encodings = self._tokenizer.encode_batch([(q or " ", t or " ") for q, t in pairs])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        try:
            (raw,) = self._session.run([self._session.get_outputs()[0].name], feeds)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EmbeddingError(f"ONNX Runtime failed in the reranker: {exc}") from exc
        with self._lock:
            self.calls += 1
        return _to_logits(np.asarray(raw), len(pairs))

    def rerank(self, query: str, texts: Sequence[str], top_n: int | None = None) -> Ranking:
        if not texts:
            return []
        return rank(sigmoid(self.logits([(query, t) for t in texts])), top_n)


def _to_logits(raw: NDArray[Any], rows: int) -> NDArray[np.float32]:
    if raw.ndim == 2 and raw.shape[1] == 2:  # two classes: logit of "relevant" vs "not"
        raw = raw[:, 1] - raw[:, 0]
    elif raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.shape != (rows,):
        raise EmbeddingError(f"the cross-encoder returned shape {raw.shape} for {rows} pairs")
    return raw.astype(np.float32)
