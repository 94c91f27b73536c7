"""A failed trial says why, and whether a retry can help: the trainer CLI on bad data, the trial operator
with a trainer that fails in each way, and a sweep in which every trial failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from support import task_context

from cormorant.config import PROJECT_ROOT
from cormorant.errors import TrialFailed
from cormorant.lake import Lake
from cormorant.synthetic import generate_day
from cormorant.trainer import (
    EXIT_DETERMINISTIC,
    Trial,
    TrialDataError,
    failure_result,
    trainer_command,
    trial_record_key,
)

SPEC = PROJECT_ROOT / "include" / "specs" / "churn.yaml"


def test_failures_are_classified_by_whether_a_retry_can_help():
    trial = Trial("linear-0", "linear", {}, [], [], 2, 0)
    assert failure_result(trial, ValueError("Input X contains infinity"))["retryable"] is False
    assert failure_result(trial, TrialDataError("bad day"))["retryable"] is False
    assert failure_result(trial, ConnectionError("MLflow went away"))["retryable"] is True
    assert failure_result(trial, TimeoutError())["retryable"] is True
    assert failure_result(trial, ValueError("first line\nsecond"))["error"] == "ValueError: first line"


def test_the_trainer_names_the_day_and_column_of_bad_data_and_exits_deterministic(tmp_path, example_spec):
    lake = Lake(tmp_path / "lake")
    for day in ("2024-03-01", "2024-03-02"):
        from datetime import date

        table = pa.Table.from_pandas(generate_day(date.fromisoformat(day)), preserve_index=False)
        if day == "2024-03-02":
            usage = table.column("usage_gb").to_pylist()
            usage[5] = float("inf")
            table = table.set_column(table.schema.get_field_index("usage_gb"), "usage_gb", pa.array(usage))
        lake.write_partition("churn/raw", day, table.to_batches())
    trial = Trial(
        "linear-0", "linear", {"C": 1.0}, ["2024-03-01", "2024-03-02"], ["2024-03-02"], 2, 0, sweep_key="k1"
    )
    output = tmp_path / "result.json"
    env = {
        **__import__("os").environ,
        "CORMORANT_LAKE_URI": (tmp_path / "lake").as_uri(),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    done = subprocess.run(
        trainer_command(SPEC, trial.__dict__, output),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == EXIT_DETERMINISTIC, done.stderr[-2000:]
    result = json.loads(output.read_text())
    assert result["status"] == "failed" and result["retryable"] is False
    assert (
        "partition 2024-03-02" in result["error"]
        and "column 'usage_gb': 1 infinite value(s)" in result["error"]
    )
    assert " ERROR cormorant.trainer: trial linear-0 (linear) failed: TrialDataError" in done.stderr
    assert lake.read_json(trial_record_key(example_spec.name, "k1", "linear-0")) == result
    # Without --output the result goes to stdout: whole, with the log, before the CLI's fast exit
    # (os._exit, which flushes nothing itself)
    piped = subprocess.run(
        trainer_command(SPEC, trial.__dict__, output)[:-2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert piped.returncode == EXIT_DETERMINISTIC, piped.stderr[-2000:]
    assert json.loads(piped.stdout)["error"] == result["error"]
    assert " ERROR cormorant.trainer: trial linear-0 (linear) failed: TrialDataError" in piped.stderr


def test_a_warm_trainer_opens_an_existing_tracking_store_and_leaves_a_missing_one_alone(tmp_path):
    """Warm-up opens the SQL store, so that a warm process's first trial does not pay for it; a SQLite
    store that does not exist yet is not created there (trainers side by side would race to)."""
    from cormorant.config import Settings
    from cormorant.trainer import open_tracking_store

    missing = tmp_path / "missing" / "mlflow.db"
    open_tracking_store(Settings.from_env({"MLFLOW_TRACKING_URI": f"sqlite:///{missing}"}))
    assert not missing.exists()
    opened = tmp_path / "opened.db"
    created = f"from mlflow import MlflowClient; MlflowClient('sqlite:///{opened}').search_experiments()"
    subprocess.run([sys.executable, "-c", created], check=True, capture_output=True, timeout=120)
    kept = (
        "from mlflow.tracking._tracking_service.utils import _tracking_store_registry as r; "
        "from cormorant.config import Settings; from cormorant.trainer import open_tracking_store; "
        "stores = r._get_store_with_resolved_uri.cache_info; before = stores().currsize; "
        f"open_tracking_store(Settings.from_env({{'MLFLOW_TRACKING_URI': 'sqlite:///{opened}'}})); "
        "print(before, stores().currsize)"
    )
    done = subprocess.run([sys.executable, "-c", kept], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "1"]  # opened in this process, and kept for its trials


def _trainer_that(tmp_path: Path, code: int, result: dict | None) -> list[str]:
    script = tmp_path / "fake_trainer.py"
    script.write_text(
        "import json, sys\n"
        "out = sys.argv[sys.argv.index('--output') + 1]\n"
        "print('2024-01-01 00:00:00,000 ERROR cormorant.trainer: trial failed: the cause', flush=True)\n"
        + (f"open(out, 'w').write({json.dumps(json.dumps(result))})\n" if result else "")
        + (f"import os; os.kill(os.getpid(), {-code})\n" if code < 0 else f"sys.exit({code})\n")
    )
    return [sys.executable, str(script)]


@pytest.mark.parametrize(
    ("code", "result", "fails_at_once", "cause"),
    [
        (
            3,
            {"status": "failed", "error": "ValueError: Input X contains infinity", "retryable": False},
            True,
            "Input X contains infinity",
        ),
        (
            1,
            {"status": "failed", "error": "ConnectionError: MLflow went away", "retryable": True},
            False,
            "MLflow went away",
        ),
        (-9, None, False, "exited with code -9 without a result"),
    ],
    ids=["deterministic", "transient", "killed"],
)
def test_the_trial_task_raises_the_trainers_cause(tmp_path, monkeypatch, code, result, fails_at_once, cause):
    from airflow.sdk.exceptions import AirflowFailException

    from cormorant_provider.operators.sweep import SweepTrialOperator

    monkeypatch.setenv("CORMORANT_LAKE_URI", (tmp_path / "lake").as_uri())
    trial = {
        "trial_id": "xgboost-0",
        "family": "xgboost",
        "params": {},
        "train_partitions": [],
        "holdout_partitions": [],
        "folds": 2,
        "seed": 0,
        "sweep_key": "k2",
    }
    op = SweepTrialOperator(task_id="trial", spec_path=str(SPEC), trial=trial)
    monkeypatch.setattr(
        op,
        "trainer_command",
        lambda output: [*_trainer_that(tmp_path, code, result), "--output", str(output)],
    )
    monkeypatch.setattr("cormorant_provider.operators.sweep.cached_trial_result", lambda *a: None)
    expected = AirflowFailException if fails_at_once else TrialFailed
    with pytest.raises(expected, match=cause) as info:
        op.execute(task_context("2024-03-01", dag_id="churn__train"))
    if not fails_at_once:
        assert not isinstance(info.value, AirflowFailException) and info.value.retryable
    record = Lake(tmp_path / "lake").read_json("churn/sweeps/k2/trials/xgboost-0.json")
    if result is None:  # the operator keeps the record a killed trainer could not
        assert "without a result" in record["error"]


def test_a_sweep_in_which_every_trial_failed_names_each_cause(tmp_path, example_spec):
    from cormorant.config import Settings
    from cormorant.registry import SweepFailed, register_and_promote

    lake = Lake(tmp_path / "lake")
    plan = {"sweep_key": "k3", "trial_ids": ["linear-0", "xgboost-0", "mlp-0"], "holdout_partitions": []}
    for trial_id, cause in (
        ("linear-0", "ValueError: needs samples of at least 2 classes"),
        ("xgboost-0", "ValueError: Input X contains infinity"),
    ):
        lake.write_json(f"churn/sweeps/k3/trials/{trial_id}.json", {"status": "failed", "error": cause})
    with pytest.raises(SweepFailed) as info:
        register_and_promote(example_spec, Settings.from_env(), lake, plan, [])
    message = str(info.value)
    assert "no trial succeeded out of 3" in message
    assert "linear-0: ValueError: needs samples of at least 2 classes" in message
    assert "xgboost-0: ValueError: Input X contains infinity" in message
    assert "mlp-0: no outcome recorded" in message


def test_a_trial_field_this_trainer_does_not_know_is_dropped_with_a_warning(caplog):
    """A plan made by a newer Cormorant than the trainer image carries fields the image's Trial lacks;
    before, every trial then died with a TypeError, reported as "killed, or out of memory?" and retried."""
    given = {
        "trial_id": "linear-0",
        "family": "linear",
        "params": {},
        "train_partitions": ["2024-03-01"],
        "holdout_partitions": [],
        "folds": 2,
        "seed": 0,
        "packed_into": "pod-3",
    }
    with caplog.at_level("WARNING", logger="cormorant.trainer"):
        trial = Trial.from_dict(given)
    assert trial.trial_id == "linear-0" and trial.folds == 2
    assert "packed_into" in caplog.text and "another version" in caplog.text


def test_a_trial_missing_a_field_fails_deterministic_naming_it(tmp_path):
    done = subprocess.run(
        trainer_command(SPEC, {"trial_id": "x-1"}, tmp_path / "r.json"),
        capture_output=True,
        text=True,
        env={
            **__import__("os").environ,
            "CORMORANT_LAKE_URI": (tmp_path / "lake").as_uri(),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        },
    )
    assert done.returncode == EXIT_DETERMINISTIC, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["status"] == "failed" and result["retryable"] is False
    assert "missing field(s)" in result["error"] and "family" in result["error"]
