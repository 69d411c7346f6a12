"""Settings derived from the environment's settings keep their secrets (issue 12).

A JSON-mode dump turns every ``SecretStr`` into ``'**********'``; each derivation path below
must hand the real password on to the store's client.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from evaluation.runner import suite_settings
from evaluation.suite import Suite
from rag.config import Settings
from rag.errors import ConfigurationError
from rag.orchestration import settings_from_connections
from rag.sources import SourceSpec

SECRET = "s3cret-p@ss"


@pytest.fixture
def base(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RAG_STORE__OPENSEARCH__USERNAME", "ingest")
    monkeypatch.setenv("RAG_STORE__OPENSEARCH__PASSWORD", SECRET)
    settings = Settings()
    assert settings.store.opensearch.password == SecretStr(SECRET)
    return settings


def _password(settings: Settings) -> str | None:
    secret = settings.store.opensearch.password
    return None if secret is None else secret.get_secret_value()


DERIVATIONS: dict[str, Callable[[Settings, Path], Settings]] = {
    "source without overrides": lambda b, _: SourceSpec(name="s").settings_over(b),
    "source with overrides": lambda b, _: SourceSpec(
        name="s",
        store="opensearch",
        embedder="hash",
        settings={"chunking": {"max_tokens": 300}, "store": {"opensearch": {"alias": "kb"}}},
    ).settings_over(b),
    "no connections": lambda b, _: settings_from_connections(b),
    "aws connection only": lambda b, _: settings_from_connections(
        b, aws={"extra": {"region_name": "eu-west-1"}}
    ),
    "opensearch connection without login": lambda b, _: settings_from_connections(
        b, opensearch={"host": "search.internal", "port": 9200}
    ),
    "evaluation suite": lambda b, tmp: suite_settings(
        Suite(name="tiny", store="opensearch", embedder="hash"), tmp, b
    ),
    "airflow task (source, then connections)": lambda b, _: settings_from_connections(
        SourceSpec(name="s", store="opensearch").settings_over(b),
        {"host": "search.internal"},
        {"extra": {"region_name": "eu-west-1"}},
    ),
}


@pytest.mark.parametrize("path", list(DERIVATIONS))
def test_derived_settings_keep_the_password(base: Settings, tmp_path: Path, path: str) -> None:
    derived = DERIVATIONS[path](base, tmp_path)
    assert _password(derived) == SECRET
    assert derived.store.opensearch.username == "ingest"
    assert derived is not base and _password(base) == SECRET  # the base is not changed


@pytest.mark.parametrize("path", list(DERIVATIONS))
def test_the_client_authenticates_with_the_real_password(
    base: Settings, tmp_path: Path, path: str
) -> None:
    from rag.stores.opensearch import _make_client

    client = _make_client(DERIVATIONS[path](base, tmp_path).store.opensearch)  # no I/O
    assert client.transport.kwargs["http_auth"] == ("ingest", SECRET)


def test_overrides_still_apply(base: Settings, tmp_path: Path) -> None:
    spec = SourceSpec(
        name="s",
        store="opensearch",
        embedder="hash",
        settings={"chunking": {"max_tokens": 300}, "store": {"opensearch": {"alias": "kb"}}},
    )
    derived = spec.settings_over(base)
    assert (derived.store.backend, derived.embedding.provider) == ("opensearch", "hash")
    assert derived.chunking.max_tokens == 300 and derived.store.opensearch.alias == "kb"
    assert spec.settings == {
        "chunking": {"max_tokens": 300},
        "store": {"opensearch": {"alias": "kb"}},
    }  # the spec's own overrides are not mutated

    evaluated = suite_settings(Suite(name="tiny", k=20, chunk_tokens=64), tmp_path, base)
    assert evaluated.data_dir == tmp_path / "tiny"
    assert evaluated.embedding.cache_path == tmp_path / "embedding-cache.sqlite"
    assert (evaluated.chunking.max_tokens, evaluated.chunking.overlap_tokens) == (64, 16)
    assert evaluated.store.opensearch.alias == "eval-tiny"
    assert evaluated.retrieval.top_k == 20


def test_a_connection_login_replaces_the_password(base: Settings) -> None:
    derived = settings_from_connections(
        base, {"host": "https://search.internal:443", "login": "airflow", "password": "conn-pw"}
    )
    assert derived.store.opensearch.hosts == ["https://search.internal:443"]
    assert derived.store.opensearch.username == "airflow"
    assert _password(derived) == "conn-pw"


def test_aws_region_fills_only_what_is_unset(base: Settings) -> None:
    aws = {"extra": {"region_name": "eu-west-1"}}
    derived = settings_from_connections(base, aws=aws)
    assert derived.embedding.bedrock.region == derived.embedding.sagemaker.region == "eu-west-1"
    assert derived.store.opensearch.aws_region == "eu-west-1"
    pinned = SourceSpec(
        name="s", settings={"store": {"opensearch": {"aws_region": "us-east-2"}}}
    ).settings_over(base)
    assert settings_from_connections(pinned, aws=aws).store.opensearch.aws_region == "us-east-2"


def test_invalid_overrides_are_a_configuration_error_without_the_secret(base: Settings) -> None:
    with pytest.raises(ConfigurationError, match="source s:") as caught:
        SourceSpec(name="s", settings={"chunking": {"max_tokens": 1}}).settings_over(base)
    assert SECRET not in str(caught.value)
