"""The one module that imports LangChain: a ``BaseRetriever`` over :class:`Retriever`.

retriever = PermissionAwareRetriever(core=Retriever(store, embedder),
                                     user=UserContext.of("alice", ["hr"]),
                                     search_kwargs={"k": 4, "filter": 'source = "handbook"'})
docs = retriever.invoke("How many vacation days do I get?")
docs = await retriever.ainvoke("...", k=1)   # per call: k, score_threshold, filter, mode, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator

from rag.errors import FilterError, InvalidRequestError
from rag.filters import And, Eq, Filter, In, Not, Or, Prefix, Range, all_of, parse_filter
from rag.filters import filter_from_json as _filter_from_json
from rag.identity import UserContext
from rag.models import SearchHit
from rag.resolve import IdentityResolver
from rag.retrieval.citations import cite
from rag.retrieval.core import Options, Retrieval, Retriever
from rag.retrieval.expand import Passage

SEARCH_KWARGS = frozenset({"k", "score_threshold", "filter", "mode", "rerank", "expand"})
"""What ``search_kwargs`` (and ``invoke``'s keyword arguments) may set; anything else is an
:class:`~rag.errors.InvalidRequestError`, not silently ignored."""
_FILTER_NODES = (Eq, In, Range, Prefix, And, Or, Not)


class PermissionAwareRetriever(BaseRetriever):
    """A LangChain retriever bound to one user; build one per request.

    ``search_kwargs`` set the query options of every call, and ``invoke``/``ainvoke`` keyword
    arguments override them for one call: ``k``, ``score_threshold`` (the retriever's
    ``min_score``: its scale depends on the mode, see :mod:`rag.retrieval.core`), ``filter``
    (see :func:`as_filter`), ``mode`` (dense, bm25, hybrid), ``rerank`` (bool) and ``expand``
    (``neighbors`` or ``section``: one Document per merged passage instead of one per chunk).

    Each Document's metadata: ``source`` is the document's URI (LangChain's convention),
    ``source_name`` the source it was ingested from, ``link`` a deep link into the source,
    and the citation (``title``, ``section``, ``page``, ``ordinal``), ids, ``score`` and the
    ``audit_id`` for :meth:`Retriever.feedback`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    core: Retriever
    user: UserContext | None
    k: int | None = None
    """Chunks per query; None: the core's ``top_k`` (``RAG_RETRIEVAL__TOP_K``)."""
    search_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("search_kwargs")
    @classmethod
    def _known_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        _checked_keys(value)
        if value.get("filter") is not None:
            value = {**value, "filter": as_filter(value["filter"])}
        return value

    @classmethod
    def from_token(
        cls, core: Retriever, resolver: IdentityResolver, token: str, **kwargs: Any
    ) -> PermissionAwareRetriever:
        """A retriever for the user a bearer token proves (AuthenticationError otherwise),
        with the directory's groups and aliases."""
        return cls(core=core, user=resolver.from_token(token), **kwargs)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, options = self._options(kwargs)
        return to_documents(self.core.search(query, self.user, k, **options))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, options = self._options(kwargs)
        return to_documents(await self.core.asearch(query, self.user, k, **options))

    def _options(self, call: Mapping[str, Any]) -> tuple[int | None, Options]:
        """The call's options over ``search_kwargs`` over ``k``."""
        _checked_keys(call)
        merged = {**self.search_kwargs, **call}
        options = Options()
        if merged.get("score_threshold") is not None:
            options["min_score"] = float(merged["score_threshold"])
        if merged.get("filter") is not None:
            options["filter"] = as_filter(merged["filter"])
        for key in ("mode", "rerank", "expand"):
            if merged.get(key) is not None:
                options[key] = merged[key]
        k = merged.get("k", self.k)
        return k, options


def _checked_keys(kwargs: Mapping[str, Any]) -> None:
    unknown = set(kwargs) - SEARCH_KWARGS
    if unknown:
        raise InvalidRequestError(
            f"unknown retriever arguments {sorted(unknown)}; known: {sorted(SEARCH_KWARGS)}"
        )


def as_filter(value: Any) -> Filter:
    """A metadata filter from what a LangChain caller passes: a :mod:`rag.filters` node, its
    JSON form (a dict with ``op``), a dict of equalities (``{"source": "handbook",
    "attr.team": ["hr", "legal"]}``: a list means any of its values; all keys AND-ed), or the
    text syntax (``'source = "handbook" and modified >= "2026-01-01"'``)."""
    if isinstance(value, _FILTER_NODES):
        return value
    if isinstance(value, str):
        return parse_filter(value)
    if isinstance(value, Mapping):
        if "op" in value:
            return _filter_from_json(dict(value))
        leaves: list[Filter] = [
            In(key, list(v)) if isinstance(v, list | tuple) else Eq(key, v)
            for key, v in value.items()
        ]
        combined = all_of(*leaves)
        if combined is None:
            raise FilterError("an empty filter dict filters nothing; pass None instead")
        return combined
    raise FilterError(f"a filter is a Filter, a dict or a string, not {type(value).__name__}")


def to_documents(result: Retrieval) -> list[Document]:
    """One Document per passage: per hit, or with context expansion per merged passage."""
    return [
        to_document(SearchHit(chunk=p.chunks[0], score=p.score), result.audit_id)
        if len(p.chunks) == 1
        else passage_document(p, result.audit_id)
        for p in result.passages
    ]


def to_document(hit: SearchHit, audit_id: str | None = None) -> Document:
    """A LangChain Document with the chunk's id, score and citation in its metadata."""
    metadata = _metadata(hit, audit_id)
    return Document(id=hit.chunk.id, page_content=hit.chunk.text, metadata=metadata)


def passage_document(passage: Passage, audit_id: str | None = None) -> Document:
    """A Document of a merged passage: the first chunk's citation, every chunk id, the best
    hit's score, and the ordinals it spans."""
    first = passage.chunks[0]
    metadata = _metadata(SearchHit(chunk=first, score=passage.score), audit_id)
    metadata["chunk_ids"] = [c.id for c in passage.chunks]
    metadata["hit_chunk_ids"] = [c.id for c in passage.chunks if c.id in passage.hit_ids]
    metadata["ordinal_end"] = passage.chunks[-1].ordinal
    return Document(id=first.id, page_content=passage.text, metadata=metadata)


def _metadata(hit: SearchHit, audit_id: str | None) -> dict[str, Any]:
    ref = cite(hit.chunk)
    metadata: dict[str, Any] = {
        "source": ref.uri,
        "source_name": ref.source,
        "chunk_id": ref.chunk_id,
        "document_id": ref.document_id,
        "uri": ref.uri,
        "title": ref.title,
        "section": ref.section,
        "page": ref.page,
        "ordinal": ref.ordinal,
        "link": ref.link,
        "score": hit.score,
    }
    if audit_id is not None:
        metadata["audit_id"] = audit_id  # for Retriever.feedback(audit_id, helpful)
    return metadata
