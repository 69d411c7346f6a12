"""A connector over a BEIR corpus with an ACL overlay, so benchmarks run through the real
pipeline (parse, chunk, embed, load) like any other source."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from connectors.base import Listing
from evaluation.personas import Overlay
from rag.models import SourceDocument, stable_hash


class BeirConnector:
    def __init__(self, name: str, corpus: dict[str, tuple[str, str]], overlay: Overlay) -> None:
        self._name = name
        self._corpus = corpus
        self._overlay = overlay

    @property
    def name(self) -> str:
        return self._name

    @staticmethod
    def doc_id_of(uri: str) -> str:
        return uri.removesuffix(".md")

    def _text(self, doc_id: str) -> bytes:
        title, text = self._corpus[doc_id]
        return (f"# {title}\n\n{text}\n" if title else f"{text}\n").encode("utf-8")

    def list_documents(self) -> Listing:
        docs = []
        for doc_id in sorted(self._corpus):
            data = self._text(doc_id)
            docs.append(
                SourceDocument(
                    source=self._name,
                    id=stable_hash(self._name, doc_id),
                    uri=f"{doc_id}.md",
                    title=self._corpus[doc_id][0][:200] or doc_id,
                    mime_type="text/markdown",
                    content_hash=hashlib.sha256(data).hexdigest(),
                    size_bytes=len(data),
                    modified_at=datetime(2020, 1, 1, tzinfo=UTC),
                    acl=self._overlay.acl(doc_id),
                )
            )
        return Listing(self._name, tuple(docs), complete=True)

    def read(self, document: SourceDocument) -> bytes:
        return self._text(self.doc_id_of(document.uri))
