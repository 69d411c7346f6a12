"""Bounds every search shares, checked before any I/O by each store and by the retriever."""

from __future__ import annotations

import operator
from typing import Final

from rag.errors import InvalidRequestError

MAX_K: Final = 10_000
"""The most results one search may ask for (OpenSearch's default ``max_result_window`` and the
k-NN plugin's largest k)."""


def checked_k(k: int) -> int:
    """``k`` as an int when ``1 <= k <= MAX_K``; otherwise an :class:`InvalidRequestError`."""
    try:
        value = operator.index(k)
    except TypeError:
        value = None
    if value is None or isinstance(k, bool):
        raise InvalidRequestError(f"k must be an integer, got {k!r}")
    if not 1 <= value <= MAX_K:
        raise InvalidRequestError(f"k must be between 1 and {MAX_K}, got {value}")
    return value
