"""A trial that fails on bad params fails at once (a retry would fail the same way), its cause reaches
the task log at ERROR and the sweep's record, and it does not stop the selection among the others."""

from __future__ import annotations

import json

import pytest

from cormorant.config import PROJECT_ROOT, Settings

pytestmark = pytest.mark.e2e


def test_a_failing_trial_fails_at_once_says_why_and_the_others_still_compete(
    airflow_db, tmp_path, monkeypatch, capfd
):
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

    runner = PipelineRunner.for_spec("churnbad")
    for day in ("2024-03-01", "2024-03-02"):
        runner.run("ingest", day)
        runner.run("validate", day)
    capfd.readouterr()
    train = runner.run("train", "2024-03-02", check=False)
    log = "".join(capfd.readouterr())

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
        assert failed.try_number == 1  # deterministic: no retry spent on it
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
    causes = json.loads(sweep.data.tags["cormorant.failure_causes"])
    assert "learning_rate" in causes["xgboost-0"]  # the trainer's own cause, not "exited with code 1"
    error_lines = [line for line in log.splitlines() if "[error" in line and "xgboost-0" in line]
    assert any("learning_rate" in line for line in error_lines), log[-3000:]
