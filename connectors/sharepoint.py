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

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import quote

from pydantic import ValidationError

from connectors.base import SOURCE_NAME, Listing
from connectors.graph import BatchResponse, Credential, GraphClient, GraphError, MsalTokenSource
from connectors.sharepoint_acl import PrincipalMap, timestamp
from connectors.sharepoint_options import SharePointOptions, load_certificate
from connectors.sharepoint_snapshot import DriveSnapshot, delta_round, snapshot_path
from rag.errors import ConfigurationError, ConnectorError
from rag.identity import PUBLIC, canonical_principal
from rag.models import Acl, SourceDocument, stable_hash
from rag.parsing import mime_type_for

log = logging.getLogger(__name__)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


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
        if not SOURCE_NAME.fullmatch(name):
            raise ConfigurationError(f"source name {name!r} must match {SOURCE_NAME.pattern}")
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
        return load_certificate(o.client_certificate_path, o.client_certificate_password_env)

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

    def _refresh(self, client: GraphClient, drive: _Drive, run: _Run) -> DriveSnapshot | None:
        """The drive's snapshot after a delta round; on failure, the last one (or None)."""
        path = snapshot_path(self._state_dir, drive.id)
        old = DriveSnapshot.load(path, drive.id)
        try:
            new = delta_round(client, drive.id, drive.label, old, self._options.page_size)
        except (GraphError, KeyError, TypeError) as exc:
            kept = "the last complete snapshot is listed" if old else "nothing is listed"
            run.errors.append(f"drive {drive.label}: delta query failed ({kept}): {exc}")
            log.warning("drive %s: delta query failed: %s", drive.label, exc)
            return old
        new.save(path)
        return new

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
            modified_at=timestamp(record.get("modified")) or _EPOCH,
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
