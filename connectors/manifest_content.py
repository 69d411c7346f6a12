"""The content of manifest entries (see ``connectors.manifest``): the hash listed for a text,
file or URL, reading the bytes back and checking they are the ones listed, and the bounds on
what may be read (``path_roots`` for files, ``url_prefixes`` for http(s) URLs, redirects
included, ``max_entry_bytes``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from connectors.manifest_lines import Entry
from rag.errors import ConfigurationError, ConnectorError, DocumentTooLargeError
from rag.identity import shown
from rag.models import SourceDocument, stable_hash

log = logging.getLogger("connectors.manifest")  # the connector's logger, as before the split

UNAVAILABLE: Final = "unavailable:"  # the content hash of what could not be read when listed
HIDDEN: Final = "hidden:"  # the content hash of a document hidden by a broken line
ETAG: Final = "etag:"
_MAX_REDIRECTS: Final = 5


class Http:
    """An HTTP client made on first use (most manifests fetch nothing), closed on exit."""

    def __init__(self, timeout: float, transport: httpx.BaseTransport | None) -> None:
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.Client | None = None

    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout, transport=self._transport)
        return self._client

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()


class ContentReader:
    """Hashes and reads the content of the entries of the source ``name``, whose manifest is in
    ``manifest_dir``. Construction does no I/O (it checks the ``url_prefixes``)."""

    def __init__(
        self,
        name: str,
        manifest_dir: Path,
        *,
        roots: Sequence[Path],
        url_prefixes: Sequence[str],
        max_entry_bytes: int,
        http_timeout_seconds: float,
        transport: httpx.BaseTransport | None,
    ) -> None:
        self._name = name
        self._manifest_dir = manifest_dir
        self._roots = tuple(Path(r) for r in roots)
        self._prefixes = tuple(_url_prefix(name, p) for p in url_prefixes)
        self._max_entry = max_entry_bytes
        self._timeout = http_timeout_seconds
        self._transport = transport

    def http(self) -> Http:
        return Http(self._timeout, self._transport)

    # -- listing --------------------------------------------------------------------------------
    def listed_hash(self, entry: Entry, http: Http) -> tuple[str, int, datetime | None]:
        """The content hash, size and file time of an entry at listing; what cannot be read
        gets a hash naming the failure (``read()`` then quarantines it with the reason)."""
        if entry.text is not None:
            data = entry.text.encode("utf-8")
            return hashlib.sha256(data).hexdigest(), len(data), None
        try:
            local = self._local_path(entry)
            if local is not None:
                return self._file_hash(local, entry.content_hash)
            assert entry.url is not None
            self._check_url(entry.url)
            if entry.content_hash is not None:
                return entry.content_hash, 0, None
            if entry.etag is not None:
                return _etag_hash(entry.etag), 0, None
            data, _ = self._fetch(http.client(), entry.url)
            return hashlib.sha256(data).hexdigest(), len(data), None
        except (ConnectorError, DocumentTooLargeError) as exc:
            log.warning("manifest %s: %s: not readable now: %s", self._name, entry.id, exc)
            return UNAVAILABLE + stable_hash(str(exc), length=16), 0, None

    def _file_hash(self, path: Path, declared: str | None) -> tuple[str, int, datetime | None]:
        try:
            stat = path.stat()
            at = datetime.fromtimestamp(stat.st_mtime, UTC)
            if declared is not None:
                return declared, stat.st_size, at
            if stat.st_size > self._max_entry:
                raise DocumentTooLargeError(f"{path}: {stat.st_size} bytes > {self._max_entry}")
            with path.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            return digest, stat.st_size, at
        except OSError as exc:
            if declared is not None:
                return declared, 0, None  # read() says what is wrong
            raise ConnectorError(f"cannot read {path}: {exc}") from exc

    def _local_path(self, entry: Entry) -> Path | None:
        """The file of a path or file:// entry, checked to be under a root; None for http(s)."""
        if entry.path is not None:
            path = Path(entry.path)
        else:
            assert entry.url is not None
            parts = urlsplit(entry.url)
            if parts.scheme in ("http", "https"):
                return None
            if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
                raise ConnectorError(f"url {shown(entry.url)}: only file:// and http(s):// URLs")
            path = Path(unquote(parts.path))
        path = path if path.is_absolute() else self._manifest_dir / path
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root.resolve()) for root in self._roots):
            roots = ", ".join(str(r) for r in self._roots)
            raise ConnectorError(
                f"{path} is outside the folders this source may read ({roots}; set the "
                f"source's path_roots option to allow others)"
            )
        return resolved

    # -- reading --------------------------------------------------------------------------------
    def read(self, document: SourceDocument, entry: Entry) -> bytes:
        """The bytes of ``entry``, checked to be the ones ``document`` was listed with."""
        etag: str | None = None
        if entry.text is not None:
            data = entry.text.encode("utf-8")
            if len(data) > self._max_entry:
                raise DocumentTooLargeError(f"{len(data)} bytes exceeds limit {self._max_entry}")
        elif (local := self._local_path(entry)) is not None:
            data = self._read_file(local)
        else:
            assert entry.url is not None
            self._check_url(entry.url)
            with self.http() as http:
                data, etag = self._fetch(http.client(), entry.url)
        self._verify(document, entry, data, etag)
        return data

    def _read_file(self, path: Path) -> bytes:
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > self._max_entry:
                    raise DocumentTooLargeError(f"{size} bytes exceeds limit {self._max_entry}")
                return handle.read(self._max_entry + 1)
        except OSError as exc:
            raise ConnectorError(f"cannot read {path}: {exc}") from exc

    def _verify(
        self, document: SourceDocument, entry: Entry, data: bytes, etag: str | None
    ) -> None:
        listed = document.content_hash
        if listed.startswith(ETAG):
            if entry.etag is None or listed != _etag_hash(entry.etag):
                raise ConnectorError(f"{document.uri}: its manifest entry changed since listing")
            if etag is not None and _bare_etag(etag) != _bare_etag(entry.etag):
                raise ConnectorError(
                    f"{document.uri}: the server's ETag {shown(etag)} is not the manifest's "
                    f"{shown(entry.etag)}: the content changed since the manifest was written"
                )
            return
        if listed.startswith((UNAVAILABLE, HIDDEN)):
            raise ConnectorError(
                f"{document.uri}: could not be read when the manifest was listed; the next run "
                f"lists it again"
            )
        if hashlib.sha256(data).hexdigest() == listed:
            return
        if entry.content_hash is not None:
            raise ConnectorError(
                f"{document.uri}: the bytes do not have the manifest's content_hash {listed}"
            )
        raise ConnectorError(
            f"{document.uri}: changed since it was listed (for a page that changes at each "
            f"fetch, give an etag or content_hash); the next run lists it again"
        )

    # -- http -----------------------------------------------------------------------------------
    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        for scheme, netloc, path in self._prefixes:
            if (parts.scheme, parts.netloc.lower()) == (scheme, netloc) and (
                parts.path or "/"
            ).startswith(path):
                return
        allowed = ", ".join(f"{s}://{n}{p}" for s, n, p in self._prefixes) or "none"
        raise ConnectorError(f"url {shown(url)} is not under the source's url_prefixes ({allowed})")

    def _fetch(self, client: httpx.Client, url: str) -> tuple[bytes, str | None]:
        """GET ``url`` (redirects followed only within the allowed prefixes), at most
        ``max_entry_bytes``; the bytes and the response's ETag."""
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        self._check_url(url)
                        continue
                    response.raise_for_status()
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > self._max_entry:
                        raise DocumentTooLargeError(
                            f"{url}: {declared} bytes exceeds limit {self._max_entry}"
                        )
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > self._max_entry:
                            raise DocumentTooLargeError(f"{url}: more than {self._max_entry} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks), response.headers.get("etag")
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            raise ConnectorError(f"cannot fetch {shown(url)}: {exc}") from exc
        raise ConnectorError(f"cannot fetch {shown(url)}: more than {_MAX_REDIRECTS} redirects")


def _bare_etag(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def _etag_hash(etag: str) -> str:
    """The content hash listed for an entry that gives an ``etag``."""
    return ETAG + stable_hash(_bare_etag(etag))


def _url_prefix(name: str, prefix: str) -> tuple[str, str, str]:
    """An ``url_prefixes`` entry of the source ``name`` as (scheme, host, path)."""
    parts = urlsplit(prefix)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"source {name}: url_prefixes entry {prefix!r} must be an http(s)://host/ URL"
        )
    return parts.scheme, parts.netloc.lower(), parts.path or "/"
