"""Document and chunk ids: deterministic hex digests (see ``rag.models.stable_hash``), checked
before they are placed in any filter expression."""

from __future__ import annotations

import re
from typing import Final

from rag.errors import StoreError

_ID_RE: Final = re.compile(r"^[A-Za-z0-9._:\-]{1,256}$")


def checked_id(value: str) -> str:
    """A document or chunk id safe to place in a filter expression."""
    if not _ID_RE.fullmatch(value):
        raise StoreError(f"invalid id {value!r}")
    return value
