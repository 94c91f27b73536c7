"""A real distributed run on this machine: CeleryExecutor with the machine's Redis as broker, a Postgres
metadata database, scheduler, API server and two Celery workers as processes; the pipeline triggered
over REST; one worker killed with SIGKILL while it runs a trial. The run still succeeds and nothing is
duplicated: partitions, MLflow versions, predictions."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from datetime import date

import psutil
import pytest
import requests
from airflow_stack import airflow_stack, stop_nightly_runs, trigger_run, wait_for_run, wait_validated
from support import E2E_TIMEOUT_S, scratch_database

from cormorant.lake import Lake
from cormorant.synthetic import rows_for_day, seed_sqlite

pytestmark = pytest.mark.e2e
PASSWORD = secrets.token_urlsafe(16)
REDIS_DB = 7


def _get(stack, path):
    response = requests.get(f"{stack['url']}/api/v2/{path}", headers=stack["headers"], timeout=E2E_TIMEOUT_S)
    response.raise_for_status()
    return response.json()


def _running_trainer(stack, timeout_s=E2E_TIMEOUT_S):
    """The worker whose process tree runs a trainer right now, and that trainer process."""
    workers = {p.pid: name for name, p in stack["processes"].items() if name.startswith("worker")}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            if "cormorant.trainer" in (process.info["cmdline"] or []):
                with contextlib.suppress(psutil.Error):
                    for parent in process.parents():
                        if parent.pid in workers:
                            return workers[parent.pid], process
        time.sleep(0.2)
    return None, None


@pytest.fixture(scope="module")
def mlflow_db():
    with scratch_database("cormorant_mlflow") as name:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"


def test_worker_killed_mid_trial_and_the_pipeline_still_succeeds_once(tmp_path, mlflow_db):
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    seed_sqlite(tmp_path / "warehouse.db", [date(2024, 3, 1), date(2024, 3, 2)])
    extra = {
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "CORMORANT_TRIAL_RETRY_DELAY_S": "1",
        "MLFLOW_TRACKING_URI": mlflow_db,
    }
    dags = ("churn__ingest", "churn__validate", "churn__train", "churn__predict")
    with airflow_stack(
        tmp_path,
        users={"svc-ml": PASSWORD},
        unpause=dags,
        executor="CeleryExecutor",
        celery_workers=2,
        extra_env=extra,
    ) as stack:
        stop_nightly_runs(stack, "churn__train")
        for day in ("2024-03-01", "2024-03-02"):
            run_id = trigger_run(stack, "churn__ingest", {"partition_date": day})
            assert wait_for_run(stack, "churn__ingest", run_id) == "success"
        wait_validated(tmp_path, ["2024-03-01", "2024-03-02"])  # validate runs on the Asset events

        train = trigger_run(stack, "churn__train", {"partition_date": "2024-03-02"})
        victim, trainer = _running_trainer(stack)
        assert victim is not None, "no trial was seen running on a worker"
        killed_trial = json.loads(trainer.cmdline()[trainer.cmdline().index("--trial") + 1])["trial_id"]
        # A worker machine lost: the Celery worker and everything it started (the task, the trainer) die.
        doomed = [
            stack["processes"][victim].pid,
            *(p.pid for p in psutil.Process(stack["processes"][victim].pid).children(True)),
        ]
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

        assert wait_for_run(stack, "churn__train", train, timeout_s=2 * E2E_TIMEOUT_S) == "success"
        tis = _get(stack, f"dags/churn__train/dagRuns/{train}/taskInstances")["task_instances"]
        trials = [ti for ti in tis if ti["task_id"] == "trial"]
        assert all(ti["state"] == "success" for ti in trials)
        assert max(ti["try_number"] for ti in trials) >= 2, f"{killed_trial} was not retried: {trials}"

        predict = trigger_run(stack, "churn__predict", {"partition_date": "2024-03-02"})
        assert wait_for_run(stack, "churn__predict", predict) == "success"

        lake = Lake(stack["env"]["CORMORANT_LAKE_URI"])
        # (unpausing also started the nightly run for the latest interval: its partition is there too)
        assert {"2024-03-01", "2024-03-02"} <= set(lake.partitions("churn/raw"))
        for day in ("2024-03-01", "2024-03-02"):
            folder = tmp_path / "cormorant" / "lake" / "churn" / "raw" / f"ds={day}"
            assert len([p for p in folder.iterdir() if p.name.startswith("run=")]) == 1
        assert lake.read("churn/predictions", "2024-03-02").num_rows == rows_for_day(date(2024, 3, 2))

        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_db, registry_uri=mlflow_db)
        versions = client.search_model_versions("name = 'cormorant.churn'")
        assert len(versions) == 1
        experiment = client.get_experiment_by_name("cormorant/churn")
        finished = client.search_runs(
            [experiment.experiment_id], "tags.`cormorant.trial_id` != '' and attributes.status = 'FINISHED'"
        )
        trial_ids = [r.data.tags["cormorant.trial_id"] for r in finished]
        assert sorted(trial_ids) == sorted(set(trial_ids)) and len(trial_ids) == 4
