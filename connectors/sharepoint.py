"""SharePoint Online document libraries and OneDrive drives over Microsoft Graph, with their
permissions.

**Listing.** Each configured drive is mirrored into a snapshot under ``state_dir`` (one JSON file
per drive: its items and the delta link) with Graph's delta query (``/drives/{id}/root/delta``):
the first run enumerates the drive, later runs apply only the changes. The snapshot and its delta
link are replaced (atomically) only once a delta round has finished; a round that fails part-way
keeps the old snapshot, lists from it, and marks the listing incomplete, so nothing is deleted on
its strength. A ``410 Gone`` (Graph no longer honours the token) discards the snapshot and
enumerates the drive again; the listing is complete once that finishes. Every listing is a
complete listing of every file (the pipeline tombstones what a complete listing omits).

**Permissions** are read again for every file on every run (``/drives/{d}/items/{i}/permissions``,
20 to a ``$batch``), whether or not the file changed: a permission change alone is an ACL-only
update, since ``content_hash`` comes from the ``file.hashes`` facet (``sha256Hash``,
``quickXorHash``, ``sha1Hash`` or ``crc32Hash``, else the ``cTag``), never from permissions. A
file whose permissions cannot be read is listed with ``acl_error``: hidden until they can be,
never given a guessed ACL. The effective permissions Graph lists (the item's own, and those it
inherits, with or without ``inheritedFrom``) map to principals; every grant with a role of
``read``, ``write``, ``owner``, ``sp.owner`` or ``sp.member`` makes a reader (owners read);
other roles and expired grants give nothing. SharePoint has no deny.

- an Entra user: ``user:<id>``, where ``principal_property`` picks the id: ``upn`` (default:
  the userPrincipalName, else the UPN in the ``i:0#.f|membership|<upn>`` claim, else the
  e-mail), ``email`` (the e-mail, else the UPN) or ``id`` (the object id);
- an Entra or Microsoft 365 group: ``group:<object id>`` (``group_property: name``: its
  displayName);
- a SharePoint site group: ``group:sp-site:<site collection id>:<site group id>`` (its name with
  ``group_property: name``). Graph has no API for their members: the group directory maps them
  (a directory group with that id, whose members are users and Entra groups);
- an anonymous link: ``public`` with ``anonymous_links: public``, else nothing (default);
- an organization link, and the "Everyone" and "Everyone except external users" claims: what
  ``organization_links`` says: ``ignore`` (default), ``public``, or a principal such as
  ``group:everyone``;
- a specific-people link: the users it was granted to (``grantedToIdentitiesV2``);
- applications and devices: nothing.

A grant that cannot be mapped (an identity without the property asked for, an owners-of-a-
Microsoft-365-group claim) is dropped, which can only narrow access, and reported in the
listing's ``policy_errors`` with the number of files it concerns.

**Documents.** ``uri`` is the path from the drive's root (``eng/note-001.md``), prefixed by the
drive's name unless the source names exactly one drive and no site (``Documents/eng/...``; with
several sites, ``<site>/<library>/...``). ``title`` is the file name's stem, ``metadata.link`` the
item's ``webUrl`` (the citation's deep link), ``mime_type`` from the file name when we parse that
extension, else the file facet. ``read`` downloads ``/drives/{d}/items/{i}/content``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from connectors.base import Listing
from connectors.graph import (
    DEFAULT_SCOPE,
    BatchResponse,
    Credential,
    GraphClient,
    GraphError,
    GraphGoneError,
    MsalTokenSource,
)
from rag.errors import ConfigurationError, ConnectorError, InvalidPrincipalError
from rag.identity import PUBLIC, canonical_principal
from rag.models import Acl, SourceDocument, stable_hash
from rag.parsing import mime_type_for

log = logging.getLogger(__name__)

READ_ROLES: Final = frozenset({"read", "write", "owner", "sp.owner", "sp.member"})
"""Roles that let a principal read an item (every other role grants nothing here)."""
SNAPSHOT_VERSION: Final = 1
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
_SELECT: Final = (
    "id,name,parentReference,file,folder,root,package,deleted,size,lastModifiedDateTime,webUrl,cTag"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NO_EXPIRY: Final = "0001-01-01"


# -- options ------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriveRef(_Strict):
    """A drive by id (a document library's or a user's OneDrive), and the name its documents'
    URIs start with (default: the drive's name in Graph)."""

    id: str = Field(min_length=1)
    name: str | None = None


class SiteRef(_Strict):
    """A site, by Graph id (``contoso.sharepoint.com,<guid>,<guid>``) or by
    ``<hostname>:/<path>`` (``contoso.sharepoint.com:/sites/eng``): all its document libraries,
    or those named in ``libraries``."""

    site: str = Field(min_length=1)
    name: str | None = None
    libraries: list[str] | None = None


class SharePointOptions(_Strict):
    """The ``options`` of a ``sharepoint`` source (see the module docstring)."""

    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_env: str | None = None
    client_certificate_path: Path | None = None
    client_certificate_password_env: str | None = None
    authority_url: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    scope: str = DEFAULT_SCOPE
    ca_bundle: Path | None = None
    sites: list[str | SiteRef] = Field(default_factory=list)
    drives: list[str | DriveRef] = Field(default_factory=list)
    anonymous_links: Literal["public", "ignore"] = "ignore"
    organization_links: str = "ignore"
    principal_property: Literal["upn", "email", "id"] = "upn"
    group_property: Literal["id", "name"] = "id"
    state_dir: Path | None = None
    page_size: int = Field(default=200, ge=1, le=1000)
    max_concurrency: int = Field(default=4, ge=1, le=32)
    max_retries: int = Field(default=5, ge=0, le=20)
    max_retry_after_seconds: float = Field(default=120.0, ge=0)
    timeout_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> SharePointOptions:
        given = [self.client_secret, self.client_secret_env, self.client_certificate_path]
        if sum(x is not None for x in given) != 1:
            raise ValueError(
                "give exactly one of client_secret, client_secret_env, client_certificate_path"
            )
        if not (self.sites or self.drives):
            raise ValueError("name at least one site (sites) or drive (drives)")
        if self.organization_links not in ("ignore", "public"):
            try:
                canonical_principal(self.organization_links)
            except InvalidPrincipalError as exc:
                raise ValueError(
                    f"organization_links: ignore, public or a principal: {exc}"
                ) from None
        return self

    def site_refs(self) -> list[SiteRef]:
        return [SiteRef(site=s) if isinstance(s, str) else s for s in self.sites]

    def drive_refs(self) -> list[DriveRef]:
        return [DriveRef(id=d) if isinstance(d, str) else d for d in self.drives]


# -- principals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrincipalMap:
    """How Graph identities become principals (see the module docstring)."""

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
    when = _timestamp(value)
    return when is not None and when <= now


def _timestamp(value: Any) -> datetime | None:
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


# -- the drive snapshot --------------------------------------------------------------------------


@dataclass
class DriveSnapshot:
    """A drive's items as the last finished delta round left them, and its delta link."""

    drive_id: str
    delta_link: str | None = None
    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, item: Any) -> None:
        """One delta item: the latest state of an item, or its deletion."""
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            return
        if "deleted" in item:
            self.items.pop(item["id"], None)
            return
        parent = item.get("parentReference") or {}
        file = item.get("file") if isinstance(item.get("file"), dict) else None
        kind = "root" if "root" in item else "folder" if "folder" in item else "other"
        if file is not None and kind == "other" and "package" not in item:
            kind = "file"
        self.items[item["id"]] = {
            "name": str(item.get("name") or ""),
            "parent": parent.get("id") if isinstance(parent, dict) else None,
            "kind": kind,
            "mime": file.get("mimeType") if file else None,
            "hashes": file.get("hashes") if file and isinstance(file.get("hashes"), dict) else {},
            "size": item.get("size") if isinstance(item.get("size"), int) else 0,
            "modified": item.get("lastModifiedDateTime"),
            "webUrl": item.get("webUrl"),
            "cTag": item.get("cTag"),
        }

    def paths(self) -> dict[str, str]:
        """item id -> path from the root, for every item whose parents reach the root."""
        found: dict[str, str] = {}

        def resolve(item_id: str, depth: int) -> str | None:
            if item_id in found:
                return found[item_id]
            record = self.items.get(item_id)
            if record is None or depth > 500:
                return None
            if record["kind"] == "root":
                found[item_id] = ""
                return ""
            parent = resolve(record["parent"], depth + 1) if record["parent"] else None
            if parent is None:
                return None
            found[item_id] = f"{parent}/{record['name']}" if parent else record["name"]
            return found[item_id]

        for item_id in self.items:
            resolve(item_id, 0)
        return found

    def prune(self) -> int:
        """Drop items no longer below the root (a deleted folder's leftovers); their count."""
        live = self.paths()
        gone = [i for i in self.items if i not in live]
        for item_id in gone:
            del self.items[item_id]
        return len(gone)

    def files(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(item id, path, record) of every file, by path."""
        paths = self.paths()
        rows = [
            (i, paths[i], r) for i, r in self.items.items() if r["kind"] == "file" and i in paths
        ]
        yield from sorted(rows, key=lambda row: row[1])

    @classmethod
    def load(cls, path: Path, drive_id: str) -> DriveSnapshot | None:
        """The stored snapshot, or None when there is none (or it is unreadable: resync)."""
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("snapshot %s unreadable, the drive is enumerated again: %s", path, exc)
            return None
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            return None
        items, link = data.get("items"), data.get("delta_link")
        if data.get("drive_id") != drive_id or not isinstance(items, dict):
            return None
        return cls(drive_id, link if isinstance(link, str) else None, items)

    def save(self, path: Path) -> None:
        """Replace the stored snapshot atomically (a crash leaves the old one or the new one)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = {
            "version": SNAPSHOT_VERSION,
            "drive_id": self.drive_id,
            "delta_link": self.delta_link,
            "items": self.items,
        }
        try:
            with tmp.open("w", encoding="utf-8") as handle:
                json.dump(data, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ConnectorError(f"cannot write the drive snapshot {path}: {exc}") from exc


# -- the connector ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Drive:
    id: str
    label: str  # what its URIs start with, when prefixed
    site_key: str  # the site collection id that scopes its site groups


@dataclass
class _Run:
    documents: list[SourceDocument] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)


class SharePointConnector:
    """Lists the files of SharePoint document libraries and OneDrive drives. Construction does
    no I/O: the token, the sites and the drives are fetched by the first listing."""

    def __init__(self, name: str, options: SharePointOptions, state_dir: Path) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ConfigurationError(f"source name {name!r} must match {_NAME_RE.pattern}")
        self._name = name
        self._options = options
        self._state_dir = state_dir
        organization = options.organization_links
        self._map = PrincipalMap(
            user_property=options.principal_property,
            group_property=options.group_property,
            anonymous=PUBLIC if options.anonymous_links == "public" else None,
            organization=None
            if organization == "ignore"
            else PUBLIC
            if organization == "public"
            else canonical_principal(organization),
        )
        self._client: GraphClient | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def state_dir(self) -> Path:
        return self._state_dir

    def graph(self) -> GraphClient:
        if self._client is None:
            o = self._options
            tokens = MsalTokenSource(
                tenant_id=o.tenant_id,
                client_id=o.client_id,
                credential=self._credential,
                authority_url=o.authority_url,
                scope=o.scope,
                ca_bundle=o.ca_bundle,
                timeout=o.timeout_seconds,
            )
            self._client = GraphClient(
                o.graph_url,
                tokens,
                ca_bundle=o.ca_bundle,
                timeout=o.timeout_seconds,
                max_retries=o.max_retries,
                max_retry_after=o.max_retry_after_seconds,
            )
        return self._client

    def _credential(self) -> Credential:
        o = self._options
        if o.client_secret is not None:
            return o.client_secret.get_secret_value()
        if o.client_secret_env is not None:
            value = os.environ.get(o.client_secret_env)
            if not value:
                raise ConfigurationError(
                    f"source {self._name}: the environment variable {o.client_secret_env} "
                    "(client_secret_env) is not set"
                )
            return value
        assert o.client_certificate_path is not None
        return _certificate(o.client_certificate_path, o.client_certificate_password_env)

    # -- listing ------------------------------------------------------------------------------
    def list_documents(self) -> Listing:
        client = self.graph()
        run = _Run()
        drives = self._drives(client, run)
        prefixed = bool(self._options.sites) or len(self._options.drives) != 1
        now = datetime.now(UTC)
        for drive in drives:
            snapshot = self._refresh(client, drive, run)
            if snapshot is None:
                continue
            files = list(snapshot.files())
            grants = self._permissions(client, drive, [item_id for item_id, _, _ in files])
            for item_id, path, record in files:
                uri = f"{drive.label}/{path}" if prefixed else path
                run.documents.append(self._document(drive, item_id, uri, record, grants, now, run))
        if run.unreadable:
            first = "; ".join(run.unreadable[:3])
            run.notes[f"permissions could not be read, so these files are hidden: {first}"] += len(
                run.unreadable
            )
        policy = tuple(f"{note} ({n} files)" for note, n in sorted(run.notes.items()))
        return Listing(
            self._name,
            tuple(sorted(run.documents, key=lambda d: d.uri)),
            complete=not run.errors,
            errors=tuple(run.errors),
            policy_errors=policy,
        )

    def _drives(self, client: GraphClient, run: _Run) -> list[_Drive]:
        """The configured drives and the document libraries of the configured sites."""
        select = "$select=id,name,driveType,webUrl,sharepointIds"
        found: list[_Drive] = []
        for ref in self._options.drive_refs():
            try:
                drive = client.get_json(f"/drives/{_q(ref.id)}?{select}")
            except GraphError as exc:
                run.errors.append(f"drive {ref.id}: {exc}")
                continue
            found.append(
                _Drive(
                    ref.id, ref.name or str(drive.get("name") or ref.id), _site_key(drive, ref.id)
                )
            )
        sites = self._options.site_refs()
        for site_ref in sites:
            try:
                site = client.get_json(f"/sites/{_q(site_ref.site, safe=':/,')}")
                site_id = str(site["id"])
                libraries = [
                    d
                    for page in client.pages(f"/sites/{_q(site_id, safe=',')}/drives?{select}")
                    for d in page.get("value", [])
                    if isinstance(d, dict) and isinstance(d.get("id"), str)
                ]
            except (GraphError, KeyError) as exc:
                run.errors.append(f"site {site_ref.site}: {exc}")
                continue
            wanted = set(site_ref.libraries) if site_ref.libraries is not None else None
            site_label = site_ref.name or str(site.get("name") or site_id)
            for lib in libraries:
                name = str(lib.get("name") or lib["id"])
                if wanted is not None and name not in wanted:
                    continue
                label = f"{site_label}/{name}" if len(sites) > 1 else name
                fallback = site_id.split(",")[1] if site_id.count(",") == 2 else site_id
                found.append(_Drive(lib["id"], label, _site_key(lib, fallback)))
        twice = sorted(i for i, n in Counter(d.id for d in found).items() if n > 1)
        if twice:
            raise ConfigurationError(f"source {self._name}: drives configured twice: {twice}")
        labels = Counter(d.label for d in found)
        clash = sorted(label for label, n in labels.items() if n > 1)
        if clash:
            raise ConfigurationError(
                f"source {self._name}: several drives are named {clash}: give them distinct "
                "names (drives: [{id: ..., name: ...}] or sites: [{site: ..., name: ...}])"
            )
        return found

    def _snapshot_path(self, drive_id: str) -> Path:
        return self._state_dir / f"drive-{stable_hash(drive_id, length=16)}.json"

    def _refresh(self, client: GraphClient, drive: _Drive, run: _Run) -> DriveSnapshot | None:
        """The drive's snapshot after a delta round; on failure, the last one (or None)."""
        path = self._snapshot_path(drive.id)
        old = DriveSnapshot.load(path, drive.id)
        try:
            new = self._delta(client, drive, old)
        except (GraphError, KeyError, TypeError) as exc:
            kept = "the last complete snapshot is listed" if old else "nothing is listed"
            run.errors.append(f"drive {drive.label}: delta query failed ({kept}): {exc}")
            log.warning("drive %s: delta query failed: %s", drive.label, exc)
            return old
        new.save(path)
        return new

    def _delta(
        self, client: GraphClient, drive: _Drive, old: DriveSnapshot | None
    ) -> DriveSnapshot:
        fresh = (
            f"/drives/{_q(drive.id)}/root/delta?$top={self._options.page_size}&$select={_SELECT}"
        )
        resume = old is not None and old.delta_link is not None and client.owns(old.delta_link)
        snapshot = DriveSnapshot(drive.id, None, dict(old.items) if resume and old else {})
        link = old.delta_link if resume and old and old.delta_link else fresh
        resynced = False
        while True:
            try:
                for page in client.pages(link):
                    for item in page.get("value") or []:
                        snapshot.apply(item)
                    if "@odata.deltaLink" in page:
                        snapshot.delta_link = str(page["@odata.deltaLink"])
                break
            except GraphGoneError as exc:
                if resynced:
                    raise
                log.warning("drive %s: %s; enumerating it again", drive.label, exc)
                resynced = True
                snapshot = DriveSnapshot(drive.id)
                location = exc.location
                link = location if location and client.owns(location) else fresh
        if snapshot.delta_link is None:
            raise GraphError(f"drive {drive.label}: the delta query ended without a deltaLink")
        if snapshot.items and not any(r["kind"] == "root" for r in snapshot.items.values()):
            # without its root no path resolves: listing nothing would hide the whole drive
            raise GraphError(f"drive {drive.label}: the delta query never returned the root")
        pruned = snapshot.prune()
        if pruned:
            log.info(
                "drive %s: %d items no longer below the root were dropped", drive.label, pruned
            )
        return snapshot

    def _permissions(
        self, client: GraphClient, drive: _Drive, item_ids: list[str]
    ) -> dict[str, list[Any] | str]:
        """item id -> its permissions, or why they could not be read."""
        requests = [
            (str(n), f"/drives/{_q(drive.id)}/items/{_q(item_id)}/permissions")
            for n, item_id in enumerate(item_ids)
        ]
        chunks = [requests[i : i + 20] for i in range(0, len(requests), 20)]
        with ThreadPoolExecutor(max_workers=self._options.max_concurrency) as pool:
            answers = [r for part in pool.map(client.batch, chunks) for r in part.values()]
        out: dict[str, list[Any] | str] = {}
        for answer in answers:
            out[item_ids[int(answer.id)]] = self._grants(client, answer)
        return out

    @staticmethod
    def _grants(client: GraphClient, answer: BatchResponse) -> list[Any] | str:
        if not answer.ok or not isinstance(answer.body, dict):
            return answer.describe()
        grants = list(answer.body.get("value") or [])
        link = answer.body.get("@odata.nextLink")
        try:
            for page in client.pages(str(link)) if link else ():
                grants += page.get("value") or []
        except GraphError as exc:
            return str(exc)
        return grants

    def _document(
        self,
        drive: _Drive,
        item_id: str,
        uri: str,
        record: dict[str, Any],
        grants: dict[str, list[Any] | str],
        now: datetime,
        run: _Run,
    ) -> SourceDocument:
        found = grants.get(item_id, "no permissions returned")
        acl: Acl | None = None
        error: str | None = None
        if isinstance(found, str):
            error = f"permissions could not be read: {found}"
            run.unreadable.append(f"{uri}: {found}")
        else:
            acl, notes = self._map.acl(found, drive.site_key, now)
            run.notes.update(notes)
        name = record["name"]
        mime = mime_type_for(name) or record.get("mime") or "application/octet-stream"
        return SourceDocument(
            source=self._name,
            id=stable_hash(self._name, uri),
            uri=uri,
            title=PurePosixPath(name).stem or name,
            mime_type=str(mime),
            content_hash=_content_hash(record),
            size_bytes=max(0, int(record.get("size") or 0)),
            modified_at=_timestamp(record.get("modified")) or _EPOCH,
            acl=acl,
            acl_error=error,
            metadata={
                "link": record.get("webUrl"),
                "drive_id": drive.id,
                "item_id": item_id,
                "path": uri,
            },
        )

    def read(self, document: SourceDocument) -> bytes:
        drive_id, item_id = document.metadata.get("drive_id"), document.metadata.get("item_id")
        if not isinstance(drive_id, str) or not isinstance(item_id, str):
            raise ConnectorError(f"{document.uri}: not a document of a SharePoint listing")
        return self.graph().download(f"/drives/{_q(drive_id)}/items/{_q(item_id)}/content")


def _content_hash(record: dict[str, Any]) -> str:
    """The content's hash from the file facet (never from permissions or metadata)."""
    hashes = record.get("hashes") or {}
    for key in ("sha256Hash", "quickXorHash", "sha1Hash", "crc32Hash"):
        if isinstance(hashes.get(key), str) and hashes[key]:
            return f"{key}:{hashes[key]}"
    if record.get("cTag"):
        return f"cTag:{record['cTag']}"
    return f"modified:{record.get('modified')}:{record.get('size')}"


def _site_key(drive: dict[str, Any], fallback: str) -> str:
    ids = drive.get("sharepointIds") or drive.get("sharePointIds")
    if isinstance(ids, dict) and isinstance(ids.get("siteId"), str) and ids["siteId"]:
        return str(ids["siteId"])
    return fallback


def _q(value: str, safe: str = "") -> str:
    return quote(value, safe="!" + safe)


def _certificate(path: Path, password_env: str | None) -> Credential:
    """MSAL's certificate credential from a PEM file holding the private key and certificate."""
    try:
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the client certificate {path}: {exc}") from exc
    key = re.search(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", text, re.S
    )
    cert = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    if key is None or cert is None:
        raise ConfigurationError(f"{path}: a PEM file with a private key and its certificate")
    credential = {"private_key": key.group(0), "public_certificate": cert.group(0)}
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise ConfigurationError(f"the environment variable {password_env} is not set")
        credential["passphrase"] = password
    return credential


def from_options(name: str, options: dict[str, Any], base_dir: Path) -> SharePointConnector:
    """The ``sharepoint`` kind of a sources file. Relative paths (``state_dir``, ``ca_bundle``,
    ``client_certificate_path``) are relative to the sources file's folder; ``state_dir``
    defaults to ``.rag/connectors/<name>`` there."""
    try:
        parsed = SharePointOptions.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"source {name}: sharepoint options: {problems}") from None

    def resolve(path: Path | None) -> Path | None:
        return None if path is None else path if path.is_absolute() else base_dir / path

    parsed = parsed.model_copy(
        update={
            "ca_bundle": resolve(parsed.ca_bundle),
            "client_certificate_path": resolve(parsed.client_certificate_path),
        }
    )
    state_dir = resolve(parsed.state_dir) or base_dir / ".rag" / "connectors" / name
    return SharePointConnector(name, parsed, state_dir)
