"""A connector for an Amazon S3 prefix (or an S3-compatible store), with the ACLs of folders.

``rag ingest s3://bucket/prefix`` or, in a sources file::

    - name: contracts
      connector: s3
      options:
        url: s3://legal-docs/contracts/   # or bucket: legal-docs, prefix: contracts/
        region: eu-west-1                 # optional; credentials come from boto3's chain
        profile: legal                    # optional named profile
        endpoint_url: http://minio:9000   # optional: an S3-compatible store
        page_size: 1000                   # keys per ListObjectsV2 page (MaxKeys)
        max_object_bytes: 52428800        # larger objects are quarantined, never downloaded
        case_sensitive_ids: false

Permissions work as in a folder: a ``.rag-acl.toml`` object under the prefix governs its "folder"
(the keys below its ``/``-separated path) with the same inheritance, per-file overrides and
fail-closed rules (:mod:`connectors.policy`). An object ``<key>.metadata.json`` beside an object
is its Bedrock Knowledge Base metadata sidecar (:mod:`connectors.sidecar`): its attributes become
document metadata (``attr.<name>``) and its ``allow``/``deny``/``public``/``inherit`` keys act as
one more override, applied after the folder's ``[files."name"]`` override. Policies, sidecars,
folder markers (keys ending in ``/``) and keys with a path segment starting with ``.`` are not
documents.

Change detection never downloads a document: its content hash is derived from the listing's
ETag and size and from its sidecar's attributes (a metadata-only change re-chunks the document,
whose unchanged text is served by the embedding cache); the sidecar's ACL keys are not part of
it, so an ACL change there is an ACL-only update. Policies and sidecars are read at every listing
(concurrently, and kept in memory by key and ETag, so a long-lived connector reads each version
once); documents are read only when new or changed, and only at the version that was listed.

A listing that fails part-way (any S3 or network error while paginating, or while reading a
policy or sidecar) is returned incomplete, so the pipeline deletes nothing. It still lists what it
could prove: a document is listed only if every policy and sidecar that could govern it is known,
either read or proven absent because the (sorted) listing went past its key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from connectors.base import Listing
from connectors.filesystem import _NAME_RE
from connectors.policy import POLICY_FILE, ROOT, Scope, broken, check_overrides, enter
from connectors.sidecar import MAX_SIDECAR_BYTES, SIDECAR_SUFFIX, Sidecar, parse_sidecar
from rag.config import ParsingSettings
from rag.errors import ConfigurationError, ConnectorError, DocumentTooLargeError, PolicyError
from rag.models import SourceDocument, stable_hash
from rag.parsing import mime_type_for

log = logging.getLogger(__name__)

DEFAULT_MAX_OBJECT_BYTES: Final = ParsingSettings().max_file_bytes
"""The pipeline's default file size limit (``RAG_PARSING__MAX_FILE_BYTES``)."""
MAX_POLICY_BYTES: Final = 1024 * 1024
_CACHE_BYTES: Final = 32 * 1024 * 1024
_OPTIONS: Final = frozenset(
    {
        "url",
        "bucket",
        "prefix",
        "endpoint_url",
        "region",
        "profile",
        "page_size",
        "max_object_bytes",
        "case_sensitive_ids",
        "max_concurrency",
        "max_attempts",
    }
)


@dataclass(frozen=True)
class _Object:
    key: str
    rel: str  # the key below the prefix
    size: int
    etag: str
    modified: datetime

    @property
    def folder(self) -> str:
        return self.rel.rpartition("/")[0]

    @property
    def name(self) -> str:
        return self.rel.rpartition("/")[2]


@dataclass
class _Pages:
    """What the paginated listing returned, and whether it is the whole prefix."""

    objects: list[_Object] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    last_key: str | None = None
    ordered: bool = True  # keys came in ascending order (as S3 general purpose buckets list)

    def proves_absent(self, key: str) -> bool:
        """True if ``key`` would have been listed by now: it is not there."""
        if not self.errors:
            return True
        return self.ordered and self.last_key is not None and key <= self.last_key


@dataclass
class _Tree:
    """The listed keys as folders: policies, documents, sidecars and each folder's file names."""

    policies: dict[str, _Object] = field(default_factory=dict)  # folder -> its policy object
    documents: list[_Object] = field(default_factory=list)
    sidecars: dict[str, _Object] = field(default_factory=dict)  # document rel -> its sidecar
    names: dict[str, set[str]] = field(default_factory=dict)  # folder -> names of its objects

    def folders(self) -> list[str]:
        """Every folder that holds a document or a policy, with its ancestors, parents first."""
        seen = {""}
        for folder in [*self.policies, *(d.folder for d in self.documents)]:
            parts = folder.split("/") if folder else []
            seen.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(seen, key=lambda f: (f.count("/") + (1 if f else 0), f))


@dataclass
class _Run:
    """One listing in progress: the pages, their tree, the policy and sidecar bytes read (and
    why some could not be), and the policy problems found so far."""

    pages: _Pages
    tree: _Tree
    bodies: dict[str, bytes]
    failed: dict[str, str]
    policy_errors: list[str] = field(default_factory=list)


class _BodyCache:
    """Small objects (policies, sidecars) by (key, ETag), within a byte budget (LRU)."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._used = 0
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[str, str], data: bytes) -> None:
        with self._lock:
            if key in self._items or len(data) > self._budget:
                return
            self._items[key] = data
            self._used += len(data)
            while self._used > self._budget:
                _, dropped = self._items.popitem(last=False)
                self._used -= len(dropped)


class S3Connector:
    """Lists the objects under ``s3://bucket/prefix``. Construction does no I/O: the boto3
    client is made on first use, with credentials from boto3's default chain (or ``profile``).

    ``case_sensitive_ids``: the policies' and sidecars' ids are case-sensitive (``user.cs:``,
    ``group.cs:`` principals). ``max_object_bytes``: larger objects are listed (so a deletion is
    still seen) but :meth:`read` refuses them without downloading, so the pipeline quarantines
    them as ``too_large``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        name: str | None = None,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        page_size: int = 1000,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        case_sensitive_ids: bool = False,
        max_concurrency: int = 16,
        max_attempts: int | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ConfigurationError(f"S3 bucket {bucket!r} is not a bucket name")
        if not 1 <= page_size <= 1000:
            raise ConfigurationError(f"page_size {page_size} must be between 1 and 1000")
        if max_object_bytes < 1 or max_concurrency < 1 or (max_attempts or 1) < 1:
            raise ConfigurationError("max_object_bytes, max_concurrency, max_attempts must be >= 1")
        self._bucket = bucket
        self._prefix = prefix.lstrip("/")
        if self._prefix and not self._prefix.endswith("/"):
            self._prefix += "/"
        self._name = name or bucket
        if not _NAME_RE.fullmatch(self._name):
            raise ConfigurationError(f"source name {self._name!r} must match {_NAME_RE.pattern}")
        self._endpoint_url = endpoint_url
        self._region = region
        self._profile = profile
        self._page_size = page_size
        self._max_object_bytes = max_object_bytes
        self._case_sensitive = case_sensitive_ids
        self._max_concurrency = max_concurrency
        self._max_attempts = max_attempts
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._cache = _BodyCache(_CACHE_BYTES)

    @property
    def name(self) -> str:
        return self._name

    @property
    def url(self) -> str:
        """``s3://bucket/prefix/``: where the documents are."""
        return f"s3://{self._bucket}/{self._prefix}"

    @property
    def client(self) -> Any:
        """The boto3 S3 client (made on first use)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        from botocore.config import Config

        retries: dict[str, Any] = {"mode": "standard"}
        if self._max_attempts is not None:
            retries["max_attempts"] = self._max_attempts
        config = Config(
            max_pool_connections=max(10, self._max_concurrency),
            retries=retries,
            connect_timeout=10,
            read_timeout=60,
        )
        try:
            with _SESSIONS_LOCK:  # making clients of one session is not thread-safe
                session = _session(self._profile)
                return session.client(
                    "s3", region_name=self._region, endpoint_url=self._endpoint_url, config=config
                )
        except (BotoCoreError, ValueError) as exc:
            raise ConfigurationError(f"{self.url}: cannot make an S3 client: {exc}") from exc

    # -- listing ---------------------------------------------------------------------------
    def list_documents(self) -> Listing:
        pages = self._pages()
        tree = _tree(pages.objects)
        run = _Run(pages, tree, *self._bodies(tree))
        errors = [*pages.errors, *run.failed.values()]
        scopes = self._scopes(run)
        documents = []
        for obj in tree.documents:
            scope = scopes.get(obj.folder)
            if scope is None:
                continue  # its folder's policies are unknown: not listed (the listing is partial)
            document = self._document(run, obj, scope)
            if document is not None:
                documents.append(document)
        documents.sort(key=lambda d: d.uri)
        return Listing(
            self._name,
            tuple(documents),
            complete=not errors,
            errors=tuple(errors),
            policy_errors=tuple(run.policy_errors),
        )

    def _pages(self) -> _Pages:
        pages = _Pages()
        client = self.client
        page = 0
        try:
            iterator = client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket,
                Prefix=self._prefix,
                PaginationConfig={"PageSize": self._page_size},
            )
            truncated = False
            for response in iterator:
                page += 1
                for item in response.get("Contents", ()):
                    self._add(pages, item)
                truncated = bool(response.get("IsTruncated"))
            if truncated:  # a store that ended a truncated listing without a continuation token
                pages.errors.append(f"{self.url}: the listing ended while still truncated")
        except ClientError as exc:
            if _code(exc) == "NoSuchBucket":
                raise ConnectorError(f"{self.url}: no such bucket") from exc
            pages.errors.append(self._stopped(pages, page + 1, exc))
        except BotoCoreError as exc:
            pages.errors.append(self._stopped(pages, page + 1, exc))
        if not pages.ordered and pages.errors:
            log.error(
                "%s: keys were listed out of order, so a partial listing proves nothing", self.url
            )
        return pages

    def _add(self, pages: _Pages, item: dict[str, Any]) -> None:
        key = str(item["Key"])
        if pages.last_key is not None and key <= pages.last_key:
            pages.ordered = False
        pages.last_key = key if pages.last_key is None else max(key, pages.last_key)
        modified = item.get("LastModified")
        pages.objects.append(
            _Object(
                key=key,
                rel=key[len(self._prefix) :],
                size=int(item.get("Size", 0)),
                etag=str(item.get("ETag", "")),
                modified=modified if isinstance(modified, datetime) else datetime.now(UTC),
            )
        )

    def _stopped(self, pages: _Pages, page: int, exc: Exception) -> str:
        log.warning("listing of %s stopped at page %d: %s", self.url, page, exc)
        return (
            f"{self.url}: listing stopped at page {page}, after {len(pages.objects)} objects: "
            f"{_describe(exc)}"
        )

    # -- policies and sidecars ---------------------------------------------------------------
    def _bodies(self, tree: _Tree) -> tuple[dict[str, bytes], dict[str, str]]:
        """The bytes of every policy and sidecar (by key), and an error per key that could not
        be read. Oversize ones are not read: they are broken, whatever they hold."""
        wanted = [
            o
            for o in [*tree.policies.values(), *tree.sidecars.values()]
            if o.size <= _limit(o.name)
        ]
        bodies: dict[str, bytes] = {}
        failed: dict[str, str] = {}
        if not wanted:
            return bodies, failed
        fetch = partial(self._small, self.client)
        if len(wanted) == 1:
            results: Iterable[bytes | str] = [fetch(wanted[0])]
        else:
            with ThreadPoolExecutor(min(self._max_concurrency, len(wanted))) as pool:
                results = list(pool.map(fetch, wanted))
        for obj, result in zip(wanted, results, strict=True):
            if isinstance(result, bytes):
                bodies[obj.key] = result
            else:
                failed[obj.key] = result
        return bodies, failed

    def _small(self, client: Any, obj: _Object) -> bytes | str:
        """The bytes of a policy or sidecar at its listed version, or why not."""
        cached = self._cache.get((obj.key, obj.etag))
        if cached is not None:
            return cached
        try:
            match = {"IfMatch": obj.etag} if obj.etag else {}
            response = client.get_object(Bucket=self._bucket, Key=obj.key, **match)
            data = bytes(response["Body"].read(_limit(obj.name) + 1))
            response["Body"].close()
        except (ClientError, BotoCoreError, OSError) as exc:
            log.warning("cannot read s3://%s/%s: %s", self._bucket, obj.key, exc)
            return f"s3://{self._bucket}/{obj.key}: cannot read: {_describe(exc)}"
        self._cache.put((obj.key, obj.etag), data)
        return data

    def _scopes(self, run: _Run) -> dict[str, Scope | None]:
        """Each folder's scope, parents first; None where its policies are not known (a policy
        could not be read, or a partial listing did not get far enough to tell)."""
        scopes: dict[str, Scope | None] = {}
        for folder in run.tree.folders():
            parent = scopes[folder.rpartition("/")[0]] if folder else ROOT
            scopes[folder] = None if parent is None else self._scope(run, folder, parent)
        return scopes

    def _scope(self, run: _Run, folder: str, parent: Scope) -> Scope | None:
        rel = f"{folder}/{POLICY_FILE}" if folder else POLICY_FILE
        policy = run.tree.policies.get(folder)
        if policy is None and not run.pages.proves_absent(self._prefix + rel):
            return None
        if policy is not None and policy.key in run.failed:
            return None
        if policy is not None and policy.size > MAX_POLICY_BYTES and parent.error is None:
            return broken(
                f"{rel}: {policy.size} bytes, over the {MAX_POLICY_BYTES}-byte limit of a policy",
                run.policy_errors,
            )
        data = run.bodies.get(policy.key) if policy is not None else None
        here = enter(parent, rel, data, self._case_sensitive, run.policy_errors)
        names = run.tree.names.get(folder, set())
        prefix = f"{self._prefix}{folder}/" if folder else self._prefix
        if any(n not in names and not run.pages.proves_absent(prefix + n) for n in here.files):
            return None  # an override may name a file the partial listing has not reached
        return check_overrides(here, rel, names, run.policy_errors)

    # -- documents ---------------------------------------------------------------------------
    def _document(self, run: _Run, obj: _Object, scope: Scope) -> SourceDocument | None:
        """The listed document, or None when what governs it is unknown (partial listing)."""
        sidecar_obj = run.tree.sidecars.get(obj.rel)
        sidecar: Sidecar | None = None
        acl_error = scope.error
        if sidecar_obj is None:
            if not run.pages.proves_absent(obj.key + SIDECAR_SUFFIX):
                return None
        elif sidecar_obj.key in run.failed:
            return None
        else:
            try:
                sidecar = self._sidecar(sidecar_obj, run.bodies)
                run.policy_errors.extend(sidecar.warnings)
            except PolicyError as exc:
                log.error("sidecar error, hiding its object: %s", exc)
                run.policy_errors.append(str(exc))
                acl_error = acl_error or f"policy error: {exc}"
        acl, label = scope.file(obj.name, sidecar.rule if sidecar is not None else None)
        digest = sidecar.digest() if sidecar is not None else ""
        content = json.dumps(["s3", obj.etag, obj.size, digest])
        metadata = {
            "path": obj.rel,
            "link": f"s3://{self._bucket}/{obj.key}",
            "etag": obj.etag,
            **(sidecar.metadata() if sidecar is not None else {}),
        }
        return SourceDocument(
            source=self._name,
            id=stable_hash(self._name, obj.rel),
            uri=obj.rel,
            title=PurePosixPath(obj.name).stem.replace("_", " ").replace("-", " "),
            mime_type=mime_type_for(obj.name) or "application/octet-stream",
            content_hash=hashlib.sha256(content.encode("utf-8")).hexdigest(),
            size_bytes=obj.size,
            modified_at=obj.modified,
            acl=None if acl_error is not None else acl,
            acl_error=acl_error,
            classification=label,
            metadata=metadata,
        )

    def _sidecar(self, obj: _Object, bodies: dict[str, bytes]) -> Sidecar:
        if obj.size > MAX_SIDECAR_BYTES:
            raise PolicyError(
                f"{obj.rel}: {obj.size} bytes, over the {MAX_SIDECAR_BYTES}-byte limit of a "
                f"metadata file"
            )
        return parse_sidecar(obj.rel, bodies[obj.key], self._case_sensitive)

    # -- reading -----------------------------------------------------------------------------
    def read(self, document: SourceDocument) -> bytes:
        """The bytes of the listed version of ``document`` (``DocumentTooLargeError`` without
        downloading when it is over ``max_object_bytes``; ``ConnectorError`` when it changed or
        vanished since it was listed: the next sync lists it again)."""
        limit = self._max_object_bytes
        if document.size_bytes > limit:
            raise DocumentTooLargeError(
                f"{document.size_bytes} bytes exceeds limit {limit} (not downloaded)"
            )
        key = self._prefix + document.uri
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        etag = document.metadata.get("etag")
        if isinstance(etag, str) and etag:
            params["IfMatch"] = etag
        try:
            response = self.client.get_object(**params)
            body = response["Body"]
            try:
                if int(response.get("ContentLength") or 0) > limit:
                    raise DocumentTooLargeError(
                        f"{response['ContentLength']} bytes exceeds {limit}"
                    )
                data = bytes(body.read(limit + 1))
            finally:
                body.close()
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "412"}:
                raise ConnectorError(
                    f"cannot read {document.uri}: it changed since it was listed"
                ) from exc
            raise ConnectorError(f"cannot read {document.uri}: {_describe(exc)}") from exc
        except (BotoCoreError, OSError) as exc:
            raise ConnectorError(f"cannot read {document.uri}: {_describe(exc)}") from exc
        if len(data) > limit:
            raise DocumentTooLargeError(f"more than {limit} bytes")
        return data


def _tree(objects: Iterable[_Object]) -> _Tree:
    """Sort the listed keys into policies, documents and sidecars. A key with an empty path
    segment (a folder marker ``a/``, ``a//b``, ``/a``) has no place in a folder tree (two keys
    could name one folder's policy): it is skipped, with a warning."""
    tree = _Tree()
    listed: set[str] = set()
    candidates: dict[str, _Object] = {}
    skipped: list[str] = []
    for obj in objects:
        if "" in obj.rel.split("/"):
            if obj.rel and not obj.rel.endswith("/"):
                skipped.append(obj.key)  # folder markers are expected; the others are odd
            continue
        tree.names.setdefault(obj.folder, set()).add(obj.name)
        if obj.folder and any(part.startswith(".") for part in obj.folder.split("/")):
            continue  # in a hidden folder
        if obj.name == POLICY_FILE:
            tree.policies[obj.folder] = obj
        elif obj.name.startswith("."):
            continue
        elif obj.name.endswith(SIDECAR_SUFFIX) and len(obj.name) > len(SIDECAR_SUFFIX):
            candidates[obj.rel[: -len(SIDECAR_SUFFIX)]] = obj
        else:
            tree.documents.append(obj)
            listed.add(obj.rel)
    tree.sidecars = {rel: obj for rel, obj in candidates.items() if rel in listed}
    if skipped:
        log.warning(
            "%d keys with an empty path segment are not documents: %s", len(skipped), skipped[:5]
        )
    return tree


_SESSIONS: dict[str | None, Any] = {}
_SESSIONS_LOCK: Final = threading.Lock()


def _session(profile: str | None) -> Any:
    """One boto3 session per profile and process (as ``boto3.client`` shares its default one):
    its loaded service models and resolved credentials serve every connector. Call with
    ``_SESSIONS_LOCK`` held."""
    if profile not in _SESSIONS:
        import boto3
        import botocore.session

        core = botocore.session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_timestamp
        )
        _SESSIONS[profile] = boto3.Session(botocore_session=core, profile_name=profile)
    return _SESSIONS[profile]


def _timestamp(value: Any) -> datetime:
    """An S3 timestamp (ISO 8601 in listings) parsed fast, else as botocore parses it: a
    listing of many objects otherwise spends a third of its time in dateutil."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)  # type: ignore[no-any-return]


def _limit(name: str) -> int:
    return MAX_POLICY_BYTES if name == POLICY_FILE else MAX_SIDECAR_BYTES


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def from_options(name: str, options: dict[str, Any], base_dir: Path) -> S3Connector:
    """The ``s3`` kind of a sources file (and ``rag ingest s3://bucket/prefix``): see the module
    docstring for the options."""
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ConfigurationError(f"source {name}: unknown s3 options {sorted(unknown)}")
    if "url" in options:
        if "bucket" in options or "prefix" in options:
            raise ConfigurationError(f"source {name}: give url, or bucket and prefix, not both")
        url = _text(name, options, "url") or ""
        if not url.startswith("s3://"):
            raise ConfigurationError(f"source {name}: url {url!r} is not an s3://bucket/prefix URL")
        bucket, _, prefix = url[len("s3://") :].partition("/")
    else:
        bucket = _text(name, options, "bucket") or ""
        prefix = _text(name, options, "prefix") or ""
    if not bucket:
        raise ConfigurationError(f"source {name}: the s3 connector needs options.url or bucket")
    return S3Connector(
        bucket,
        prefix,
        name,
        endpoint_url=_text(name, options, "endpoint_url"),
        region=_text(name, options, "region"),
        profile=_text(name, options, "profile"),
        page_size=_number(name, options, "page_size", 1000),
        max_object_bytes=_number(name, options, "max_object_bytes", DEFAULT_MAX_OBJECT_BYTES),
        case_sensitive_ids=_flag(name, options, "case_sensitive_ids"),
        max_concurrency=_number(name, options, "max_concurrency", 16),
        max_attempts=_number(name, options, "max_attempts", None),
    )


def _text(name: str, options: dict[str, Any], key: str) -> str | None:
    value = options.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"source {name}: option {key} must be a string, got {value!r}")
    return value


def _number(name: str, options: dict[str, Any], key: str, default: Any) -> Any:
    value = options.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigurationError(f"source {name}: option {key} must be an integer, got {value!r}")
    return value


def _flag(name: str, options: dict[str, Any], key: str) -> bool:
    value = options.get(key, False)
    if not isinstance(value, bool):
        raise ConfigurationError(f"source {name}: option {key} must be true or false")
    return value
