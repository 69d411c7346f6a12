"""A real S3 endpoint for tests: moto in server mode, in its own process on a free loopback port,
and a loopback proxy in front of it that breaks chosen requests (so boto3's real client code,
signing, retries and pagination run against real HTTP).

``moto_endpoint()`` starts the server, waits until it answers, yields its URL and stops it at the
end (a test module wraps it in a session fixture). ``aws_credentials()`` sets dummy credentials
in the environment meanwhile and hides any real AWS configuration (a module fixture, so other
modules never see them).
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

from rag.testing.loopback import LoopbackServer

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return port if port < 65000 else free_port()


def _command(port: int) -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    return [*base, "-H", "127.0.0.1", "-p", str(port)]


def _wait_until_up(
    url: str, process: subprocess.Popen[bytes], log: IO[bytes], timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            pytest.fail(f"moto_server exited with {process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    pytest.fail(f"moto_server did not answer at {url} within {timeout:.0f} s")


@contextmanager
def aws_credentials() -> Iterator[None]:
    """Dummy AWS credentials in the environment (boto3's chain finds them), nothing real."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in AWS_ENV.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        yield


@contextmanager
def moto_endpoint() -> Iterator[str]:
    """The URL of a moto server running for the duration of the block."""
    port = free_port()
    with tempfile.TemporaryFile() as log:  # its request log: a pipe nobody reads would fill up
        process = subprocess.Popen(_command(port), stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url, process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def put_objects(endpoint: str, bucket: str, objects: dict[str, bytes], threads: int = 4) -> None:
    """Upload many objects fast: plain (unsigned) PUTs on kept-alive connections, which moto
    accepts; boto3's signing and serialization would cost three times moto's own work."""
    parts = urlsplit(endpoint)
    local = threading.local()

    def put(item: tuple[str, bytes]) -> None:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
        key, body = item
        local.conn.request("PUT", f"/{bucket}/{quote(key, safe='/')}", body=body)
        response = local.conn.getresponse()
        response.read()
        if response.status != 200:
            raise AssertionError(f"PUT {key}: {response.status}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, objects.items()))


def operation(method: str, path: str) -> str:
    """The S3 operation of a path-style request, as far as the tests need to tell."""
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    has_key = "/" in parts.path.strip("/")
    if method == "GET" and not has_key and query.get("list-type") == ["2"]:
        return "ListObjectsV2"
    if method == "GET" and has_key:
        return "GetObject"
    if method == "HEAD" and has_key:
        return "HeadObject"
    return f"{method} {'object' if has_key else 'bucket'}"


@dataclass
class S3Faults:
    """Which requests the proxy breaks: every ListObjectsV2 request from the ``fail_list_from``-th
    on (retries included) and every GetObject of a key in ``fail_keys``, answered ``status`` with
    an S3 error, or with the connection closed and no answer at all when ``drop`` is set."""

    fail_list_from: int | None = None
    fail_keys: frozenset[str] = frozenset()
    status: int = 403
    code: str = "AccessDenied"
    drop: bool = False
    requests: Counter[str] = field(default_factory=Counter)  # operation -> requests seen
    lock: threading.Lock = field(default_factory=threading.Lock)


class S3FaultProxy(LoopbackServer):
    """A loopback HTTP proxy to ``upstream`` (moto) that counts requests by operation and
    breaks the ones :class:`S3Faults` names."""

    def __init__(self, upstream: str, faults: S3Faults) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults = faults
        self._listen(self._handler())

    def verdict(self, method: str, path: str) -> str:
        """'forward', 'fail' or 'drop' for one request (and count it)."""
        op = operation(method, path)
        with self.faults.lock:
            self.faults.requests[op] += 1
            nth = self.faults.requests[op]
        start = self.faults.fail_list_from
        listing = op == "ListObjectsV2" and start is not None and nth >= start
        key = unquote(urlsplit(path).path).lstrip("/").partition("/")[2]
        if listing or (op == "GetObject" and key in self.faults.fail_keys):
            return "drop" if self.faults.drop else "fail"
        return "forward"

    def forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                verdict = proxy.verdict(self.command, self.path)
                if verdict == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if verdict == "fail":
                    faults = proxy.faults
                    raw = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{faults.code}</Code>'
                        f"<Message>injected by the test proxy</Message></Error>"
                    ).encode()
                    status, headers = faults.status, [("Content-Type", "application/xml")]
                else:
                    skip = {"host", "content-length", "connection", "transfer-encoding"}
                    sent = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                    status, headers, raw = proxy.forward(self.command, self.path, body, sent)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(raw)))
                else:
                    sizes = [v for k, v in headers if k.lower() == "content-length"]
                    self.send_header("Content-Length", sizes[0] if sizes else "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(raw)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve  # noqa: N815

        return Handler
