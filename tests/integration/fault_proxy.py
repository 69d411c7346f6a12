"""A loopback HTTP proxy in front of a real OpenSearch node that rejects bulk items on purpose.

Rejected items are *not* forwarded (as when a node's write queue is full) and come back as 429
(or 503) items in an otherwise normal bulk response; the rest is forwarded unchanged. Whole bulk
requests can fail too: answered with an error and not forwarded, or forwarded and their answer
lost (a gateway timeout after the node applied them). Per id, it counts what the store sent and
what reached the node.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from rag.testing.loopback import LoopbackServer


@dataclass
class Faults:
    reject_share: float = 0.0  # share of bulk items answered 429
    unavailable_share: float = 0.0  # share of bulk items answered 503
    fatal_ids: set[str] = field(default_factory=set)  # ids answered 400 (mapping error)
    failed_share: float = 0.0  # share of bulk requests answered `failed_status`, not forwarded
    failed_status: int = 502
    lost_share: float = 0.0  # share of bulk requests forwarded, then answered 504
    registry: bool = False  # also break the ACL registry's writes (else: passed through)
    seed: int = 0
    registry_requests: int = 0  # registry bulk requests seen
    rejected: int = 0  # items answered 429 or 503
    forwarded: int = 0
    failed_requests: int = 0
    lost_responses: int = 0
    sent: Counter[str] = field(default_factory=Counter)  # per id: times the store sent it
    applied: Counter[str] = field(default_factory=Counter)  # per id: times it reached the node
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultProxy(LoopbackServer):
    def __init__(self, upstream: str, faults: Faults) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 9200)
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._request_rng = random.Random(faults.seed + 1)
        self._listen(self._handler())

    def forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def bulk(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        ops: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        i = 0
        while i < len(lines):
            action = lines[i]
            kind = next(iter(action))
            source = lines[i + 1] if kind != "delete" else None
            ops.append((action, source))
            i += 1 if source is None else 2
        if all(next(iter(a.values()))["_index"].endswith("-acls") for a, _ in ops):
            with self.faults.lock:
                self.faults.registry_requests += 1
            if not self.faults.registry:
                return self.forward("POST", path, body, headers)
        keep, verdicts = [], []
        with self.faults.lock:
            self.faults.sent.update(next(iter(a.values()))["_id"] for a, _ in ops)
            roll = self._request_rng.random()
            if roll < self.faults.failed_share:
                self.faults.failed_requests += 1
                error = {"error": {"type": "injected", "reason": "request failed"}}
                return self.faults.failed_status, json.dumps(error).encode()
            lost = roll < self.faults.failed_share + self.faults.lost_share
            for action, source in ops:
                kind = next(iter(action))
                meta = action[kind]
                if meta["_id"] in self.faults.fatal_ids:
                    verdicts.append(
                        {
                            kind: {
                                **meta,
                                "status": 400,
                                "error": {"type": "mapper_parsing_exception", "reason": "injected"},
                            }
                        }
                    )
                elif (draw := self._rng.random()) < self.faults.reject_share + (
                    self.faults.unavailable_share
                ):
                    self.faults.rejected += 1
                    verdicts.append(
                        {
                            kind: {
                                **meta,
                                "status": 429 if draw < self.faults.reject_share else 503,
                                "error": {
                                    "type": "es_rejected_execution_exception",
                                    "reason": "injected",
                                },
                            }
                        }
                    )
                else:
                    keep.append((action, source))
                    verdicts.append(None)
                    self.faults.forwarded += 1
                    self.faults.applied[meta["_id"]] += 1
        forwarded_items: list[Any] = []
        if keep:
            payload = "".join(
                json.dumps(a) + "\n" + (json.dumps(s) + "\n" if s else "") for a, s in keep
            ).encode()
            status, raw = self.forward("POST", path, payload, headers)
            if status >= 300:
                return status, raw
            forwarded_items = json.loads(raw)["items"]
        if lost:
            with self.faults.lock:
                self.faults.lost_responses += 1
            return 504, json.dumps(
                {"error": {"type": "injected", "reason": "answer lost"}}
            ).encode()
        it = iter(forwarded_items)
        items = [v if v is not None else next(it) for v in verdicts]
        errors = any(next(iter(x.values())).get("status", 200) >= 300 for x in items)
        return 200, json.dumps({"took": 1, "errors": errors, "items": items}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                if "/_bulk" in self.path and self.command in {"POST", "PUT"}:
                    status, raw = proxy.bulk(self.path, body, headers)
                else:
                    status, raw = proxy.forward(self.command, self.path, body, headers)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve  # noqa: N815

        return Handler
