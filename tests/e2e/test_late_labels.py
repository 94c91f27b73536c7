"""Features now, labels later, on a real PostgreSQL warehouse, through the real DAGs (dag.test).

The outcomes of a day arrive in the warehouse's label table two days after its features
(``target.available_after_days: 2``, ``target.source``). A model is trained on the days whose labels
have landed; day D5 is scored while the warehouse has no outcome for it; when its outcomes arrive, the
performance check measures the version that scored it. D5's outcomes turned around (what drove churn
now keeps customers), while its features are as usual: drift stays quiet, and the realized ROC AUC
collapses, so the performance check (and only it) signals retraining.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from support import PG_DSN, pg_connection, scratch_database

from cormorant.config import PROJECT_ROOT, Settings
from cormorant.lake import Lake
from cormorant.synthetic import insert_labels_postgres, rows_for_day, seed_postgres

pytestmark = pytest.mark.e2e
SPEC = "latelab"
DAYS = [date(2024, 6, d) for d in range(1, 6)]
D1, D2, D3, D4, D5 = (d.isoformat() for d in DAYS)
SHIFTED = [DAYS[4]]  # D5: same inputs, labels turned around


def _spec_text() -> str:
    text = (PROJECT_ROOT / "include" / "examples" / "churn_late.yaml").read_text()
    text = text.replace("name: churn_late", f"name: {SPEC}")
    text = text.replace("conn_id: cormorant_warehouse", "conn_id: latelab_warehouse")
    text = text.replace("available_after_days: 1", "available_after_days: 2")
    start, end = text.index("  search_space:"), text.index("\ndrift:")
    return text[:start] + "  search_space:\n    linear: {C: [1.0]}\n" + text[end:]


@pytest.fixture(scope="module")
def env(airflow_db, tmp_path_factory):
    import psycopg2

    from cormorant_provider.pipeline import PipelineRunner

    specs = tmp_path_factory.mktemp("specs")
    (specs / f"{SPEC}.yaml").write_text(_spec_text())
    with scratch_database("cormorant_latelab") as database, pytest.MonkeyPatch.context() as mp:
        conn = psycopg2.connect(f"{PG_DSN} dbname={database}")
        # Features of every day; no outcome has arrived yet.
        seed_postgres(conn, DAYS, labels_table="churn_labels", label_days=[], concept_days=SHIFTED)
        mp.setenv("AIRFLOW_CONN_LATELAB_WAREHOUSE", pg_connection(database))
        mp.setenv("CORMORANT_SPECS_DIR", str(specs))
        runner = PipelineRunner.for_spec(SPEC)
        settings = Settings.from_env()
        yield {"runner": runner, "conn": conn, "lake": Lake(settings.lake_uri), "settings": settings}
        conn.close()


def _arrive(env, *days: date) -> None:
    """The outcomes of ``days`` reach the warehouse, and the labels DAG lands them."""
    insert_labels_postgres(env["conn"], days, labels_table="churn_labels", concept_days=SHIFTED)
    for day in days:
        run = env["runner"].run("labels", day.isoformat())
        assert run.task_states["validate_labels"] == "success", run.task_states


def _label_rows_in_warehouse(env, day: str) -> int:
    cur = env["conn"].cursor()
    cur.execute("SELECT count(*) FROM churn_labels WHERE event_ts::date = %s", (day,))
    return cur.fetchone()[0]


def test_scored_before_labels_exist_then_measured_when_they_land(env, capfd):
    runner, lake = env["runner"], env["lake"]
    for day in (D1, D2, D3, D4, D5):
        runner.run("ingest", day)
        assert runner.run("validate", day).task_states["validate_partition"] == "success"
    # No outcome yet: training has nothing to learn from, and says so (labels are two days late).
    capfd.readouterr()
    early = runner.run("train", D3, check=False)
    assert early.task_states["plan_sweep"] == "failed"
    log = "".join(capfd.readouterr())
    assert "0 usable partition(s) (validated, with validated labels)" in log
    assert "labels are final 2 day(s) after their day" in log

    _arrive(env, DAYS[0], DAYS[1], DAYS[2])
    runner.run("train", D3)  # trains on D1..D2, holds D3 out: version 1, the champion
    assert lake.partitions(f"{SPEC}/labels") == [D1, D2, D3]

    # D4 and D5 are scored the night their features land: no outcome exists for them anywhere.
    for day in (D4, D5):
        assert _label_rows_in_warehouse(env, day) == 0
        assert lake.manifest(f"{SPEC}/labels", day) is None
        predict = runner.run("predict", day)
        assert predict.task_states["batch_inference"] == "success"
    assert lake.require(f"{SPEC}/predictions", D5).row_count == rows_for_day(DAYS[4])
    drift = runner.run("drift", D5)
    assert drift.task_states["drift_check"] == "success"
    assert not drift.retrain_signalled, "D5's inputs are as usual: drift must not fire"
    drift_report = lake.read_json(f"{SPEC}/reports/drift/ds={D5}/report.json")
    assert drift_report["verdict"] == "stable"

    # The performance check before the labels land: nothing to measure yet, and it says why.
    capfd.readouterr()
    pending = runner.run("performance", D5)
    assert pending.task_states["performance_check"] == "skipped"
    assert f"labels of {D5}: not in the lake yet; they are final 2 day(s) after the day" in "".join(
        capfd.readouterr()
    )
    assert lake.read_json(f"{SPEC}/reports/performance/ds={D5}/report.json") is None

    _arrive(env, DAYS[3], DAYS[4])
    usual = runner.run("performance", D4)
    assert usual.task_states["performance_check"] == "success"
    assert not usual.retrain_signalled
    ok = lake.read_json(f"{SPEC}/reports/performance/ds={D4}/report.json")
    assert ok["verdict"] == "ok" and ok["model"]["version"] == "1"
    assert ok["labeled_rows"] == rows_for_day(DAYS[3])

    degraded = runner.run("performance", D5)
    assert degraded.retrain_signalled, degraded.task_states
    report = lake.read_json(f"{SPEC}/reports/performance/ds={D5}/report.json")
    predictions = lake.require(f"{SPEC}/predictions", D5)
    assert report["model"]["version"] == predictions.source["model"]["version"] == "1"
    assert report["verdict"] == "degraded" and report["signal"] == "performance"
    assert report["metrics"]["roc_auc"] < 0.5 < report["holdout"]
    assert "max_relative_drop" in report["why"]
    assert {"log_loss", "brier", "precision", "recall"} <= set(report["metrics"])
    assert Path(report["html_uri"].removeprefix("file://")).read_text().count("performance.png") == 1
    history = lake.read_many(f"{SPEC}/performance", [D4, D5]).to_pylist()
    assert [(h["partition"], h["model_version"], h["verdict"]) for h in history] == [
        (D4, "1", "ok"),
        (D5, "1", "degraded"),
    ]
    _assert_retrain_event_names_the_signal(D5)
    _assert_kept_in_mlflow_against_the_version(env, report)

    # Re-running the check for the same day gives the same result and logs nothing twice.
    again = runner.run("performance", D5)
    assert again.retrain_signalled
    _assert_kept_in_mlflow_against_the_version(env, report)
    _assert_the_summary_shows_it(env)


def _assert_the_summary_shows_it(env) -> None:
    from cormorant.spec import load_spec
    from cormorant.summary import format_summary, pipeline_summary

    settings = env["settings"]
    summary = pipeline_summary(load_spec(settings.specs_dir / f"{SPEC}.yaml"), env["lake"], settings)
    rows = {p["partition"]: p for p in summary["partitions"]}
    assert (rows[D5]["labels"], rows[D5]["predicted_by"], rows[D5]["drift"]) == ("passed", "1", "stable")
    assert rows[D5]["performance"] == "degraded" and rows[D5]["realized_metric"] < 0.5
    assert rows[D4]["performance"] == "ok"
    assert f"{rows[D5]['realized_metric']:.4f} degraded" in format_summary(summary)
    # the degraded day says it signalled retraining (it said only "degraded")
    assert rows[D5]["performance_signalled"] and "retraining signalled (performance)" in format_summary(
        summary
    )
    one_day = pipeline_summary(
        load_spec(settings.specs_dir / f"{SPEC}.yaml"), env["lake"], settings, first=D5, last=D5
    )
    assert [p["partition"] for p in one_day["partitions"]] == [D5]


def _assert_retrain_event_names_the_signal(day: str) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        event = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == f"cormorant://{SPEC}/retrain")
            .order_by(AssetEvent.id.desc())
            .first()
        )
        assert event is not None
        assert event.extra["signal"] == "performance"
        assert event.extra["partitions"] == [day]
        assert "roc_auc" in event.extra["reasons"][day]


def _assert_kept_in_mlflow_against_the_version(env, report) -> None:
    from mlflow import MlflowClient

    from cormorant.tracking import configure

    configure(env["settings"])
    client = MlflowClient()
    run = client.get_run(report["mlflow_run_id"])
    assert run.data.tags["cormorant.model_version"] == "1"
    points = client.get_metric_history(run.info.run_id, "realized_roc_auc")
    assert sorted(p.step for p in points) == [DAYS[3].toordinal(), DAYS[4].toordinal()]
    version = client.get_model_version(f"cormorant.{SPEC}", "1")
    assert version.tags["cormorant.performance.latest"].startswith(f"{D5}: roc_auc ")
    assert version.tags["cormorant.performance.latest"].endswith("(degraded)")
