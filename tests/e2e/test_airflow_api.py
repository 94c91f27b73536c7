"""Against a real Airflow: API server, scheduler (LocalExecutor) and DAG processor as processes on
loopback, a PostgreSQL metadata database, over HTTP with the official client."""

from __future__ import annotations

import json
import secrets
import sys
from datetime import date
from pathlib import Path

import pytest
import requests
from airflow_stack import airflow_stack

from cormorant.config import PROJECT_ROOT
from cormorant.synthetic import rows_for_day, seed_sqlite

pytestmark = pytest.mark.e2e
PASSWORD = secrets.token_urlsafe(16)
sys.path.insert(0, str(PROJECT_ROOT / "scripts"))


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-stack")
    seed_sqlite(home / "warehouse.db", [date(2024, 3, 1), date(2024, 3, 2)])
    with airflow_stack(
        home, users={"svc-fraud": PASSWORD}, unpause=("churn__ingest", "churn__train")
    ) as stack:
        yield stack


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
