"""Against a real Airflow: API server, scheduler (LocalExecutor) and DAG processor as processes on
loopback, a PostgreSQL metadata database, over HTTP with the official client."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import pytest
import requests

from cormorant.config import PROJECT_ROOT
from cormorant.synthetic import rows_for_day, seed_sqlite

pytestmark = pytest.mark.e2e
PASSWORD = secrets.token_urlsafe(16)
sys.path.insert(0, str(PROJECT_ROOT / "scripts"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    import psycopg2

    home = tmp_path_factory.mktemp("airflow-stack")
    database = f"cormorant_af_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    (home / "passwords.json").write_text(json.dumps({"svc-fraud": PASSWORD}))
    seed_sqlite(home / "warehouse.db", [date(2024, 3, 1), date(2024, 3, 2)])
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "svc-fraud:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW_CONN_CORMORANT_WAREHOUSE": json.dumps(
            {"conn_type": "sqlite", "host": str(home / "warehouse.db")}
        ),
        "CORMORANT_HOME": str(home / "cormorant"),
        "CORMORANT_LAKE_URI": (home / "cormorant" / "lake").as_uri(),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'cormorant' / 'mlflow.db'}",
    }
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow_bin, "db", "migrate"], env=env, check=True, capture_output=True)
    processes = [
        subprocess.Popen([airflow_bin, *command], env=env, stdout=log, stderr=subprocess.STDOUT)
        for command, log in [
            (["api-server", "--port", str(port)], (home / "api.log").open("w")),
            (["scheduler"], (home / "scheduler.log").open("w")),
            (["dag-processor"], (home / "dag-processor.log").open("w")),
        ]
    ]
    try:
        token = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if token is None:
                    response = requests.post(
                        f"{url}/auth/token", json={"username": "svc-fraud", "password": PASSWORD}, timeout=5
                    )
                    token = response.json()["access_token"] if response.ok else None
                if (
                    token
                    and requests.get(
                        f"{url}/api/v2/dags/churn__train",
                        timeout=5,
                        headers={"Authorization": f"Bearer {token}"},
                    ).ok
                ):
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"Airflow did not come up; see the logs in {home}")
        headers = {"Authorization": f"Bearer {token}"}
        for dag_id in ("churn__ingest", "churn__train"):  # unpause only what the tests trigger
            requests.patch(
                f"{url}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=headers, timeout=10
            ).raise_for_status()
        yield {"url": url, "headers": headers, "home": home}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()


def _runs(airflow, dag_id):
    response = requests.get(
        f"{airflow['url']}/api/v2/dags/{dag_id}/dagRuns", headers=airflow["headers"], timeout=10
    )
    response.raise_for_status()
    return response.json()["total_entries"]


def test_unauthenticated_calls_are_refused(airflow):
    assert requests.get(f"{airflow['url']}/api/v2/dags", timeout=10).status_code == 401
    wrong = requests.post(
        f"{airflow['url']}/auth/token", json={"username": "svc-fraud", "password": "guess"}, timeout=10
    )
    assert wrong.status_code == 401
    trigger = requests.post(
        f"{airflow['url']}/api/v2/dags/churn__ingest/dagRuns",
        json={"logical_date": None, "conf": {}},
        timeout=10,
    )
    assert trigger.status_code == 401


def test_run_triggered_with_valid_conf_succeeds_and_its_result_reads_back(airflow, monkeypatch, capsys):
    import cormorant_trigger

    monkeypatch.setenv("AIRFLOW_PASSWORD", PASSWORD)
    code = cormorant_trigger.main(
        [
            "churn__ingest",
            "--url",
            airflow["url"],
            "--user",
            "svc-fraud",
            "--conf",
            json.dumps({"partition_date": "2024-03-02"}),
            "--wait",
            "--timeout",
            "240",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["state"] == "success"
    (ref,) = report["results"]["warehouse_to_lake"]
    assert ref["partition"] == "2024-03-02"
    assert ref["rows"] == rows_for_day(date(2024, 3, 2))
    assert Path(ref["uri"].removeprefix("file://"), "_manifest.json").exists()


@pytest.mark.parametrize(
    ("dag_id", "conf", "param"),
    [
        ("churn__ingest", {"partition_date": "yesterday"}, "partition_date"),
        (
            "churn__ingest",
            {"source_table": "customer_activity; DROP TABLE customer_activity"},
            "source_table",
        ),
        ("churn__train", {"window_days": "seven"}, "window_days"),
        ("churn__train", {"folds": 50}, "folds"),
        ("churn__train", {"families": ["random_forest"]}, "families"),
        ("churn__predict", {"model_version": "1; DROP TABLE runs"}, "model_version"),
    ],
)
def test_invalid_conf_is_refused_naming_the_param_and_creates_no_run(airflow, dag_id, conf, param):
    before = _runs(airflow, dag_id)
    response = requests.post(
        f"{airflow['url']}/api/v2/dags/{dag_id}/dagRuns",
        headers=airflow["headers"],
        json={"logical_date": None, "conf": conf},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert f"param {param}" in response.json()["detail"]
    assert _runs(airflow, dag_id) == before
