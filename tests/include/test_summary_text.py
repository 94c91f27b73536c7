"""`cormorant summary`'s text: what drifted and what signalled retraining, said on the day's line."""

from __future__ import annotations

from cormorant.summary import format_summary


def _day(**overrides):
    day = {
        "partition": "2024-03-04",
        "rows": 1000,
        "validation": "passed",
        "labels": None,
        "predictions": 1000,
        "predicted_by": "1",
        "drift": "drift",
        "drifted_features": [],
        "prediction_drifted": False,
        "drift_signalled": True,
        "performance_signalled": False,
        "performance": None,
        "realized_metric": None,
        "failed_expectations": [],
        "drift_report": None,
        "performance_report": None,
    }
    return {**day, **overrides}


def _line(day):
    summary = {"spec": "churn", "metric": "roc_auc", "partitions": [day], "trials": [], "versions": []}
    summary["champion"] = None
    return next(line for line in format_summary(summary).splitlines() if line.startswith(day["partition"]))


def test_a_day_where_only_the_prediction_drifted_says_so():
    """It showed "drift" with no drifted feature named, and no word of the prediction."""
    line = _line(_day(prediction_drifted=True))
    assert line.endswith("drifted: only the prediction's distribution; retraining signalled (drift)")


def test_features_and_the_prediction_and_a_degraded_day_are_each_named():
    line = _line(
        _day(
            drifted_features=["usage_gb"],
            prediction_drifted=True,
            performance="degraded",
            realized_metric=0.41,
            performance_signalled=True,
        )
    )
    assert "0.4100 degraded" in line
    expected = "drifted: usage_gb, the prediction; performance degraded; retraining signalled (drift and "
    assert line.endswith(expected + "performance)")


def test_a_stable_day_has_no_notes():
    line = _line(_day(drift="stable", drift_signalled=False))
    assert line.rstrip().endswith("-") and "drifted" not in line and "signalled" not in line
