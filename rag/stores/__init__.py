"""Vector store backends, one per module, behind the :class:`VectorStore` protocol."""

from __future__ import annotations

from rag.config import Settings
from rag.stores.base import IndexInfo, VectorStore

__all__ = ["IndexInfo", "VectorStore", "build_store"]


def build_store(settings: Settings) -> VectorStore:
    """The store the settings name. Construction does no I/O."""
    if settings.store.backend == "opensearch":
        from rag.stores.acl_keys import AclKeyOptions
        from rag.stores.opensearch import OpenSearchStore

        return OpenSearchStore(settings.store.opensearch, acl_keys=AclKeyOptions.of(settings.store))
    from rag.stores.lancedb import LanceDBStore

    return LanceDBStore(settings.store_uri, settings.store)
