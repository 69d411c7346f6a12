"""The S3 connector against a real moto server (server mode): pagination, change detection without
downloads, Bedrock metadata sidecars, failed listings, oversize objects, kill-and-resume, and the
sync contract every connector keeps."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from connectors.base import Connector, Listing
from connectors.registry import build_connector, connector_for_target
from connectors.s3 import S3Connector
from rag.config import Settings
from rag.errors import ConfigurationError, ConnectorError
from rag.identity import UserContext
from rag.models import SourceDocument, stable_hash
from rag.pipeline import ingest
from rag.retrieval.core import Retriever
from rag.stores import build_store
from tests.moto_server import (
    S3FaultProxy,
    S3Faults,
    aws_credentials,
    moto_endpoint,
    put_objects,
)
from tests.sync_contract import ACCESS_CORE, ALICE, SyncContract, make_corpus, rows, uris

pytestmark = pytest.mark.integration

BIG = 1000
ENG = b'allow = ["group:eng"]\n'


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with moto_endpoint() as url:
        yield url


@pytest.fixture(scope="module", autouse=True)
def _aws_env() -> Iterator[None]:
    with aws_credentials():
        yield


@pytest.fixture(scope="module")
def s3(moto_url: str, _aws_env: None) -> Any:
    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")


def new_bucket(s3: Any) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def put_all(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    put_objects(s3.meta.endpoint_url, bucket, objects)


def note(i: int) -> bytes:
    return f"# Note {i}\n\nDesign note {i} about subsystem {i % 17}.\n".encode()


def gets(connector: S3Connector) -> list[str]:
    """The keys of every GetObject call the connector's client makes from now on."""
    keys: list[str] = []
    connector.client.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: keys.append(params["Key"])
    )
    return keys


def fast_settings(data: Path) -> Settings:
    return Settings(
        data_dir=data, embedding={"provider": "hash", "batch_size": 256}, sync={"batch_size": 500}
    )


# -- 1,000 objects: pagination, re-sync cost, listings that fail part-way -----------------------
@pytest.fixture(scope="module")
def big(s3: Any, moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bucket of 1,000 notes under ``docs/`` (one policy), ingested once."""
    bucket = new_bucket(s3)
    put_all(s3, bucket, {f"docs/n/{i:04d}.md": note(i) for i in range(BIG)})
    s3.put_object(Bucket=bucket, Key="docs/.rag-acl.toml", Body=ENG)
    s3.put_object(Bucket=bucket, Key="elsewhere/x.md", Body=b"# not under the prefix\n")
    settings = fast_settings(tmp_path_factory.mktemp("big") / "data")
    connector = S3Connector(bucket, "docs", "big", endpoint_url=moto_url, page_size=100)
    keys = gets(connector)
    first = ingest(connector, settings)
    assert (first.new, first.documents_ingested, len(first.quarantined)) == (BIG, BIG, 0)
    assert len(keys) == BIG + 1  # every note once, and the policy
    return {"bucket": bucket, "settings": settings, "connector": connector}


def test_lists_1000_objects_across_pages(big: dict[str, Any], moto_url: str) -> None:
    faults = S3Faults()
    with S3FaultProxy(moto_url, faults) as proxy:
        connector = S3Connector(
            big["bucket"], "docs/", "big", endpoint_url=proxy.url, page_size=100
        )
        listing = connector.list_documents()
    assert listing.complete and listing.errors == () and listing.policy_errors == ()
    assert faults.requests["ListObjectsV2"] == 11  # 1,001 keys (the policy too), 100 a page
    assert faults.requests["GetObject"] == 1  # the policy; no document is downloaded
    assert [d.uri for d in listing.documents] == [f"n/{i:04d}.md" for i in range(BIG)]
    doc = listing.documents[7]
    assert doc.id == stable_hash("big", "n/0007.md")
    assert doc.metadata["link"] == f"s3://{big['bucket']}/docs/n/0007.md"
    assert doc.acl is not None and doc.acl.allow == {"group:eng"}
    assert doc.size_bytes == len(note(7)) and doc.mime_type == "text/markdown"
    again = big["connector"].list_documents()
    assert [d.content_hash for d in again.documents] == [d.content_hash for d in listing.documents]


def test_resync_of_1000_unchanged_objects_reads_nothing(big: dict[str, Any], moto_url: str) -> None:
    connector: S3Connector = big["connector"]
    keys = gets(connector)
    start = time.perf_counter()
    summary = ingest(connector, big["settings"])
    seconds = time.perf_counter() - start
    assert (summary.unchanged, summary.changed, summary.new) == (BIG, 0, 0)
    assert summary.embedding_calls == 0
    assert keys == []  # the same connector: not even the policy is read again (same ETag)
    fresh = S3Connector(big["bucket"], "docs", "big", endpoint_url=moto_url, page_size=100)
    fresh_keys = gets(fresh)
    assert ingest(fresh, big["settings"]).embedding_calls == 0
    assert fresh_keys == ["docs/.rag-acl.toml"]  # a new process reads the policy, nothing else
    print(f"\nre-sync of {BIG} unchanged objects: {seconds:.2f} s")


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(S3Faults(fail_list_from=3), id="access-denied"),
        pytest.param(S3Faults(fail_list_from=3, drop=True), id="connection-dropped"),
    ],
)
def test_listing_that_fails_on_page_3_is_partial_and_deletes_nothing(
    big: dict[str, Any], moto_url: str, faults: S3Faults
) -> None:
    with S3FaultProxy(moto_url, faults) as proxy:
        connector = S3Connector(
            big["bucket"], "docs", "big", endpoint_url=proxy.url, page_size=100, max_attempts=2
        )
        listing = connector.list_documents()
        assert not listing.complete
        (error,) = listing.errors
        assert "page 3" in error and "after 200 objects" in error
        # 200 keys: the policy and 199 notes, less the last (its sidecar could come next)
        assert [d.uri for d in listing.documents] == [f"n/{i:04d}.md" for i in range(198)]
        faults.requests.clear()  # and the same again, as the pipeline lists
        summary = ingest(connector, big["settings"])
    assert not summary.listing_complete
    assert (summary.tombstoned, summary.deleted, summary.unchanged) == (0, 0, 198)
    assert summary.deletion_blocked is not None
    states = build_store(big["settings"]).sync_state().load("big")
    assert len(states) == BIG and {s.status for s in states.values()} == {"live"}


def test_no_such_bucket_is_an_error(moto_url: str) -> None:
    connector = S3Connector("no-such-bucket-here", "", "x", endpoint_url=moto_url)
    with pytest.raises(ConnectorError, match="no such bucket"):
        connector.list_documents()


def test_partial_listing_lists_only_what_it_can_prove(s3: Any, moto_url: str) -> None:
    """Keys come sorted, and a governing key may sort after the document: a listing cut before
    it cannot tell whether it exists, so the document is left out (deleting nothing)."""
    bucket = new_bucket(s3)
    put_all(
        s3,
        bucket,
        {
            "d/-early.md": note(1),  # '-' sorts before '.rag-acl.toml': listed before its policy
            "d/.rag-acl.toml": b'allow = ["group:eng"]\ndeny = ["user:alice"]\n',
            "d/a.md": note(2),
            "d/a.md.metadata.json": b'{"deny": ["user:bob"]}',
            "d/b.md": note(3),
        },
    )
    # page n fails: n - 1 keys listed; a document needs its policy's and its sidecar's keys
    # (present, or proven absent because the listing went past them)
    expected = {1: [], 2: [], 3: ["-early.md"], 4: ["-early.md"], 5: ["-early.md", "a.md"]}
    for fail_at, listed in expected.items():
        with S3FaultProxy(moto_url, S3Faults(fail_list_from=fail_at)) as proxy:
            connector = S3Connector(bucket, "d", "p", endpoint_url=proxy.url, page_size=1)
            listing = connector.list_documents()
        assert not listing.complete
        assert [d.uri for d in listing.documents] == listed, fail_at
        for doc in listing.documents:  # every deny that governs it is known
            assert doc.acl is not None and "user:alice" in doc.acl.deny
        if "a.md" in listed:
            assert "user:bob" in listing.documents[1].acl.deny  # type: ignore[union-attr]


def test_a_policy_or_sidecar_that_cannot_be_read_leaves_its_documents_out(
    s3: Any, moto_url: str
) -> None:
    bucket = new_bucket(s3)
    put_all(
        s3,
        bucket,
        {
            ".rag-acl.toml": ENG,
            "top.md": note(0),
            "a/.rag-acl.toml": b'deny = ["user:alice"]\n',
            "a/x.md": note(1),
            "a/deeper/y.md": note(2),
            "b/z.md": note(3),
            "b/z.md.metadata.json": b'{"deny": ["user:bob"]}',
            "b/w.md": note(4),
        },
    )
    faults = S3Faults(fail_keys=frozenset({"a/.rag-acl.toml", "b/z.md.metadata.json"}), status=500)
    with S3FaultProxy(moto_url, faults) as proxy:
        connector = S3Connector(bucket, "", "r", endpoint_url=proxy.url, max_attempts=1)
        listing = connector.list_documents()
    assert not listing.complete
    assert sorted(e.rpartition(": cannot read")[0] for e in listing.errors) == [
        f"s3://{bucket}/a/.rag-acl.toml",
        f"s3://{bucket}/b/z.md.metadata.json",
    ]
    assert [d.uri for d in listing.documents] == ["b/w.md", "top.md"]


def test_keys_with_empty_segments_cannot_stand_in_for_a_policy(s3: Any, moto_url: str) -> None:
    bucket = new_bucket(s3)
    put_all(
        s3,
        bucket,
        {
            "d/.rag-acl.toml": b'allow = ["group:eng"]\ndeny = ["user:mallory"]\n',
            "d//.rag-acl.toml": b"public = true\n",  # sorts after the real one
            "d/x.md": note(1),
            "d//y.md": note(2),
            "d/sub/": b"",
        },
    )
    listing = S3Connector(bucket, "d", "e", endpoint_url=moto_url).list_documents()
    assert listing.complete and [d.uri for d in listing.documents] == ["x.md"]
    acl = listing.documents[0].acl
    assert acl is not None and acl.allow == {"group:eng"} and "user:mallory" in acl.deny


# -- Bedrock metadata sidecars --------------------------------------------------------------
def sidecar(attributes: dict[str, Any], **acl: Any) -> bytes:
    return json.dumps({"metadataAttributes": attributes, **acl}, indent=2).encode()


@pytest.fixture
def small(s3: Any, moto_url: str, settings: Settings) -> dict[str, Any]:
    bucket = new_bucket(s3)
    put_all(
        s3,
        bucket,
        {
            "kb/.rag-acl.toml": ENG + b'deny = ["user:mallory"]\n',
            "kb/report.md": note(1),
            "kb/report.md.metadata.json": sidecar(
                {
                    "team": "finance",
                    "year": 2024,
                    "final": True,
                    "tags": ["q3", "budget"],
                    "author": {
                        "value": {"type": "STRING", "stringValue": "Lisa"},
                        "includeForEmbedding": True,
                    },
                }
            ),
            "kb/plain.md": note(2),
            "kb/orphan.pdf.metadata.json": sidecar({"x": 1}),  # no object: ignored
            "kb/folder/": b"",  # a folder marker: not a document
        },
    )

    def connector() -> S3Connector:
        return S3Connector(bucket, "kb", "kb", endpoint_url=moto_url)

    return {"bucket": bucket, "connector": connector, "settings": settings}


def by_uri(listing: Listing) -> dict[str, SourceDocument]:
    return {d.uri: d for d in listing.documents}


def test_sidecar_attributes_become_document_metadata(small: dict[str, Any]) -> None:
    listing = small["connector"]().list_documents()
    assert listing.complete and listing.policy_errors == ()
    docs = by_uri(listing)
    assert sorted(docs) == ["plain.md", "report.md"]
    meta = docs["report.md"].metadata
    assert meta["attr.team"] == "finance" and meta["attr.year"] == 2024
    assert meta["attr.final"] is True and meta["attr.author"] == "Lisa"
    assert json.loads(str(meta["attr.tags"])) == ["q3", "budget"]
    assert meta["link"] == f"s3://{small['bucket']}/kb/report.md"
    assert not any(k.startswith("attr.") for k in docs["plain.md"].metadata)


def put(s3: Any, small: dict[str, Any], key: str, body: bytes) -> None:
    s3.put_object(Bucket=small["bucket"], Key=f"kb/{key}", Body=body)


def test_sidecar_acl_change_is_an_acl_only_update(s3: Any, small: dict[str, Any]) -> None:
    settings = small["settings"]
    ingest(small["connector"](), settings)
    bob = UserContext.of("bob")
    assert "report.md" in uris(settings, ALICE) and "report.md" not in uris(settings, bob)
    put(s3, small, "report.md.metadata.json", sidecar({"team": "finance"}, allow=["user:bob"]))
    ingest(small["connector"](), settings)  # the attributes changed too: re-chunked once
    put(
        s3,
        small,
        "report.md.metadata.json",
        sidecar({"team": "finance"}, allow=["user:bob"], deny=["user:alice"]),
    )
    connector = small["connector"]()
    keys = gets(connector)
    summary = ingest(connector, settings)
    assert (summary.acl_only, summary.changed, summary.embedding_calls) == (1, 0, 0)
    assert "kb/report.md" not in keys  # the document itself is not downloaded
    assert "report.md" in uris(settings, bob)
    assert "report.md" not in uris(settings, ALICE)
    mallory = UserContext.of("mallory", ["eng"])
    assert "report.md" not in uris(settings, mallory)  # the folder's deny still applies


def test_sidecar_metadata_change_costs_no_embedding_call(s3: Any, small: dict[str, Any]) -> None:
    settings = small["settings"]
    first = ingest(small["connector"](), settings)
    assert first.embedding_calls > 0
    put(s3, small, "report.md.metadata.json", sidecar({"team": "treasury", "year": 2025}))
    connector = small["connector"]()
    keys = gets(connector)
    summary = ingest(connector, settings)
    assert (summary.changed, summary.unchanged, summary.acl_only) == (1, 1, 0)
    assert summary.embedding_calls == 0  # same text: the embedding cache answers
    assert keys.count("kb/report.md") == 1
    hits = Retriever.from_settings(settings).retrieve("design note subsystem", ALICE, k=20)
    report = [h.chunk.metadata for h in hits if h.chunk.citation.uri == "report.md"]
    assert report and all(m["attr.team"] == "treasury" and "attr.tags" not in m for m in report)
    assert all(m["link"] == f"s3://{small['bucket']}/kb/report.md" for m in report)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(b'{"metadataAttributes": {"team": "x",}}', "invalid JSON", id="bad-json"),
        pytest.param(sidecar({"pad": "x" * 11_000}), "over the 10240-byte limit", id="oversize"),
    ],
)
def test_broken_sidecar_hides_its_object_and_says_why(
    s3: Any, small: dict[str, Any], body: bytes, problem: str
) -> None:
    settings = small["settings"]
    ingest(small["connector"](), settings)
    assert "report.md" in uris(settings, ALICE)
    put(s3, small, "report.md.metadata.json", body)
    summary = ingest(small["connector"](), settings)
    assert summary.listing_complete
    assert any("report.md.metadata.json" in p and problem in p for p in summary.policy_errors)
    (record,) = summary.quarantined
    assert (record.uri, record.reason) == ("report.md", "policy_error")
    assert "report.md.metadata.json" in record.message
    assert uris(settings, ALICE) == {"plain.md"}  # hidden, never shown without its sidecar
    put(s3, small, "report.md.metadata.json", sidecar({"team": "finance"}))
    ingest(small["connector"](), settings)
    assert "report.md" in uris(settings, ALICE)


def test_sidecar_inherit_false_keeps_the_folder_deny(s3: Any, small: dict[str, Any]) -> None:
    settings = small["settings"]
    put(s3, small, "plain.md.metadata.json", sidecar({}, inherit=False, allow=["user:Mallory"]))
    put(s3, small, "report.md.metadata.json", sidecar({}, inherit=False, allow=["user:Bob"]))
    ingest(small["connector"](), settings)
    assert uris(settings, ALICE) == set()  # the folder's allow is dropped for both
    assert uris(settings, UserContext.of("bob")) == {"report.md"}
    assert uris(settings, UserContext.of("mallory")) == set()  # denied above: always


def test_objects_over_the_size_limit_are_quarantined_unread(
    s3: Any, moto_url: str, settings: Settings
) -> None:
    bucket = new_bucket(s3)
    put_all(
        s3,
        bucket,
        {".rag-acl.toml": ENG, "small.md": note(1), "big.md": b"# Big\n\n" + b"word " * 400},
    )
    connector = S3Connector(bucket, "", "sz", endpoint_url=moto_url, max_object_bytes=1000)
    keys = gets(connector)
    summary = ingest(connector, settings)
    (record,) = summary.quarantined
    assert (record.uri, record.stage, record.reason) == ("big.md", "read", "too_large")
    assert "not downloaded" in record.message
    assert sorted(keys) == [".rag-acl.toml", "small.md"]  # big.md: never a GetObject
    assert uris(settings, ALICE) == {"small.md"}
    again = ingest(connector, settings)  # and not retried while it is unchanged
    assert again.unchanged == 2 and sorted(keys) == [".rag-acl.toml", "small.md"]


def test_rag_ingest_an_s3_url(
    s3: Any, moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from rag.cli import app

    bucket = new_bucket(s3)
    put_all(s3, bucket, {"hb/.rag-acl.toml": ENG, "hb/a.md": note(1), "other/b.md": note(2)})
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)  # boto3's own setting: an S3-like store
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["ingest", f"s3://{bucket}/hb", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["source"], summary["new"], summary["documents_ingested"]) == (bucket, 1, 1)


def test_options_and_cli_target(moto_url: str) -> None:
    via_cli = connector_for_target("s3://some-bucket/a/b", None)
    assert isinstance(via_cli, S3Connector)
    assert (via_cli.name, via_cli.url) == ("some-bucket", "s3://some-bucket/a/b/")
    declared = build_connector(
        "s3",
        "docs",
        {"bucket": "b1", "prefix": "p", "endpoint_url": "http://127.0.0.1:9", "page_size": 5},
        Path("."),
    )
    assert isinstance(declared, S3Connector) and declared.url == "s3://b1/p/"  # and no I/O yet
    bad: list[dict[str, Any]] = [
        {"url": "https://b1/p"},
        {"url": "s3://b1/p", "bucket": "b1"},
        {"bucket": "b1", "page_size": 5000},
        {"bucket": "b1", "page_size": True},
        {"bucket": "b1", "case_sensitive_ids": "yes"},
        {"bucket": "b1", "colour": "blue"},
        {"prefix": "p"},
    ]
    for options in bad:
        with pytest.raises(ConfigurationError):
            build_connector("s3", "docs", options, Path("."))


# -- kill and resume ------------------------------------------------------------------------
_CHILD = """
import os, signal, sys
from connectors.s3 import S3Connector
from rag.config import Settings
from rag.pipeline import ingest
from rag.retrieval.core import Retriever
def checkpoint(name):
    if name == "flushed":
        os.kill(os.getpid(), signal.SIGKILL)
connector = S3Connector(sys.argv[2], "src", "src", endpoint_url=sys.argv[1])
ingest(connector, Settings.model_validate_json(sys.argv[3]), checkpoint=checkpoint)
print("finished", flush=True)
"""


def test_kill_and_resume_converges_to_a_clean_run(s3: Any, moto_url: str, tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "src", docs=40)
    bucket = new_bucket(s3)
    put_all(
        s3,
        bucket,
        {
            f"src/{p.relative_to(root).as_posix()}": p.read_bytes()
            for p in root.rglob("*")
            if p.is_file()
        },
    )

    def settings(name: str) -> Settings:
        return Settings.model_validate(
            {
                "data_dir": str(tmp_path / name),
                "embedding": {"provider": "hash", "batch_size": 2},
                "sync": {"batch_size": 20},
            }
        )

    clean = settings("clean")
    ingest(S3Connector(bucket, "src", "src", endpoint_url=moto_url), clean)
    expected = rows(build_store(clean))
    killed = settings("killed")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # killed once the first 16 chunks are written: the next process lists again and reads the
    # rest at the ETags it lists
    args = [sys.executable, "-c", _CHILD, moto_url, bucket, killed.model_dump_json()]
    child = subprocess.run(args, capture_output=True, env=env, text=True, timeout=300, check=False)
    assert child.returncode == -signal.SIGKILL, (child.stdout, child.stderr)
    assert 0 < len(rows(build_store(killed))) < len(expected)  # it died half-way
    ingest(S3Connector(bucket, "src", "src", endpoint_url=moto_url), killed)
    got = rows(build_store(killed))
    assert got.keys() == expected.keys()
    assert got == expected
    assert build_store(killed).count() == len(expected)


# -- the sync contract: the folder the tests edit, mirrored into a bucket at every listing ----
def mirror(s3: Any, bucket: str, prefix: str, root: Path) -> None:
    """Make ``s3://bucket/prefix`` hold what ``root`` holds: upload what changed, delete what
    is gone."""
    local = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    remote: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            remote[item["Key"][len(prefix) :]] = item["ETag"].strip('"')
    for rel, data in local.items():
        if remote.get(rel) != hashlib.md5(data).hexdigest():  # what S3 puts in the ETag
            s3.put_object(Bucket=bucket, Key=prefix + rel, Body=data)
    gone = [{"Key": prefix + rel} for rel in remote if rel not in local]
    if gone:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": gone})


class _Mirrored:
    """An S3 connector over a bucket that mirrors ``root`` each time it lists."""

    def __init__(self, s3: Any, bucket: str, root: Path, endpoint: str) -> None:
        self._s3, self._bucket, self._root = s3, bucket, root
        self._prefix = f"{stable_hash(str(root), length=12)}/"
        self._inner = S3Connector(bucket, self._prefix, "src", endpoint_url=endpoint)

    @property
    def name(self) -> str:
        return self._inner.name

    def list_documents(self) -> Listing:
        mirror(self._s3, self._bucket, self._prefix, self._root)
        return self._inner.list_documents()

    def read(self, document: SourceDocument) -> bytes:
        return self._inner.read(document)


@pytest.fixture(scope="module")
def contract_bucket(s3: Any) -> str:
    return new_bucket(s3)


class TestS3Sync(SyncContract):
    @pytest.fixture
    def sync_settings(self, settings: Settings) -> Settings:
        return settings

    @pytest.fixture(autouse=True)
    def _s3(self, s3: Any, contract_bucket: str, moto_url: str) -> None:
        self._make: Callable[[Path], Connector] = lambda root: _Mirrored(
            s3, contract_bucket, root, moto_url
        )

    def connector(self, root: Path) -> Connector:
        return self._make(root)


@pytest.mark.extended
class TestS3SyncOnOpenSearch(TestS3Sync):
    """The same contract over S3 with the OpenSearch store."""

    only = ACCESS_CORE

    @pytest.fixture
    def sync_settings(self, opensearch_sync_settings: Settings) -> Settings:
        return opensearch_sync_settings
