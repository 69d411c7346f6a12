"""Per-query cost of a verified identity: token verification (cached JWKS) plus group expansion
through the synced directory, against the baseline of a trusted UserContext, measured in the
same run. Prints medians and p95 in milliseconds, and the ratio to the baseline."""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from rag.auth import TokenVerifier
from rag.config import AuthSettings, Settings
from rag.directory.base import DirectoryGroup, DirectorySnapshot, DirectoryUser
from rag.directory.store import DirectoryStore
from rag.identity import UserContext
from rag.resolve import IdentityResolver

USERS, GROUPS, DEPTH = 20_000, 2_000, 6


def _idp(key: rsa.RSAPrivateKey) -> tuple[ThreadingHTTPServer, str]:
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "use": "sig"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
            body: Any = (
                {"issuer": issuer, "jwks_uri": f"{issuer}/keys"}
                if self.path.startswith("/.well-known")
                else {"keys": [jwk]}
            )
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _directory(path: Path) -> DirectoryStore:
    """USERS users in GROUPS groups; groups nest in chains of DEPTH; each user in 3 leaf groups."""
    users = tuple(
        DirectoryUser(id=f"u{i}", aliases=frozenset({f"u{i}@corp.example"})) for i in range(USERS)
    )
    members: dict[int, set[str]] = {g: set() for g in range(GROUPS)}
    for i in range(USERS):
        for step in (1, 7, 13):
            members[(i * step) % GROUPS].add(f"u{i}")
    groups = []
    for g in range(GROUPS):  # g+1 contains g, except at the top of each chain of DEPTH
        inner = frozenset({f"g{g - 1}"}) if g % DEPTH else frozenset()
        groups.append(
            DirectoryGroup(id=f"g{g}", member_users=frozenset(members[g]), member_groups=inner)
        )
    store = DirectoryStore(path)
    store.apply(DirectorySnapshot("bench", users, tuple(groups), complete=True))
    return store


def _times(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _row(name: str, ms: list[float], base: float) -> str:
    p50 = statistics.median(ms)
    p95 = statistics.quantiles(ms, n=20)[-1]
    return f"  {name:<34} p50 {p50:7.3f} ms   p95 {p95:7.3f} ms   x{p50 / base:8.1f}"


def run(queries: int = 2000) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server, issuer = _idp(key)
    with tempfile.TemporaryDirectory() as tmp:
        directory = _directory(Path(tmp) / "directory.sqlite")
        settings = Settings(
            data_dir=Path(tmp),
            auth=AuthSettings(issuer=issuer, audience=["api://rag"]),
            directory={"backend": "scim", "scim_path": "unused.json"},
        )
        verifier = TokenVerifier.from_settings(settings)
        resolver = IdentityResolver(settings, verifier=verifier, directory=directory)
        now = int(time.time())
        token = jwt.encode(
            {
                "iss": issuer,
                "aud": "api://rag",
                "sub": "u1234",
                "iat": now,
                "exp": now + 3600,
                "groups": ["g1", "g2"],
            },
            key,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        resolver.from_token(token)  # discovery and keys fetched once, then cached
        trusted = _times(lambda: UserContext.of("u1234", ["g1", "g2"]).principals(), queries)
        verify = _times(lambda: verifier.verify(token), queries)
        expand = _times(lambda: resolver.expand(UserContext.of("u1234")).principals(), queries)
        both = _times(lambda: resolver.from_token(token).principals(), queries)
        groups = len(resolver.from_token(token).groups)
        base = statistics.median(trusted)
        print(
            f"identity: {queries} queries; directory {USERS} users, {GROUPS} groups "
            f"(chains of {DEPTH}); the user holds {groups} groups"
        )
        print(_row("trusted UserContext (baseline)", trusted, base))
        print(_row("token verification (cached JWKS)", verify, base))
        print(_row("directory expansion", expand, base))
        print(_row("token + expansion (per query)", both, base))
        verdict = "meets" if statistics.quantiles(both, n=20)[-1] < 2.0 else "MISSES"
        print(f"  target p95 < 2 ms per query: {verdict}")
        directory.close()
    server.shutdown()
