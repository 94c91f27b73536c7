"""`cormorant check` against a live source: what it says of a label source, and of features that a
one-day partition makes constant."""

from __future__ import annotations

import sqlite3
from datetime import date

import pytest

from cormorant.config import PROJECT_ROOT
from cormorant.source_check import check_source
from cormorant.spec import load_spec
from cormorant.synthetic import seed_sqlite

DAYS = [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)]


@pytest.fixture
def late_spec():
    return load_spec(PROJECT_ROOT / "include" / "examples" / "churn_late.yaml")


@pytest.fixture
def warehouse(tmp_path):
    db = tmp_path / "warehouse.db"
    seed_sqlite(db, DAYS, labels_table="churn_labels")
    return db


def _check(db, spec):
    conn = sqlite3.connect(db)
    try:
        return check_source(conn, spec)
    finally:
        conn.close()


def test_a_passing_check_says_what_the_label_source_holds(late_spec, warehouse):
    with sqlite3.connect(warehouse) as conn:
        conn.execute("DELETE FROM churn_labels WHERE event_ts >= '2024-03-03'")  # final a day late
        rows = conn.execute("SELECT count(*) FROM churn_labels").fetchone()[0]
        churned = conn.execute("SELECT count(*) FROM churn_labels WHERE churned = 1").fetchone()[0]
    report = _check(warehouse, late_spec)
    assert report.ok and report.warnings == [], report.problems + report.warnings
    assert (
        f"target.source churn_labels: {rows} rows; 'churned' over the {rows} most recent: "
        f"{{0: {rows - churned}, 1: {churned}}}" in report.facts
    )
    assert (
        "target.source: the latest labelled day is 2024-03-02, 1 day(s) behind the features' latest "
        "(2024-03-03); the spec reads a day's labels 1 day(s) after it" in report.facts
    )


def test_labels_that_lag_more_than_the_spec_reads_them_are_warned_of(late_spec, warehouse):
    with sqlite3.connect(warehouse) as conn:
        conn.execute("DELETE FROM churn_labels WHERE event_ts >= '2024-03-02'")
    report = _check(warehouse, late_spec)
    assert report.ok
    assert report.warnings == [
        "target.available_after_days 1: the label source lags the features by 2 day(s), so each day's "
        "labels would be read before they are there; raise it to at least 2"
    ]


def test_a_label_source_that_does_not_exist_is_named(late_spec, tmp_path):
    db = tmp_path / "no_labels.db"
    seed_sqlite(db, DAYS)
    report = _check(db, late_spec)
    assert [p for p in report.problems if p.startswith("target.source churn_labels: cannot be read")]


def test_a_feature_constant_within_each_day_is_warned_of_unless_drift_excludes_it(late_spec, warehouse):
    with sqlite3.connect(warehouse) as conn:
        conn.execute("ALTER TABLE customer_activity ADD COLUMN weekday INTEGER")
        conn.execute("UPDATE customer_activity SET weekday = CAST(strftime('%w', event_ts) AS INTEGER)")
    features = late_spec.features.model_copy(update={"numeric": [*late_spec.features.numeric, "weekday"]})
    spec = late_spec.model_copy(update={"features": features})
    [warning] = _check(warehouse, spec).warnings
    assert warning.startswith("feature 'weekday' is constant within each day of the sample (3 days)")
    assert "drift.exclude" in warning
    excluded = spec.model_copy(update={"drift": spec.drift.model_copy(update={"exclude": ["weekday"]})})
    assert _check(warehouse, excluded).warnings == []
