"""The compose stack cannot start here (no Docker engine): check its structure and the invariants
a production stack depends on statically."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(TEXT)  # YAML merge keys resolved, variables not
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
IMAGE = "rag-acl-airflow:latest"
AIRFLOW = {  # the long-running Airflow containers (airflow-init and volumes-init run once)
    n for n, s in SERVICES.items() if s.get("image") == IMAGE and s.get("restart") != "no"
}
CORE = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
SHARED = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW_CONN_OPENSEARCH_DEFAULT",
)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


def resolved(value: str) -> str:
    """``value`` as compose reads it with no variable set: defaults filled in; a required
    variable stays ``<NAME>``."""
    return _VARIABLE.sub(lambda m: m.group(3) if m.group(2) == "-" else f"<{m.group(1)}>", value)


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (source, read-only) of the service's volumes, variables resolved."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = resolved(volume).split(":")
        found[target] = (source, mode == ["ro"])
    return found


def test_services_of_the_stack_and_its_profiles() -> None:
    default = {n for n, s in SERVICES.items() if not s.get("profiles")}
    assert default == {
        "postgres",
        "opensearch",
        "opensearch-dashboards",
        "volumes-init",
        "airflow-init",
        *CORE,
    }
    profiles: dict[str, set[str]] = {}
    for name, service in SERVICES.items():
        for profile in service.get("profiles", []):
            profiles.setdefault(profile, set()).add(name)
    assert profiles == {
        "celery": {"redis", "airflow-worker-1", "airflow-worker-2"},
        "opensearch-cluster": {"opensearch-node1", "opensearch-node2", "opensearch-node3"},
    }
    for name in ("opensearch", "opensearch-node1"):
        assert SERVICES[name]["image"].endswith(":2.19.1")


def test_long_running_services_have_healthchecks_and_wait_for_dependencies() -> None:
    one_shot = {n for n, s in SERVICES.items() if s.get("restart") == "no"}
    assert one_shot == {"volumes-init", "airflow-init"}
    for name, service in SERVICES.items():
        if name not in one_shot:
            assert "healthcheck" in service, name
            assert service["restart"] == "unless-stopped", name
    for name in AIRFLOW:
        deps = SERVICES[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["opensearch"]["condition"] == "service_healthy"
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"
    init = SERVICES["airflow-init"]["depends_on"]
    assert init["volumes-init"]["condition"] == "service_completed_successfully"


def test_dependencies_exist_and_a_profile_service_is_optional_outside_its_profile() -> None:
    for name, service in SERVICES.items():
        own = set(service.get("profiles", []))
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in SERVICES, (name, target)
            theirs = set(SERVICES[target].get("profiles", []))
            if theirs and not theirs & own:  # disabled unless its profile is: not required
                assert condition.get("required") is False, (name, target)


def test_every_airflow_container_shares_its_secrets_database_and_mounts() -> None:
    assert set(CORE) <= AIRFLOW
    first = SERVICES["airflow-scheduler"]
    for name in AIRFLOW | {"airflow-init"}:
        env = SERVICES[name]["environment"]
        for key in SHARED:
            assert env[key] == first["environment"][key], (name, key)
        assert SERVICES[name]["user"] == first["user"], name
        assert mounts(SERVICES[name]).items() >= mounts(first).items(), name
    env = first["environment"]
    # secrets come from .env, never from this file, and each is its own
    secrets = [env[k] for k in SHARED if "KEY" in k or "SECRET" in k]
    assert len(secrets) == 3
    for value in secrets:
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), value
    assert len(set(secrets)) == 3
    # the database the workers report to is the one Postgres serves, with its password
    password = SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    database = f"airflow:{password}@postgres/airflow"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"postgresql+psycopg2://{database}"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+postgresql://{database}"
    assert resolved(env["AIRFLOW__CORE__EXECUTOR"]) == "LocalExecutor"


def test_required_variables_are_in_env_example() -> None:
    required = {m.group(1) for m in _VARIABLE.finditer(TEXT) if m.group(2) == "?"}
    assert required == {"AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY"}
    example = (ROOT / ".env.example").read_text()
    for name in required:
        assert re.search(rf"^#? ?{name}=", example, re.MULTILINE), name


def test_named_volumes_the_airflow_user_writes_are_created_for_it() -> None:
    """A named volume is created root-owned unless the image has its mount point: the Dockerfile
    creates each one for uid 50000 (group 0), and volumes-init chowns volumes made earlier."""
    init = SERVICES["volumes-init"]
    assert init["user"] == "0:0"
    script = resolved(" ".join(init["command"]))
    dockerfile = " ".join(DOCKERFILE.split("\\\n"))
    run = next(line for line in dockerfile.splitlines() if "mkdir -p" in line)
    steps = {step.split()[0]: step.split() for step in run.removeprefix("RUN").split("&&")}
    created, owned = steps["mkdir"], steps["chown"]
    modes = [step.split() for step in run.split("&&") if step.split()[0] == "chmod"]
    named = set(COMPOSE["volumes"])
    written = set()
    for name in AIRFLOW | {"airflow-init"}:
        for target, (source, read_only) in mounts(SERVICES[name]).items():
            if source in named and not read_only:
                written.add((source, target))
    assert {t for _, t in written} >= {"/opt/airflow/rag-data", "/opt/airflow/auth"}
    for source, target in written:
        assert mounts(init)[target] == (source, False), target
        assert target in script.split('chown -R "50000:0"')[1].split("&&")[0], target
        assert target in created or any(t.startswith(f"{target}/") for t in created), target
        assert owned[:3] == ["chown", "-R", "50000:0"] and target in owned, target
        assert any(target in mode for mode in modes), target


def test_the_environment_the_code_reads_is_set_and_points_into_the_mounts() -> None:
    env = {k: resolved(str(v)) for k, v in SERVICES["airflow-scheduler"]["environment"].items()}
    read = set()
    for folder in ("dags", "rag", "evaluation", "connectors"):
        for path in (ROOT / folder).rglob("*.py"):
            pattern = r'os\.(?:environ(?:\.get)?|getenv)\W+"(RAG_[A-Z0-9_]+)"'
            read |= set(re.findall(pattern, path.read_text("utf-8")))
    defaults_that_work = {  # read with a default that is right in the containers
        "RAG_EMBEDDING_POOL",  # rag_embedding: airflow-init creates it
        "RAG_TASK_RETRY_DELAY_SECONDS",
        "RAG_OPENSEARCH_CONN_ID",  # opensearch_default: AIRFLOW_CONN_OPENSEARCH_DEFAULT
        "RAG_AWS_CONN_ID",  # aws_default, or boto3's chain without it
        "RAG_EVAL_SUITES",  # scifact-nightly
        "RAG_EVAL_BEDROCK_MODEL_ID",  # optional: the LLM judge runs only when it is set
        "RAG_DIRECTORY_SCHEDULE",
    }
    paths = {"RAG_SOURCES_FILE", "RAG_REPORTS_DIR", "RAG_EVAL_DATA", "RAG_DATA_DIR"}
    assert read - defaults_that_work - paths == set(), "set it in x-airflow-env, or list it"
    assert paths - {"RAG_DATA_DIR"} <= read  # (RAG_DATA_DIR is a Settings field)
    assert "rag_embedding" in " ".join(SERVICES["airflow-init"]["command"])
    assert (ROOT / "evaluation" / "suites" / "scifact-nightly.toml").exists()

    for name in AIRFLOW:
        mounted = mounts(SERVICES[name])
        for variable in paths:
            value = PurePosixPath(env[variable])
            assert any(PurePosixPath(t) in {value, *value.parents} for t in mounted), variable
    scheduler = mounts(SERVICES["airflow-scheduler"])
    assert scheduler["/opt/airflow/dags"] == ("./dags", False)
    assert env["RAG_SOURCES_FILE"] == "/opt/airflow/dags/sources.yaml"
    assert (ROOT / "dags" / "sources.yaml").exists()
    assert scheduler[env["RAG_EVAL_DATA"]][1]  # read-only
    assert scheduler[env["RAG_DATA_DIR"]] == ("rag-data", False)
    assert env["RAG_STORE__BACKEND"] == "opensearch"


def test_ports_bind_to_loopback_and_mounted_paths_exist() -> None:
    for service in SERVICES.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:")
        for source, _ in mounts(service).values():
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    assert (ROOT / ".env.example").exists()
    assert "COPY --chown=airflow:0 rag ./rag" in DOCKERFILE


def test_the_image_installs_every_extra_the_dags_use() -> None:
    extras = set(re.findall(r"--extra (\S+)", DOCKERFILE))
    needed = {"ingest", "opensearch", "aws", "directory", "telemetry", "celery", "eval"}
    assert needed <= extras
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert extras <= set(declared["optional-dependencies"])
    assert "airflow" not in extras  # the base image's Airflow stays


def test_the_opensearch_cluster_profile_is_three_nodes_that_find_each_other() -> None:
    nodes = sorted(n for n, s in SERVICES.items() if "opensearch-cluster" in s.get("profiles", []))
    assert len(nodes) == 3
    names = ",".join(nodes)
    volumes = set()
    for node in nodes:
        service = SERVICES[node]
        env = service["environment"]
        assert env["node.name"] == node
        assert env["cluster.name"] == "rag-opensearch"
        assert env["discovery.seed_hosts"] == names
        assert env["cluster.initial_cluster_manager_nodes"] == names
        assert "discovery.type" not in env
        assert env["bootstrap.memory_lock"] == "true"
        assert service["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
        assert "ports" not in service
        (source,) = [s for s, _ in mounts(service).values()]
        volumes.add(source)
    assert len(volumes) == 3
    assert volumes <= set(COMPOSE["volumes"])
    # the stack points at it with RAG_OPENSEARCH_HOST (and RAG_OPENSEARCH_REPLICAS=1)
    env = SERVICES["airflow-scheduler"]["environment"]
    assert '"host": "${RAG_OPENSEARCH_HOST:-opensearch}"' in env["AIRFLOW_CONN_OPENSEARCH_DEFAULT"]
    assert env["RAG_STORE__OPENSEARCH__REPLICAS"] == "${RAG_OPENSEARCH_REPLICAS:-0}"
    dashboards = SERVICES["opensearch-dashboards"]["environment"]["OPENSEARCH_HOSTS"]
    assert "${RAG_OPENSEARCH_HOST:-opensearch}" in dashboards
    assert nodes[0] in SERVICES["airflow-scheduler"]["depends_on"]
    assert "RAG_OPENSEARCH_HOST=opensearch-node1" in TEXT  # documented with the replica count
    assert "RAG_OPENSEARCH_REPLICAS=1" in TEXT


def test_the_celery_profile_is_a_broker_and_two_workers_of_the_same_image() -> None:
    workers = sorted(n for n in AIRFLOW if "celery" in SERVICES[n].get("profiles", []))
    assert workers == ["airflow-worker-1", "airflow-worker-2"]
    broker = SERVICES["airflow-scheduler"]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
    assert broker == "redis://redis:6379/0"
    assert SERVICES["redis"]["profiles"] == ["celery"]
    for name in workers:
        worker = SERVICES[name]
        script = worker["command"][-1]
        assert "exec airflow celery worker" in script
        assert '"$${AIRFLOW__CORE__EXECUTOR}" != CeleryExecutor' in script  # refuses otherwise
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "celery@$${HOSTNAME}" in worker["healthcheck"]["test"][-1]
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}"
    assert "AIRFLOW_EXECUTOR=CeleryExecutor" in TEXT


def test_the_image_holds_the_nightly_suites_reranker_model_where_its_model_dir_resolves() -> None:
    """scifact-nightly's hybrid+rerank row fails without its model folder: the image fetches it
    (Maven Central, SHA-256 pinned by the script) and copies it under the tasks' working
    directory, where the suite's relative model_dir points."""
    suite = tomllib.loads((ROOT / "evaluation/suites/scifact-nightly.toml").read_text())
    model_dir = suite["rerank"]["bi_encoder"]["model_dir"]
    assert not model_dir.startswith("/")
    assert "RUN bash /fetch-rerank-model.sh /model" in DOCKERFILE
    assert "COPY scripts/fetch-rerank-model.sh /fetch-rerank-model.sh" in DOCKERFILE
    final = DOCKERFILE[DOCKERFILE.index("FROM apache/airflow") :]
    workdir = [line.split()[1] for line in final.splitlines() if line.startswith("WORKDIR")][-1]
    copy = next(line for line in final.splitlines() if "--from=rerank-model" in line)
    assert copy.split()[-1] == str(PurePosixPath(workdir) / model_dir)
