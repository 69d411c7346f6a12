"""A loopback Microsoft Graph (and Entra token endpoint) for tests, over TLS on 127.0.0.1.

It speaks Graph's documented wire format for what the SharePoint connector uses, from an
in-memory model of sites, drives, folders and files:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token``
  (client credentials: a client secret, or a certificate's signed client assertion);
- ``GET /v1.0/sites/{id}``, ``/v1.0/sites/{hostname}:/{path}``, ``/v1.0/sites/{id}/drives``,
  ``/v1.0/drives/{id}``;
- ``GET /v1.0/drives/{id}/root/delta`` (pages with ``@odata.nextLink``, the last one with
  ``@odata.deltaLink``; deleted items with the ``deleted`` facet and no name, no ``cTag`` on
  created or modified items, as OneDrive for Business does; a folder rename reports only the
  folder; ``410 Gone`` with a ``Location`` once the drive's tokens are expired);
- ``GET /v1.0/drives/{id}/items/{id}/permissions`` (unique permissions, or the nearest
  ancestor's with ``inheritedFrom``) and ``/content`` (a ``302`` to a pre-authenticated URL);
- ``POST /v1.0/$batch`` (at most 20 requests; each one throttled or failed on its own).

Faults are injected by path pattern (:meth:`GraphServer.throttle`, :meth:`GraphServer.fail`),
per item (:meth:`GraphServer.fail_permissions`) and per drive
(:meth:`GraphServer.expire_delta_tokens`). Every request is recorded.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import re
import secrets
import ssl
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

# -- permission shapes, as Graph documents them (permission resource, sharePointIdentitySet) ----


def user_grant(
    upn: str, *, roles: Iterable[str] = ("read",), email: str | None = None
) -> dict[str, Any]:
    """A permission granted to an Entra user: ``grantedToV2.user`` and its ``siteUser``."""
    oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"user:{upn}"))
    return {
        "id": f"aTowIy5mfG1lbWJlcnNoaXB8{_short(upn)}",
        "roles": list(roles),
        "grantedToV2": {
            "user": {"id": oid, "displayName": upn, "email": email or upn},
            "siteUser": {
                "id": str(int(_short(upn), 16) % 1000),
                "displayName": upn,
                "email": email or upn,
                "loginName": f"i:0#.f|membership|{upn}",
            },
        },
    }


def group_grant(
    group_id: str, name: str | None = None, roles: Iterable[str] = ("read",)
) -> dict[str, Any]:
    """A permission granted to an Entra (security or Microsoft 365) group."""
    return {
        "id": f"c:0t.c|tenant|{group_id}",
        "roles": list(roles),
        "grantedToV2": {"group": {"id": group_id, "displayName": name or group_id}},
    }


def site_group_grant(group_id: str, name: str, roles: Iterable[str] = ("read",)) -> dict[str, Any]:
    """A permission granted to a SharePoint site group (``Contoso Members``)."""
    return {
        "id": f"sg-{group_id}",
        "roles": list(roles),
        "grantedToV2": {"siteGroup": {"id": group_id, "displayName": name, "loginName": name}},
    }


def link_grant(
    scope: str,
    *,
    users: Iterable[str] = (),
    roles: Iterable[str] = ("read",),
    expires: str | None = None,
) -> dict[str, Any]:
    """A sharing link (``anonymous``, ``organization``, ``users`` or ``existingAccess``) and the
    users it was granted to (``grantedToIdentitiesV2``)."""
    grant: dict[str, Any] = {
        "id": f"link-{scope}-{_short(','.join(users))}",
        "roles": list(roles),
        "link": {
            "scope": scope,
            "type": "view" if "write" not in roles else "edit",
            "webUrl": f"https://contoso.sharepoint.com/:t:/s/eng/{_short(scope)}",
            "preventsDownload": False,
        },
        "hasPassword": False,
        "expirationDateTime": expires or "0001-01-01T00:00:00Z",
    }
    identities = []
    for upn in users:  # as the documentation shows them: no e-mail on the site user
        identity = user_grant(upn)["grantedToV2"]
        identity["siteUser"].pop("email")
        identities.append(identity)
    if identities:
        grant["grantedToIdentitiesV2"] = identities
    return grant


def quick_xor_hash(data: bytes) -> str:
    """OneDrive's QuickXorHash (base64): each byte XORed in at a rotating 11-bit shift over a
    160-bit register, then the length XORed into its last 8 bytes."""
    width, mask = 160, (1 << 160) - 1
    register, shift = 0, 0
    for byte in data:
        value = byte << shift
        register ^= (value & mask) ^ (value >> width)
        shift = (shift + 11) % width
    out = bytearray(register.to_bytes(20, "little"))
    for i, b in enumerate(len(data).to_bytes(8, "little")):
        out[12 + i] ^= b
    return base64.b64encode(bytes(out)).decode("ascii")


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- the model ------------------------------------------------------------------------------


@dataclass
class Item:
    id: str
    name: str
    parent: str | None
    folder: bool
    version: int
    content: bytes = b""
    modified: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    permissions: list[dict[str, Any]] | None = None  # None: inherited from the parent
    permissions_error: tuple[int, str] | None = None  # (status, message)
    deleted: bool = False


@dataclass
class Drive:
    id: str
    name: str
    site_id: str  # the Graph site id: hostname,siteCollectionId,webId
    items: dict[str, Item] = field(default_factory=dict)
    seq: int = 0
    epoch: int = 0  # bumped to expire every delta token

    @property
    def root(self) -> Item:
        return next(i for i in self.items.values() if i.parent is None)

    def bump(self) -> int:
        self.seq += 1
        return self.seq

    def path_of(self, item: Item) -> str:
        parts: list[str] = []
        while item.parent is not None:
            parts.append(item.name)
            item = self.items[item.parent]
        return "/".join(reversed(parts))

    def live(self) -> list[Item]:
        return [i for i in self.items.values() if not i.deleted]

    def find(self, path: str) -> Item | None:
        for item in self.live():
            if item.parent is not None and self.path_of(item) == path:
                return item
        return None


@dataclass
class Site:
    id: str
    hostname: str
    path: str  # sites/eng
    display_name: str


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    times: int
    status: int
    retry_after: str | None
    skip: int = 0


@dataclass
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


class GraphServer:
    """The loopback server. ``start()`` generates a self-signed certificate for 127.0.0.1 (its
    PEM is :attr:`ca_bundle`) and serves in a daemon thread; ``stop()`` ends it."""

    def __init__(
        self,
        tenant: str = "contoso-tenant",
        client_id: str = "rag-connector",
        client_secret: str | None = "s3cret-value",  # noqa: S107 - a loopback credential
        client_certificate: bytes | None = None,
        token_lifetime: int = 3599,
    ) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_certificate = client_certificate  # PEM of an accepted certificate
        self.token_lifetime = token_lifetime
        self.sites: dict[str, Site] = {}
        self.drives: dict[str, Drive] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path with query), batch parts too
        self.token_requests = 0
        self.token_forms: list[dict[str, str]] = []
        self._tokens: set[str] = set()
        self._rules: list[_Rule] = []
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.base_url = ""
        self.ca_bundle = Path()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> GraphServer:
        self._dir = tempfile.TemporaryDirectory(prefix="graph-loopback-")
        cert, key = _self_signed(Path(self._dir.name))
        self.ca_bundle = cert
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            wbufsize = 1 << 16  # one write per response (flushed after each request)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = server.handle(method, self.path, dict(self.headers.items()), body)
                data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                kind = "application/octet-stream" if reply.raw is not None else "application/json"
                self.send_header("Content-Type", kind)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.base_url = f"https://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> GraphServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the model --------------------------------------------------------------------------
    def add_site(self, path: str = "sites/eng", display_name: str = "Engineering") -> Site:
        with self._lock:
            collection, web = uuid.uuid5(uuid.NAMESPACE_URL, path), uuid.uuid4()
            site = Site(
                f"contoso.sharepoint.com,{collection},{web}",
                "contoso.sharepoint.com",
                path.strip("/"),
                display_name,
            )
            self.sites[site.id] = site
            return site

    def add_drive(
        self,
        drive_id: str | None = None,
        name: str = "Documents",
        site: Site | None = None,
        root_permissions: list[dict[str, Any]] | None = None,
    ) -> Drive:
        with self._lock:
            site = site or self.add_site(f"sites/s{len(self.sites)}")
            drive = Drive(drive_id or f"b!{secrets.token_urlsafe(12)}", name, site.id)
            root = Item(
                f"{drive.id}-root",
                "root",
                None,
                True,
                drive.bump(),
                permissions=list(root_permissions or []),
            )
            drive.items[root.id] = root
            self.drives[drive.id] = drive
            return drive

    def put(
        self,
        drive_id: str,
        path: str,
        content: bytes,
        permissions: list[dict[str, Any]] | None = None,
        modified: dt.datetime | None = None,
    ) -> Item:
        """Create or update a file (and its folders); ``permissions`` None: inherited."""
        with self._lock:
            drive = self.drives[drive_id]
            parent = self.folder(drive_id, str(PurePosixPath(path).parent))
            name = PurePosixPath(path).name
            item = drive.find(path)
            if item is None:
                item_id = _new_id()
                item = Item(item_id, name, parent.id, False, drive.bump(), content)
                drive.items[item_id] = item
            elif item.content != content:
                item.content, item.version = content, drive.bump()
            item.deleted = False
            item.permissions = permissions
            if modified is not None:
                item.modified = modified
            return item

    def folder(self, drive_id: str, path: str) -> Item:
        with self._lock:
            drive = self.drives[drive_id]
            current = drive.root
            for part in [p for p in PurePosixPath(path).parts if p not in (".", "")]:
                child = next(
                    (i for i in drive.live() if i.parent == current.id and i.name == part), None
                )
                if child is None:
                    child = Item(_new_id(), part, current.id, True, drive.bump())
                    drive.items[child.id] = child
                current = child
            return current

    def delete(self, drive_id: str, path: str) -> None:
        """Delete a file or a folder and everything below it (each reported deleted)."""
        with self._lock:
            drive = self.drives[drive_id]
            target = drive.find(path)
            if target is None:
                raise KeyError(path)
            doomed = [target, *[i for i in drive.live() if self._below(drive, i, target)]]
            for item in doomed:
                item.deleted, item.version = True, drive.bump()

    @staticmethod
    def _below(drive: Drive, item: Item, ancestor: Item) -> bool:
        while item.parent is not None:
            if item.parent == ancestor.id:
                return True
            item = drive.items[item.parent]
        return False

    def rename(self, drive_id: str, path: str, new_name: str) -> None:
        """Rename a file or folder: only it shows in the next delta, as in Graph."""
        with self._lock:
            drive = self.drives[drive_id]
            item = drive.find(path)
            if item is None:
                raise KeyError(path)
            item.name, item.version = new_name, drive.bump()

    def set_permissions(
        self, drive_id: str, path: str, permissions: list[dict[str, Any]] | None
    ) -> None:
        """Unique permissions for an item (``None``: inherit again); no delta change."""
        with self._lock:
            drive = self.drives[drive_id]
            item = drive.root if path in ("", "/") else drive.find(path)
            if item is None:
                raise KeyError(path)
            item.permissions = permissions

    def fail_permissions(
        self, drive_id: str, path: str, status: int | None = 403, message: str = "Access denied"
    ) -> None:
        """The item's permissions answer ``status`` (None: they are readable again)."""
        with self._lock:
            item = self.drives[drive_id].find(path)
            if item is None:
                raise KeyError(path)
            item.permissions_error = None if status is None else (status, message)

    def sync_files(
        self,
        drive_id: str,
        files: Mapping[str, tuple[bytes, list[dict[str, Any]] | None, tuple[int, str] | None]],
    ) -> None:
        """Make the drive hold exactly ``files``: path -> (content, unique permissions or None
        to inherit, the (status, message) its permissions fail with or None). Unchanged files
        keep their version; files not named are deleted."""
        with self._lock:
            drive = self.drives[drive_id]
            for item in drive.live():
                if not item.folder and drive.path_of(item) not in files:
                    item.deleted, item.version = True, drive.bump()
            for path, (content, permissions, error) in files.items():
                item = self.put(drive_id, path, content, permissions)
                item.permissions_error = error

    def expire_delta_tokens(self, drive_id: str) -> None:
        """Every delta token of the drive issued so far answers ``410 Gone``."""
        with self._lock:
            self.drives[drive_id].epoch += 1

    # -- faults -----------------------------------------------------------------------------
    def throttle(
        self,
        pattern: str,
        times: int = 1,
        retry_after: str | None = "0",
        status: int = 429,
        after: int = 0,
    ) -> None:
        """The next ``times`` requests whose path (and query) matches ``pattern``, once
        ``after`` of them went through, answer ``status`` with ``Retry-After``."""
        with self._lock:
            self._rules.append(_Rule(re.compile(pattern), times, status, retry_after, after))

    def fail(self, pattern: str, times: int = 1, status: int = 500, after: int = 0) -> None:
        self.throttle(pattern, times, None, status, after)

    def reset(self) -> None:
        """Forget the recorded requests and the faults not yet served."""
        with self._lock:
            self.requests.clear()
            self.token_forms.clear()
            self.token_requests = 0
            self._rules.clear()

    def count(self, pattern: str, method: str | None = None) -> int:
        rx = re.compile(pattern)
        with self._lock:
            return sum(1 for m, p in self.requests if rx.search(p) and method in (None, m))

    # -- serving ----------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Reply:
        parts = urlsplit(target)
        path, query = unquote(parts.path), parse_qs(parts.query)
        with self._lock:
            self.requests.append((method, target))
        if path.startswith(f"/{self.tenant}/"):
            return self._identity(method, path, body)
        if path.startswith("/download/"):
            return self._download(path)
        if not path.startswith("/v1.0/"):
            return _error(404, "itemNotFound", f"no route {path}")
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        with self._lock:
            known = auth.removeprefix("Bearer ") in self._tokens
        if not known:
            return _error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
        if method == "POST" and path == "/v1.0/$batch":
            fault = self._fault(target)
            return fault or self._batch(body)
        if method != "GET":
            return _error(405, "BadRequest", "method not allowed")
        return self._fault(target) or self._graph(path.removeprefix("/v1.0"), query)

    def _fault(self, target: str) -> _Reply | None:
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and rule.pattern.search(target):
                    if rule.skip > 0:
                        rule.skip -= 1
                        continue
                    rule.times -= 1
                    reply = _error(
                        rule.status,
                        "TooManyRequests" if rule.status == 429 else "serviceNotAvailable",
                        f"injected {rule.status}",
                    )
                    if rule.retry_after is not None:
                        reply.headers["Retry-After"] = rule.retry_after
                    return reply
        return None

    def _identity(self, method: str, path: str, body: bytes) -> _Reply:
        tenant_root = f"{self.base_url}/{self.tenant}"
        if method == "GET" and path.endswith("/v2.0/.well-known/openid-configuration"):
            return _Reply(
                200,
                {
                    "issuer": f"{tenant_root}/v2.0",
                    "authorization_endpoint": f"{tenant_root}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{tenant_root}/oauth2/v2.0/token",
                    "jwks_uri": f"{tenant_root}/discovery/v2.0/keys",
                    "response_types_supported": ["code", "id_token", "code id_token", "token"],
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
                },
            )
        if method == "POST" and path.endswith("/oauth2/v2.0/token"):
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            with self._lock:
                self.token_requests += 1
                self.token_forms.append(form)
            problem = self._check_client(form, f"{tenant_root}/oauth2/v2.0/token")
            if problem is not None:
                return _Reply(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": problem,
                        "error_codes": [7000215],
                    },
                )
            token = f"eyJ0eXAiOiJKV1Qi.{secrets.token_urlsafe(24)}"
            with self._lock:
                self._tokens.add(token)
            return _Reply(
                200,
                {
                    "token_type": "Bearer",
                    "expires_in": self.token_lifetime,
                    "ext_expires_in": self.token_lifetime,
                    "access_token": token,
                },
            )
        return _error(404, "not_found", path)

    def _check_client(self, form: dict[str, str], audience: str) -> str | None:
        if form.get("grant_type") != "client_credentials":
            return "AADSTS70003: unsupported grant_type"
        if form.get("client_id") != self.client_id:
            return (
                f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not found"
            )
        if not form.get("scope", "").endswith("/.default"):
            return "AADSTS1002012: The provided value for scope is not valid."
        if "client_assertion" in form and self.client_certificate is not None:
            import jwt
            from cryptography import x509

            cert = x509.load_pem_x509_certificate(self.client_certificate)
            try:
                claims = jwt.decode(
                    form["client_assertion"],
                    cert.public_key(),  # type: ignore[arg-type]
                    algorithms=["RS256", "PS256"],
                    audience=audience,
                )
            except jwt.PyJWTError as exc:
                return f"AADSTS700027: Client assertion failed signature validation: {exc}"
            if claims.get("iss") != self.client_id or claims.get("sub") != self.client_id:
                return "AADSTS700023: client assertion issuer or subject mismatch"
            return None
        if self.client_secret is not None and form.get("client_secret") == self.client_secret:
            return None
        return "AADSTS7000215: Invalid client secret provided."

    def _graph(self, path: str, query: dict[str, list[str]]) -> _Reply:
        with self._lock:
            for pattern, route in self._routes():
                match = re.fullmatch(pattern, path)
                if match:
                    return route(match, query)
        return _error(400, "invalidRequest", f"Invalid request {path}")

    def _routes(self) -> list[tuple[str, Callable[[re.Match[str], dict[str, list[str]]], _Reply]]]:
        return [
            (r"/sites/(?P<site>[^/]+)/drives", self._site_drives),
            (r"/sites/(?P<site>.+)", self._site),
            (r"/drives/(?P<drive>[^/]+)", self._drive),
            (r"/drives/(?P<drive>[^/]+)/root/delta", self._delta),
            (r"/drives/(?P<drive>[^/]+)/items/(?P<item>[^/]+)/permissions", self._permissions),
            (r"/drives/(?P<drive>[^/]+)/items/(?P<item>[^/]+)/content", self._content),
        ]

    def _site_ref(self, ref: str) -> Site | None:
        if ref in self.sites:
            return self.sites[ref]
        host, _, rel = ref.partition(":")
        return next(
            (s for s in self.sites.values() if s.hostname == host and s.path == rel.strip("/:")),
            None,
        )

    def _site(self, m: re.Match[str], _: dict[str, list[str]]) -> _Reply:
        site = self._site_ref(m["site"])
        if site is None:
            return _error(404, "itemNotFound", "Requested site could not be found")
        return _Reply(
            200,
            {
                "id": site.id,
                "name": site.path.rsplit("/", 1)[-1],
                "displayName": site.display_name,
                "webUrl": f"https://{site.hostname}/{site.path}",
                "createdDateTime": "2024-01-02T03:04:05Z",
            },
        )

    def _site_drives(self, m: re.Match[str], _: dict[str, list[str]]) -> _Reply:
        site = self._site_ref(m["site"])
        if site is None:
            return _error(404, "itemNotFound", "Requested site could not be found")
        drives = [self._drive_json(d) for d in self.drives.values() if d.site_id == site.id]
        return _Reply(
            200, {"@odata.context": f"{self.base_url}/v1.0/$metadata#drives", "value": drives}
        )

    def _drive(self, m: re.Match[str], _: dict[str, list[str]]) -> _Reply:
        drive = self.drives.get(m["drive"])
        if drive is None:
            return _error(404, "itemNotFound", "The resource could not be found.")
        return _Reply(200, self._drive_json(drive))

    def _drive_json(self, drive: Drive) -> dict[str, Any]:
        site = self.sites[drive.site_id]
        _, collection, web = site.id.split(",")
        return {
            "id": drive.id,
            "name": drive.name,
            "driveType": "documentLibrary",
            "webUrl": f"https://{site.hostname}/{site.path}/{quote(drive.name)}",
            "sharepointIds": {
                "siteId": collection,
                "webId": web,
                "listId": _short(drive.id),
                "siteUrl": f"https://{site.hostname}/{site.path}",
            },
        }

    def _delta(self, m: re.Match[str], query: dict[str, list[str]]) -> _Reply:
        drive = self.drives.get(m["drive"])
        if drive is None:
            return _error(404, "itemNotFound", "The resource could not be found.")
        top = int(query.get("$top", ["200"])[0])
        token = query.get("token", [None])[0]
        fresh = f"{self.base_url}/v1.0/drives/{drive.id}/root/delta?$top={top}"
        state: dict[str, Any] = {"s": 0, "u": None, "k": 0, "e": drive.epoch}
        if token is not None:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
            except ValueError:
                return _error(400, "invalidRequest", "Invalid delta token")
            if state["e"] != drive.epoch:
                reply = _error(
                    410,
                    "resyncChangesApplyDifferences",
                    "Resync required. Replace any local items with the server's "
                    "version (including deletes).",
                )
                reply.headers["Location"] = fresh
                return reply
        upto = state["u"] if state["u"] is not None else drive.seq
        if state["s"] == 0:  # a full enumeration: what is there, parents first
            changes = sorted(
                drive.live(),
                key=lambda i: (drive.path_of(i).count("/") if i.parent else -1, drive.path_of(i)),
            )
        else:
            changes = sorted(
                (i for i in drive.items.values() if state["s"] < i.version <= upto),
                key=lambda i: i.version,
            )
        page = changes[state["k"] : state["k"] + top]
        body: dict[str, Any] = {
            "@odata.context": f"{self.base_url}/v1.0/$metadata#Collection(driveItem)",
            "value": [self._item_json(drive, i) for i in page],
        }
        base = f"{self.base_url}/v1.0/drives/{drive.id}/root/delta?$top={top}&token="
        if state["k"] + top < len(changes):
            nxt = {**state, "u": upto, "k": state["k"] + top}
            body["@odata.nextLink"] = base + _token(nxt)
        else:
            body["@odata.deltaLink"] = base + _token(
                {"s": upto, "u": None, "k": 0, "e": drive.epoch}
            )
        return _Reply(200, body)

    def _item_json(self, drive: Drive, item: Item) -> dict[str, Any]:
        parent: dict[str, Any] = {"driveType": "documentLibrary", "driveId": drive.id}
        if item.parent is not None:
            parent["id"] = item.parent
        if item.deleted:  # OneDrive for Business omits the name and cTag of a deleted item
            facet = {"folder": {"childCount": 0}} if item.folder else {"file": {}}
            return {
                "id": item.id,
                "parentReference": parent,
                "deleted": {"state": "deleted"},
                **facet,
            }
        stamp = item.modified.strftime("%Y-%m-%dT%H:%M:%SZ")
        site = self.sites[drive.site_id]
        rel = drive.path_of(item)
        data: dict[str, Any] = {
            "id": item.id,
            "name": item.name,
            "eTag": f'"{{{uuid.uuid5(uuid.NAMESPACE_URL, item.id)}}},{item.version}"',
            "createdDateTime": "2024-01-02T03:04:05Z",
            "lastModifiedDateTime": stamp,
            "webUrl": f"https://{site.hostname}/{site.path}/{quote(drive.name)}"
            + (f"/{quote(rel)}" if rel else ""),
            "parentReference": parent,
            "fileSystemInfo": {
                "createdDateTime": "2024-01-02T03:04:05Z",
                "lastModifiedDateTime": stamp,
            },
        }
        if item.parent is None:
            data["root"] = {}
        if item.folder:
            children = sum(1 for i in drive.live() if i.parent == item.id)
            data.update(size=0, folder={"childCount": children})
        else:
            data.update(
                size=len(item.content),
                file={
                    "mimeType": _mime(item.name),
                    "hashes": {"quickXorHash": quick_xor_hash(item.content)},
                },
            )
        return data

    def _permissions(self, m: re.Match[str], _: dict[str, list[str]]) -> _Reply:
        drive = self.drives.get(m["drive"])
        item = drive.items.get(m["item"]) if drive is not None else None
        if drive is None or item is None or item.deleted:
            return _error(404, "itemNotFound", "The resource could not be found.")
        if item.permissions_error is not None:
            status, message = item.permissions_error
            return _error(status, "accessDenied", message)
        owner = item
        while owner.permissions is None and owner.parent is not None:
            owner = drive.items[owner.parent]
        grants = [dict(g) for g in owner.permissions or []]
        if owner is not item:
            ref = {
                "driveId": drive.id,
                "id": owner.id,
                "path": f"/drives/{drive.id}/root:/{drive.path_of(owner)}".rstrip("/"),
            }
            for grant in grants:
                grant["inheritedFrom"] = ref
        return _Reply(
            200, {"@odata.context": f"{self.base_url}/v1.0/$metadata#permissions", "value": grants}
        )

    def _content(self, m: re.Match[str], _: dict[str, list[str]]) -> _Reply:
        drive = self.drives.get(m["drive"])
        item = drive.items.get(m["item"]) if drive is not None else None
        if drive is None or item is None or item.deleted or item.folder:
            return _error(404, "itemNotFound", "The resource could not be found.")
        link = f"{self.base_url}/download/{drive.id}/{item.id}?tempauth={secrets.token_urlsafe(8)}"
        return _Reply(302, None, {"Location": link}, raw=b"")

    def _download(self, path: str) -> _Reply:
        _, _, drive_id, item_id = path.split("/", 3)
        with self._lock:
            drive = self.drives.get(drive_id)
            item = drive.items.get(item_id) if drive is not None else None
            if item is None or item.deleted:
                return _error(404, "itemNotFound", "gone")
            return _Reply(200, raw=item.content)

    def _batch(self, body: bytes) -> _Reply:
        try:
            requests = json.loads(body)["requests"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "BadRequest", "Invalid batch payload format.")
        ids = [str(r.get("id")) for r in requests]
        if len(requests) > 20:
            return _error(400, "BadRequest", "The number of batch requests exceeds 20.")
        if len(set(ids)) != len(ids):
            return _error(400, "BadRequest", "Batch request ids must be unique.")
        responses = []
        for request in requests:
            url = "/" + str(request.get("url", "")).lstrip("/")
            with self._lock:
                self.requests.append(("GET", f"/v1.0{url}"))
            parts = urlsplit(url)
            reply = self._fault(f"/v1.0{url}") or self._graph(
                unquote(parts.path), parse_qs(parts.query)
            )
            responses.append(
                {
                    "id": request["id"],
                    "status": reply.status,
                    "headers": {"Content-Type": "application/json", **reply.headers},
                    "body": reply.body,
                }
            )
        return _Reply(200, {"responses": responses})


def _new_id() -> str:
    """An item id in the form SharePoint uses (``01`` and 32 base32 characters)."""
    return "01" + base64.b32encode(secrets.token_bytes(20)).decode()[:32]


def _token(state: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(dict(state)).encode()).decode()


def _error(status: int, code: str, message: str) -> _Reply:
    return _Reply(
        status,
        {
            "error": {
                "code": code,
                "message": message,
                "innerError": {"date": "2025-01-01T00:00:00", "request-id": str(uuid.uuid4())},
            }
        },
    )


def _mime(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    return {
        ".md": "text/markdown",
        ".txt": "text/plain",
        ".pdf": "application/pdf",
        ".html": "text/html",
    }.get(suffix, "application/octet-stream")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A P-256 certificate for 127.0.0.1 and localhost, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "graph-loopback")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
