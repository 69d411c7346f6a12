"""A connector that, before reading each document (the content step), queries the index as a
guest and records what the guest could see then: a query between the DAG's tasks."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.identity import UserContext
from rag.models import SourceDocument
from rag.retrieval.core import Retriever


class SpyConnector(FilesystemConnector):
    def __init__(self, name: str, root: str, record: str) -> None:
        super().__init__(Path(root), name)
        self._record = Path(record)

    def read(self, document: SourceDocument) -> bytes:
        hits = Retriever.from_settings(Settings()).retrieve(
            "design note subsystem paragraph", UserContext.of("guest"), k=50
        )
        seen = sorted({h.chunk.citation.uri for h in hits})
        with self._record.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"reading": document.uri, "guest_sees": seen}) + "\n")
        return super().read(document)
