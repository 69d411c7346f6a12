"""Principals and the identity of the caller.

A principal is one of ``user:<id>``, ``group:<id>`` or ``public``. Ids use a conservative
character set so that a principal can never carry query syntax into a store filter; stores escape
them as well (defence in depth).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from rag.errors import AccessDeniedError, InvalidPrincipalError

PUBLIC: Final = "public"
"""The principal every authenticated user holds; documents allowing it are readable by all."""

_ID = r"[A-Za-z0-9][A-Za-z0-9._@+\-]{0,254}"
_ID_RE: Final = re.compile(rf"^{_ID}$")
_PRINCIPAL_RE: Final = re.compile(rf"^(?:{PUBLIC}|(?:user|group):{_ID})$")


def validate_principal(value: str) -> str:
    """Return ``value`` if it is a well-formed principal, else raise InvalidPrincipalError."""
    if not isinstance(value, str) or not _PRINCIPAL_RE.fullmatch(value):
        raise InvalidPrincipalError(
            f"invalid principal {value!r}: expected user:<id>, "
            f"group:<id> or {PUBLIC!r} with ids of [A-Za-z0-9._@+-]"
        )
    return value


def validate_id(value: str) -> str:
    """Return ``value`` if it is a valid user or group id."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidPrincipalError(f"invalid user or group id {value!r}")
    return value


Principal = Annotated[str, AfterValidator(validate_principal)]


def user(user_id: str) -> str:
    """The principal of one user."""
    return f"user:{validate_id(user_id)}"


def group(group_id: str) -> str:
    """The principal of one group."""
    return f"group:{validate_id(group_id)}"


class UserContext(BaseModel):
    """Who is asking: a user id and the groups the identity provider says they belong to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(description="The user's id, as in the sources' ACLs.")
    groups: frozenset[str] = Field(default=frozenset(), description="Group ids of the user.")

    @field_validator("user_id")
    @classmethod
    def _check_user(cls, value: str) -> str:
        return validate_id(value)

    @field_validator("groups")
    @classmethod
    def _check_groups(cls, value: frozenset[str]) -> frozenset[str]:
        for g in value:
            validate_id(g)
        return value

    @classmethod
    def of(cls, user_id: str, groups: Iterable[str] = ()) -> UserContext:
        """Build a context from a user id and group ids."""
        return cls(user_id=user_id, groups=frozenset(groups))

    def principals(self) -> frozenset[str]:
        """Every principal this user holds: themself, their groups, and ``public``."""
        return frozenset({user(self.user_id), PUBLIC, *(group(g) for g in self.groups)})


def require_user(context: UserContext | None) -> UserContext:
    """Deny by default: a search without an identity is refused, never answered."""
    if context is None:
        raise AccessDeniedError("no user context: retrieval requires an identity")
    if not isinstance(context, UserContext):
        raise AccessDeniedError(f"expected a UserContext, got {type(context).__name__}")
    return context
