"""The Connector protocol: a source lists its documents with their ACLs and reads their bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from rag.models import SourceDocument

SOURCE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
"""What a source's name may be (it is part of every document id): every connector checks it."""


@dataclass(frozen=True)
class Listing:
    """What a source holds now. ``complete`` is False when any part could not be listed, in which
    case nothing may be deleted on the strength of this listing. ``policy_errors`` name broken
    permission policies: the documents they govern are listed without an ACL (``acl_error``
    set), so they are hidden, while the listing itself may still be complete."""

    source: str
    documents: tuple[SourceDocument, ...]
    complete: bool
    errors: tuple[str, ...] = field(default=())
    policy_errors: tuple[str, ...] = field(default=())


@runtime_checkable
class Connector(Protocol):
    @property
    def name(self) -> str:
        """The source's name; part of every document id."""
        ...

    def list_documents(self) -> Listing:
        """Every document with its ACL and content hash."""
        ...

    def read(self, document: SourceDocument) -> bytes:
        """The raw bytes of one listed document."""
        ...
