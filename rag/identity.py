"""Principals and the identity of the caller, in one canonical form used at ingest and query time.

A principal is ``public``, ``user:<id>`` or ``group:<id>``. Ids are opaque Unicode strings: an
e-mail with an apostrophe, ``CORP\\alice``, an LDAP DN, a SharePoint claim, ``Finance Team`` or
``日本`` are all valid. Safety never comes from refusing ids: the stores bind or quote every
principal (JSON ``terms`` in OpenSearch, escaped SQL literals in LanceDB).

The canonical form (:func:`canonical_principal`):

- Unicode NFC, surrounding whitespace stripped;
- an id is non-empty, at most :data:`MAX_ID_CHARS` characters, and holds no control (Cc),
  format (Cf, such as zero-width characters) or surrogate (Cs) character;
- ``user:``/``group:`` ids are case-insensitive: they are case-folded (``Mallory@Corp.example``
  and ``mallory@corp.example`` are one user);
- sources whose ids are case-sensitive write ``user.cs:<id>``/``group.cs:<id>`` instead (exact
  case kept). A query carries those forms only when asked to (``principals(case_sensitive=True)``);
  deny entries of such sources are stored in both forms, so a deny always matches.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from rag.errors import AccessDeniedError, InvalidPrincipalError

log = logging.getLogger(__name__)

PUBLIC: Final = "public"
"""The principal every authenticated user holds; documents allowing it are readable by all."""

MAX_ID_CHARS: Final = 2048
"""The longest user or group id accepted (characters, after normalization)."""

USER: Final = "user"
GROUP: Final = "group"
_CS: Final = ".cs"
KINDS: Final = frozenset({USER, GROUP, USER + _CS, GROUP + _CS})
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs"})


def shown(value: object, limit: int = 60) -> str:
    """``value`` for an error message: repr'd, and truncated when long."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def canonical_id(value: object, *, case_sensitive: bool = False) -> str:
    """The canonical form of a user or group id, or InvalidPrincipalError naming the value."""
    if not isinstance(value, str):
        raise InvalidPrincipalError(f"an id must be a string, got {type(value).__name__}")
    text = unicodedata.normalize("NFC", value).strip()
    if not text:
        raise InvalidPrincipalError(f"empty user or group id {shown(value)}")
    if len(text) > MAX_ID_CHARS:
        raise InvalidPrincipalError(
            f"user or group id {shown(value)} is longer than {MAX_ID_CHARS} characters"
        )
    for char in text:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise InvalidPrincipalError(
                f"user or group id {shown(value)} holds the control or invisible character "
                f"U+{ord(char):04X}"
            )
    if case_sensitive:
        return text
    return _fold(text)


def _fold(text: str) -> str:
    """Case folding to a fixed point (NFC after each fold)."""
    for _ in range(4):
        folded = unicodedata.normalize("NFC", text.casefold())
        if folded == text:
            break
        text = folded
    return text


def canonical_principal(value: object, *, case_sensitive: bool = False) -> str:
    """The canonical form of ``public``, ``user:<id>`` or ``group:<id>``.

    With ``case_sensitive`` (a source whose ids are case-sensitive), ``user:``/``group:`` become
    ``user.cs:``/``group.cs:`` and keep their case. Idempotent.
    """
    if not isinstance(value, str):
        raise InvalidPrincipalError(f"a principal must be a string, got {type(value).__name__}")
    text = unicodedata.normalize("NFC", value).strip()
    if _fold(text) == PUBLIC:
        return PUBLIC
    kind, sep, ident = text.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:
        raise InvalidPrincipalError(
            f"invalid principal {shown(value)}: expected user:<id>, group:<id> or {PUBLIC!r}"
        )
    exact = kind.endswith(_CS) or case_sensitive
    base = kind.removesuffix(_CS)
    try:
        ident = canonical_id(ident, case_sensitive=exact)
    except InvalidPrincipalError as exc:
        raise InvalidPrincipalError(f"invalid principal {shown(value)}: {exc}") from None
    return f"{base}{_CS if exact else ''}:{ident}"


def validate_principal(value: object) -> str:
    """The canonical form of a principal (case-insensitive ids), or InvalidPrincipalError."""
    return canonical_principal(value)


def deny_forms(principal: str) -> frozenset[str]:
    """The forms a deny entry is stored in: a case-sensitive one also in its case-folded form,
    so that it matches every spelling a query may carry (a deny may only ever hide more)."""
    kind, _, ident = principal.partition(":")
    if not kind.endswith(_CS):
        return frozenset({principal})
    return frozenset({principal, f"{kind.removesuffix(_CS)}:{_fold(ident)}"})


Principal = Annotated[str, BeforeValidator(validate_principal)]
"""A principal string, canonicalized on validation (errors are InvalidPrincipalError)."""


def user(user_id: str, *, case_sensitive: bool = False) -> str:
    """The principal of one user."""
    ident = canonical_id(user_id, case_sensitive=case_sensitive)
    return f"{USER}{_CS if case_sensitive else ''}:{ident}"


def group(group_id: str, *, case_sensitive: bool = False) -> str:
    """The principal of one group."""
    ident = canonical_id(group_id, case_sensitive=case_sensitive)
    return f"{GROUP}{_CS if case_sensitive else ''}:{ident}"


class UserContext(BaseModel):
    """Who is asking: a user id and the groups the identity provider says they belong to.

    Ids are kept in NFC with their case (case-sensitive sources need it); an invalid user id is
    refused with InvalidPrincipalError, an invalid group is dropped and logged (it could only
    ever have widened what the user reads).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(description="The user's id, as in the sources' ACLs.")
    groups: frozenset[str] = Field(default=frozenset(), description="Group ids of the user.")
    issuer: str | None = Field(None, description="The token issuer, when verified from one.")
    subject: str | None = Field(None, description="The token subject, when verified from one.")
    aliases: frozenset[str] = Field(
        default=frozenset(), description="Other ids of the same user (from the directory)."
    )
    expanded: bool = Field(
        False, description="Whether the directory's groups and aliases were added already."
    )

    @model_validator(mode="before")
    @classmethod
    def _canonical(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        values = dict(data)
        if "user_id" in values:
            try:
                values["user_id"] = canonical_id(values["user_id"], case_sensitive=True)
            except InvalidPrincipalError as exc:
                raise InvalidPrincipalError(f"invalid user id: {exc}") from None
        for key in ("groups", "aliases"):
            raw = values.get(key, ())
            if isinstance(raw, str) or not isinstance(raw, Iterable):
                raise InvalidPrincipalError(f"{key} must be a collection of ids, not {shown(raw)}")
            kept: set[str] = set()
            for g in raw:
                try:
                    kept.add(canonical_id(g, case_sensitive=True))
                except InvalidPrincipalError as exc:
                    log.warning("dropped an invalid %s entry of the caller: %s", key[:-1], exc)
            values[key] = frozenset(kept)
        return values

    @classmethod
    def of(cls, user_id: str, groups: Iterable[str] = ()) -> UserContext:
        """Build a context from a user id and group ids."""
        return cls(user_id=user_id, groups=frozenset(groups))

    def principals(self, *, case_sensitive: bool = False) -> frozenset[str]:
        """Every principal this user holds: themself (and their aliases), their groups, and
        ``public``; with
        ``case_sensitive`` also the exact-case forms that case-sensitive sources store."""
        ids = {self.user_id, *self.aliases}
        held = {PUBLIC, *(user(u) for u in ids), *(group(g) for g in self.groups)}
        if case_sensitive:
            held.update(user(u, case_sensitive=True) for u in ids)
            held.update(group(g, case_sensitive=True) for g in self.groups)
        return frozenset(held)


def require_user(context: UserContext | None) -> UserContext:
    """Deny by default: a search without an identity is refused, never answered."""
    if context is None:
        raise AccessDeniedError("no user context: retrieval requires an identity")
    if not isinstance(context, UserContext):
        raise AccessDeniedError(f"expected a UserContext, got {type(context).__name__}")
    return context
