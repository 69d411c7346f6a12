from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.filesystem import FilesystemConnector
from rag.config import Settings
from rag.demo import corpus_path
from rag.pipeline import ingest
from rag.stores.lancedb import LanceDBStore
from tests.airflow.conftest import DAGS


def _sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    file = tmp_path / "sources.yaml"
    file.write_text(body)
    monkeypatch.setenv("RAG_SOURCES_FILE", str(file))
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBEDDING__PROVIDER", "hash")
    for module in ("rag_airflow", "ingest"):
        sys.modules.pop(module, None)


def _dag(dag_id: str) -> Any:
    module = importlib.import_module("ingest")
    return getattr(module, dag_id)


def test_dagbag_imports_cleanly(airflow_db: Path) -> None:
    # how fast the folder parses is measured by `python -m bench dagbag`, not asserted here
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert "rag_ingest_kestrel-demo" in bag.dag_ids
    assert "rag_directory_sync" in bag.dag_ids
    dag = bag.get_dag("rag_ingest_kestrel-demo")
    assert {t.task_id for t in dag.tasks} == {
        "list_changes",
        "batches",
        "process_batch",
        "finalize",
    }


def test_a_bad_source_entry_fails_alone_and_every_other_source_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from rag.errors import ConfigurationError

    _sources(
        tmp_path,
        monkeypatch,
        """
sources:
  - {name: good-one, options: {root: .}, schedule: null}
  - {name: typo, connector: filesytem}
  - {name: good-two, settings: {chunking: {max_tokens: 300}}}
  - {name: overrides, settings: {chunking: {max_tokenz: 3}}}
  - {name: twice}
  - {name: twice, schedule: "@daily"}
  - {connector: filesystem}
  - just a string
""",
    )
    bag = DagBag(dag_folder=str(DAGS))

    # the reasons, one line per bad entry, are one file's import error; ingest.py loads
    (error,) = bag.import_errors.items()
    assert Path(error[0]).name == "sources_check.py"
    for line in (
        "entry 2 (source 'typo'): connector: unknown connector 'filesytem'",
        "entry 4 (source 'overrides'): settings.chunking.max_tokenz: Extra inputs",
        "entry 5 (source 'twice'): name used by entries [5, 6]",
        "entry 6 (source 'twice'): name used by entries [5, 6]",
        "entry 7 (no valid name): name: Field required",
        "entry 8 (no valid name): expected a mapping",
    ):
        assert line in error[1]
    assert "good-" not in error[1]

    ingest = {d for d in bag.dag_ids if d.startswith("rag_ingest_")}
    good = {"rag_ingest_good-one", "rag_ingest_good-two"}
    broken = {"rag_ingest_typo", "rag_ingest_overrides", "rag_ingest_twice"}
    assert ingest == good | broken | {"rag_ingest__entry-7", "rag_ingest__entry-8"}
    for dag_id in good:
        assert "broken-config" not in bag.dags[dag_id].tags
        assert len(bag.dags[dag_id].tasks) == 4
    for dag_id in ingest - good:  # kept in the UI, saying why, failing if triggered
        dag = bag.dags[dag_id]
        assert "broken-config" in dag.tags
        assert dag.schedule is None
        (task,) = dag.tasks
        with pytest.raises(ConfigurationError, match="not configured correctly") as refused:
            task.python_callable(*task.op_args)
        assert str(refused.value).split(": ", 1)[1] in dag.description
    assert dag.description is not None
    assert "entry 5" in bag.dags["rag_ingest_twice"].description
    assert "entry 6" in bag.dags["rag_ingest_twice"].description

    # a task of a good DAG finds its source; a bad one's name fails with the reason
    import rag_airflow

    assert rag_airflow.sources().get("good-two").settings == {"chunking": {"max_tokens": 300}}
    with pytest.raises(ConfigurationError, match="unknown connector"):
        rag_airflow.sources().get("typo")


def test_the_dag_files_find_their_glue_without_the_folder_on_sys_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`airflow dags list --local` parses the folder without putting it on sys.path."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p) != DAGS])
    monkeypatch.delitem(sys.modules, "rag_airflow", raising=False)
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert {"rag_ingest_kestrel-demo", "rag_directory_sync", "rag_evaluate_nightly"} <= set(
        bag.dag_ids
    )


def _finalize_summary(run: Any) -> dict[str, Any]:
    ti = next(t for t in run.get_task_instances() if t.task_id == "finalize")
    result: dict[str, Any] = ti.xcom_pull(task_ids="finalize")
    assert result["status"] == "succeeded", result
    return dict(result["summary"])


def test_dag_run_end_to_end_and_rerun_changes_nothing(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = Path(shutil.copytree(corpus_path(), tmp_path / "corpus"))
    _sources(
        tmp_path,
        monkeypatch,
        f"""
sources:
  - name: demo
    connector: filesystem
    options: {{root: {corpus}}}
    schedule: null
    batch_size: 3
""",
    )
    dag = _dag("rag_ingest_demo")
    run = dag.test()
    assert run.state == "success"
    summary = _finalize_summary(run)
    assert summary["documents_ingested"] == 10
    assert len(summary["quarantined"]) == 2
    for ti in run.get_task_instances():  # ids and indexes only pass between tasks
        value = ti.xcom_pull(task_ids=ti.task_id, map_indexes=ti.map_index)
        if ti.task_id != "finalize":
            assert len(json.dumps(value)) < 200, (ti.task_id, value)

    expected = Settings(data_dir=tmp_path / "direct", embedding={"provider": "hash"})
    ingest(FilesystemConnector(corpus, "demo"), expected)
    direct = LanceDBStore(expected.store_uri, expected.store).chunk_ids()
    store = LanceDBStore(tmp_path / "data" / "lancedb", Settings().store)
    assert store.chunk_ids() == direct

    again = dag.test()
    assert again.state == "success"
    second = _finalize_summary(again)
    assert (second["unchanged"], second["embedding_calls"], second["chunks"]) == (12, 0, 0)
    assert store.chunk_ids() == direct


def test_a_crashing_batch_is_retried_and_every_good_document_loads(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = Path(shutil.copytree(corpus_path(), tmp_path / "corpus"))
    marker = tmp_path / "crashed"
    _sources(
        tmp_path,
        monkeypatch,
        f"""
sources:
  - name: flaky
    connector: "tests.airflow.flaky:FlakyConnector"
    options: {{root: {corpus}, crash_on: hr/salary-bands.md, marker: {marker}}}
    schedule: null
    batch_size: 4
""",
    )
    run = _dag("rag_ingest_flaky").test()
    assert marker.exists()  # the crash happened
    assert run.state == "success"
    tries = [t.try_number for t in run.get_task_instances() if t.task_id == "process_batch"]
    assert max(tries) == 2  # the crashed batch was retried once
    assert _finalize_summary(run)["documents_ingested"] == 10


def test_query_between_tasks_never_sees_old_content_under_a_wider_acl(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.sync_contract import HR_ONLY, SECRET, make_corpus, policy

    root = make_corpus(tmp_path / "corpus", docs=3)
    policy(root, HR_ONLY)
    record = tmp_path / "seen.jsonl"
    _sources(
        tmp_path,
        monkeypatch,
        f"""
sources:
  - name: spied
    connector: "tests.airflow.spy:SpyConnector"
    options: {{root: {root}, record: {record}}}
    schedule: null
    batch_size: 1
""",
    )
    dag = _dag("rag_ingest_spied")
    assert dag.test().state == "success"
    # the HR-only note becomes public together with new content
    policy(root, 'allow = ["group:eng"]\n[files."note-001.md"]\npublic = true\n')
    (root / SECRET).write_text("# Design note 1\n\nA public design note subsystem paragraph.\n")
    record.unlink()
    assert dag.test().state == "success"
    (seen,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert seen["reading"] == SECRET  # queried after list_changes, before the new chunks
    assert SECRET not in seen["guest_sees"]
    settings = Settings(data_dir=tmp_path / "data", embedding={"provider": "hash"})
    from rag.identity import UserContext
    from rag.retrieval.core import Retriever

    hits = Retriever.from_settings(settings).retrieve("public design note", UserContext.of("g"))
    assert SECRET in {h.chunk.citation.uri for h in hits}


@pytest.mark.integration
def test_dag_run_against_the_real_opensearch_node(
    airflow_db: Path, opensearch_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.stores.opensearch import OpenSearchStore
    from tests.opensearch_node import drop, os_settings

    corpus = Path(shutil.copytree(corpus_path(), tmp_path / "corpus"))
    osettings = os_settings(opensearch_url, refresh="false")
    _sources(
        tmp_path,
        monkeypatch,
        f"""
sources:
  - name: demo-os
    connector: filesystem
    options: {{root: {corpus}}}
    schedule: null
    store: opensearch
    batch_size: 5
    settings: {{store: {{opensearch: {{hosts: ["{opensearch_url}"], alias: {osettings.alias},
                                      replicas: 0}}}}}}
""",
    )
    dag = _dag("rag_ingest_demo-os")
    try:
        first = dag.test()
        assert first.state == "success"
        store = OpenSearchStore(osettings)
        ids = store.chunk_ids()
        assert len(ids) == _finalize_summary(first)["chunks"] > 0
        again = dag.test()
        assert _finalize_summary(again)["embedding_calls"] == 0
        assert store.chunk_ids() == ids
    finally:
        drop(OpenSearchStore(osettings), osettings.alias)
