"""The one module that imports LangChain: a ``BaseRetriever`` over :class:`Retriever`.

retriever = PermissionAwareRetriever(core=Retriever(store, embedder),
                                     user=UserContext.of("alice", ["hr"]))
docs = retriever.invoke("How many vacation days do I get?")
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.identity import UserContext
from rag.models import SearchHit
from rag.resolve import IdentityResolver
from rag.retrieval.core import Retriever


class PermissionAwareRetriever(BaseRetriever):
    """A LangChain retriever bound to one user; build one per request."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    core: Retriever
    user: UserContext | None
    k: int | None = None
    """Chunks per query; None: the core's ``top_k`` (``RAG_RETRIEVAL__TOP_K``)."""

    @classmethod
    def from_token(
        cls, core: Retriever, resolver: IdentityResolver, token: str, **kwargs: Any
    ) -> PermissionAwareRetriever:
        """A retriever for the user a bearer token proves (AuthenticationError otherwise),
        with the directory's groups and aliases."""
        return cls(core=core, user=resolver.from_token(token), **kwargs)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        result = self.core.search(query, self.user, self.k)
        return [to_document(hit, result.audit_id) for hit in result.hits]


def to_document(hit: SearchHit, audit_id: str | None = None) -> Document:
    """A LangChain Document with the chunk's id, score and citation in its metadata."""
    chunk = hit.chunk
    metadata: dict[str, Any] = {
        "chunk_id": chunk.id,
        "document_id": chunk.document_id,
        "source": chunk.source,
        "score": hit.score,
        **chunk.citation.model_dump(),
    }
    if audit_id is not None:
        metadata["audit_id"] = audit_id  # for Retriever.feedback(audit_id, helpful)
    return Document(id=chunk.id, page_content=chunk.text, metadata=metadata)
