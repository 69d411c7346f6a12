"""A deterministic, dependency-free embedder for tests: feature hashing of word n-grams.

Texts sharing words get similar vectors, so ranking tests are meaningful, and the same text always
gets the same vector. It is not a semantic model; never use it for real retrieval.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence

import numpy as np

from rag.embeddings.base import InputKind, Vectors, normalize

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Embeds texts by hashing their lower-cased words and word bigrams into buckets."""

    def __init__(self, dimension: int = 384) -> None:
        self._dimension = dimension

    @property
    def model_id(self) -> str:
        return f"hash-embedder-v1-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed_batch(self, texts: Sequence[str], *, kind: InputKind = "document") -> Vectors:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for feature in (*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self._dimension
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
            if not words:
                out[row, 0] = 1.0
        return normalize(out)
