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

import hashlib
import json
import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from connectors.base import SOURCE_NAME, Listing
from connectors.policy import Scope
from connectors.s3_client import BodyCache, describe, error_code, make_client
from connectors.s3_keys import (
    KeyTree,
    ListingRun,
    Pages,
    S3Object,
    folder_scopes,
    key_tree,
    size_limit,
)
from connectors.s3_options import OPTIONS, flag, number, text
from connectors.sidecar import MAX_SIDECAR_BYTES, SIDECAR_SUFFIX, Sidecar, parse_sidecar
from rag.config import ParsingSettings
from rag.errors import ConfigurationError, ConnectorError, DocumentTooLargeError, PolicyError
from rag.models import SourceDocument, stable_hash
from rag.parsing import mime_type_for

log = logging.getLogger(__name__)

DEFAULT_MAX_OBJECT_BYTES: Final = ParsingSettings().max_file_bytes
"""The pipeline's default file size limit (``RAG_PARSING__MAX_FILE_BYTES``)."""
_CACHE_BYTES: Final = 32 * 1024 * 1024


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
        if not SOURCE_NAME.fullmatch(self._name):
            raise ConfigurationError(f"source name {self._name!r} must match {SOURCE_NAME.pattern}")
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
        self._cache = BodyCache(_CACHE_BYTES)

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
        try:
            return make_client(
                self._profile,
                self._region,
                self._endpoint_url,
                self._max_concurrency,
                self._max_attempts,
            )
        except (BotoCoreError, ValueError) as exc:
            raise ConfigurationError(f"{self.url}: cannot make an S3 client: {exc}") from exc

    # -- listing ---------------------------------------------------------------------------
    def list_documents(self) -> Listing:
        pages = self._pages()
        tree = key_tree(pages.objects)
        run = ListingRun(pages, tree, *self._bodies(tree))
        errors = [*pages.errors, *run.failed.values()]
        scopes = folder_scopes(run, self._prefix, self._case_sensitive)
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

    def _pages(self) -> Pages:
        pages = Pages()
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
            if error_code(exc) == "NoSuchBucket":
                raise ConnectorError(f"{self.url}: no such bucket") from exc
            pages.errors.append(self._stopped(pages, page + 1, exc))
        except BotoCoreError as exc:
            pages.errors.append(self._stopped(pages, page + 1, exc))
        if not pages.ordered and pages.errors:
            log.error(
                "%s: keys were listed out of order, so a partial listing proves nothing", self.url
            )
        return pages

    def _add(self, pages: Pages, item: dict[str, Any]) -> None:
        key = str(item["Key"])
        if pages.last_key is not None and key <= pages.last_key:
            pages.ordered = False
        pages.last_key = key if pages.last_key is None else max(key, pages.last_key)
        modified = item.get("LastModified")
        pages.objects.append(
            S3Object(
                key=key,
                rel=key[len(self._prefix) :],
                size=int(item.get("Size", 0)),
                etag=str(item.get("ETag", "")),
                modified=modified if isinstance(modified, datetime) else datetime.now(UTC),
            )
        )

    def _stopped(self, pages: Pages, page: int, exc: Exception) -> str:
        log.warning("listing of %s stopped at page %d: %s", self.url, page, exc)
        return (
            f"{self.url}: listing stopped at page {page}, after {len(pages.objects)} objects: "
            f"{describe(exc)}"
        )

    # -- policies and sidecars ---------------------------------------------------------------
    def _bodies(self, tree: KeyTree) -> tuple[dict[str, bytes], dict[str, str]]:
        """The bytes of every policy and sidecar (by key), and an error per key that could not
        be read. Oversize ones are not read: they are broken, whatever they hold."""
        wanted = [
            o
            for o in [*tree.policies.values(), *tree.sidecars.values()]
            if o.size <= size_limit(o.name)
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

    def _small(self, client: Any, obj: S3Object) -> bytes | str:
        """The bytes of a policy or sidecar at its listed version, or why not."""
        cached = self._cache.get((obj.key, obj.etag))
        if cached is not None:
            return cached
        try:
            match = {"IfMatch": obj.etag} if obj.etag else {}
            response = client.get_object(Bucket=self._bucket, Key=obj.key, **match)
            data = bytes(response["Body"].read(size_limit(obj.name) + 1))
            response["Body"].close()
        except (ClientError, BotoCoreError, OSError) as exc:
            log.warning("cannot read s3://%s/%s: %s", self._bucket, obj.key, exc)
            return f"s3://{self._bucket}/{obj.key}: cannot read: {describe(exc)}"
        self._cache.put((obj.key, obj.etag), data)
        return data

    # -- documents ---------------------------------------------------------------------------
    def _document(self, run: ListingRun, obj: S3Object, scope: Scope) -> SourceDocument | None:
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

    def _sidecar(self, obj: S3Object, bodies: dict[str, bytes]) -> Sidecar:
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
            if error_code(exc) in {"PreconditionFailed", "412"}:
                raise ConnectorError(
                    f"cannot read {document.uri}: it changed since it was listed"
                ) from exc
            raise ConnectorError(f"cannot read {document.uri}: {describe(exc)}") from exc
        except (BotoCoreError, OSError) as exc:
            raise ConnectorError(f"cannot read {document.uri}: {describe(exc)}") from exc
        if len(data) > limit:
            raise DocumentTooLargeError(f"more than {limit} bytes")
        return data


def from_options(name: str, options: dict[str, Any], base_dir: Path) -> S3Connector:
    """The ``s3`` kind of a sources file (and ``rag ingest s3://bucket/prefix``): see the module
    docstring for the options."""
    unknown = set(options) - OPTIONS
    if unknown:
        raise ConfigurationError(f"source {name}: unknown s3 options {sorted(unknown)}")
    if "url" in options:
        if "bucket" in options or "prefix" in options:
            raise ConfigurationError(f"source {name}: give url, or bucket and prefix, not both")
        url = text(name, options, "url") or ""
        if not url.startswith("s3://"):
            raise ConfigurationError(f"source {name}: url {url!r} is not an s3://bucket/prefix URL")
        bucket, _, prefix = url[len("s3://") :].partition("/")
    else:
        bucket = text(name, options, "bucket") or ""
        prefix = text(name, options, "prefix") or ""
    if not bucket:
        raise ConfigurationError(f"source {name}: the s3 connector needs options.url or bucket")
    return S3Connector(
        bucket,
        prefix,
        name,
        endpoint_url=text(name, options, "endpoint_url"),
        region=text(name, options, "region"),
        profile=text(name, options, "profile"),
        page_size=number(name, options, "page_size", 1000),
        max_object_bytes=number(name, options, "max_object_bytes", DEFAULT_MAX_OBJECT_BYTES),
        case_sensitive_ids=flag(name, options, "case_sensitive_ids"),
        max_concurrency=number(name, options, "max_concurrency", 16),
        max_attempts=number(name, options, "max_attempts", None),
    )
