"""The view's marks and panels from day states (the e2e test, tests/e2e/test_view.py, reads them from a
real pipeline run)."""

from __future__ import annotations

from datetime import date

import pytest

from cormorant.view import _mark, drift_heatmap, performance_series


def _day(day, **state):
    base = {
        "day": day, "rows": 10, "validation": "passed", "predictions": 10, "drift": "stable",
        "drifted_features": [], "psi": {}, "performance": "ok", "realized_metric": None,
        "holdout_metric": None,
    }  # fmt: skip
    return {**base, **state}


@pytest.mark.parametrize(
    ("last", "champion", "mark", "why"),
    [
        ({"validation": "failed"}, "1", "red", "2024-03-02 failed validation"),
        ({"performance": "degraded"}, "1", "red", "realized 2024-03-02: degraded"),
        ({"drift": "drift", "drifted_features": ["usage_gb"]}, "1", "red", "2024-03-02 drifted: usage_gb"),
        ({}, None, "amber", "no champion yet"),
        ({"validation": None, "drift": None, "performance": None}, "1", "amber", "2024-03-02 not validated"),
        ({"predictions": None, "drift": None, "performance": None}, "1", "amber", "2024-03-02 not scored"),
        ({}, "1", "green", "2024-03-02 landed, passed and scored"),
    ],
)
def test_the_mark_is_the_worst_thing_about_the_latest_days_and_says_why(last, champion, mark, why):
    found = _mark([_day("2024-03-01"), _day("2024-03-02", **last)], champion)
    assert found[0] == mark and found[1].startswith(why)


def test_a_use_case_with_no_day_is_amber():
    assert _mark([], "1") == ("amber", "no day has landed yet")


def test_heatmap_and_performance_panels_keep_only_the_days_they_have(example_spec):
    days = [
        _day("2024-03-01", drift=None),
        _day("2024-03-02", psi={"usage_gb": 0.3}, realized_metric=0.8, holdout_metric=0.79),
    ]
    heat = drift_heatmap(example_spec, days)
    assert heat["days"] == ["2024-03-02"] and heat["features"] == list(example_spec.feature_columns)
    assert heat["psi"][0][heat["features"].index("usage_gb")] == 0.3 and heat["psi"][0].count(None) == 6
    assert performance_series(days) == {"days": ["2024-03-02"], "realized": [0.8], "holdout": [0.79]}


def test_a_days_failed_expectations_carry_the_reports_message(example_spec, lake, day_with_failures):
    from cormorant.view import _day

    found = {"raw": None, "predictions": None, "drift": None, "labels": None, "performance": None}
    state = _day(example_spec, lake, "2024-03-01", {**found, "validation": day_with_failures.to_dict()})
    assert state["validation"] == "failed"
    assert state["failed_expectations"] == [
        {"expectation": f["expectation"], "column": f["column"], "message": f["detail"]}
        for f in day_with_failures.failures
    ]
    assert state["failed_expectations"][0]["message"] == "10 rows; the spec asks for at least min_rows=200"


@pytest.fixture
def day_with_failures(example_spec):
    import pyarrow as pa

    from cormorant.synthetic import generate_day
    from cormorant.validation import validate_frame, validation_frame

    frame = validation_frame(pa.Table.from_pandas(generate_day(date(2024, 3, 1)).iloc[:10]))
    return validate_frame(frame, example_spec, partition="2024-03-01")


def _specs_folder(tmp_path):
    import shutil

    from cormorant.config import PROJECT_ROOT, Settings

    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(PROJECT_ROOT / "include" / "specs" / "churn.yaml", specs)
    shutil.copy(PROJECT_ROOT / "include" / "examples" / "churn_late.yaml", specs)
    (specs / "fraud.yaml").write_text("name: fraud\nsource: {table: tx}\n")
    return Settings.from_env({"CORMORANT_HOME": str(tmp_path), "CORMORANT_SPECS_DIR": str(specs)})


def test_a_use_case_shows_only_when_every_one_of_its_dags_is_readable(tmp_path, lake):
    from cormorant.view import use_cases

    settings = _specs_folder(tmp_path)
    asked = []

    def readable(dag_ids):
        asked.append(set(dag_ids))
        return {d for d in dag_ids if d != "churn_late__labels"}  # the late-label DAG only churn_late has

    found = use_cases(settings, lake, readable)
    assert [u["name"] for u in found["use_cases"]] == ["churn"]
    assert [b["file"] for b in found["broken"]] == ["fraud.yaml"]
    # one question to the auth manager, about every DAG the folder stands for
    (ids,) = asked
    assert {"churn__train", "churn_late__labels", "cormorant_invalid_spec__fraud"} <= ids
    assert "churn__labels" not in ids  # churn's labels come with its features: no labels DAG

    nothing = use_cases(settings, lake, lambda dag_ids: set())
    assert nothing == {"use_cases": [], "broken": []}
    everything = use_cases(settings, lake)
    assert sorted(u["name"] for u in everything["use_cases"]) == ["churn", "churn_late"]


def test_a_broken_spec_names_its_file_and_never_the_servers_folder(tmp_path, lake):
    from cormorant.view import use_cases

    settings = _specs_folder(tmp_path)
    (broken,) = use_cases(settings, lake)["broken"]
    assert broken["file"] == "fraud.yaml" and "model spec fraud.yaml:" in broken["error"]
    assert "features" in broken["error"] and str(tmp_path) not in broken["error"]


def test_the_mlflow_link_is_the_ui_url_when_one_is_set_without_credentials(tmp_path):
    from cormorant.config import Settings
    from cormorant.view import _mlflow_ui

    served = {"CORMORANT_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert _mlflow_ui(Settings.from_env(served)) == "http://mlflow:5000"
    public = {**served, "CORMORANT_MLFLOW_UI_URL": "https://ops:pw@mlflow.example.com/"}
    assert _mlflow_ui(Settings.from_env(public)) == "https://mlflow.example.com"
    assert _mlflow_ui(Settings.from_env({"CORMORANT_HOME": str(tmp_path)})) is None  # a local store
