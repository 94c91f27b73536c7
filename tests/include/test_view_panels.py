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
