"""Verified identity from OIDC/JWT bearer tokens.

``TokenVerifier(settings.auth).verify(token)`` checks the signature with the issuer's keys (JWKS,
found through ``<issuer>/.well-known/openid-configuration`` unless ``jwks_url`` is set) under an
allow-list of asymmetric algorithms, then ``iss``, ``aud``, ``exp`` (required), ``nbf`` and
``iat`` with a small leeway, and maps the configured claims to a :class:`VerifiedIdentity`.

Keys are cached for ``jwks_cache_seconds``; a token with an unknown ``kid`` makes one refresh,
and refreshes happen at most every ``jwks_min_refresh_seconds`` (a storm of forged key ids
cannot hammer the issuer). Stale keys are never used. Every failure is an
:class:`~rag.errors.AuthenticationError` whose message says why and never echoes the token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field

from rag.config import AuthSettings, Settings
from rag.errors import AuthenticationError, ConfigurationError, InvalidPrincipalError
from rag.identity import UserContext, canonical_id, shown

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS: Final = 64 * 1024
"""Longer tokens are refused before they are parsed."""

_MAX_DOCUMENT_BYTES: Final = 1024 * 1024
_DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
_KEY_TYPES: Final = frozenset({"RSA", "EC", "OKP"})
_LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})


class VerifiedIdentity(BaseModel):
    """Who a verified token says the caller is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(description="The configured user claim, NFC with its case kept.")
    groups: frozenset[str] = Field(default=frozenset(), description="From the group claims.")
    issuer: str = Field(description="The token's (verified) ``iss``.")
    subject: str | None = Field(None, description="The token's ``sub``, when it has one.")
    claims_overage: bool = Field(
        False,
        description="Entra ID left the groups out (``_claim_names`` names groups, or "
        "``hasgroups``): ``groups`` is incomplete and must be resolved through the directory.",
    )

    def context(self) -> UserContext:
        """The caller for retrieval (invalid group ids are dropped by UserContext)."""
        return UserContext(
            user_id=self.user_id, groups=self.groups, issuer=self.issuer, subject=self.subject
        )


class TokenVerifier:
    """Verifies bearer tokens of one issuer. Thread-safe; construction does no I/O."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.issuer or not settings.issuer.strip():
            raise ConfigurationError("auth.issuer is not set: bearer tokens cannot be verified")
        if not settings.audience:
            raise ConfigurationError("auth.audience is empty: bearer tokens cannot be verified")
        self._settings = settings
        self._issuer: str = settings.issuer
        fetched = settings.jwks_url or self._issuer.rstrip("/") + _DISCOVERY_PATH
        if not _fetchable(fetched):
            raise ConfigurationError(
                f"cannot fetch keys from {fetched!r}: https is required (http only on loopback)"
            )
        self._client = http_client
        self._owns_client = http_client is None
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._last_error = ""
        self._jwks_uri = settings.jwks_url
        self._discovered_at: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """The verifier of ``settings.auth`` (ConfigurationError when it is not configured)."""
        return cls(settings.auth)

    def close(self) -> None:
        """Close the HTTP client, unless it was passed in."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def verify(self, token: str) -> VerifiedIdentity:
        """The identity a valid token proves, or AuthenticationError saying why not."""
        if not isinstance(token, str) or not token.strip():
            raise AuthenticationError("no bearer token")
        token = token.strip()
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationError(f"token refused: longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"token refused: malformed ({exc})") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._settings.algorithms:
            raise AuthenticationError(
                f"token refused: algorithm {shown(alg)} is not allowed "
                f"(allowed: {', '.join(self._settings.algorithms)})"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError("token refused: its header names no signing key (kid)")
        jwk = self._signing_key(kid)
        if jwk.get("alg", alg) != alg:
            raise AuthenticationError(
                f"token refused: signed with {alg}, but key {shown(kid)} is for "
                f"{shown(jwk.get('alg'))}"
            )
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._settings.audience,
                issuer=self._issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"token refused: {self._reason(exc)}") from exc
        return self._identity(claims)

    def _reason(self, exc: jwt.PyJWTError) -> str:
        if isinstance(exc, jwt.ExpiredSignatureError):
            return "it has expired"
        if isinstance(exc, jwt.ImmatureSignatureError):
            return f"it is not valid yet ({exc})"
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"its issuer is not {self._issuer!r}"
        if isinstance(exc, jwt.InvalidAudienceError):
            return f"its audience is not one of {self._settings.audience}"
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"it has no {exc.claim!r} claim"
        if isinstance(exc, jwt.InvalidSignatureError):
            return "the signature is invalid"
        if isinstance(exc, jwt.InvalidKeyError | jwt.PyJWKError):
            return f"its key does not fit the algorithm ({exc})"
        return str(exc)

    def _identity(self, claims: Mapping[str, Any]) -> VerifiedIdentity:
        name = self._settings.user_claim
        raw = _claim(claims, name)
        if not isinstance(raw, str) or not raw.strip():
            raise AuthenticationError(f"token refused: no user id in its {name!r} claim")
        try:
            user_id = canonical_id(raw, case_sensitive=True)
        except InvalidPrincipalError as exc:
            raise AuthenticationError(f"token refused: invalid {name!r} claim: {exc}") from exc
        groups: set[str] = set()
        for group_claim in self._settings.group_claims:
            value = _claim(claims, group_claim)
            if isinstance(value, str):
                groups.add(value)
            elif isinstance(value, list):
                groups.update(g for g in value if isinstance(g, str))
        names = claims.get("_claim_names")
        overage = (isinstance(names, dict) and "groups" in names) or claims.get("hasgroups") in (
            True,
            "true",
        )
        subject = claims.get("sub")
        return VerifiedIdentity(
            user_id=user_id,
            groups=frozenset(groups),
            issuer=self._issuer,
            subject=subject if isinstance(subject, str) else None,
            claims_overage=overage,
        )

    def _signing_key(self, kid: str) -> dict[str, Any]:
        """The JWK of ``kid``: from the cache, or after at most one (rate-limited) refresh."""
        with self._lock:
            now = self._clock()
            fresh = (
                self._fetched_at is not None
                and now - self._fetched_at < self._settings.jwks_cache_seconds
            )
            if fresh and kid in self._keys:
                return self._keys[kid]
            wait = self._settings.jwks_min_refresh_seconds
            if self._attempted_at is not None and now - self._attempted_at < wait:
                if not fresh:
                    raise AuthenticationError(
                        f"token refused: the signing keys are unavailable ({self._last_error})"
                    )
                raise AuthenticationError(
                    f"token refused: unknown signing key {shown(kid)} (keys were fetched less "
                    f"than {wait:g} s ago)"
                )
            self._refresh(now)
            if kid not in self._keys:
                raise AuthenticationError(
                    f"token refused: unknown signing key {shown(kid)} (not in the issuer's keys)"
                )
            return self._keys[kid]

    def _refresh(self, now: float) -> None:
        self._attempted_at = now
        try:
            uri = self._jwks_location(now)
            keys = _signing_keys(self._get_json(uri, "JWKS"), uri)
        except AuthenticationError as exc:
            self._last_error = str(exc)
            raise AuthenticationError(f"token refused: {exc}") from exc
        log.info("fetched %d signing keys from %s", len(keys), uri)
        self._keys, self._fetched_at = keys, now

    def _jwks_location(self, now: float) -> str:
        if self._settings.jwks_url:
            return self._settings.jwks_url
        found, ttl = self._discovered_at, self._settings.jwks_cache_seconds
        if self._jwks_uri and found is not None and now - found < ttl:
            return self._jwks_uri
        url = self._issuer.rstrip("/") + _DISCOVERY_PATH
        document = self._get_json(url, "discovery document")
        if document.get("issuer") != self._issuer:
            raise AuthenticationError(
                f"the discovery document at {url} names issuer {shown(document.get('issuer'))}, "
                f"not {self._issuer!r}"
            )
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not _fetchable(uri):
            raise AuthenticationError(f"the discovery document at {url} has no usable jwks_uri")
        self._jwks_uri, self._discovered_at = uri, now
        return uri

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        if self._client is None:
            self._client = httpx.Client(timeout=self._settings.http_timeout_seconds)
        try:
            response = self._client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise AuthenticationError(f"could not fetch the {what} from {url}: {exc}") from exc
        if response.status_code != 200:
            raise AuthenticationError(f"the {what} at {url} answered HTTP {response.status_code}")
        if len(response.content) > _MAX_DOCUMENT_BYTES:
            raise AuthenticationError(f"the {what} at {url} is larger than 1 MiB")
        try:
            document = response.json()
        except ValueError as exc:
            raise AuthenticationError(f"the {what} at {url} is not JSON") from exc
        if not isinstance(document, dict):
            raise AuthenticationError(f"the {what} at {url} is not a JSON object")
        return document


def _signing_keys(document: Mapping[str, Any], url: str) -> dict[str, dict[str, Any]]:
    """The public signing keys of a JWKS by kid (symmetric, private, encryption and kid-less
    keys are left out)."""
    keys: dict[str, dict[str, Any]] = {}
    entries = document.get("keys")
    for jwk in entries if isinstance(entries, list) else ():
        if not isinstance(jwk, dict) or jwk.get("kty") not in _KEY_TYPES or "d" in jwk:
            continue
        kid = jwk.get("kid")
        if isinstance(kid, str) and kid and jwk.get("use", "sig") == "sig":
            keys.setdefault(kid, jwk)
    if not keys:
        raise AuthenticationError(f"the JWKS at {url} has no usable signing keys")
    return keys


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by exact name, else by a dotted path into nested objects (realm_access.roles)."""
    if name in claims:
        return claims[name]
    if "." not in name:
        return None
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _fetchable(url: str) -> bool:
    """https, or http on a loopback host (tests, a local identity provider)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and parts.hostname in _LOOPBACK
