"""10,000 (user, query) trials of the ACL property on the embedded store (exact search), on the
principal path and on the ACL-key path (forced with ``acl_ids_min_principals=0``)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.stores.base import IndexInfo
from rag.stores.lancedb import LanceDBStore
from tests.acl_property import run_acl_property


def _lancedb(settings: StoreSettings) -> Callable[[int], AbstractContextManager[LanceDBStore]]:
    @contextmanager
    def make(dim: int) -> Iterator[LanceDBStore]:
        with tempfile.TemporaryDirectory() as tmp:
            store = LanceDBStore(Path(tmp), settings)
            store.ensure_index(IndexInfo("prop", dim))
            yield store

    return make


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [StoreSettings(), StoreSettings(acl_ids_min_principals=0)],
    ids=["principals", "acl-keys"],
)
def test_acl_property_10k_trials(settings: StoreSettings) -> None:
    tally = run_acl_property(_lancedb(settings), corpora=50, trials_per_corpus=200)
    assert tally.trials >= 10_000
    assert tally.exact_matches == tally.trials  # exact search equals the exact top-k
