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

SPECS = PROJECT_ROOT / "include" / "specs"
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


def _bundle_folder(specs: Path, folder: Path) -> Path:
    """The specs bundle's DAG files for ``specs``, written into ``folder`` as the DAG processor does."""
    from cormorant_provider.bundle import SpecBundle

    bundle = SpecBundle(name="cormorant-specs", specs=str(specs), path=str(folder))
    bundle.initialize()
    return bundle.path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return _bundle_folder(SPECS, tmp_path_factory.mktemp("loaders"))


@pytest.fixture(scope="module")
def dagbag(bundle):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(bundle), bundle_path=bundle, bundle_name="cormorant-specs")


def _parse_in_a_fresh_process(folder: Path, env: dict[str, str] | None = None) -> dict:
    """DagBag of ``folder`` in a new interpreter (as a DAG processor's parser): the DAG ids, the import
    errors by file, and the heavy libraries the parse imported."""
    probe = f"""
import json, sys
import airflow.sdk  # Airflow itself is loaded by every parser process already
from pathlib import Path
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag({str(folder)!r}, bundle_path=Path({str(folder)!r}), bundle_name="cormorant-specs")
heavy = sorted({{m.split('.')[0] for m in set(sys.modules) - before}} & set({sorted(HEAVY)!r}))
print(json.dumps({{"dags": sorted(bag.dag_ids), "errors": bag.import_errors, "heavy": heavy}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


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
        assert f"timezone:{dag.timezone.name}" in dag.tags, dag.dag_id  # what REST clients read
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


def test_no_heavy_library_at_module_level_of_dag_or_plugin_files(bundle):
    files = [
        *bundle.glob("*.py"),
        *(PROJECT_ROOT / "dags").rglob("*.py"),
        *(PROJECT_ROOT / "plugins").rglob("*.py"),
    ]
    assert files
    offenders = {f.name: sorted(_module_level_imports(f) & HEAVY) for f in files}
    assert {f: h for f, h in offenders.items() if h} == {}


def test_every_spec_has_a_dag_file_of_its_own_which_imports_nothing_heavy(bundle):
    assert sorted(p.name for p in bundle.glob("*.py")) == sorted(f"{p.stem}.py" for p in SPECS.glob("*.yaml"))
    result = _parse_in_a_fresh_process(bundle)
    assert result["errors"] == {}
    assert len(result["dags"]) >= 6
    assert result["heavy"] == []


def _spec_variant(name: str, *replacements: tuple[str, str]) -> str:
    text = (SPECS / "churn.yaml").read_text().replace("name: churn", f"name: {name}")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_a_malformed_spec_is_an_import_error_of_its_own_file_and_the_others_load(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "churn.yaml").write_text((SPECS / "churn.yaml").read_text())
    (specs / "fraud.yaml").write_text(_spec_variant("fraud", ("metric: roc_auc", "metric: accuracy_score")))
    (specs / "leads.yaml").write_text(
        _spec_variant("leads", ("partition_column: event_ts", "partiton_column: event_ts"))
    )
    # a start date that is no date raised pendulum's own ParserError, naming nothing, from the one DAG
    # file of every spec; now it names the field, in its own file
    (specs / "promo.yaml").write_text(
        _spec_variant("promo", ('start_date: "2024-01-01"', 'start_date: "2024-13-45"'))
    )
    (specs / "churn.yml").write_text((SPECS / "churn.yaml").read_text())  # the same spec twice
    result = _parse_in_a_fresh_process(_bundle_folder(specs, tmp_path / "loaders"))
    assert [d for d in result["dags"] if not d.startswith("churn__")] == []
    assert [d for d in result["dags"] if d.startswith("churn__")] == sorted(f"churn__{s}" for s in STAGES)
    errors = result["errors"]
    assert sorted(errors) == ["churn__yml.py", "fraud.py", "leads.py", "promo.py"]
    assert "fraud.yaml': field 'training.metric'" not in errors["fraud.py"]  # one spec's error, not a list
    assert "InvalidSpecError: model spec" in errors["fraud.py"]
    assert "fraud.yaml" in errors["fraud.py"] and "training.metric 'accuracy_score'" in errors["fraud.py"]
    assert "leads.yaml" in errors["leads.py"]
    assert (
        "field 'source.partiton_column': unknown field; did you mean 'partition_column'?"
        in errors["leads.py"]
    )
    assert "field 'source.partition_column': required field is missing" in errors["leads.py"]
    assert "field 'start_date': '2024-13-45' is not a date; expected YYYY-MM-DD" in errors["promo.py"]
    assert "churn.yaml defines the same spec; keep one of the two files" in errors["churn__yml.py"]
    for error in errors.values():
        assert "the other specs' DAGs are not affected" in error


def test_the_specs_bundle_follows_the_specs_folder(tmp_path):
    """A new spec gets its DAG file, a changed one a rewritten file (so the DAG processor parses it again
    at once), a deleted one loses its file (which retires its DAGs), and an unchanged one keeps its file
    untouched; a specs folder that is not there removes nothing."""
    from cormorant_provider.bundle import sync_loaders

    specs, loaders = tmp_path / "specs", tmp_path / "loaders"
    specs.mkdir()
    (specs / "churn.yaml").write_text((SPECS / "churn.yaml").read_text())
    (specs / "fraud.yaml").write_text(_spec_variant("fraud"))
    assert sorted(sync_loaders(specs, loaders)) == ["churn.py", "fraud.py"]
    churn, fraud = (loaders / "churn.py").stat().st_mtime_ns, (loaders / "fraud.py").read_text()
    assert str((specs / "fraud.yaml").resolve()) in fraud

    (specs / "fraud.yaml").write_text(_spec_variant("fraud", ("window_days: 7", "window_days: 8")))
    (specs / "leads.yaml").write_text(_spec_variant("leads"))
    (specs / "notes.txt").write_text("not a spec")
    assert sorted(sync_loaders(specs, loaders)) == ["churn.py", "fraud.py", "leads.py"]
    assert (loaders / "fraud.py").read_text() != fraud
    assert (loaders / "churn.py").stat().st_mtime_ns == churn

    (specs / "fraud.yaml").unlink()
    assert sorted(sync_loaders(specs, loaders)) == ["churn.py", "leads.py"]
    assert sorted(p.name for p in loaders.iterdir()) == ["churn.py", "leads.py"]

    with pytest.raises(FileNotFoundError, match="CORMORANT_SPECS_DIR"):
        sync_loaders(tmp_path / "unmounted", loaders)
    assert sorted(p.name for p in loaders.iterdir()) == ["churn.py", "leads.py"]


def test_kubernetes_backend_runs_trials_as_pods_in_the_gpu_pool(bundle):
    probe = f"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag({str(bundle)!r})
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
