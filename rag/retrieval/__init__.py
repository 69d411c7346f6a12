"""Retrieval: the core retriever (``core``) and its LangChain adapter (``langchain``)."""

from __future__ import annotations

from rag.retrieval.core import Retriever

__all__ = ["Retriever"]
