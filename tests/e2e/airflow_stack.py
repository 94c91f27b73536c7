"""A real Airflow for tests: API server, scheduler, DAG processor (and Celery workers) as processes on
loopback, with a PostgreSQL metadata database of its own that is dropped afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from support import E2E_TIMEOUT_S, free_port, scratch_database
from urllib3.util.retry import Retry


@contextlib.contextmanager
def airflow_stack(
    home: Path,
    *,
    users: dict[str, str],
    unpause: tuple[str, ...] = (),
    executor: str = "LocalExecutor",
    celery_workers: int = 0,
    triggerer: bool = False,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = E2E_TIMEOUT_S,
) -> Iterator[dict[str, Any]]:
    """Start Airflow under ``home``; yields url, auth headers, env, home and the worker processes."""
    with scratch_database("cormorant_af") as database:  # the metadata database, dropped afterwards
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        (home / "passwords.json").write_text(json.dumps(users))
        metadata = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:admin" for u in users),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # task logs as a deployment keeps them
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW_CONN_CORMORANT_WAREHOUSE": json.dumps(
                {"conn_type": "sqlite", "host": str(home / "warehouse.db")}
            ),
            "CORMORANT_HOME": str(home / "cormorant"),
            "CORMORANT_LAKE_URI": (home / "cormorant" / "lake").as_uri(),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'cormorant' / 'mlflow.db'}",
            "CORMORANT_MLFLOW_ARTIFACT_URI": (home / "cormorant" / "mlflow-artifacts").as_uri(),
            **(extra_env or {}),
        }
        if executor == "CeleryExecutor":
            env.setdefault("AIRFLOW__CELERY__RESULT_BACKEND", f"db+{metadata.replace('+psycopg2', '')}")
        airflow_bin = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow_bin, "db", "migrate"], env=env, check=True, capture_output=True)
        commands = [
            ("api-server", ["api-server", "--port", str(port)]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
        ]
        commands += [("triggerer", ["triggerer"])] if triggerer else []
        commands += [
            (f"worker{i}", ["celery", "worker", "--concurrency", "2", "--celery-hostname", f"worker{i}@%h"])
            for i in range(1, celery_workers + 1)
        ]
        processes = {
            name: subprocess.Popen(
                [airflow_bin, *command],
                env=env,
                stdout=(home / f"{name}.log").open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for name, command in commands
        }
        try:
            token = wait_for_token(url, users, unpause, home, timeout_s)
            headers = {"Authorization": f"Bearer {token}"}
            for dag_id in unpause:
                requests.patch(
                    f"{url}/api/v2/dags/{dag_id}",
                    json={"is_paused": False},
                    headers=headers,
                    timeout=E2E_TIMEOUT_S,
                ).raise_for_status()
            yield {"url": url, "headers": headers, "home": home, "env": env, "processes": processes}
        finally:
            stop(list(processes.values()))


def stop(processes: list[subprocess.Popen]) -> None:
    """Terminate each process group, then kill what has not exited within 30 s."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def wait_for_token(
    url: str, users: dict[str, str], dags: tuple[str, ...], home: Path, timeout_s: float
) -> str:
    """Wait for the API server at ``url`` to answer (and to know ``dags``); a token of the first user."""
    token = None
    deadline = time.monotonic() + timeout_s
    user, password = next(iter(users.items()))
    while time.monotonic() < deadline:
        try:
            if token is None:
                response = requests.post(
                    f"{url}/auth/token", json={"username": user, "password": password}, timeout=E2E_TIMEOUT_S
                )
                token = response.json()["access_token"] if response.ok else None
            if token and all(
                requests.get(
                    f"{url}/api/v2/dags/{d}",
                    timeout=E2E_TIMEOUT_S,
                    headers={"Authorization": f"Bearer {token}"},
                ).ok
                for d in dags
            ):
                return token
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise RuntimeError(f"Airflow did not come up within {timeout_s}s; see the logs in {home}")


@contextlib.contextmanager
def embedded_api_server(
    home: Path, *, users: dict[str, str], extra_env: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """``airflow api-server`` alone on the embedded default's SQLite metadata database under ``home``
    (what ``cormorant run --home`` and ``make demo`` leave); yields url, auth headers, env and home."""
    from cormorant.config import embedded_environment

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (home / "passwords.json").write_text(json.dumps(users))
    env = {
        **os.environ,
        **embedded_environment(home),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:admin" for u in users),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        **(extra_env or {}),
    }
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    process = subprocess.Popen(
        [airflow_bin, "api-server", "--port", str(port)],
        env=env,
        stdout=(home / "api-server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        token = wait_for_token(url, users, (), home, E2E_TIMEOUT_S)
        yield {"url": url, "headers": {"Authorization": f"Bearer {token}"}, "env": env, "home": home}
    finally:
        stop([process])


def wait_validated(
    home: Path, partitions: list[str], timeout_s: float = E2E_TIMEOUT_S, spec: str = "churn"
) -> None:
    """Validation is triggered by the landed partitions' asset events (one run may carry several); its
    run checks the features and lands and checks the labels in separate tasks: wait for both reports
    (a sweep started between them waits for the labels, minutes, on its retry policy)."""
    reports = [
        home / "cormorant" / "lake" / spec / "reports" / suite / f"ds={p}" / "result.json"
        for p in partitions
        for suite in ("validation", "labels")
    ]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(r.exists() for r in reports):
            assert all(json.loads(r.read_text())["success"] for r in reports)
            return
        time.sleep(1)
    raise AssertionError(f"partitions {partitions} were not all validated within {timeout_s}s")


def manual_runs(stack: dict[str, Any], dag_id: str) -> list[dict[str, Any]]:
    """The DAG's manual runs (REST and UI triggers); the scheduler adds nightly and asset-triggered
    runs of its own meanwhile."""
    response = requests.get(
        f"{stack['url']}/api/v2/dags/{dag_id}/dagRuns",
        params={"run_type": "manual"},
        headers=stack["headers"],
        timeout=E2E_TIMEOUT_S,
    )
    response.raise_for_status()
    return response.json()["dag_runs"]


def stop_nightly_runs(stack: dict[str, Any], dag_id: str, timeout_s: float = E2E_TIMEOUT_S) -> None:
    """Unpausing starts the nightly run of the latest interval; a train run of today's calendar waits (on
    its retry policy) for partitions a test never lands and, at one active run per train DAG, holds the
    test's own runs back. Wait for the scheduler to create it, then mark it failed over REST, as an
    operator would."""
    url = f"{stack['url']}/api/v2/dags/{dag_id}/dagRuns"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = requests.get(
            url, params={"run_type": "scheduled"}, headers=stack["headers"], timeout=E2E_TIMEOUT_S
        )
        response.raise_for_status()
        if runs := response.json()["dag_runs"]:
            for run in runs:
                if run["state"] not in ("success", "failed"):
                    mark_failed(stack, f"{url}/{run['dag_run_id']}")
            return
        time.sleep(1)
    raise AssertionError(f"the scheduler did not start the nightly run of {dag_id} within {timeout_s}s")


def mark_failed(stack: dict[str, Any], run_url: str, attempts: int = 20) -> None:
    """PATCH the run to failed, again (urllib3's ``Retry``, backing off to 2 s) while the API server
    answers 5xx: once in CI it answered 500 while the scheduler was starting that run, and setting a
    state twice is harmless. If the 5xx outlasts ``attempts``, fail with the API server's last traceback."""
    retry = Retry(
        total=attempts,
        backoff_factor=0.2,
        backoff_max=2,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods={"PATCH"},
        raise_on_status=False,
    )
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        response = session.patch(
            run_url, json={"state": "failed"}, headers=stack["headers"], timeout=E2E_TIMEOUT_S
        )
    if response.status_code >= 500:
        log = (stack["home"] / "api-server.log").read_text(errors="replace")
        raise AssertionError(
            f"PATCH {run_url} answered {response.status_code} {attempts + 1} times; the API server's "
            f"last traceback:\n{log[log.rfind('Traceback') :][:4000]}"
        )
    response.raise_for_status()


def trigger_run(stack: dict[str, Any], dag_id: str, conf: dict[str, Any]) -> str:
    """Create a run over REST with ``conf``; returns its run id."""
    response = requests.post(
        f"{stack['url']}/api/v2/dags/{dag_id}/dagRuns",
        headers=stack["headers"],
        json={"logical_date": None, "conf": conf},
        timeout=E2E_TIMEOUT_S,
    )
    response.raise_for_status()
    return response.json()["dag_run_id"]


def wait_for_run(stack: dict[str, Any], dag_id: str, run_id: str, timeout_s: float = E2E_TIMEOUT_S) -> str:
    """Poll the run until it finishes; its final state, or ``timeout``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = requests.get(
            f"{stack['url']}/api/v2/dags/{dag_id}/dagRuns/{run_id}",
            headers=stack["headers"],
            timeout=E2E_TIMEOUT_S,
        )
        response.raise_for_status()
        if (state := response.json()["state"]) in ("success", "failed"):
            return state
        time.sleep(1)
    return "timeout"
