"""The whole chain on the embedded default, run with dag.test() for real: SQLite warehouse, local
lake, MLflow SQLite store, trials as local subprocesses."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from cormorant.config import Settings
from cormorant.inference import predictions_dataset
from cormorant.lake import Lake
from cormorant.synthetic import rows_for_day, seed_sqlite
from cormorant.validation import validation_report_key
from cormorant.warehouse import raw_dataset

pytestmark = pytest.mark.e2e

DAYS = [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3), date(2024, 3, 4)]
D1, D2, D3, D4 = (d.isoformat() for d in DAYS)


@pytest.fixture(scope="module")
def settings():
    return Settings.from_env()


@pytest.fixture(scope="module")
def runner(airflow_db, settings):
    from cormorant_provider.pipeline import PipelineRunner

    seed_sqlite(settings.home / "warehouse.db", DAYS)
    runner = PipelineRunner.for_spec("churn")
    runner.start_trainers()  # as `cormorant run` does: warm trainer processes for the sweeps
    for day in (D1, D2):
        runner.run("ingest", day)
        runner.run("validate", day)
    runner.run("train", D2)
    runner.run("predict", D2)
    runner.run("drift", D2)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def lake(settings):
    return Lake(settings.lake_uri)


@pytest.fixture(scope="module")
def client(settings):
    from mlflow import MlflowClient

    from cormorant.tracking import configure

    configure(settings)
    return MlflowClient()


def test_a_run_parses_and_writes_the_dag_bundle_only_when_it_has_changed(runner, monkeypatch):
    """dag.test() parses the DAG folder again and writes every DAG of it to the database on each call
    (apache/airflow#64884); the runner skips that while nothing the parse reads has changed, and does it
    again once something has (here, the spec file's modification time, which its DAG file follows)."""
    from airflow.dag_processing import dagbag

    from cormorant_provider.pipeline import PipelineRunner

    synced = []
    real = dagbag.sync_bag_to_db
    monkeypatch.setattr(dagbag, "sync_bag_to_db", lambda *a, **k: synced.append(a[1]) or real(*a, **k))
    runner.run("drift", D2)
    assert synced == []

    dag_file = Path(Settings.from_env().specs_dir) / "churn.yaml"
    stat = dag_file.stat()
    os.utime(dag_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        runner.run("drift", D2)
        runner.run("drift", D2)
    finally:
        os.utime(dag_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert len(synced) == 1

    synced.clear()
    runner.run("drift", D2)  # the file as it was: written once more
    assert len(synced) == 1

    # another runner in the process writes the bundle as another environment parses it: the next run
    # of this one writes it back
    synced.clear()
    with monkeypatch.context() as m:
        m.setenv("CORMORANT_SOMETHING_ELSE", "1")
        PipelineRunner(runner.dags, runner.spec_name).run("drift", D2)
    runner.run("drift", D2)
    assert len(synced) == 2


@pytest.fixture
def generated(monkeypatch):
    """The API versions of each execution API app whose routes Cadwyn generates, as it does, from a
    process whose runner has built no execution API yet (as again afterwards)."""
    from cadwyn import applications

    from cormorant_provider import pipeline

    versions = []
    real = applications.generate_versioned_routers
    monkeypatch.setattr(
        applications,
        "generate_versioned_routers",
        lambda *a, **k: versions.append([v.value for v in k["versions"]]) or real(*a, **k),
    )
    pipeline._newest_version_only_execution_api.cache_clear()
    yield versions
    pipeline._newest_version_only_execution_api.cache_clear()


def test_runs_are_served_by_an_execution_api_of_their_clients_version_alone(runner, generated):
    """dag.test()'s in-process execution API: the runner builds it with the task SDK's API version alone
    (Airflow's has the routes of every version it serves, generated on the first request), and its
    routes for that version are Airflow's own."""
    import httpx
    from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI
    from airflow.sdk.api.client import API_VERSION
    from pydantic import TypeAdapter

    from cormorant_provider import pipeline

    assert runner.run("drift", D2).succeeded
    assert generated == [[API_VERSION]]

    def routes(api):
        with httpx.Client(transport=api.transport, base_url="http://in-process") as client:
            client.get("/health/ping", headers={"airflow-api-version": API_VERSION})
        return sorted(
            (
                r.path,
                sorted(getattr(r, "methods", None) or []),
                r.name,
                json.dumps(TypeAdapter(r.response_model).json_schema(), sort_keys=True)
                if getattr(r, "response_model", None)
                else None,
            )
            for r in api.app.router.versioned_routers[API_VERSION].routes
        )

    ours = routes(pipeline._newest_version_only_execution_api())
    assert len(ours) > 20
    assert ours == routes(InProcessExecutionAPI())


def test_runs_fall_back_to_airflows_execution_api_when_theirs_cannot_be_built(
    runner, generated, monkeypatch, caplog
):
    """An Airflow or Cadwyn that moved what the runner's own execution API is built from: the runs go on,
    on Airflow's app (every version's routes), and a warning says why."""
    import cadwyn
    from airflow.api_fastapi.execution_api import versions
    from airflow.sdk.execution_time import supervisor

    from cormorant_provider import pipeline

    def moved(*args, **kwargs):
        raise TypeError("VersionBundle() takes other arguments now")

    monkeypatch.setattr(cadwyn, "VersionBundle", moved)
    supervisor.in_process_api_server.cache_clear()  # Airflow's own, built afresh
    with caplog.at_level("WARNING", logger=pipeline.__name__):
        assert runner.run("drift", D2).succeeded
        assert runner.run("drift", D2).succeeded  # not tried again in this process
    assert generated == [[v.value for v in versions.bundle.versions]]
    warnings = [r.getMessage() for r in caplog.records if r.name == pipeline.__name__]
    assert len(warnings) == 1 and "Airflow's own execution API" in warnings[0], warnings
    assert "VersionBundle() takes other arguments now" in warnings[0]


def test_each_run_says_where_its_wall_time_went(runner):
    """Each run's tasks, and a train run's sweep run ahead of its tasks, fit inside its wall time (the
    rest is Airflow's bookkeeping); the sweep's wait for the warm trainers lies within the sweep, and
    it is what the trainers' own clocks say: each said it was ready after it started."""
    import time

    ran = {(run.dag_id.split("__")[1], run.partition): run for run in runner.history}
    for run in ran.values():
        assert run.task_seconds > 0
        assert run.task_seconds + run.sweep_seconds <= run.seconds + 1e-6, run
    train = ran[("train", D2)]
    assert train.sweep_seconds > 0
    assert 0 <= train.warm_up_wait_seconds <= train.sweep_seconds
    assert all(run.sweep_seconds == 0 for (stage, _), run in ran.items() if stage != "train")
    ready = runner.trainers.ready_at
    assert len(ready) == runner.trainers.size and all(at is not None for at in ready)
    assert all(runner.trainers.started_at < at < time.time() for at in ready)


def test_partitions_hold_the_generators_rows(runner, lake, example_spec):
    for day in DAYS[:2]:
        assert lake.require(raw_dataset(example_spec), day.isoformat()).row_count == rows_for_day(day)


def test_rerun_of_ingest_replaces_the_partition_exactly(runner, lake, example_spec):
    before = lake.require(raw_dataset(example_spec), D1)
    runner.run("ingest", D1)
    after = lake.require(raw_dataset(example_spec), D1)
    assert (after.row_count, after.content_hash) == (before.row_count, before.content_hash)
    assert after.lineage["run_id"] != before.lineage["run_id"]
    runner.run("validate", D1)


def test_validation_result_is_recorded_per_partition(runner, lake, example_spec):
    for day in (D1, D2):
        report = lake.read_json(validation_report_key(example_spec, day))
        assert report["success"] is True
        assert report["content_hash"] == lake.require(raw_dataset(example_spec), day).content_hash


def test_every_trial_is_an_mlflow_child_run_of_the_sweep(runner, client, example_spec):
    import mlflow

    experiment = client.get_experiment_by_name(example_spec.experiment_name)
    trials = client.search_runs([experiment.experiment_id], "tags.`cormorant.trial_id` != ''")
    assert len(trials) == 4  # linear x2, xgboost x1, mlp x1 in the example spec
    assert {t.data.tags["cormorant.family"] for t in trials} == {"linear", "xgboost", "mlp"}
    parents = {t.data.tags.get("mlflow.parentRunId") for t in trials}
    assert len(parents) == 1 and None not in parents
    for t in trials:
        assert t.info.status == "FINISHED"
        assert 0.5 < t.data.metrics["cv_roc_auc_mean"] <= 1.0
        assert t.data.metrics["onnx_parity_max_abs_diff"] <= 1e-4
        history = client.get_metric_history(t.info.run_id, "cv_roc_auc")
        assert sorted(m.step for m in history) == list(range(example_spec.training.folds))
        # the model the trial logged carries its metrics, as the run does
        (output,) = client.get_run(t.info.run_id).outputs.model_outputs
        linked = {m.key: m.value for m in client.get_logged_model(output.model_id).metrics}
        for key in ("cv_roc_auc_mean", "holdout_roc_auc", "onnx_parity_max_abs_diff", "trial_seconds"):
            assert linked[key] == t.data.metrics[key], key
        assert "cv_roc_auc" in linked  # the folds' scores are the model's too
        reference = mlflow.artifacts.load_dict(f"runs:/{t.info.run_id}/reference.json")  # drift's input
        assert reference["rows"] == t.data.metrics["train_rows"]


def test_a_sweeps_trials_run_side_by_side_under_one_parent_run(runner, client, example_spec):
    """dag.test() runs one task at a time; the embedded default still runs a sweep's trials as a
    scheduler would, up to the machine's CPUs at once, and the DAG's trial tasks reuse them."""
    from cormorant.sweep import local_trial_parallelism

    if local_trial_parallelism() < 2:
        pytest.skip("one CPU: trials run one at a time")
    experiment = client.get_experiment_by_name(example_spec.experiment_name)
    trials = client.search_runs([experiment.experiment_id], "tags.`cormorant.trial_id` != ''")
    spans = sorted((t.info.start_time, t.info.end_time) for t in trials)
    overlapping = [a for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert overlapping, f"the trials ran one after another: {spans}"
    sweeps = client.search_runs([experiment.experiment_id], "tags.`cormorant.role` = 'sweep'")
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {sweeps[0].info.run_id}
    assert sweeps[0].data.tags["cormorant.best_trial"] in {t.data.tags["cormorant.trial_id"] for t in trials}
    # on the warm trainer processes the runner started ahead (imports paid before the sweep)
    assert {t.data.tags["cormorant.trainer_process"] for t in trials} == {"warm"}
    assert all(w.poll() is None for w in runner.trainers.workers)


def test_registered_version_holds_the_champion_alias(runner, client, example_spec):
    champion = client.get_model_version_by_alias(example_spec.registered_model_name, "champion")
    assert str(champion.version) == "1"
    assert champion.tags["cormorant.promotion"].startswith("promoted: no champion yet")
    assert float(champion.tags["holdout_roc_auc"]) > 0.6


def test_rerunning_an_unchanged_sweep_launches_no_trial(runner, client, example_spec, capfd):
    experiment = client.get_experiment_by_name(example_spec.experiment_name)

    def trial_runs():
        return client.search_runs([experiment.experiment_id], "tags.`cormorant.trial_id` != ''")

    before = {r.info.run_id for r in trial_runs()}
    versions = _versions(client, example_spec)
    capfd.readouterr()
    rerun = runner.run("train", D2)
    assert rerun.succeeded
    # A normal run logs no ERROR line (every retrain used to log "[error] XCom not found ... offset=N"
    # when the trial results were read).
    log = "".join(capfd.readouterr())
    assert not [line for line in log.splitlines() if "[error" in line or " ERROR " in line], log[-3000:]
    assert {r.info.run_id for r in trial_runs()} == before  # every trial reused, no trainer launched
    assert _versions(client, example_spec) == versions  # the same sweep registers nothing new
    assert (
        str(client.get_model_version_by_alias(example_spec.registered_model_name, "champion").version) == "1"
    )


def test_predictions_cover_every_input_row_with_the_model_version(runner, lake, example_spec):
    raw = lake.require(raw_dataset(example_spec), D2)
    predictions = lake.read(predictions_dataset(example_spec), D2)
    assert predictions.num_rows == raw.row_count
    assert set(predictions.column("model_version").to_pylist()) == {"1"}
    assert (
        predictions.column("customer_id").to_pylist()
        == lake.read(raw_dataset(example_spec), D2, columns=["customer_id"]).column("customer_id").to_pylist()
    )
    scores = predictions.column("score").to_pylist()
    assert all(0.0 <= s <= 1.0 for s in scores)
    # the predicted class is named for what it is (a "label" column read as the true outcome), and is
    # the class at the spec's decision threshold, the one performance judges by
    assert "label" not in predictions.column_names
    threshold = example_spec.performance.decision_threshold
    assert predictions.column("predicted_class").to_pylist() == [int(s >= threshold) for s in scores]


def test_drift_report_has_a_verdict_and_a_readable_page(runner, lake, example_spec):
    report = lake.read_json(f"{example_spec.name}/reports/drift/ds={D2}/report.json")
    assert report["verdict"] in {"stable", "drift"}
    assert report["model"]["version"] == "1"
    assert set(report["features"]) == set(example_spec.feature_columns)
    html = Path(report["html_uri"].removeprefix("file://")).read_text()
    assert "Verdict" in html and D2 in html
    assert Path(report["html_uri"].removeprefix("file://")).with_name("psi.png").stat().st_size > 1000


def _versions(client, spec) -> list[str]:
    return sorted(
        str(v.version) for v in client.search_model_versions(f"name = '{spec.registered_model_name}'")
    )


def test_feature_full_of_nulls_stops_at_validation_and_promotes_nothing(
    runner, lake, client, example_spec, settings
):
    versions = _versions(client, example_spec)
    with sqlite3.connect(settings.home / "warehouse.db") as conn:
        conn.execute(
            "UPDATE customer_activity SET usage_gb = NULL WHERE event_ts >= ? AND event_ts < ?",
            (f"{D3} 00:00:00", f"{D4} 00:00:00"),
        )
    runner.run("ingest", D3)
    validate = runner.run("validate", D3, check=False)
    assert validate.state == "failed"
    report = lake.read_json(validation_report_key(example_spec, D3))
    assert {(f["expectation"], f["column"]) for f in report["failures"]} == {
        ("expect_column_values_to_not_be_null", "usage_gb")
    }
    train = runner.run("train", D3, check=False)
    assert train.state == "failed" and "plan_sweep" in train.failed_tasks
    assert _versions(client, example_spec) == versions
    assert (
        str(client.get_model_version_by_alias(example_spec.registered_model_name, "champion").version) == "1"
    )


def test_dropped_column_stops_the_chain_and_promotes_nothing(runner, lake, client, example_spec, settings):
    """A dropped source column is caught at ingest already (the schema contract), before validation:
    nothing lands for the day, so nothing downstream can train on it or score it."""
    versions = _versions(client, example_spec)
    with sqlite3.connect(settings.home / "warehouse.db") as conn:
        conn.execute("ALTER TABLE customer_activity DROP COLUMN region")
    ingest = runner.run("ingest", D4, check=False)
    assert ingest.state == "failed"
    assert lake.manifest(raw_dataset(example_spec), D4) is None
    assert runner.run("train", D4, check=False).state == "failed"
    assert _versions(client, example_spec) == versions
    assert lake.manifest(predictions_dataset(example_spec), D4) is None
    summary = runner.summary()
    assert json.dumps(summary)  # the summary is plain data
    assert [p["validation"] for p in summary["partitions"]] == ["passed", "passed", "failed"]
