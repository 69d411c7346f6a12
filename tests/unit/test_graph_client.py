"""The Graph client against the loopback Graph (TLS, Entra token endpoint, $batch), and the
loopback Graph against the response shapes Graph documents (tests/golden/graph)."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.graph import (
    GraphClient,
    GraphError,
    GraphGoneError,
    MsalTokenSource,
    retry_after_seconds,
)
from rag.errors import ConfigurationError
from rag.testing.graph import (
    GraphServer,
    group_grant,
    link_grant,
    site_group_grant,
    user_grant,
)

GOLDEN = Path(__file__).parents[1] / "golden" / "graph"


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text("utf-8"))


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphServer]:
    with GraphServer() as server:
        yield server


@pytest.fixture
def server(graph: GraphServer) -> GraphServer:
    graph.reset()
    return graph


def tokens(server: GraphServer, secret: Any = None) -> MsalTokenSource:
    credential = server.client_secret if secret is None else secret
    return MsalTokenSource(
        tenant_id=server.tenant,
        client_id=server.client_id,
        credential=lambda: credential,
        authority_url=server.base_url,
        ca_bundle=server.ca_bundle,
    )


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(server: GraphServer, sleep: Sleeps | None = None, **kw: Any) -> GraphClient:
    return GraphClient(
        server.base_url,
        tokens(server),
        ca_bundle=server.ca_bundle,
        sleep=sleep if sleep is not None else Sleeps(),
        **kw,
    )


def drive_with(server: GraphServer, files: int) -> str:
    drive = server.add_drive(root_permissions=[group_grant("eng")])
    for i in range(files):
        server.put(drive.id, f"eng/note-{i:03d}.md", f"note {i}".encode())
    return drive.id


def test_one_token_serves_every_request(server: GraphServer) -> None:
    drive = drive_with(server, 3)
    graph = client(server)
    for _ in range(4):
        graph.get_json(f"/drives/{drive}")
    assert server.token_requests == 1
    assert server.count(r"/v2.0/.well-known/openid-configuration") == 1
    form = server.token_forms[0]
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "https://graph.microsoft.com/.default"
    assert form["client_secret"] == server.client_secret


def test_a_rejected_secret_is_named_but_never_echoed(server: GraphServer) -> None:
    graph = GraphClient(
        server.base_url, tokens(server, "not-the-secret"), ca_bundle=server.ca_bundle
    )
    with pytest.raises(GraphError, match="invalid_client: AADSTS7000215") as caught:
        graph.get_json("/drives/x")
    assert "not-the-secret" not in str(caught.value)


def test_a_certificate_signs_the_client_assertion(server: GraphServer) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rag-connector")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    credential = {"private_key": key_pem.decode(), "public_certificate": cert_pem.decode()}
    server.client_certificate = cert_pem
    try:
        graph = GraphClient(server.base_url, tokens(server, credential), ca_bundle=server.ca_bundle)
        drive = drive_with(server, 1)
        assert graph.get_json(f"/drives/{drive}")["id"] == drive
    finally:
        server.client_certificate = None
    (form,) = server.token_forms
    assert "client_secret" not in form
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_pages_follow_next_link_to_the_delta_link(server: GraphServer) -> None:
    drive = drive_with(server, 5)  # root, eng and 5 files
    pages = list(client(server).pages(f"/drives/{drive}/root/delta?$top=2"))
    assert [len(p["value"]) for p in pages] == [2, 2, 2, 1]
    assert all("@odata.nextLink" in p for p in pages[:-1])
    assert "@odata.deltaLink" in pages[-1] and "@odata.nextLink" not in pages[-1]
    names = [i["name"] for p in pages for i in p["value"]]
    assert names[:2] == ["root", "eng"] and len(set(names)) == 7
    assert server.count(r"/root/delta") == 4


def test_links_off_the_graph_origin_are_refused(server: GraphServer) -> None:
    graph = client(server)
    assert graph.owns(f"{server.base_url}/v1.0/drives/x")
    with pytest.raises(GraphError, match="refusing to follow"):
        graph.get_json("https://attacker.example/v1.0/drives/x")
    with pytest.raises(ConfigurationError, match="https"):
        GraphClient("http://127.0.0.1:1", tokens(server))
    assert server.count(r"attacker") == 0


def test_throttling_waits_what_retry_after_says(server: GraphServer) -> None:
    drive = drive_with(server, 1)
    sleeps = Sleeps()
    server.throttle(r"/v1.0/drives/[^/]+$", times=2, retry_after="1")
    assert client(server, sleeps).get_json(f"/drives/{drive}")["id"] == drive
    assert sleeps == [1.0, 1.0]
    assert server.count(r"/v1.0/drives/[^/]+$") == 3


def test_throttling_retries_are_bounded(server: GraphServer) -> None:
    sleeps = Sleeps()
    server.throttle(r"/v1.0/drives/", times=10, retry_after="0")
    with pytest.raises(GraphError, match="429 TooManyRequests") as caught:
        client(server, sleeps, max_retries=2).get_json("/drives/any")
    assert caught.value.status == 429
    assert sleeps == [0.0, 0.0]


def test_unavailable_without_retry_after_backs_off_and_caps(server: GraphServer) -> None:
    drive = drive_with(server, 1)
    sleeps = Sleeps()
    server.throttle(r"/v1.0/drives/", times=3, retry_after=None, status=503)
    graph = client(server, sleeps, max_retry_after=3.0)
    assert graph.get_json(f"/drives/{drive}")["id"] == drive
    assert sleeps == [1.0, 2.0, 3.0]
    server.throttle(r"/v1.0/drives/", times=1, retry_after="7200")
    graph.get_json(f"/drives/{drive}")
    assert sleeps[-1] == 3.0  # a Retry-After of two hours waits the cap, not two hours


def test_other_errors_are_not_retried(server: GraphServer) -> None:
    sleeps = Sleeps()
    with pytest.raises(GraphError, match="404 itemNotFound") as caught:
        client(server, sleeps).get_json("/drives/no-such-drive")
    assert (caught.value.status, caught.value.code, sleeps) == (404, "itemNotFound", [])


def test_batch_sends_twenty_at_a_time_and_retries_only_the_throttled(
    server: GraphServer,
) -> None:
    drive = server.add_drive(root_permissions=[group_grant("eng")])
    items = [server.put(drive.id, f"n{i}.md", b"x").id for i in range(45)]
    server.fail_permissions(drive.id, "n3.md", 403)
    server.throttle(rf"/items/{items[7]}/permissions", times=2, retry_after="1")
    sleeps = Sleeps()
    requests = [
        (str(i), f"/drives/{drive.id}/items/{item}/permissions") for i, item in enumerate(items)
    ]
    answers = client(server, sleeps).batch(requests)
    assert sorted(answers, key=int) == [str(i) for i in range(45)]
    assert {a.status for k, a in answers.items() if k != "3"} == {200}
    assert answers["3"].status == 403 and "accessDenied" in answers["3"].describe()
    assert answers["7"].body["value"][0]["grantedToV2"]["group"]["id"] == "eng"
    assert server.count(r"\$batch", "POST") == 3 + 2  # 20 + 20 + 5, then item 7 twice alone
    assert sleeps == [1.0, 1.0]
    assert server.count(rf"/items/{items[3]}/permissions") == 1  # a 403 is an answer


def test_a_batch_that_fails_whole_answers_each_request_with_the_reason(
    server: GraphServer,
) -> None:
    drive = drive_with(server, 2)
    server.fail(r"\$batch", times=5, status=500)
    answers = client(server, max_retries=1).batch([("a", f"/drives/{drive}"), ("b", "/x")])
    assert {a.status for a in answers.values()} == {0}
    assert "500" in answers["a"].describe()


def test_an_expired_delta_token_is_gone_with_a_fresh_location(server: GraphServer) -> None:
    drive = drive_with(server, 2)
    graph = client(server)
    last = list(graph.pages(f"/drives/{drive}/root/delta"))[-1]
    server.expire_delta_tokens(drive)
    with pytest.raises(GraphGoneError) as caught:
        graph.get_json(last["@odata.deltaLink"])
    gone = caught.value
    assert (gone.status, gone.code) == (410, "resyncChangesApplyDifferences")
    assert gone.location is not None and graph.owns(gone.location) and "token=" not in gone.location


def test_download_follows_the_redirect(server: GraphServer) -> None:
    drive = server.add_drive(root_permissions=[])
    item = server.put(drive.id, "a/b.pdf", b"%PDF-1.7 bytes")
    data = client(server).download(f"/drives/{drive.id}/items/{item.id}/content")
    assert data == b"%PDF-1.7 bytes"
    assert server.count(r"^/download/") == 1


def test_retry_after_is_seconds_or_an_http_date() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 0 ") == 0.0
    later = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30), True)
    assert 25 < (retry_after_seconds(later) or 0) <= 30
    assert retry_after_seconds("soon") is None


# -- the loopback server speaks the documented shapes --------------------------------------------


def shape(value: Any) -> Any:
    """The keys of every object, nested (lists merged): what a response is made of."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        merged: dict[str, Any] = {}
        for element in value:
            sub = shape(element)
            if isinstance(sub, dict):
                for k, v in sub.items():
                    merged[k] = merge(merged.get(k), v)
        return [merged] if merged else []
    return None


def merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge(a.get(k), b.get(k)) for k in a.keys() | b.keys()}
    return a if a is not None else b


def within(ours: Any, documented: Any, where: str = "") -> list[str]:
    """Keys of ``ours`` that the documented shape does not have."""
    if isinstance(ours, list) and isinstance(documented, list):
        return within(ours[0] if ours else None, documented[0] if documented else None, where)
    if not isinstance(ours, dict):
        return []
    if not isinstance(documented, dict):
        return [f"{where} is an object"]
    out = []
    for key, sub in ours.items():
        if key.startswith("@odata.") and key != "@odata.nextLink" and key != "@odata.deltaLink":
            continue
        if key not in documented:
            out.append(f"{where}.{key}")
        else:
            out += within(sub, documented[key], f"{where}.{key}")
    return out


def test_the_loopback_delta_pages_have_the_documented_shape(server: GraphServer) -> None:
    drive = drive_with(server, 3)
    graph = client(server)
    first = graph.get_json(f"/drives/{drive}/root/delta?$top=3")
    documented = merge(
        shape(golden("delta_page_next.json")), shape(golden("delta_page_final.json"))
    )
    assert within(shape(first), documented) == []
    assert "@odata.nextLink" in first
    rest = list(graph.pages(first["@odata.nextLink"]))
    server.delete(drive, "eng/note-001.md")
    server.put(drive, "eng/note-002.md", b"changed")
    changes = graph.get_json(rest[-1]["@odata.deltaLink"])
    assert within(shape(changes), documented) == []
    deleted = [i for i in changes["value"] if "deleted" in i]
    assert len(deleted) == 1 and "name" not in deleted[0]
    assert all("cTag" not in i for i in changes["value"])  # as OneDrive for Business omits it


def test_the_loopback_permissions_batch_and_errors_have_the_documented_shape(
    server: GraphServer,
) -> None:
    drive = server.add_drive(root_permissions=[site_group_grant("3", "Owners", ["owner"])])
    server.put(
        drive.id,
        "eng/a.md",
        b"a",
        [
            user_grant("megan@contoso.com"),
            group_grant("g1"),
            link_grant("users", users=["misty@contoso.com"]),
            link_grant("anonymous"),
            link_grant("organization"),
        ],
    )
    inherited = server.put(drive.id, "eng/b.md", b"b")
    unique = server.drives[drive.id].find("eng/a.md")
    assert unique is not None
    graph = client(server)
    documented = shape(golden("permissions.json"))
    for item in (unique.id, inherited.id):
        page = graph.get_json(f"/drives/{drive.id}/items/{item}/permissions")
        assert within(shape(page), documented) == []
    batch_shape = shape(golden("batch_response.json"))
    server.throttle(r"/items/.*/permissions", times=1, retry_after="0")
    raw = graph.request(
        "POST",
        "/$batch",
        json={
            "requests": [
                {
                    "id": "1",
                    "method": "GET",
                    "url": f"/drives/{drive.id}/items/{unique.id}/permissions",
                },
                {
                    "id": "2",
                    "method": "GET",
                    "url": f"/drives/{drive.id}/items/{inherited.id}/permissions",
                },
            ]
        },
    ).json()
    statuses = sorted(r["status"] for r in raw["responses"])
    assert statuses == [200, 429]
    throttled = next(r for r in raw["responses"] if r["status"] == 429)
    assert throttled["headers"]["Retry-After"] == "0"
    envelope = {
        "responses": [{k: v for k, v in r.items() if k != "body"} for r in raw["responses"]]
    }
    assert within(shape(envelope), batch_shape) == []
    for response in raw["responses"]:
        body_shape = (
            documented if response["status"] == 200 else batch_shape["responses"][0]["body"]
        )
        assert within(shape(response["body"]), body_shape) == []
    last = list(graph.pages(f"/drives/{drive.id}/root/delta"))[-1]
    server.expire_delta_tokens(drive.id)
    response = graph._client().get(
        last["@odata.deltaLink"], headers={"Authorization": f"Bearer {tokens(server).token()}"}
    )
    assert response.status_code == 410
    assert within(shape(response.json()), shape(golden("error_410.json"))) == []
    assert response.json()["error"]["code"] == golden("error_410.json")["error"]["code"]


def test_the_loopback_token_and_drive_have_the_documented_shape(server: GraphServer) -> None:
    drive = drive_with(server, 0)
    graph = client(server)
    assert within(shape(graph.get_json(f"/drives/{drive}")), shape(golden("drive.json"))) == []
    import httpx

    form = {
        "grant_type": "client_credentials",
        "client_id": server.client_id,
        "client_secret": server.client_secret or "",
        "scope": "https://graph.microsoft.com/.default",
    }
    reply = httpx.post(
        f"{server.base_url}/{server.tenant}/oauth2/v2.0/token",
        data=form,
        verify=__import__("ssl").create_default_context(cafile=str(server.ca_bundle)),
    ).json()
    assert set(reply) == set(golden("token_response.json"))
