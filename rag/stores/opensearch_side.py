"""A small index beside the chunks index (its sync state, its run records), created on first use
and named after the physical index, so a new index version starts with its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class SideIndex:
    def __init__(
        self,
        client: Callable[[], Any],
        index: Callable[[], str],
        replicas: int,
        *,
        suffix: str,
        mappings: dict[str, Any],
    ) -> None:
        self._client = client
        self._index = index
        self._replicas = replicas
        self._suffix = suffix
        self._mappings = mappings
        self._ready: str | None = None

    def _name(self) -> str:
        name = f"{self._index()}-{self._suffix}"
        if self._ready != name:
            client = self._client()
            if not client.indices.exists(index=name):
                body = {
                    "mappings": self._mappings,
                    "settings": {
                        "index": {"number_of_shards": 1, "number_of_replicas": self._replicas}
                    },
                }
                client.indices.create(index=name, body=body, ignore=400)
            self._ready = name
        return name
