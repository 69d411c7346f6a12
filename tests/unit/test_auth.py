"""Bearer-token verification against a loopback identity provider (discovery + JWKS)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from rag.auth import TokenVerifier, VerifiedIdentity
from rag.config import AuthSettings, Settings
from rag.errors import AccessDeniedError, AuthenticationError, ConfigurationError

AUDIENCE = "api://rag"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
DROP = object()


def _jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    jwk: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


class IdP:
    """A loopback OIDC provider: discovery document and JWKS, counting every request."""

    def __init__(self) -> None:
        self.reset()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                idp.hits[self.path] += 1
                if self.path == "/.well-known/openid-configuration":
                    body: Any = {
                        "issuer": idp.discovery_issuer or idp.issuer,
                        "jwks_uri": f"{idp.issuer}/keys",
                    }
                elif self.path == "/keys":
                    body = idp.jwks
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reset(self) -> None:
        self.hits: Counter[str] = Counter()
        self.jwks: dict[str, Any] = {"keys": [_jwk(RSA_KEY, "rsa-1"), _jwk(EC_KEY, "ec-1")]}
        self.discovery_issuer: str | None = None

    @property
    def jwks_hits(self) -> int:
        return self.hits["/keys"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp(idp_server: IdP) -> IdP:
    idp_server.reset()
    return idp_server


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_verifier(idp: IdP, clock: Clock, **overrides: Any) -> TokenVerifier:
    settings = AuthSettings(issuer=idp.issuer, audience=[AUDIENCE, "other"], **overrides)
    return TokenVerifier(settings, clock=clock)


@pytest.fixture
def verifier(idp: IdP, clock: Clock) -> Iterator[TokenVerifier]:
    v = make_verifier(idp, clock)
    yield v
    v.close()


def make_token(
    idp: IdP, *, key: Any = RSA_KEY, kid: str = "rsa-1", alg: str = "RS256", **claims: Any
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": idp.issuer,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "groups": ["hr", "employees"],
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not DROP}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refused(verifier: TokenVerifier, token: str, match: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError, match=match) as info:
        verifier.verify(token)
    message = str(info.value)
    assert token not in message
    assert all(len(part) < 20 or part not in message for part in token.split("."))
    return info.value


# -- valid tokens ------------------------------------------------------------------------------


def test_valid_rs256_token(verifier: TokenVerifier, idp: IdP) -> None:
    identity = verifier.verify(make_token(idp))
    assert identity == VerifiedIdentity(
        user_id="alice", groups=frozenset({"hr", "employees"}), issuer=idp.issuer, subject="alice"
    )
    assert identity.context().principals() == {
        "user:alice",
        "group:hr",
        "group:employees",
        "public",
    }
    assert idp.hits == {"/.well-known/openid-configuration": 1, "/keys": 1}


def test_valid_es256_and_ps256_tokens(verifier: TokenVerifier, idp: IdP) -> None:
    es = verifier.verify(make_token(idp, key=EC_KEY, kid="ec-1", alg="ES256", sub="bob"))
    ps = verifier.verify(make_token(idp, alg="PS256", sub="carol", groups=["x"]))
    assert (es.user_id, es.groups) == ("bob", frozenset({"hr", "employees"}))
    assert (ps.user_id, ps.groups) == ("carol", frozenset({"x"}))
    assert idp.jwks_hits == 1


def test_audience_may_be_a_list_naming_any_accepted_value(
    verifier: TokenVerifier, idp: IdP
) -> None:
    assert verifier.verify(make_token(idp, aud=["someone-else", "other"])).user_id == "alice"


def test_expiry_within_the_leeway_is_accepted(verifier: TokenVerifier, idp: IdP) -> None:
    assert verifier.verify(make_token(idp, exp=int(time.time()) - 30)).user_id == "alice"


@pytest.mark.parametrize(
    ("overrides", "claims", "user", "groups"),
    [
        (
            {"group_claims": ["roles"]},
            {"roles": ["Reader", "Writer"]},
            "alice",
            {"Reader", "Writer"},
        ),
        (
            {"group_claims": ["cognito:groups"]},
            {"cognito:groups": ["admins"], "groups": ["ignored"]},
            "alice",
            {"admins"},
        ),
        (
            {"group_claims": ["groups", "roles"]},
            {"groups": ["g1"], "roles": "single-role"},
            "alice",
            {"g1", "single-role"},
        ),
        (
            {"group_claims": ["realm_access.roles"]},
            {"realm_access": {"roles": ["kc-role"]}},
            "alice",
            {"kc-role"},
        ),
        (
            {"user_claim": "oid"},
            {"oid": "00000000-0000-0000-0000-00000000000a"},
            "00000000-0000-0000-0000-00000000000a",
            {"hr", "employees"},
        ),
        ({"user_claim": "email"}, {"email": "O'Brien@Example.com"}, "O'Brien@Example.com", None),
    ],
)
def test_claim_mappings(
    idp: IdP,
    clock: Clock,
    overrides: dict[str, Any],
    claims: dict[str, Any],
    user: str,
    groups: set[str] | None,
) -> None:
    identity = make_verifier(idp, clock, **overrides).verify(make_token(idp, **claims))
    assert identity.user_id == user
    assert identity.subject == "alice"
    if groups is not None:
        assert identity.groups == groups


def test_invalid_groups_are_dropped_from_the_context(verifier: TokenVerifier, idp: IdP) -> None:
    identity = verifier.verify(make_token(idp, groups=["ok", "zero\u200bwidth", 7, ""]))
    assert identity.groups == {"ok", "zero\u200bwidth", ""}
    assert identity.context().groups == {"ok"}


@pytest.mark.parametrize(
    ("claims", "overage"),
    [
        (
            {"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {}}, "groups": DROP},
            True,
        ),
        ({"hasgroups": True, "groups": DROP}, True),
        ({"_claim_names": {"other": "src1"}}, False),
        ({"hasgroups": False}, False),
        ({}, False),
    ],
)
def test_groups_overage_is_flagged(
    verifier: TokenVerifier, idp: IdP, claims: dict[str, Any], overage: bool
) -> None:
    assert verifier.verify(make_token(idp, **claims)).claims_overage is overage


# -- refused tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "match"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, r"not valid yet \(.*nbf"),
        ({"iat": int(time.time()) + 3600}, r"not valid yet \(.*iat"),
        ({"iss": "https://evil.example"}, "issuer is not"),
        ({"aud": "api://someone-else"}, "audience is not one of"),
        ({"aud": DROP}, "no 'aud' claim"),
        ({"exp": DROP}, "no 'exp' claim"),
        ({"sub": DROP}, "no user id in its 'sub' claim"),
        ({"sub": ""}, "no user id in its 'sub' claim"),
        ({"sub": "   "}, "no user id in its 'sub' claim"),
        ({"sub": 42}, "Subject must be a string"),
        ({"sub": "bad\x00id"}, "invalid 'sub' claim"),
    ],
)
def test_invalid_claims_are_refused(
    verifier: TokenVerifier, idp: IdP, claims: dict[str, Any], match: str
) -> None:
    refused(verifier, make_token(idp, **claims), match)


def test_missing_user_claim_is_refused(idp: IdP, clock: Clock) -> None:
    refused(make_verifier(idp, clock, user_claim="oid"), make_token(idp), "no user id in its 'oid'")


def test_tampered_payload_is_refused(verifier: TokenVerifier, idp: IdP) -> None:
    header, payload, signature = make_token(idp).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = b64(json.dumps({**claims, "sub": "admin", "groups": ["admins"]}).encode())
    refused(verifier, f"{header}.{forged}.{signature}", "signature is invalid")


def test_alg_none_is_refused(verifier: TokenVerifier, idp: IdP) -> None:
    header = b64(json.dumps({"alg": "none", "kid": "rsa-1", "typ": "JWT"}).encode())
    body = b64(json.dumps({"iss": idp.issuer, "aud": AUDIENCE, "sub": "x", "exp": 2**40}).encode())
    refused(verifier, f"{header}.{body}.", "algorithm 'none' is not allowed")
    assert idp.jwks_hits == 0


def test_hs256_signed_with_the_public_key_is_refused(verifier: TokenVerifier, idp: IdP) -> None:
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    body = b64(json.dumps({"iss": idp.issuer, "aud": AUDIENCE, "sub": "x", "exp": 2**40}).encode())
    mac = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    refused(verifier, f"{header}.{body}.{b64(mac)}", "algorithm 'HS256' is not allowed")


def test_a_key_of_another_type_is_refused(verifier: TokenVerifier, idp: IdP) -> None:
    token = make_token(idp, key=EC_KEY, kid="rsa-1", alg="ES256")
    refused(verifier, token, "key does not fit")


def test_a_key_pinned_to_another_algorithm_is_refused(verifier: TokenVerifier, idp: IdP) -> None:
    idp.jwks["keys"][0]["alg"] = "RS256"
    refused(verifier, make_token(idp, alg="PS256"), "signed with PS256, but key 'rsa-1' is for")


@pytest.mark.parametrize(
    ("token", "match"),
    [("", "no bearer token"), ("not-a-jwt", "malformed"), ("a.b.c", "malformed")],
)
def test_garbage_is_refused(verifier: TokenVerifier, token: str, match: str) -> None:
    with pytest.raises(AuthenticationError, match=match):
        verifier.verify(token)


def test_a_token_without_kid_is_refused(verifier: TokenVerifier, idp: IdP) -> None:
    token = jwt.encode({"sub": "a", "exp": 2**40}, RSA_KEY, algorithm="RS256")
    refused(verifier, token, "names no signing key")


def test_authentication_error_is_an_access_denial() -> None:
    assert issubclass(AuthenticationError, AccessDeniedError)


# -- keys: caching, refresh, rotation, rate limit -------------------------------------------------


def test_unknown_kid_is_refused_after_one_refresh(
    verifier: TokenVerifier, idp: IdP, clock: Clock
) -> None:
    verifier.verify(make_token(idp))
    assert idp.jwks_hits == 1
    clock.now += 61
    refused(verifier, make_token(idp, kid="forged"), "unknown signing key 'forged'")
    assert idp.jwks_hits == 2


def test_unknown_kid_on_a_cold_cache_fetches_once(verifier: TokenVerifier, idp: IdP) -> None:
    refused(verifier, make_token(idp, kid="forged"), "not in the issuer's keys")
    assert idp.jwks_hits == 1


def test_rotated_keys_are_accepted_after_one_refresh(
    verifier: TokenVerifier, idp: IdP, clock: Clock
) -> None:
    verifier.verify(make_token(idp))
    idp.jwks["keys"].append(_jwk(RSA_KEY_2, "rsa-2"))
    clock.now += 61
    rotated = make_token(idp, key=RSA_KEY_2, kid="rsa-2", sub="dave")
    assert verifier.verify(rotated).user_id == "dave"
    assert verifier.verify(rotated).user_id == "dave"
    assert verifier.verify(make_token(idp)).user_id == "alice"
    assert idp.jwks_hits == 2
    assert idp.hits["/.well-known/openid-configuration"] == 1


def test_a_refresh_storm_is_rate_limited(verifier: TokenVerifier, idp: IdP, clock: Clock) -> None:
    verifier.verify(make_token(idp))
    clock.now += 61
    for i in range(50):
        refused(verifier, make_token(idp, kid=f"forged-{i}"), "unknown signing key")
        clock.now += 1
    assert idp.jwks_hits == 2
    clock.now += 11
    for i in range(20):
        refused(verifier, make_token(idp, kid=f"again-{i}"), "unknown signing key")
    assert idp.jwks_hits == 3
    assert verifier.verify(make_token(idp)).user_id == "alice"
    assert idp.jwks_hits == 3


def test_refreshes_are_rate_limited_across_threads(verifier: TokenVerifier, idp: IdP) -> None:
    tokens = [make_token(idp, kid=f"forged-{i}") for i in range(32)]
    errors: list[Exception] = []

    def attempt(token: str) -> None:
        try:
            verifier.verify(token)
        except AuthenticationError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 32
    assert idp.jwks_hits == 1


def test_keys_and_discovery_expire(verifier: TokenVerifier, idp: IdP, clock: Clock) -> None:
    verifier.verify(make_token(idp))
    clock.now += 3599
    verifier.verify(make_token(idp))
    assert idp.hits == {"/.well-known/openid-configuration": 1, "/keys": 1}
    clock.now += 2
    verifier.verify(make_token(idp))
    assert idp.hits == {"/.well-known/openid-configuration": 2, "/keys": 2}


def test_removed_keys_stop_working_after_expiry(
    verifier: TokenVerifier, idp: IdP, clock: Clock
) -> None:
    verifier.verify(make_token(idp))
    idp.jwks["keys"] = [_jwk(EC_KEY, "ec-1")]
    clock.now += 3601
    refused(verifier, make_token(idp), "unknown signing key 'rsa-1'")


def test_jwks_url_override_skips_discovery(idp: IdP, clock: Clock) -> None:
    v = make_verifier(idp, clock, jwks_url=f"{idp.issuer}/keys")
    assert v.verify(make_token(idp)).user_id == "alice"
    assert idp.hits == {"/keys": 1}


# -- the identity provider misbehaves -------------------------------------------------------------


def test_unreachable_issuer_is_an_authentication_error(clock: Clock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = AuthSettings(issuer=f"http://127.0.0.1:{port}", audience=[AUDIENCE])
    token = jwt.encode({"sub": "a"}, RSA_KEY, algorithm="RS256", headers={"kid": "k"})
    v = TokenVerifier(settings, clock=clock)
    refused(v, token, "could not fetch the discovery document")
    refused(v, token, "signing keys are unavailable")


def test_discovery_naming_another_issuer_is_refused(verifier: TokenVerifier, idp: IdP) -> None:
    idp.discovery_issuer = "https://evil.example"
    refused(verifier, make_token(idp), "names issuer 'https://evil.example'")
    assert idp.jwks_hits == 0


def test_a_jwks_without_usable_keys_is_refused(verifier: TokenVerifier, idp: IdP) -> None:
    idp.jwks = {
        "keys": [
            {"kty": "oct", "kid": "rsa-1", "k": b64(b"secret")},
            {**_jwk(RSA_KEY, "enc"), "use": "enc"},
            {k: v for k, v in _jwk(RSA_KEY, "x").items() if k != "kid"},
        ]
    }
    refused(verifier, make_token(idp), "no usable signing keys")


# -- settings and construction --------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS256", "HS384", "hs512"])
def test_settings_refuse_none_and_symmetric_algorithms(alg: str) -> None:
    with pytest.raises(ValidationError, match="only asymmetric signatures"):
        AuthSettings(algorithms=["RS256", alg])


def test_settings_refuse_unknown_algorithms_and_an_empty_list() -> None:
    with pytest.raises(ValidationError, match="unknown algorithm"):
        AuthSettings(algorithms=["RS1"])
    with pytest.raises(ValidationError):
        AuthSettings(algorithms=[])


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_AUTH__ISSUER", "https://login.example/tenant/v2.0")
    monkeypatch.setenv("RAG_AUTH__AUDIENCE", '["api://rag"]')
    monkeypatch.setenv("RAG_AUTH__GROUP_CLAIMS", '["roles"]')
    auth = Settings().auth
    assert (auth.issuer, auth.audience, auth.group_claims) == (
        "https://login.example/tenant/v2.0",
        ["api://rag"],
        ["roles"],
    )
    assert auth.algorithms == ["RS256", "ES256", "PS256"]
    assert TokenVerifier.from_settings(Settings()) is not None
    monkeypatch.setenv("RAG_AUTH__ALGORITHMS", '["HS256"]')
    with pytest.raises(ValidationError):
        Settings()


def test_construction_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_connect(*args: Any) -> None:
        raise AssertionError("construction connected")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    v = TokenVerifier(AuthSettings(issuer="https://idp.example", audience=["a"]))
    v.close()


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"audience": ["a"]}, "issuer is not set"),
        ({"issuer": "https://idp.example"}, "audience is empty"),
        ({"issuer": "http://idp.example", "audience": ["a"]}, "https is required"),
        (
            {"issuer": "https://idp.example", "audience": ["a"], "jwks_url": "ftp://x/keys"},
            "https is required",
        ),
    ],
)
def test_incomplete_settings_are_a_configuration_error(
    settings: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        TokenVerifier(AuthSettings(**settings))
