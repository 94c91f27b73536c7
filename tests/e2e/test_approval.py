"""A person's approval before the champion alias moves (promotion.approval: required), through Airflow's
own human-in-the-loop step on a real deployment: API server, scheduler, DAG processor and triggerer;
the approver answers over the REST API. A timeout and a rejection leave no champion and say why; an
approval moves the alias and says who approved."""

from __future__ import annotations

import secrets
import time
from datetime import date
from pathlib import Path

import pytest
import requests
import yaml
from airflow_stack import airflow_stack, stop_nightly_runs, trigger_run, wait_for_run, wait_validated
from support import E2E_TIMEOUT_S

from cormorant.synthetic import seed_sqlite

pytestmark = pytest.mark.e2e
PASSWORD = secrets.token_urlsafe(16)
SPEC = "churnok"
DAY = "2024-03-03"
CONF = {"partition_date": DAY, "families": ["linear"], "max_trials_per_family": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("approval-stack")
    seed_sqlite(home / "warehouse.db", [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)])
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "include/specs/churn.yaml").read_text())
    raw["name"] = SPEC
    raw["promotion"] = {"approval": "required", "approval_timeout_minutes": 1}
    specs = home / "specs"
    specs.mkdir()
    (specs / f"{SPEC}.yaml").write_text(yaml.safe_dump(raw))
    dags = tuple(f"{SPEC}__{stage}" for stage in ("ingest", "validate", "train"))
    with airflow_stack(
        home,
        users={"approver": PASSWORD},
        unpause=dags,
        extra_env={"CORMORANT_SPECS_DIR": str(specs)},
        triggerer=True,
    ) as stack:
        stop_nightly_runs(stack, f"{SPEC}__train")
        for day in ("2024-03-01", "2024-03-02", DAY):
            assert (
                wait_for_run(
                    stack, f"{SPEC}__ingest", trigger_run(stack, f"{SPEC}__ingest", {"partition_date": day})
                )
                == "success"
            )
        wait_validated(home, ["2024-03-01", "2024-03-02", DAY], spec=SPEC)
        yield stack


def _hitl(stack, run_id):
    run = f"{stack['url']}/api/v2/dags/{SPEC}__train/dagRuns/{run_id}"
    return f"{run}/taskInstances/approve_promotion/-1/hitlDetails"


def _awaiting(stack, run_id):
    """The approval request, once the scheduler has taken in that the task paused for it. (Answered
    before that, Airflow 3.3 fails the task: the answer re-queues it, then the scheduler processes the
    executor's event for the paused workload and takes it for a task that finished while queued; the run
    fails and the champion stays. Usually the event follows the pause within 0.1 s, but seen here 5 s
    later on a busy machine, so the test waits for the scheduler's own record of it, not a fixed time.)"""
    deadline = time.monotonic() + E2E_TIMEOUT_S
    ti = f"{stack['url']}/api/v2/dags/{SPEC}__train/dagRuns/{run_id}/taskInstances/approve_promotion"
    taken_in = f"task_id=approve_promotion, run_id={run_id}"
    while time.monotonic() < deadline:
        state = requests.get(ti, headers=stack["headers"], timeout=E2E_TIMEOUT_S)
        if state.ok and state.json()["state"] == "awaiting_input":
            log = (stack["home"] / "scheduler.log").read_text(errors="replace")
            if any(
                "TaskInstance Finished" in line and taken_in in line and "state=awaiting_input" in line
                for line in log.splitlines()
            ):
                response = requests.get(_hitl(stack, run_id), headers=stack["headers"], timeout=E2E_TIMEOUT_S)
                response.raise_for_status()
                return response.json()
        time.sleep(1)
    raise AssertionError(f"run {run_id} never asked for approval (or the scheduler never took it in)")


def _version(stack):
    from mlflow import MlflowClient

    uri = stack["env"]["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = 'cormorant.{SPEC}'")
    assert len(versions) == 1, versions  # every run here proposes the same trained model
    champion = client.get_registered_model(f"cormorant.{SPEC}").aliases.get("champion")
    return client.get_model_version(f"cormorant.{SPEC}", versions[0].version), champion


def test_no_answer_in_time_rejects_and_leaves_no_champion(stack):
    run_id = trigger_run(stack, f"{SPEC}__train", CONF)
    request = _awaiting(stack, run_id)
    assert request["subject"] == f"Promote cormorant.{SPEC} v1 to champion?"
    assert "no champion yet" in request["body"] and "Blessing: passed" in request["body"]
    for line in ("Infra validation: the registered artifact", "Calibration: Brier", "- Slice ",
                 "Drift of the training data: 0 of", "Blessing report: file://"):  # fmt: skip
        assert line in request["body"], request["body"]
    assert request["options"] == ["Approve", "Reject"] and request["defaults"] == ["Reject"]
    assert wait_for_run(stack, f"{SPEC}__train", run_id, timeout_s=2 * E2E_TIMEOUT_S) == "success"
    version, champion = _version(stack)
    assert champion is None
    assert version.tags["cormorant.approval"].startswith(
        "no answer within promotion.approval_timeout_minutes=1"
    )
    assert version.tags["cormorant.promotion"].startswith("not promoted: no answer")


def _answer(stack, option):
    """Train, answer the approval request with ``option`` over REST (an unauthenticated answer is
    refused first), wait for the run; the version and the champion alias."""
    run_id = trigger_run(stack, f"{SPEC}__train", CONF)
    _awaiting(stack, run_id)
    body = {"chosen_options": [option]}
    assert requests.patch(_hitl(stack, run_id), json=body, timeout=E2E_TIMEOUT_S).status_code == 401
    answer = requests.patch(_hitl(stack, run_id), json=body, headers=stack["headers"], timeout=E2E_TIMEOUT_S)
    assert answer.ok, answer.text
    assert wait_for_run(stack, f"{SPEC}__train", run_id) == "success"
    return _version(stack)


def test_a_rejection_leaves_no_champion_and_says_who(stack):
    version, champion = _answer(stack, "Reject")
    assert champion is None
    assert version.tags["cormorant.approval"].startswith("rejected by approver at ")


def test_an_approval_makes_the_version_champion_and_says_who(stack):
    version, champion = _answer(stack, "Approve")
    assert champion == version.version
    assert version.tags["cormorant.approval"].startswith("approved by approver at ")
    assert version.tags["cormorant.promotion"].startswith("promoted: no champion yet (approved by approver")
    card = stack["home"] / "cormorant" / "lake" / SPEC / "reports" / "cards" / f"v{version.version}.md"
    assert "- Approval: approved by approver at " in card.read_text()
