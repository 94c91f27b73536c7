"""DAG integrity: imports, tags, retries, schedules, params, and cheap parsing."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cormorant.config import PROJECT_ROOT

DAGS = PROJECT_ROOT / "dags"
STAGES = ("ingest", "validate", "train", "predict", "drift", "performance")
HEAVY = {
    "pandas",
    "numpy",
    "pyarrow",
    "torch",
    "xgboost",
    "sklearn",
    "scipy",
    "mlflow",
    "great_expectations",
    "onnx",
    "onnxruntime",
    "onnxmltools",
    "skl2onnx",
    "matplotlib",
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_spec_has_its_dags(dagbag):
    assert {f"churn__{s}" for s in STAGES} <= set(dagbag.dag_ids)
    assert "churn__labels" not in dagbag.dag_ids  # churn's labels come with its features


def test_labels_that_arrive_later_get_their_own_dag(tmp_path):
    from cormorant.spec import load_spec
    from cormorant_provider.dag_factory import build_spec_dags

    path = PROJECT_ROOT / "include" / "examples" / "churn_late.yaml"
    dags = build_spec_dags(load_spec(path), path)
    labels = dags["churn_late__labels"]
    assert [t.task_id for t in labels.topological_sort()] == ["land_labels", "validate_labels"]
    assert {o.uri for t in labels.tasks for o in t.outlets} == {"cormorant://churn_late/labels"}
    assert labels.timetable.expression == "30 0 * * *"  # a cron only: labels do not land with features
    assert set(dags["churn_late__validate"].task_ids) == {"validate_partition"}
    condition = str(dags["churn_late__performance"].timetable.asset_condition)
    assert "cormorant://churn_late/labels" in condition and "cormorant://churn_late/predictions" in condition


def test_dags_have_tags_retries_and_a_nightly_cron(dagbag):
    for dag in dagbag.dags.values():
        assert "cormorant" in dag.tags and f"spec:{dag.dag_id.split('__')[0]}" in dag.tags, dag.dag_id
        assert dag.catchup is False
        assert dag.start_date.tzinfo is not None
        assert dag.doc_md
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag.dag_id}.{task.task_id} has retries={task.retries}"
        cron = getattr(dag.timetable, "timetable", dag.timetable)
        assert len(cron.expression.split()) == 5 and cron.expression.endswith("* * *"), dag.dag_id


def test_assets_chain_the_stages(dagbag):
    def outlets(dag_id):
        return {o.uri for t in dagbag.dags[dag_id].tasks for o in t.outlets}

    assert outlets("churn__ingest") == {"cormorant://churn/raw"}
    assert outlets("churn__validate") == {"cormorant://churn/validated", "cormorant://churn/labels"}
    assert outlets("churn__predict") == {"cormorant://churn/predictions"}
    assert outlets("churn__drift") == {"cormorant://churn/retrain"}
    assert outlets("churn__performance") == {"cormorant://churn/retrain"}
    assert outlets("churn__train") == {"cormorant://churn/model"}
    for dag_id, upstream in [
        ("churn__validate", "raw"),
        ("churn__predict", "validated"),
        ("churn__drift", "predictions"),
        ("churn__performance", "labels"),
        ("churn__performance", "predictions"),
        ("churn__train", "retrain"),
    ]:
        assert f"cormorant://churn/{upstream}" in str(dagbag.dags[dag_id].timetable.asset_condition), dag_id


def _validate_with(params, name, value):
    from airflow.sdk.definitions.param import ParamsDict

    trial = ParamsDict(params)
    trial[name] = value
    trial.validate()


def test_params_are_typed_and_validated(dagbag):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    train = dagbag.dags["churn__train"]
    params = ParamsDict(train.params)
    params.validate()
    for name, bad in [
        ("window_days", "seven"),
        ("window_days", 0),
        ("families", ["forest"]),
        ("folds", 50),
        ("partition_date", "yesterday"),
    ]:
        with pytest.raises(ParamValidationError, match=name):
            _validate_with(train.params, name, bad)


def _module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_heavy_library_at_module_level_of_dag_or_plugin_files():
    files = [*DAGS.rglob("*.py"), *(PROJECT_ROOT / "plugins").rglob("*.py")]
    assert files
    offenders = {str(f.relative_to(PROJECT_ROOT)): sorted(_module_level_imports(f) & HEAVY) for f in files}
    assert {f: h for f, h in offenders.items() if h} == {}


def test_parsing_the_dag_file_is_fast_and_imports_nothing_heavy():
    probe = f"""
import json, sys, time
import airflow.sdk  # Airflow itself is loaded by every parser process already
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
started = time.perf_counter()
bag = DagBag({str(DAGS)!r})
elapsed = time.perf_counter() - started
heavy = sorted({{m.split('.')[0] for m in set(sys.modules) - before}} & set({sorted(HEAVY)!r}))
errors = list(bag.import_errors)
print(json.dumps({{"seconds": elapsed, "heavy": heavy, "dags": len(bag.dags), "errors": errors}}))
"""
    out = (
        subprocess.run(
            [sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=os.environ.copy()
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    result = json.loads(out)
    assert result["errors"] == []
    assert result["dags"] >= 5
    assert result["heavy"] == []
    assert result["seconds"] < 1.0, f"parsing took {result['seconds']:.2f}s"


def test_every_malformed_spec_is_in_the_import_error_naming_file_and_field(tmp_path):
    (tmp_path / "churn.yaml").write_text((PROJECT_ROOT / "include" / "specs" / "churn.yaml").read_text())
    (tmp_path / "fraud.yaml").write_text(
        (PROJECT_ROOT / "include" / "specs" / "churn.yaml")
        .read_text()
        .replace("name: churn", "name: fraud")
        .replace("metric: roc_auc", "metric: accuracy_score")
    )
    (tmp_path / "leads.yaml").write_text(
        (PROJECT_ROOT / "include" / "specs" / "churn.yaml")
        .read_text()
        .replace("name: churn", "name: leads")
        .replace("partition_column: event_ts", "partiton_column: event_ts")
    )
    probe = f"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag({str(DAGS)!r})
print(json.dumps({{"dags": sorted(bag.dag_ids), "errors": bag.import_errors}}))
"""
    env = {**os.environ, "CORMORANT_SPECS_DIR": str(tmp_path)}
    out = (
        subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=env)
        .stdout.strip()
        .splitlines()[-1]
    )
    result = json.loads(out)
    assert [d for d in result["dags"] if d.startswith("churn__")] == sorted(f"churn__{s}" for s in STAGES)
    assert not [d for d in result["dags"] if "fraud" in d or "leads" in d]
    # Import errors are keyed by DAG file, so both malformed specs must be in the one error, each with
    # its own problems (before, the second overwrote the first).
    (error,) = result["errors"].values()
    assert "2 model spec(s) are malformed" in error
    assert "[fraud.yaml]" in error and "training.metric 'accuracy_score'" in error
    assert "[leads.yaml]" in error and "field 'source.partiton_column': unknown field; did you mean" in error


def test_kubernetes_backend_runs_trials_as_pods_in_the_gpu_pool():
    probe = f"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag({str(DAGS)!r})
trial = bag.dags["churn__train"].task_dict["trial"]
print(json.dumps({{"errors": list(bag.import_errors), "class": trial.operator_class.__name__
                  if hasattr(trial, "operator_class") else type(trial).__name__,
                  "pool": trial.partial_kwargs.get("pool")}}))
"""
    env = {**os.environ, "CORMORANT_TRIAL_BACKEND": "kubernetes"}
    out = (
        subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=env)
        .stdout.strip()
        .splitlines()[-1]
    )
    result = json.loads(out)
    assert result["errors"] == []
    assert result["class"] == "KubernetesTrialOperator"
    assert result["pool"] == "cormorant_gpu"


def test_only_sweeps_are_serialised(dagbag):
    assert dagbag.dags["churn__train"].max_active_runs == 1
    for stage in ("ingest", "validate", "predict", "drift"):
        assert dagbag.dags[f"churn__{stage}"].max_active_runs > 1
