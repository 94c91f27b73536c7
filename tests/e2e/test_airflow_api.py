"""Against a real Airflow: API server, scheduler (LocalExecutor) and DAG processor as processes on
loopback, a PostgreSQL metadata database, over HTTP with the official client: authentication, every
stage's result read back the way another team's service would, and bad conf refused by the Params."""

from __future__ import annotations

import json
import secrets
import sys
import time
from datetime import date
from pathlib import Path

import pytest
import requests
from airflow_stack import airflow_stack, manual_runs, stop_nightly_runs, wait_validated
from support import E2E_TIMEOUT_S

from cormorant.config import PROJECT_ROOT
from cormorant.synthetic import rows_for_day, seed_sqlite

pytestmark = pytest.mark.e2e
PASSWORD = secrets.token_urlsafe(16)
sys.path.insert(0, str(PROJECT_ROOT / "scripts"))


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-stack")
    seed_sqlite(
        home / "warehouse.db",
        [date(2024, 2, 27), date(2024, 2, 28), date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 5)],
    )
    stages = ("ingest", "validate", "train", "predict", "drift")
    lineage = {  # the openlineage provider's file transport: one JSON event per line
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(home / "openlineage.jsonl"), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "cormorant-e2e",
    }
    with airflow_stack(
        home, users={"svc-fraud": PASSWORD}, unpause=tuple(f"churn__{s}" for s in stages), extra_env=lineage
    ) as stack:
        stop_nightly_runs(stack, "churn__train")
        yield stack


def _trigger_and_wait(airflow, monkeypatch, capsys, dag_id, conf, timeout_s=E2E_TIMEOUT_S):
    """The documented client path: scripts/cormorant_trigger.py --wait, its JSON report parsed."""
    import cormorant_trigger

    monkeypatch.setenv("AIRFLOW_PASSWORD", PASSWORD)
    argv = [dag_id, "--url", airflow["url"], "--user", "svc-fraud", "--conf", json.dumps(conf)]
    code = cormorant_trigger.main([*argv, "--wait", "--timeout", str(timeout_s)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["state"] == "success", report
    return report["results"]


def test_unauthenticated_calls_are_refused(airflow):
    assert requests.get(f"{airflow['url']}/api/v2/dags", timeout=E2E_TIMEOUT_S).status_code == 401
    wrong = requests.post(
        f"{airflow['url']}/auth/token",
        json={"username": "svc-fraud", "password": "guess"},
        timeout=E2E_TIMEOUT_S,
    )
    assert wrong.status_code == 401
    trigger = requests.post(
        f"{airflow['url']}/api/v2/dags/churn__ingest/dagRuns",
        json={"logical_date": None, "conf": {}},
        timeout=E2E_TIMEOUT_S,
    )
    assert trigger.status_code == 401


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def test_run_triggered_with_valid_conf_succeeds_and_its_result_reads_back(airflow, monkeypatch, capsys):
    results = _trigger_and_wait(
        airflow, monkeypatch, capsys, "churn__ingest", {"partition_date": "2024-03-02"}
    )
    (ref,) = results["warehouse_to_lake"]
    assert ref["partition"] == "2024-03-02"
    assert ref["rows"] == rows_for_day(date(2024, 3, 2))
    assert (_local(ref["uri"]) / "_manifest.json").exists()


def test_train_predict_and_drift_results_read_back_over_rest(airflow, monkeypatch, capsys):
    """Another team's whole loop over REST: the registered version, the predictions' URI, the verdict."""
    from mlflow import MlflowClient

    from cormorant.lake import Lake

    days = ["2024-03-01", "2024-03-02"]
    for day in days:
        _trigger_and_wait(airflow, monkeypatch, capsys, "churn__ingest", {"partition_date": day})
    wait_validated(airflow["home"], days)  # the validate DAG runs on the landed partitions' asset events

    conf = {"partition_date": days[-1], "window_days": 2, "families": ["linear"], "max_trials_per_family": 1}
    trained = _trigger_and_wait(
        airflow, monkeypatch, capsys, "churn__train", conf, timeout_s=2 * E2E_TIMEOUT_S
    )
    summary = trained["register_and_promote"]
    assert (summary["family"], summary["promoted"]) == ("linear", True), summary
    mlflow = MlflowClient(tracking_uri=airflow["env"]["MLFLOW_TRACKING_URI"])
    champion = mlflow.get_model_version_by_alias(summary["model_name"], "champion")
    assert str(champion.version) == summary["version"] == summary["champion_version"]
    (trial,) = [v for k, v in trained.items() if k.startswith("trial[")]
    assert mlflow.get_run(trial["run_id"]).info.status == "FINISHED"

    predicted = _trigger_and_wait(
        airflow, monkeypatch, capsys, "churn__predict", {"partition_date": days[-1]}
    )
    (ref,) = predicted["batch_inference"]
    assert ref["model_version"] == summary["version"]
    assert ref["rows"] == rows_for_day(date(2024, 3, 2))
    manifest = json.loads((_local(ref["uri"]) / "_manifest.json").read_text())
    assert manifest["row_count"] == ref["rows"]
    lake = Lake(airflow["env"]["CORMORANT_LAKE_URI"])
    predictions = lake.read("churn/predictions", days[-1])
    assert predictions.num_rows == ref["rows"]
    assert set(predictions.column("model_version").to_pylist()) == {summary["version"]}

    drifted = _trigger_and_wait(airflow, monkeypatch, capsys, "churn__drift", {"partition_date": days[-1]})
    (verdict,) = drifted["drift_check"]
    assert verdict["partition"] == days[-1]
    report = json.loads(_local(verdict["report_uri"]).read_text())
    assert (verdict["verdict"], verdict["drifted_features"]) == (
        report["verdict"],
        report["drifted_features"],
    )
    assert report["model"]["version"] == summary["version"]
    # The generator adds no drift to these days: stable, and the retraining signal is not sent.
    assert (verdict["verdict"], verdict["retrain"]) == ("stable", False)
    (run,) = [r for r in manual_runs(airflow, "churn__drift") if r["conf"] == {"partition_date": days[-1]}]
    signal = requests.get(
        f"{airflow['url']}/api/v2/dags/churn__drift/dagRuns/{run['dag_run_id']}/taskInstances/signal_retraining",
        headers=airflow["headers"],
        timeout=E2E_TIMEOUT_S,
    ).json()
    assert signal["state"] == "skipped"
    assert _local(verdict["html_uri"]).exists()

    # A lineage backend (here the openlineage provider's file transport) sees the chain: warehouse table
    # -> lake dataset -> model version -> predictions -> drift reports.
    folder = airflow["home"] / "cormorant" / "lake"
    raw = ("file", str(folder / "churn" / "raw"))
    model = (airflow["env"]["MLFLOW_TRACKING_URI"], f"models/{summary['model_name']}/{summary['version']}")
    predictions = ("file", str(folder / "churn" / "predictions"))
    expected = {
        "churn__ingest.warehouse_to_lake": (
            [(f"sqlite://{airflow['home'] / 'warehouse.db'}", "customer_activity")],
            [raw],
        ),
        "churn__validate.validate_partition": ([raw], [("file", str(folder / "churn/reports/validation"))]),
        "churn__train.register_and_promote": ([raw], [model]),
        "churn__predict.batch_inference": ([raw, model], [predictions]),
        "churn__drift.drift_check": (
            [raw, predictions, model],
            [("file", str(folder / "churn/reports/drift"))],
        ),
    }
    deadline = time.monotonic() + E2E_TIMEOUT_S
    while True:  # the listener sends each event as its task ends
        seen = _lineage_events(airflow["home"] / "openlineage.jsonl")
        if set(expected) <= set(seen) or time.monotonic() > deadline:
            break
        time.sleep(1)
    for job, (inputs, outputs) in expected.items():
        assert job in seen, f"no COMPLETE OpenLineage event for {job}; seen {sorted(seen)}"
        assert seen[job] == (inputs, outputs), job
    assert PASSWORD not in (airflow["home"] / "openlineage.jsonl").read_text()


def _lineage_events(path: Path) -> dict[str, tuple[list, list]]:
    """The last COMPLETE event's (inputs, outputs) of each job in an OpenLineage file transport's log."""
    seen = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        event = json.loads(line)
        if event.get("eventType") == "COMPLETE" and event["job"]["namespace"] == "cormorant-e2e":
            seen[event["job"]["name"]] = tuple(
                [(d["namespace"], d["name"]) for d in event.get(side) or []] for side in ("inputs", "outputs")
            )
    return seen


def _backfill(airflow, first: str, last: str, timeout_s: float = E2E_TIMEOUT_S) -> list[dict]:
    """POST /api/v2/backfills (what `airflow backfill create` and the UI's Backfill do), wait for it."""
    created = requests.post(
        f"{airflow['url']}/api/v2/backfills",
        headers=airflow["headers"],
        json={
            "dag_id": "churn__ingest",
            "from_date": f"{first}T00:00:00Z",
            "to_date": f"{last}T00:00:00Z",
            "reprocess_behavior": "completed",
            "max_active_runs": 2,
        },
        timeout=E2E_TIMEOUT_S,
    )
    assert created.status_code == 200, created.text
    backfill_id = created.json()["id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = requests.get(
            f"{airflow['url']}/api/v2/dags/churn__ingest/dagRuns",
            params={"run_type": "backfill"},
            headers=airflow["headers"],
            timeout=E2E_TIMEOUT_S,
        ).json()["dag_runs"]
        runs = [r for r in runs if first <= r["logical_date"][:10] <= last]
        if runs and all(r["state"] in ("success", "failed") for r in runs):
            status = requests.get(
                f"{airflow['url']}/api/v2/backfills/{backfill_id}",
                headers=airflow["headers"],
                timeout=E2E_TIMEOUT_S,
            ).json()
            if status["completed_at"]:
                return runs
        time.sleep(2)
    raise AssertionError(f"backfill {backfill_id} did not finish within {timeout_s}s")


def test_a_backfill_lands_each_day_of_its_range_once(airflow):
    """The nightly interval maps to its day's partition, and a re-backfill replaces, never duplicates."""
    days = ["2024-02-27", "2024-02-28"]
    lake = airflow["home"] / "cormorant" / "lake" / "churn" / "raw"

    def committed(day):
        attempts = [p for p in (lake / f"ds={day}").iterdir() if p.name.startswith("run=")]
        return len(attempts), json.loads((lake / f"ds={day}" / "_manifest.json").read_text())

    runs = _backfill(airflow, *days)
    assert sorted(r["data_interval_start"][:10] for r in runs) == days
    assert all(r["state"] == "success" for r in runs), runs
    first = {}
    for day in days:
        attempts, manifest = committed(day)
        assert (attempts, manifest["row_count"]) == (1, rows_for_day(date.fromisoformat(day)))
        first[day] = manifest["content_hash"]

    # Reprocessing the range clears the same runs and runs them again: new attempts replace the old ones.
    rerun = _backfill(airflow, *days)
    assert {r["dag_run_id"] for r in rerun} == {r["dag_run_id"] for r in runs}
    assert all(r["state"] == "success" for r in rerun), rerun
    for day in days:
        attempts, manifest = committed(day)
        assert (attempts, manifest["content_hash"]) == (1, first[day])
        assert manifest["lineage"]["try_number"] == 2


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
    before = len(manual_runs(airflow, dag_id))
    response = requests.post(
        f"{airflow['url']}/api/v2/dags/{dag_id}/dagRuns",
        headers=airflow["headers"],
        json={"logical_date": None, "conf": conf},
        timeout=E2E_TIMEOUT_S,
    )
    assert response.status_code == 400, response.text
    assert f"param {param}" in response.json()["detail"]
    assert len(manual_runs(airflow, dag_id)) == before


def test_a_logical_date_given_over_rest_is_the_partition_processed(airflow):
    """No partition_date param: the run's logical date (a midnight) names the day, as in the UI's trigger
    dialog and `airflow dags test`; it used to process the day before."""
    from airflow_stack import wait_for_run

    response = requests.post(
        f"{airflow['url']}/api/v2/dags/churn__ingest/dagRuns",
        headers=airflow["headers"],
        json={"logical_date": "2024-03-05T00:00:00Z", "conf": {}},
        timeout=E2E_TIMEOUT_S,
    )
    response.raise_for_status()
    assert wait_for_run(airflow, "churn__ingest", response.json()["dag_run_id"]) == "success"
    manifest = json.loads(
        (
            airflow["home"] / "cormorant" / "lake" / "churn" / "raw" / "ds=2024-03-05" / "_manifest.json"
        ).read_text()
    )
    assert manifest["row_count"] == rows_for_day(date(2024, 3, 5))
    assert not (airflow["home"] / "cormorant" / "lake" / "churn" / "raw" / "ds=2024-03-04").exists()
