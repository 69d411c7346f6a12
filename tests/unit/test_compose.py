"""The compose stack cannot start here (no Docker engine): check its structure statically."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


def test_services_of_the_full_stack() -> None:
    assert set(COMPOSE["services"]) == {
        "postgres",
        "opensearch",
        "opensearch-dashboards",
        "airflow-init",
        *AIRFLOW,
    }
    assert COMPOSE["services"]["opensearch"]["image"].endswith(":2.19.1")


def test_long_running_services_have_healthchecks_and_wait_for_dependencies() -> None:
    for name, service in COMPOSE["services"].items():
        if name != "airflow-init":
            assert "healthcheck" in service, name
    for name in AIRFLOW:
        deps = COMPOSE["services"][name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["opensearch"]["condition"] == "service_healthy"
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"


def test_ports_bind_to_loopback_and_mounted_paths_exist() -> None:
    for service in COMPOSE["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    assert (ROOT / "Dockerfile").exists()
    assert (ROOT / ".env.example").exists()


def test_the_project_is_configured_for_opensearch_and_the_embedding_pool() -> None:
    env = COMPOSE["services"]["airflow-scheduler"]["environment"]
    assert env["RAG_STORE__BACKEND"] == "opensearch"
    assert "opensearch" in env["AIRFLOW_CONN_OPENSEARCH_DEFAULT"]
    assert "rag_embedding" in " ".join(COMPOSE["services"]["airflow-init"]["command"])
