"""One broken spec breaks only itself, on a real DAG processor: API server, scheduler (LocalExecutor) and
DAG processor on PostgreSQL, read over REST. (A DagBag does not show it: the processor marks every DAG of
a file with an import error stale, which is what took every team's DAGs away when all specs shared one
DAG file.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
import requests
from airflow_stack import airflow_stack, trigger_run, wait_for_run
from support import E2E_TIMEOUT_S

from cormorant.config import PROJECT_ROOT
from cormorant.synthetic import seed_sqlite

pytestmark = pytest.mark.e2e
STAGES = ("ingest", "validate", "train", "predict", "drift", "performance")
LATE_STAGES = (*STAGES, "labels")
GOOD = (PROJECT_ROOT / "include" / "specs" / "churn.yaml").read_text()
LATE = (PROJECT_ROOT / "include" / "examples" / "churn_late.yaml").read_text()
# one team's typo, the kind the DAG processor saw
TYPO = GOOD.replace("name: churn", "name: leads").replace("partition_column:", "partiton_column:")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("isolation")
    specs = home / "specs"
    specs.mkdir()
    (specs / "churn.yaml").write_text(GOOD)
    (specs / "churn_late.yaml").write_text(LATE)
    (specs / "leads.yaml").write_text(TYPO)
    seed_sqlite(home / "warehouse.db", [date(2024, 3, 1)])
    env = {"CORMORANT_SPECS_DIR": str(specs)}
    with airflow_stack(
        home, users={"ops": "isolation-test"}, unpause=("churn__ingest",), extra_env=env
    ) as stack:
        stack["specs"] = specs
        yield stack


def _get(stack: dict[str, Any], path: str, **params: Any) -> dict[str, Any]:
    response = requests.get(
        f"{stack['url']}/api/v2/{path}", params=params, headers=stack["headers"], timeout=E2E_TIMEOUT_S
    )
    response.raise_for_status()
    return response.json()


def _active_dags(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["dag_id"]: d for d in _get(stack, "dags", limit=100)["dags"] if not d["is_stale"]}


def _import_errors(stack: dict[str, Any]) -> dict[str, str]:
    errors = _get(stack, "importErrors", limit=100)["import_errors"]
    return {e["filename"]: e["stack_trace"] for e in errors}


def _eventually(check: Callable[[], Any], what: str, timeout_s: float = E2E_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        time.sleep(1)


def _has_all(stack: dict[str, Any], spec: str, stages: tuple[str, ...]) -> bool:
    active = _active_dags(stack)
    return all(f"{spec}__{s}" in active for s in stages)


def test_a_broken_spec_shows_its_own_import_error_and_the_others_run(stack):
    _eventually(lambda: _has_all(stack, "churn", STAGES), "churn's DAGs listed")
    _eventually(lambda: _has_all(stack, "churn_late", LATE_STAGES), "churn_late's DAGs listed")
    errors = _eventually(lambda: _import_errors(stack), "the broken spec's import error")
    assert list(errors) == ["leads.py"]
    assert "leads.yaml" in errors["leads.py"]
    assert (
        "field 'source.partiton_column': unknown field; did you mean 'partition_column'?"
        in errors["leads.py"]
    )
    active = _active_dags(stack)
    assert not [d for d in active if d.startswith("leads__")]
    # the good specs stay scheduled: the processor gave them their next nightly run
    for dag_id in ("churn__ingest", "churn_late__ingest", "churn_late__labels"):
        assert active[dag_id]["next_dagrun_run_after"], dag_id

    run_id = trigger_run(stack, "churn__ingest", {"partition_date": "2024-03-01"})
    assert wait_for_run(stack, "churn__ingest", run_id) == "success"
    lake = stack["home"] / "cormorant" / "lake" / "churn" / "raw" / "ds=2024-03-01" / "_manifest.json"
    assert lake.exists()


def test_fixing_the_spec_brings_its_dags_back_without_a_restart(stack):
    (stack["specs"] / "leads.yaml").write_text(TYPO.replace("partiton_column:", "partition_column:"))
    _eventually(lambda: _has_all(stack, "leads", STAGES), "the fixed spec's DAGs listed")
    _eventually(lambda: "leads.py" not in _import_errors(stack), "the fixed spec's import error cleared")
    assert _has_all(stack, "churn", STAGES) and _has_all(stack, "churn_late", LATE_STAGES)
    assert all(p.poll() is None for p in stack["processes"].values())  # nothing was restarted


def test_deleting_a_spec_retires_only_its_dags(stack):
    (stack["specs"] / "churn_late.yaml").unlink()
    _eventually(
        lambda: not [d for d in _active_dags(stack) if d.startswith("churn_late__")],
        "the deleted spec's DAGs retired",
    )
    assert _has_all(stack, "churn", STAGES) and _has_all(stack, "leads", STAGES)
    stale = {
        d["dag_id"] for d in _get(stack, "dags", limit=100, exclude_stale=False)["dags"] if d["is_stale"]
    }
    assert stale == {f"churn_late__{s}" for s in LATE_STAGES}
