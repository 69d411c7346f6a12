"""A real OpenSearch node (k-NN plugin) for the whole test session, started by the committed
provisioning script on a free loopback port (only when a test asks for it) and stopped at
the end."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import OpenSearchSettings, Settings
from rag.stores.opensearch import OpenSearchStore
from tests.contract import INFO

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "opensearch-local.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return port if port < 65000 else _free_port()


@pytest.fixture(scope="session")
def opensearch_url() -> Iterator[str]:
    port = _free_port()
    started = subprocess.run(
        [str(SCRIPT), "start", str(port)], capture_output=True, text=True, timeout=600, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"OpenSearch did not start:\n{started.stdout}\n{started.stderr}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(
            [str(SCRIPT), "stop", str(port)], capture_output=True, timeout=120, check=False
        )


def os_settings(url: str, **overrides: object) -> OpenSearchSettings:
    values: dict[str, object] = {
        "hosts": [url],
        "alias": f"test-{uuid.uuid4().hex[:10]}",
        "replicas": 0,
        "refresh": "true",
        "backoff_seconds": 0.01,
        "backoff_max_seconds": 0.1,
    }
    values.update(overrides)
    return OpenSearchSettings.model_validate(values)


def drop(store: OpenSearchStore, alias: str) -> None:
    store.client.indices.delete(index=f"{alias}--*", ignore_unavailable=True)


@pytest.fixture
def store(opensearch_url: str) -> Iterator[OpenSearchStore]:
    settings = os_settings(opensearch_url)
    s = OpenSearchStore(settings)
    s.ensure_index(INFO)
    yield s
    drop(s, settings.alias)


@pytest.fixture
def opensearch_sync_settings(opensearch_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for the sync contract on the real node: hash embedder, a fresh alias (dropped
    after the test)."""
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
