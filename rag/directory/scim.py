"""SCIM 2.0 (RFC 7643/7644) as a DirectorySource: ``Users`` and ``Groups`` resources read from
a service (``GET /Users``, ``GET /Groups``, paged by ``startIndex``/``count`` until
``totalResults``) or from an export file ``{"Users": <ListResponse or list of them>, "Groups":
...}``.

A user's id is ``userName`` (where missing or shared, the SCIM ``id``), with ``emails[].value``,
``externalId`` (e.g. the Entra object id) and ``id`` as aliases; a group's id is its
``displayName`` (or ``id``), with ``id`` and ``externalId`` as aliases. Group members are
``value`` references to users or groups. A listing that yields fewer resources than its
``totalResults`` (pages lost, resources moved while paging) is incomplete.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import httpx

from rag.config import DirectorySettings
from rag.directory.base import (
    DirectoryGroup,
    DirectorySnapshot,
    DirectoryUser,
    Progress,
    canonical_names,
    unique_ids,
)
from rag.errors import ConfigurationError, DirectoryError, InvalidPrincipalError

_ACCEPT: Final = "application/scim+json, application/json"
_MAX_ERRORS: Final = 20

Listed = tuple[list[dict[str, Any]], int]
"""Resources (keys lower-cased, as SCIM attribute names are case-insensitive) and the total
the source announced."""


class ScimDirectory:
    """A DirectorySource over SCIM; reads only in :meth:`snapshot`. ``transport`` replaces the
    network in tests."""

    def __init__(
        self, settings: DirectorySettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        if (settings.scim_url is None) == (settings.scim_path is None):
            raise ConfigurationError("directory: set exactly one of scim_url and scim_path")
        self._s = settings
        self._transport = transport

    @property
    def name(self) -> str:
        return f"scim:{self._s.scim_url or self._s.scim_path}"

    def snapshot(self, progress: Progress | None = None) -> DirectorySnapshot:
        """Every user and group; ``progress`` is told the resources read after each page (the
        total once the Groups listing announced its own: Users come first)."""
        report = progress or _ignore
        if self._s.scim_path is not None:
            users, groups = self._read_file(self._s.scim_path)
            read = len(users[0]) + len(groups[0])
            report(read, read)
        else:
            users, groups = self._fetch_all(report)
        return self._build(users, groups)

    def _read_file(self, path: Path) -> tuple[Listed, Listed]:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DirectoryError(f"cannot read the SCIM file {path}: {exc}") from exc
        top = _ci(doc)
        out: list[Listed] = []
        for kind in ("users", "groups"):
            pages = top.get(kind, [])
            pages = pages if isinstance(pages, list) else [pages]
            resources: list[dict[str, Any]] = []
            total = 0
            for page in pages:
                items, total = _page(page, f"{path} {kind}")
                resources.extend(items)
            out.append((resources, total))
        return out[0], out[1]

    def _fetch_all(self, report: Progress) -> tuple[Listed, Listed]:
        headers = {"Accept": _ACCEPT}
        if self._s.scim_token is not None:
            headers["Authorization"] = f"Bearer {self._s.scim_token.get_secret_value()}"
        base = str(self._s.scim_url).rstrip("/")
        try:
            with httpx.Client(
                headers=headers, timeout=self._s.scim_timeout_seconds, transport=self._transport
            ) as client:
                users = self._fetch(client, f"{base}/Users", lambda n, _: report(n, None))
                read = len(users[0])
                groups = self._fetch(
                    client, f"{base}/Groups", lambda n, total: report(read + n, read + total)
                )
                return users, groups
        except httpx.HTTPError as exc:
            raise DirectoryError(f"SCIM request to {base} failed: {exc!r}") from exc

    def _fetch(self, client: httpx.Client, url: str, report: Callable[[int, int], None]) -> Listed:
        resources: list[dict[str, Any]] = []
        start = 1
        while True:
            params = {"startIndex": start, "count": self._s.scim_page_size}
            response = client.get(url, params=params)
            if response.status_code >= 400:
                raise DirectoryError(
                    f"SCIM {url} answered {response.status_code}: {response.text[:200]!r}"
                )
            try:
                body = response.json()
            except ValueError as exc:
                raise DirectoryError(f"SCIM {url} answered with invalid JSON: {exc}") from exc
            items, total = _page(body, url)
            resources.extend(items)
            report(len(resources), max(total, len(resources)))
            start += len(items)
            if not items or start > total:
                return resources, total

    def _build(self, users: Listed, groups: Listed) -> DirectorySnapshot:
        errors: list[str] = []
        complete = True
        for kind, (items, total) in (("Users", users), ("Groups", groups)):
            distinct = len({str(r.get("id", i)) for i, r in enumerate(items)})
            if distinct < total:
                complete = False
                errors.append(f"{kind}: {distinct} of {total} resources listed")
        user_rows = [r for r in users[0] if isinstance(r.get("id"), str)]
        group_rows = [r for r in groups[0] if isinstance(r.get("id"), str)]
        if len(user_rows) + len(group_rows) < len(users[0]) + len(groups[0]):
            errors.append("resources without an id skipped")
        user_ids = unique_ids(
            [_str(r.get("username")) for r in user_rows], [r["id"] for r in user_rows]
        )
        group_ids = unique_ids(
            [_str(r.get("displayname")) for r in group_rows], [r["id"] for r in group_rows]
        )
        user_of = {r["id"]: i for r, i in zip(user_rows, user_ids, strict=True)}
        group_of = {r["id"]: i for r, i in zip(group_rows, group_ids, strict=True)}
        out_users = []
        for r, uid in zip(user_rows, user_ids, strict=True):
            emails = [_ci(e).get("value") for e in _list(r.get("emails"))]
            names = [r["id"], r.get("username"), r.get("externalid"), *emails]
            try:
                out_users.append(DirectoryUser(id=uid, aliases=canonical_names(_strs(names))))
            except InvalidPrincipalError as exc:
                errors.append(f"user {r['id']!r} skipped: {exc}")
        out_groups = []
        dangling = 0
        for r, gid in zip(group_rows, group_ids, strict=True):
            names = [r["id"], r.get("displayname"), r.get("externalid")]
            member_users, member_groups = [], []
            for member in map(_ci, _list(r.get("members"))):
                ref_kind = _member_kind(member, user_of, group_of)
                if ref_kind == "user":
                    member_users.append(user_of[member["value"]])
                elif ref_kind == "group":
                    member_groups.append(group_of[member["value"]])
                else:
                    dangling += 1
            try:
                out_groups.append(
                    DirectoryGroup(
                        id=gid,
                        aliases=canonical_names(_strs(names)),
                        member_users=member_users,
                        member_groups=member_groups,
                    )
                )
            except InvalidPrincipalError as exc:
                errors.append(f"group {r['id']!r} skipped: {exc}")
        if dangling:
            errors.append(f"{dangling} member reference(s) name no listed user or group")
        return DirectorySnapshot(
            source=self.name,
            users=tuple(out_users),
            groups=tuple(out_groups),
            complete=complete,
            errors=tuple(errors[:_MAX_ERRORS]),
        )


def _member_kind(
    member: Mapping[str, Any], users: Mapping[str, str], groups: Mapping[str, str]
) -> str | None:
    """ "user" or "group" for a member reference, by its ``type``, its ``$ref``, or the one kind
    its ``value`` names; None where it names nothing listed (or both kinds, with no type)."""
    value = member.get("value")
    if not isinstance(value, str):
        return None
    hint = str(member.get("type") or "").lower()
    hint = hint if hint in ("user", "group") else ""
    ref = str(member.get("$ref") or "")
    if not hint and "/Users/" in ref:
        hint = "user"
    elif not hint and "/Groups/" in ref:
        hint = "group"
    in_users, in_groups = value in users, value in groups
    if hint == "user" or (not hint and in_users and not in_groups):
        return "user" if in_users else None
    if hint == "group" or (not hint and in_groups and not in_users):
        return "group" if in_groups else None
    return None


def _page(body: Any, where: str) -> tuple[list[dict[str, Any]], int]:
    """A ListResponse's resources and its totalResults."""
    page = _ci(body)
    items = page.get("resources", [])
    total = page.get("totalresults")
    if not isinstance(body, dict) or not isinstance(items, list) or not isinstance(total, int):
        raise DirectoryError(f"{where}: not a SCIM ListResponse (Resources, totalResults)")
    return [_ci(r) for r in items if isinstance(r, dict)], total


def _ignore(done: int, total: int | None) -> None:
    """The progress callback of a snapshot nobody watches."""


def _ci(obj: Any) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()} if isinstance(obj, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strs(values: list[Any]) -> list[str]:
    return [v for v in values if isinstance(v, str)]
