"""10,000 (user, query) trials of the ACL property on the embedded store (exact search)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.stores.base import IndexInfo
from rag.stores.lancedb import LanceDBStore
from tests.acl_property import run_acl_property


@contextmanager
def _lancedb(dim: int) -> Iterator[LanceDBStore]:
    with tempfile.TemporaryDirectory() as tmp:
        store = LanceDBStore(Path(tmp), StoreSettings())
        store.ensure_index(IndexInfo("prop", dim))
        yield store


@pytest.mark.slow
def test_acl_property_10k_trials() -> None:
    tally = run_acl_property(_lancedb, corpora=50, trials_per_corpus=200)
    assert tally.trials >= 10_000
    assert tally.exact_matches == tally.trials  # exact search equals the exact top-k
