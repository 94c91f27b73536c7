"""A trial that fails (bad params: the trainer exits non-zero) is retried by policy, reported, and does
not stop the selection among the others."""

from __future__ import annotations

import json

import pytest

from cormorant.config import PROJECT_ROOT, Settings

pytestmark = pytest.mark.e2e


def test_failing_trial_is_retried_reported_and_the_others_still_compete(airflow_db, tmp_path, monkeypatch):
    from datetime import date

    from cormorant.synthetic import seed_sqlite
    from cormorant_provider.pipeline import PipelineRunner

    seed_sqlite(tmp_path / "bad.db", [date(2024, 3, 1), date(2024, 3, 2)])
    monkeypatch.setenv(
        "AIRFLOW_CONN_BAD_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "bad.db")})
    )
    specs = tmp_path / "specs"
    specs.mkdir()
    text = (PROJECT_ROOT / "include" / "specs" / "churn.yaml").read_text()
    text = (
        text.replace("name: churn", "name: churnbad")
        .replace("conn_id: cormorant_warehouse", "conn_id: bad_warehouse")
        .replace("learning_rate: [0.1]", "learning_rate: [-1.0]")  # xgboost refuses a negative rate
        .replace("linear: {C: [0.1, 1.0]}", "linear: {C: [1.0]}")
        .replace(
            "hidden_units: [32], layers: [2], epochs: [25]", "hidden_units: [8], layers: [1], epochs: [2]"
        )
    )
    (specs / "churnbad.yaml").write_text(text)
    monkeypatch.setenv("CORMORANT_SPECS_DIR", str(specs))

    runner = PipelineRunner.from_dag_folder(PROJECT_ROOT / "dags", spec_name="churnbad")
    for day in ("2024-03-01", "2024-03-02"):
        runner.run("ingest", day)
        runner.run("validate", day)
    train = runner.run("train", "2024-03-02", check=False)

    assert train.state == "success"
    states = {k: v for k, v in train.task_states.items() if k.startswith("trial[")}
    assert sorted(states.values()) == ["failed", "success", "success"]
    from airflow.utils.session import create_session

    with create_session() as session:
        from airflow.models import TaskInstance as TI

        failed = (
            session.query(TI)
            .filter(TI.dag_id == "churnbad__train", TI.task_id == "trial", TI.state == "failed")
            .one()
        )
        assert failed.try_number == 3  # the first try and two retries
        register = (
            session.query(TI)
            .filter(TI.dag_id == "churnbad__train", TI.task_id == "register_and_promote")
            .one()
        )
        assert register.state == "success"

    from mlflow import MlflowClient

    from cormorant.tracking import configure

    configure(Settings.from_env())
    client = MlflowClient()
    champion = client.get_model_version_by_alias("cormorant.churnbad", "champion")
    assert champion.tags["cormorant.family"] in {"linear", "mlp"}
    experiment = client.get_experiment_by_name("cormorant/churnbad")
    (sweep,) = client.search_runs([experiment.experiment_id], "tags.`cormorant.role` = 'sweep'")
    assert sweep.data.tags["cormorant.failed_trials"] == "['xgboost-0']"
    assert sweep.info.status == "FINISHED"
