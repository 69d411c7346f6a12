"""Shared fixtures. Unit tests cannot reach the network: only loopback and Unix sockets work."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rag.config import Settings

pytest_plugins = ["tests.opensearch_node"]

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ConnectionRefusedError(f"tests may not reach {host}: the network is off")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


# The RAG_* variables of the shell pytest runs in, taken before any nested conftest sets its own
# (tests/airflow/conftest.py sets RAG_TASK_RETRY_DELAY_SECONDS for the DAGs it imports).
_AMBIENT_RAG_ENV = {n: v for n, v in os.environ.items() if n.upper().startswith("RAG_")}


@pytest.fixture(autouse=True)
def _no_ambient_rag_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's RAG_* variables cannot change test results: each test starts without them
    (a test sets what it needs with monkeypatch.setenv)."""
    for name, value in _AMBIENT_RAG_ENV.items():
        if os.environ.get(name) == value:
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh data dir with the deterministic hash embedder."""
    return Settings(data_dir=tmp_path / "data", embedding={"provider": "hash"})


@pytest.fixture
def minilm_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")
