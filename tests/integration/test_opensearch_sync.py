from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import Settings
from rag.stores.opensearch import OpenSearchStore
from tests.opensearch_node import drop, os_settings
from tests.sync_contract import SyncContract

pytestmark = pytest.mark.integration


@pytest.fixture
def sync_settings(opensearch_url: str, tmp_path: Path) -> Iterator[Settings]:
    osettings = os_settings(opensearch_url, refresh="false")
    settings = Settings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "embedding": {"provider": "hash"},
            "store": {"backend": "opensearch", "opensearch": osettings.model_dump()},
        }
    )
    yield settings
    drop(OpenSearchStore(osettings), osettings.alias)


class TestOpenSearchSync(SyncContract):
    pass


def test_kill_and_resume_on_opensearch(opensearch_url: str, tmp_path: Path) -> None:
    from tests.kill_resume import assert_kill_and_resume

    osettings = os_settings(opensearch_url, refresh="false")
    backend = {"backend": "opensearch", "opensearch": osettings.model_dump(mode="json")}
    try:
        # two kill points here (after the revocations, mid-batch); all four on the embedded store
        assert_kill_and_resume(tmp_path, backend, points=(("revoked", 1), ("flushed", 3)))
    finally:
        for suffix in ("clean", "killed"):
            OpenSearchStore(osettings).client.indices.delete(
                index=f"{osettings.alias}-{suffix}--*", ignore_unavailable=True
            )
