"""A small Microsoft Graph client: app-only tokens, throttling, paging and JSON batching.

- Tokens: OAuth 2.0 client credentials through ``msal.ConfidentialClientApplication`` (a client
  secret or a certificate), cached by MSAL in memory until they near expiry.
- Throttling: ``429``, ``502``, ``503`` and ``504`` are retried up to ``max_retries`` times,
  waiting what ``Retry-After`` says (capped at ``max_retry_after``), else backing off 1, 2, 4, ...
  seconds. Connection errors are retried the same way.
- Paging: :meth:`GraphClient.pages` follows ``@odata.nextLink``. Absolute links are followed only
  to the configured Graph origin, so the bearer token never leaves it.
- ``$batch``: :meth:`GraphClient.batch` sends GET requests 20 to a batch and retries the
  individual responses that were throttled, alone, after their ``Retry-After``.

Every failure is a :class:`GraphError` (a ``ConnectorError``); a ``410 Gone`` is a
:class:`GraphGoneError` carrying the ``Location`` Graph sent. Nothing here does I/O before its
first request.
"""

from __future__ import annotations

import email.utils
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import httpx

from rag.errors import ConfigurationError, ConnectorError

log = logging.getLogger(__name__)

BATCH_LIMIT: Final = 20
"""Graph's most requests in one ``$batch``."""
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
DEFAULT_SCOPE: Final = "https://graph.microsoft.com/.default"


class GraphError(ConnectorError):
    """A Graph request failed (after its retries): ``status`` and Graph's error ``code``."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class GraphGoneError(GraphError):
    """``410 Gone``: a delta token Graph no longer honours; ``location`` starts over."""

    def __init__(self, message: str, code: str | None, location: str | None) -> None:
        super().__init__(message, 410, code)
        self.location = location


class TokenSource(Protocol):
    def token(self) -> str:
        """A valid bearer token for Graph."""
        ...


Credential = str | dict[str, str]
"""A client secret, or MSAL's certificate form ``{"private_key": ..., "public_certificate":
...}``."""


class MsalTokenSource:
    """App-only tokens for ``scope`` from ``{authority_url}/{tenant_id}``. ``credential`` is
    called on first use (so a missing secret is reported then, not at construction)."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        credential: Callable[[], Credential],
        authority_url: str,
        scope: str = DEFAULT_SCOPE,
        ca_bundle: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._tenant_id = tenant_id
        self._client_id = client_id
        self._credential = credential
        self._authority = f"{authority_url.rstrip('/')}/{tenant_id}"
        self._scope = scope
        self._ca_bundle = ca_bundle
        self._timeout = timeout
        self._app: Any = None
        self._lock = threading.Lock()

    def token(self) -> str:
        import msal

        try:
            with self._lock:
                if self._app is None:
                    self._app = msal.ConfidentialClientApplication(
                        self._client_id,
                        client_credential=self._credential(),
                        authority=self._authority,
                        # the authority is what the configuration names: trust it as given
                        instance_discovery=False,
                        http_client=_MsalHttp(http_client(self._ca_bundle, self._timeout)),
                    )
                result = self._app.acquire_token_for_client(scopes=[self._scope])
        except (ValueError, httpx.HTTPError) as exc:
            self._app = None
            raise GraphError(f"cannot reach the token authority {self._authority}: {exc}") from exc
        if not isinstance(result, dict) or "access_token" not in result:
            error = result.get("error") if isinstance(result, dict) else None
            text = result.get("error_description", "") if isinstance(result, dict) else ""
            first = str(text).splitlines()[0] if text else ""
            raise GraphError(
                f"no token for client {self._client_id} in tenant {self._tenant_id}: "
                f"{error}: {first}".rstrip(": "),
                code=str(error) if error else None,
            )
        return str(result["access_token"])


class _MsalHttp:
    """MSAL's ``http_client`` over httpx: the same TLS trust as the Graph calls (MSAL's default
    ``requests`` session lets ``REQUESTS_CA_BUNDLE`` override a configured CA bundle)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def post(
        self,
        url: str,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        **_: Any,
    ) -> httpx.Response:
        if isinstance(data, str | bytes):
            return self._client.post(url, params=params, content=data, headers=headers)
        if isinstance(data, dict):  # MSAL gives a client assertion as bytes, as requests takes it
            data = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
        return self._client.post(url, params=params, data=data, headers=headers)

    def get(self, url: str, params: Any = None, headers: Any = None, **_: Any) -> httpx.Response:
        return self._client.get(url, params=params, headers=headers)

    def close(self) -> None:
        self._client.close()


def http_client(ca_bundle: Path | None, timeout: float) -> httpx.Client:
    """An httpx client trusting ``ca_bundle`` (a PEM file) or the system's CAs."""
    verify: ssl.SSLContext | bool = True
    if ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(ca_bundle))
    return httpx.Client(timeout=timeout, verify=verify)


@dataclass(frozen=True)
class BatchResponse:
    """One response of a ``$batch``: ``status`` 0 when the batch itself failed."""

    id: str
    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def describe(self) -> str:
        """``403 accessDenied: message`` for an error response."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(error, dict):
            return f"{self.status} {error.get('code', '')}: {error.get('message', '')}".strip()
        return f"{self.status}" if self.status else str(self.body)


class GraphClient:
    """Requests against ``{graph_url}/v1.0``: ``/path`` or an absolute link under it."""

    def __init__(
        self,
        graph_url: str,
        tokens: TokenSource,
        *,
        ca_bundle: Path | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_retry_after: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(graph_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigurationError(f"graph_url {graph_url!r} must be an https:// URL")
        self._root = graph_url.rstrip("/") + "/v1.0"
        self._origin = (parts.scheme, parts.netloc.lower())
        self._tokens = tokens
        self._ca_bundle = ca_bundle
        self._timeout = timeout
        self._max_retries = max_retries
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------
    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = http_client(self._ca_bundle, self._timeout)
            return self._http

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def owns(self, link: str) -> bool:
        """Whether ``link`` is an absolute link to the Graph origin."""
        parts = urlsplit(link)
        return (parts.scheme, parts.netloc.lower()) == self._origin

    def url(self, path_or_link: str) -> str:
        """The absolute URL of ``/path``, or ``path_or_link`` itself when it is a link to the
        Graph origin; GraphError for a link anywhere else (it would carry our token)."""
        if path_or_link.startswith("/"):
            return self._root + path_or_link
        if not self.owns(path_or_link):
            where = urlsplit(path_or_link).netloc or path_or_link[:40]
            raise GraphError(f"refusing to follow a link outside {self._root}: {where}")
        return path_or_link

    def request(
        self,
        method: str,
        path_or_link: str,
        *,
        json: Any = None,
        follow_redirects: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The response to one request, retried while throttled; GraphError for any status of
        400 or more once the retries are spent."""
        url = self.url(path_or_link)
        shown = f"{method} {urlsplit(url).path}"
        attempt = 0
        while True:
            send = {"Authorization": f"Bearer {self._tokens.token()}", **(headers or {})}
            try:
                response = self._client().request(
                    method, url, json=json, headers=send, follow_redirects=follow_redirects
                )
            except httpx.TransportError as exc:
                if attempt >= self._max_retries:
                    raise GraphError(f"{shown}: {type(exc).__name__}: {exc}") from exc
                wait = self._backoff(attempt, None)
                log.warning("%s: %s; retry %d in %.1fs", shown, exc, attempt + 1, wait)
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUSES or attempt >= self._max_retries:
                    raise _error(shown, response)
                wait = self._backoff(attempt, response.headers.get("Retry-After"))
                log.warning(
                    "%s: %d; retry %d in %.1fs", shown, response.status_code, attempt + 1, wait
                )
            self._sleep(wait)
            attempt += 1

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            seconds = retry_after_seconds(retry_after)
            if seconds is not None:
                return min(seconds, self._max_retry_after)
        return float(min(2**attempt, self._max_retry_after))

    # -- the calls --------------------------------------------------------------------------
    def get_json(self, path_or_link: str) -> dict[str, Any]:
        return _json_object(self.request("GET", path_or_link), path_or_link)

    def pages(self, path_or_link: str) -> Iterator[dict[str, Any]]:
        """Every page of a collection, following ``@odata.nextLink``; the last page is the one
        without it (a delta query's last page carries ``@odata.deltaLink``)."""
        link: str | None = path_or_link
        while link is not None:
            page = self.get_json(link)
            yield page
            next_link = page.get("@odata.nextLink")
            link = str(next_link) if next_link else None

    def download(self, path_or_link: str) -> bytes:
        """The bytes of ``.../content``: Graph answers with a redirect to a pre-authenticated
        URL, which is followed (without our token when it is on another host)."""
        return self.request("GET", path_or_link, follow_redirects=True).content

    def batch(self, requests: Sequence[tuple[str, str]]) -> dict[str, BatchResponse]:
        """The responses to GET ``(id, /path)`` requests, sent in batches of 20. A throttled
        response is retried (in a later batch) up to ``max_retries`` times; every other
        response, error or not, is returned as Graph gave it. A batch that fails as a whole
        answers each of its requests with status 0 and the reason."""
        results: dict[str, BatchResponse] = {}
        for start in range(0, len(requests), BATCH_LIMIT):
            results.update(self._batch(requests[start : start + BATCH_LIMIT]))
        return results

    def _batch(self, chunk: Sequence[tuple[str, str]]) -> dict[str, BatchResponse]:
        pending = dict(chunk)
        results: dict[str, BatchResponse] = {}
        for attempt in range(self._max_retries + 1):
            body = {"requests": [{"id": i, "method": "GET", "url": u} for i, u in pending.items()]}
            try:
                page = _json_object(self.request("POST", "/$batch", json=body), "/$batch")
            except GraphError as exc:
                return {**results, **{i: BatchResponse(i, 0, str(exc)) for i in pending}}
            waits: list[float] = []
            for raw in page.get("responses", []):
                answer = _batch_response(raw)
                if answer is None or answer.id not in pending:
                    continue
                results[answer.id] = answer
                if answer.status in RETRY_STATUSES and attempt < self._max_retries:
                    waits.append(self._backoff(attempt, _header(answer.headers, "Retry-After")))
                else:
                    del pending[answer.id]
            missing = [i for i in pending if i not in results]
            for i in missing:  # a response Graph left out: an error, never a guess
                results[i] = BatchResponse(i, 0, "no response in the batch")
                del pending[i]
            if not pending:
                break
            self._sleep(max(waits, default=0.0))
        return results


def retry_after_seconds(value: str) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (RFC 9110)."""
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _batch_response(raw: Any) -> BatchResponse | None:
    if not isinstance(raw, dict) or "id" not in raw:
        return None
    headers = raw.get("headers")
    return BatchResponse(
        id=str(raw["id"]),
        status=int(raw.get("status", 0)),
        body=raw.get("body"),
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
    )


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise GraphError(f"{what}: the response is not JSON") from exc
    if not isinstance(data, dict):
        raise GraphError(f"{what}: the response is not a JSON object")
    return data


def _error(shown: str, response: httpx.Response) -> GraphError:
    code: str | None = None
    message = response.reason_phrase
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        code = str(error.get("code") or "") or None
        message = str(error.get("message") or message)
    text = f"{shown}: {response.status_code} {code or ''}: {message}".replace("  ", " ")
    if response.status_code == 410:
        return GraphGoneError(text, code, response.headers.get("Location"))
    return GraphError(text, response.status_code, code)
