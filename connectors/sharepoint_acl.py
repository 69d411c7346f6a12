"""How the permissions Graph lists for a drive item become an ACL of principals (the rules are
in :mod:`connectors.sharepoint`'s docstring, under **Permissions**)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from rag.errors import InvalidPrincipalError
from rag.identity import canonical_principal
from rag.models import Acl

READ_ROLES: Final = frozenset({"read", "write", "owner", "sp.owner", "sp.member"})
"""Roles that let a principal read an item (every other role grants nothing here)."""
_NO_EXPIRY: Final = "0001-01-01"


@dataclass(frozen=True)
class PrincipalMap:
    """How Graph identities become principals (see :mod:`connectors.sharepoint`)."""

    user_property: Literal["upn", "email", "id"] = "upn"
    group_property: Literal["id", "name"] = "id"
    anonymous: str | None = None  # PUBLIC, or None: anonymous links are ignored
    organization: str | None = None  # a principal, or None: organization links are ignored

    def acl(self, permissions: Iterable[Any], site_key: str, now: datetime) -> tuple[Acl, set[str]]:
        """The ACL the permissions give, and notes on the grants dropped."""
        allow: set[str] = set()
        notes: set[str] = set()
        for grant in permissions:
            if not isinstance(grant, dict):
                continue
            roles = {str(r).lower() for r in grant.get("roles") or () if isinstance(r, str)}
            if not roles & READ_ROLES or _expired(grant.get("expirationDateTime"), now):
                continue
            link = grant.get("link")
            if isinstance(link, dict):
                scope = str(link.get("scope") or "").lower()
                if scope == "anonymous" and self.anonymous is not None:
                    allow.add(self.anonymous)
                elif scope == "organization" and self.organization is not None:
                    allow.add(self.organization)
            for identity in _identities(grant):
                allow.update(self.identity(identity, site_key, notes))
        return Acl(allow=frozenset(allow)), notes

    def identity(self, ids: dict[str, Any], site_key: str, notes: set[str]) -> list[str]:
        """The principals of one ``sharePointIdentitySet`` (``application`` and ``device``
        identities read nothing through us, and are skipped)."""
        out: list[str] = []
        user, group = ids.get("user"), ids.get("group")
        site_user, site_group = ids.get("siteUser"), ids.get("siteGroup")
        if isinstance(user, dict):
            out += self._user(user, site_user if isinstance(site_user, dict) else {}, notes)
        if isinstance(group, dict):
            key = "displayName" if self.group_property == "name" else "id"
            out += self._principal("group", group.get(key), f"group {_shown(group)}", notes)
        if isinstance(site_group, dict):
            key = "displayName" if self.group_property == "name" else "id"
            value = site_group.get(key)
            ident = f"sp-site:{site_key}:{value}" if value not in (None, "") else None
            out += self._principal("group", ident, f"site group {_shown(site_group)}", notes)
        if (
            isinstance(site_user, dict)
            and not isinstance(user, dict)
            and not isinstance(group, dict)
        ):
            out += self._claim(site_user, notes)
        return out

    def _user(self, user: dict[str, Any], site_user: dict[str, Any], notes: set[str]) -> list[str]:
        upn = user.get("userPrincipalName") or _membership_upn(
            user.get("loginName") or site_user.get("loginName")
        )
        email = user.get("email") or site_user.get("email")
        value = {"upn": upn or email, "email": email or upn, "id": user.get("id")}
        return self._principal(
            "user", value[self.user_property], f"user {_shown(user)}", notes, self.user_property
        )

    def _claim(self, site_user: dict[str, Any], notes: set[str]) -> list[str]:
        """A SharePoint user known only by its claim (``loginName``)."""
        login = str(site_user.get("loginName") or "")
        parts = login.split("|")
        what = f"site user {_shown(site_user)}"
        if login.startswith("i:0#.f|membership|"):
            if self.user_property == "id":
                notes.add(f"{what}: no object id in a membership claim")
                return []
            return self._principal("user", parts[-1], what, notes)
        if "spo-grid-all-users" in login or login == "c:0(.s|true":
            if self.organization is None:
                notes.add(f"{what}: everyone in the organization (organization_links: ignore)")
                return []
            return [self.organization]
        if login.startswith(("c:0t.c|tenant|", "c:0o.c|federateddirectoryclaimprovider|")):
            value = parts[-1]
            if value.endswith("_o"):
                notes.add(f"{what}: the owners of a Microsoft 365 group are not a group we know")
                return []
            if self.group_property == "name":
                notes.add(f"{what}: a group claim carries its id, not its name")
                return []
            return self._principal("group", value, what, notes)
        notes.add(f"{what}: a claim we do not map")
        return []

    @staticmethod
    def _principal(
        kind: str, value: Any, what: str, notes: set[str], prop: str | None = None
    ) -> list[str]:
        if not isinstance(value, str) or not value.strip():
            notes.add(f"{what}: no {prop or 'id'}")
            return []
        try:
            return [canonical_principal(f"{kind}:{value}")]
        except InvalidPrincipalError as exc:
            notes.add(f"{what}: {exc}")
            return []


def _identities(grant: dict[str, Any]) -> list[dict[str, Any]]:
    """The identity sets of a permission: V2, else the deprecated properties."""
    single = grant.get("grantedToV2") or grant.get("grantedTo")
    many = grant.get("grantedToIdentitiesV2") or grant.get("grantedToIdentities") or []
    found = [single] if isinstance(single, dict) else []
    return found + [i for i in many if isinstance(i, dict)]


def _membership_upn(login: Any) -> str | None:
    if isinstance(login, str) and login.startswith("i:0#.f|membership|"):
        return login.rsplit("|", 1)[-1] or None
    return None


def _expired(value: Any, now: datetime) -> bool:
    if not isinstance(value, str) or not value or value.startswith(_NO_EXPIRY):
        return False
    when = timestamp(value)
    return when is not None and when <= now


def timestamp(value: Any) -> datetime | None:
    """A Graph timestamp (ISO 8601, ``Z`` for UTC; UTC when it names no zone), or None."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _shown(identity: dict[str, Any]) -> str:
    name = identity.get("displayName") or identity.get("loginName") or identity.get("id")
    return repr(str(name)[:80])
