"""A distributed Airflow 3 on this machine, for integration tests of the CeleryExecutor.

``CeleryStack`` starts, each as a process group of its own with its log in the stack's folder:

    redis-server    the Celery broker and result backend, on a free loopback port
    setup           one interpreter running ``airflow db migrate``, ``pools set`` (the DAGs'
                    embedding pool), ``dags reserialize`` (instead of a DAG processor) and
                    ``dags unpause`` for the DAGs asked for (every other DAG stays paused)
    api-server      the REST API, and the Execution API the tasks report to over HTTP
                    (``AIRFLOW__CORE__EXECUTION_API_SERVER_URL``); started once the schema exists
    scheduler       with the CeleryExecutor: queues task instances in Redis
    workers         ``airflow celery worker --concurrency 1``, one per name, each reporting its
                    name as its task instances' ``hostname`` (:func:`worker_hostname`)

The metadata DB is SQLite, written by the scheduler and the api-server only: Airflow 3 workers
reach it through the Execution API, and Celery's results go to Redis. ``trigger`` and
``wait_for_run`` use the REST API. Leaving the ``with`` block, or failing to start, ends every
process it started (SIGTERM to each group, then SIGKILL to the group and every descendant,
including task processes the supervisor moved to groups of their own).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psutil  # type: ignore[import-untyped]

REDIS_SERVER = "redis-server"
WORKER_NAME_ENV = "CELERY_STACK_WORKER_NAME"
"""The worker name a task instance reports as its hostname (see :func:`worker_hostname`)."""
EMBEDDING_POOL = "rag_embedding"

# Runs Airflow CLI commands (a JSON list of argument lists) the way `airflow` does, in one process.
_SETUP = """
import json, sys
from airflow import configuration  # first, as airflow/__main__.py does
from airflow.cli import cli_parser
from airflow.configuration import write_default_airflow_configuration_if_needed

write_default_airflow_configuration_if_needed()
parser = cli_parser.get_parser()
for argv in json.loads(sys.argv[1]):
    args = parser.parse_args(argv)
    args.func(args)
    print("celery-stack: done", " ".join(argv), flush=True)
"""

log = logging.getLogger(__name__)


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the stack's workers: their name, so two workers on one
    machine are told apart the way two machines are (by the task instance's ``hostname``)."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


def redis_server() -> str | None:
    """The redis-server binary (Debian's package installs /usr/bin/redis-server), if any."""
    return shutil.which(REDIS_SERVER) or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)),
        None,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StackError(RuntimeError):
    """The stack did not start or a call to it failed; the message carries the processes' logs."""


class Service:
    """One started process (group) and its log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name, self.log = name, log
        self._out: IO[bytes] = log.open("wb")
        self._family: list[psutil.Process] = []
        self.oneshot = False  # a command that ends by itself, not a service
        self.exited_after: float | None = None  # seconds from SIGTERM to its end; None: killed
        self._terminated = 0.0
        self.popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends what it forked too
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def terminate(self) -> None:
        """SIGTERM to its process group; its descendants are remembered, wherever they move."""
        try:
            self._family = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.Error:
            self._family = []
        self._terminated = time.monotonic()
        if self.alive():
            _signal_group(self.popen.pid, signal.SIGTERM)
        else:
            self.exited_after = 0.0

    def kill(self, deadline: float) -> None:
        """After waiting until ``deadline`` for it to end: SIGKILL to whatever of the group and
        of its remembered descendants is left."""
        if self.exited_after is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(max(0.0, deadline - time.monotonic()))
                self.exited_after = time.monotonic() - self._terminated
        _signal_group(self.popen.pid, signal.SIGKILL)
        for child in self._family:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(self._family, timeout=2)
        if self.alive():
            self.popen.kill()
        self.popen.wait(5)
        self._out.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class CeleryStack:
    """Redis, the api-server, the scheduler (CeleryExecutor) and Celery workers in ``root``.

    ``env`` is what the DAGs and their tasks need (``RAG_*``, ``PYTHONPATH``); the stack adds
    the Airflow configuration. Nothing starts before ``with``.
    """

    def __init__(
        self,
        root: Path,
        dags: Path,
        env: Mapping[str, str],
        workers: Sequence[str] = ("worker-a", "worker-b"),
        unpause: Sequence[str] = (),
        pool_slots: int = 4,
        python: str = sys.executable,
    ) -> None:
        self.root, self.dags, self.workers = root, dags, tuple(workers)
        self.unpause = tuple(unpause)
        self.pool_slots, self.python = pool_slots, python
        self._extra_env = dict(env)
        self.services: list[Service] = []
        self.redis_port = self.api_port = 0
        self.timings: dict[str, float] = {}
        # the scheduler signs the tasks' tokens, the api-server checks them: one secret for all
        self._jwt_secret, self._api_secret = secrets.token_hex(32), secrets.token_hex(32)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> CeleryStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, grace: float = 5.0) -> None:
        """End every process it started: SIGTERM to all, SIGKILL to what is left after
        ``grace`` seconds."""
        for service in self.services:
            service.terminate()
        deadline = time.monotonic() + grace
        for service in self.services:
            service.kill(deadline)

    def start(self, timeout: float = 180.0) -> None:
        server = redis_server()
        if server is None:
            raise StackError("redis-server is not installed")
        deadline = time.monotonic() + timeout
        begin = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis_port, self.api_port = free_port(), free_port()
        env = self.env()
        redis_dir = self.root / "redis"
        redis_dir.mkdir(exist_ok=True)
        self._spawn(
            "redis",
            [server, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir",
             str(redis_dir), "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
            env,
        )  # fmt: skip
        self._wait("redis", self._redis_ready, deadline)
        # one interpreter for the setup commands (each `airflow` process costs seconds); the
        # other processes start once the schema is there (the api-server refuses to before)
        commands = [
            ["db", "migrate"],
            ["pools", "set", EMBEDDING_POOL, str(self.pool_slots), "embedding work"],
            ["dags", "reserialize"],  # the DAGs, serialized once: no DAG processor runs
            *(["dags", "unpause", dag_id] for dag_id in self.unpause),  # the rest stay paused
        ]
        setup = self._spawn("setup", [self.python, "-c", _SETUP, json.dumps(commands)], env)
        setup.oneshot = True
        self._wait(
            "db migrate", lambda: "celery-stack: done db migrate" in setup.output(), deadline
        )
        self.timings["db_migrate"] = time.monotonic() - begin
        api = ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"]
        self._spawn("api-server", [*self._airflow(), *api], env)
        self._spawn("scheduler", [*self._airflow(), "scheduler"], env)
        for name in self.workers:
            self._spawn(
                name,
                [*self._airflow(), "celery", "worker", "--celery-hostname", name,
                 "--concurrency", "1", "--skip-serve-logs", "--without-gossip",
                 "--without-mingle"],
                {**env, WORKER_NAME_ENV: name,
                 "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname"},
            )  # fmt: skip
        self._wait("setup", lambda: not setup.alive(), deadline)
        if setup.popen.returncode != 0:
            raise StackError(f"setup exited {setup.popen.returncode}\n{self.logs()}")
        self.timings["setup"] = time.monotonic() - begin
        self._wait("api-server", self._api_ready, deadline)
        self.timings["api_ready"] = time.monotonic() - begin
        self._wait("workers", self._workers_ready, deadline)
        self.timings["workers_ready"] = time.monotonic() - begin

    def env(self) -> dict[str, str]:
        """The environment of every process of the stack."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "RAG_", "PYTEST_")) and k != WORKER_NAME_ENV
        }
        venv_bin = str(Path(self.python).parent)
        home = self.root / "airflow"
        broker = f"redis://127.0.0.1:{self.redis_port}"
        return {
            **base,
            "PATH": f"{venv_bin}{os.pathsep}{base.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
                f"http://127.0.0.1:{self.api_port}/execution/"
            ),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self._api_secret,
            "AIRFLOW__CELERY__BROKER_URL": f"{broker}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"{broker}/1",
            "AIRFLOW__CELERY__OPERATION_TIMEOUT": "30",  # sending a task, on a loaded machine
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            **self._extra_env,
        }

    # -- the REST API --------------------------------------------------------------------------

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"http://127.0.0.1:{self.api_port}{path}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise StackError(f"{method} {path}: HTTP {error.code}: {detail}") from error

    def trigger(self, dag_id: str) -> str:
        """A manual run of ``dag_id`` (once its DAG is known to the api-server); its run id."""
        quoted = urllib.parse.quote(dag_id)
        run = self.api("POST", f"/api/v2/dags/{quoted}/dagRuns", {"logical_date": None})
        return str(run["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """The run's final state (``success``/``failed``); StackError with the logs if it is
        still running after ``timeout`` seconds or a process of the stack died."""
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}"
        deadline = time.monotonic() + timeout
        state = "unknown"
        while True:
            try:
                state = str(self.api("GET", path)["state"])
            except (TimeoutError, urllib.error.URLError) as exc:  # a slow poll on a busy machine
                log.warning("polling %s: %s; polling again", run_id, exc)
            if state in ("success", "failed"):
                return state
            self._check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"run {run_id} still {state} after {timeout:.0f}s\n{self.logs()}")
            time.sleep(1.0)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = (
            f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}"
            "/taskInstances?limit=1000"
        )
        return list(self.api("GET", path)["task_instances"])

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {s.name} ({s.log})\n{s.tail(lines)}" for s in self.services)

    # -- internals ---------------------------------------------------------------------------

    def _airflow(self) -> list[str]:
        return [self.python, "-m", "airflow"]

    def _spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Service:
        service = Service(name, argv, env, self.root / f"{name}.log")
        self.services.append(service)
        return service

    def _check_alive(self) -> None:
        dead = [s.name for s in self.services if not s.alive() and not s.oneshot]
        dead += [s.name for s in self.services if s.oneshot and s.popen.poll() not in (None, 0)]
        if dead:
            raise StackError(f"stopped unexpectedly: {', '.join(dead)}\n{self.logs()}")

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        while not ready():
            self._check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"{what} not ready in time\n{self.logs()}")
            time.sleep(0.5)

    def _redis_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _api_ready(self) -> bool:
        try:
            health = self.api("GET", "/api/v2/monitor/health")
        except (OSError, StackError):
            return False
        return bool(health and health["metadatabase"]["status"] == "healthy")

    def _workers_ready(self) -> bool:
        from celery import Celery  # type: ignore[import-untyped]

        app = Celery(broker=f"redis://127.0.0.1:{self.redis_port}/0")
        try:
            replies = app.control.ping(timeout=1.0)
        except OSError:
            return False
        finally:
            app.close()
        answered = {name.split("@", 1)[-1] for reply in replies for name in reply}
        return set(self.workers) <= answered
