"""A connector that crashes on its first read of one file (a transient fault), for retry tests."""

from __future__ import annotations

from pathlib import Path

from connectors.filesystem import FilesystemConnector
from rag.models import SourceDocument


class FlakyConnector(FilesystemConnector):
    def __init__(self, name: str, root: str, crash_on: str, marker: str) -> None:
        super().__init__(Path(root), name)
        self._crash_on = crash_on
        self._marker = Path(marker)

    def read(self, document: SourceDocument) -> bytes:
        if document.uri == self._crash_on and not self._marker.exists():
            self._marker.write_text("crashed once")
            raise RuntimeError("injected crash while parsing this batch")
        return super().read(document)
