"""Retrieval: the core retriever (``core``), context expansion (``expand``), citations
(``citations``) and the LangChain adapter (``langchain``)."""

from __future__ import annotations

from rag.retrieval.citations import Reference, cite
from rag.retrieval.core import Mode, Options, Retrieval, Retriever
from rag.retrieval.expand import Expand, Passage

__all__ = [
    "Expand",
    "Mode",
    "Options",
    "Passage",
    "Reference",
    "Retrieval",
    "Retriever",
    "cite",
]
