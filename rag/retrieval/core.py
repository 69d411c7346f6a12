"""The core retriever: a query and a user in, ranked chunks the user may read out."""

from __future__ import annotations

import logging

from rag.config import Settings
from rag.embeddings import build_embedder
from rag.embeddings.base import Embedder, embed_query
from rag.errors import StoreError
from rag.identity import UserContext, require_user
from rag.models import SearchHit
from rag.stores import build_store
from rag.stores.base import IndexInfo, VectorStore

log = logging.getLogger(__name__)


class Retriever:
    """Permission-aware retrieval over a store. Deny by default: no user, no results.

    The store applies the ACL filter inside its search. Every hit is checked once more against
    the user's principals; a hit that fails is a store bug, and the whole answer is refused.
    """

    def __init__(
        self, store: VectorStore, embedder: Embedder, top_k: int = 5, min_score: float = -1.0
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._top_k = top_k
        self._min_score = min_score
        self._checked = False

    def retrieve(
        self, query: str, user: UserContext | None, k: int | None = None
    ) -> list[SearchHit]:
        """The ``k`` chunks most similar to ``query`` among those ``user`` may read."""
        context = require_user(user)
        principals = context.principals()
        if not self._checked:
            self._store.ensure_index(IndexInfo(self._embedder.model_id, self._embedder.dimension))
            self._checked = True
        vector = embed_query(self._embedder, query)
        hits = self._store.search(vector, principals, k or self._top_k)
        for hit in hits:
            if not hit.chunk.acl.permits(principals):
                log.error(
                    "store returned chunk %s outside the ACL of %s", hit.chunk.id, context.user_id
                )
                raise StoreError("the store returned a chunk the user may not read; refusing")
        return [hit for hit in hits if hit.score >= self._min_score]

    @classmethod
    def from_settings(cls, settings: Settings) -> Retriever:
        """A retriever over the store and embedder the settings name (no I/O yet)."""
        return cls(
            build_store(settings),
            build_embedder(settings.embedding),
            settings.retrieval.top_k,
            settings.retrieval.min_score,
        )
