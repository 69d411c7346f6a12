from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.stores.opensearch import OpenSearchStore
from tests.opensearch_node import os_settings
from tests.sync_contract import SyncContract

pytestmark = pytest.mark.integration


@pytest.fixture
def sync_settings(opensearch_sync_settings: Settings) -> Settings:
    return opensearch_sync_settings


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
