"""The boto3 side of the S3 connector: clients made from one shared session per profile, fast
timestamp parsing, an LRU cache of small objects, and how botocore's errors are described."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, Final

from botocore.exceptions import ClientError


class BodyCache:
    """Small objects (policies, sidecars) by (key, ETag), within a byte budget (LRU)."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._used = 0
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[str, str], data: bytes) -> None:
        with self._lock:
            if key in self._items or len(data) > self._budget:
                return
            self._items[key] = data
            self._used += len(data)
            while self._used > self._budget:
                _, dropped = self._items.popitem(last=False)
                self._used -= len(dropped)


def make_client(
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    max_concurrency: int,
    max_attempts: int | None,
) -> Any:
    """An S3 client of the profile's shared session (``BotoCoreError`` or ``ValueError`` when
    botocore cannot make one)."""
    from botocore.config import Config

    retries: dict[str, Any] = {"mode": "standard"}
    if max_attempts is not None:
        retries["max_attempts"] = max_attempts
    config = Config(
        max_pool_connections=max(10, max_concurrency),
        retries=retries,
        connect_timeout=10,
        read_timeout=60,
    )
    with _SESSIONS_LOCK:  # making clients of one session is not thread-safe
        session = _session(profile)
        return session.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)


_SESSIONS: dict[str | None, Any] = {}
_SESSIONS_LOCK: Final = threading.Lock()


def _session(profile: str | None) -> Any:
    """One boto3 session per profile and process (as ``boto3.client`` shares its default one):
    its loaded service models and resolved credentials serve every connector. Call with
    ``_SESSIONS_LOCK`` held."""
    if profile not in _SESSIONS:
        import boto3
        import botocore.session

        core = botocore.session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_timestamp
        )
        _SESSIONS[profile] = boto3.Session(botocore_session=core, profile_name=profile)
    return _SESSIONS[profile]


def _timestamp(value: Any) -> datetime:
    """An S3 timestamp (ISO 8601 in listings) parsed fast, else as botocore parses it: a
    listing of many objects otherwise spends a third of its time in dateutil."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)  # type: ignore[no-any-return]


def error_code(exc: ClientError) -> str:
    """The S3 error code of a ``ClientError`` (``NoSuchBucket``, ``PreconditionFailed``...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def describe(exc: Exception) -> str:
    """A botocore error (or any other) in a line."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
