"""Permission-aware RAG ingestion and retrieval."""

from rag.config import Settings
from rag.errors import AccessDeniedError, RagError
from rag.identity import UserContext
from rag.models import Acl, Chunk, SearchHit, SourceDocument
from rag.retrieval.core import Retriever

__all__ = [
    "AccessDeniedError",
    "Acl",
    "Chunk",
    "RagError",
    "Retriever",
    "SearchHit",
    "Settings",
    "SourceDocument",
    "UserContext",
]
