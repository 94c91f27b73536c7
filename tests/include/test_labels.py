"""Labels apart from features: the two suites, the label partition, the join that training and
performance monitoring use, and the realized-performance verdict."""

from __future__ import annotations

import sqlite3
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from cormorant.errors import PartitionNotValidated
from cormorant.labels import (
    LabelsNotLanded,
    LabelSourceError,
    extract_labels,
    labels_dataset,
    labels_from_features,
    require_labels,
    training_table,
    validate_labels,
)
from cormorant.performance import judge, realized_metrics
from cormorant.spec import load_spec, parse_spec
from cormorant.synthetic import generate_day, seed_sqlite
from cormorant.validation import build_expectations, validate_frame
from cormorant.warehouse import extract_partition, raw_dataset

DAY = "2024-03-01"
LATE_SPEC = "include/examples/churn_late.yaml"


@pytest.fixture(scope="module")
def late_spec():
    from cormorant.config import PROJECT_ROOT

    return load_spec(PROJECT_ROOT / LATE_SPEC)


@pytest.fixture(scope="module")
def frame():
    return generate_day(date.fromisoformat(DAY))


def test_the_features_suite_leaves_the_target_to_the_labels_suite(example_spec, frame):
    columns = {getattr(e, "column", None) for e in build_expectations(example_spec, "features")}
    assert "churned" not in columns and "usage_gb" in columns
    labels = {getattr(e, "column", None) for e in build_expectations(example_spec, "labels")}
    assert labels == {"customer_id", "event_ts", "churned"}
    no_target = frame.assign(churned=None)  # the outcome is not known yet
    assert validate_frame(no_target, example_spec, partition=DAY).success
    assert validate_frame(frame.drop(columns=["churned"]), example_spec, partition=DAY).success
    result = validate_frame(no_target, example_spec, partition=DAY, suite="labels")
    assert [(f["expectation"], f["column"]) for f in result.failures] == [
        ("expect_column_values_to_not_be_null", "churned")
    ]


def test_late_labels_need_keys_to_be_joined(late_spec):
    raw = late_spec.model_dump(by_alias=True)
    raw["source"]["key_columns"] = []
    raw["validation"]["columns"].pop("customer_id")
    import yaml

    with pytest.raises(ValueError, match="joined to the features by source.key_columns"):
        parse_spec(yaml.safe_dump(raw), "churn_late.yaml")


def _commit_features(spec, lake, frame):
    from cormorant.warehouse import conform, lake_schema, spec_types

    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema = lake_schema(table.schema, spec_types(spec))
    batches = [conform(b, schema) for b in table.to_batches()]
    return lake.write_partition(raw_dataset(spec), DAY, batches, schema=schema)


def test_inline_labels_are_taken_from_the_feature_commit(example_spec, lake, frame):
    with pytest.raises(LabelsNotLanded):
        require_labels(example_spec, lake, DAY)
    _commit_features(example_spec, lake, frame)
    labels_from_features(example_spec, lake, DAY)
    with pytest.raises(PartitionNotValidated, match="not validated yet") as pending:
        require_labels(example_spec, lake, DAY)
    assert pending.value.retryable
    result, _ = validate_labels(example_spec, lake, DAY)
    assert result.success, result.failures
    assert require_labels(example_spec, lake, DAY).row_count == len(frame)
    _commit_features(example_spec, lake, frame.iloc[1:])  # re-ingested: the labels are stale
    with pytest.raises(PartitionNotValidated, match="earlier commit of the features") as stale:
        require_labels(example_spec, lake, DAY)
    assert stale.value.retryable


def test_late_labels_are_extracted_joined_by_key_and_unknown_rows_left_out(late_spec, lake, tmp_path, caplog):
    db = tmp_path / "warehouse.db"
    seed_sqlite(db, [date.fromisoformat(DAY)], labels_table="churn_labels")
    with sqlite3.connect(db) as conn:  # a third of the outcomes are not known yet
        conn.execute("DELETE FROM churn_labels WHERE customer_id % 3 = 0")
        known = conn.execute("SELECT count(*) FROM churn_labels").fetchone()[0]
        features = conn.execute("SELECT count(*) FROM customer_activity").fetchone()[0]
    connect = lambda: sqlite3.connect(db)  # noqa: E731
    extract_partition(connect, late_spec, DAY, lake)
    assert "churned" not in {f["name"] for f in lake.require(raw_dataset(late_spec), DAY).schema}
    manifest = extract_labels(connect, late_spec, DAY, lake)
    assert manifest.row_count == known < features
    assert validate_labels(late_spec, lake, DAY)[0].success
    with caplog.at_level("INFO", logger="cormorant.labels"):
        table = training_table(late_spec, lake, DAY)
    assert table.num_rows == known
    assert f"{features - known} of {features} rows have no known label" in caplog.text
    # the labels joined are the ones the label table holds for those keys
    with sqlite3.connect(db) as conn:
        truth = dict(conn.execute("SELECT customer_id, churned FROM churn_labels").fetchall())
    pairs = zip(table.column("customer_id").to_pylist(), table.column("churned").to_pylist(), strict=True)
    assert all(truth[k] == v for k, v in pairs)
    # and a re-extraction of the same day gives the same content
    assert extract_labels(connect, late_spec, DAY, lake).content_hash == manifest.content_hash


def test_a_label_source_without_the_target_is_named(late_spec, lake, tmp_path):
    db = tmp_path / "warehouse.db"
    seed_sqlite(db, [date.fromisoformat(DAY)], labels_table="churn_labels")
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE churn_labels RENAME COLUMN churned TO has_churned")
    with pytest.raises(
        LabelSourceError, match="target.column: column 'churned' .*did you mean 'has_churned'"
    ):
        extract_labels(lambda: sqlite3.connect(db), late_spec, DAY, lake)
    assert lake.manifest(labels_dataset(late_spec), DAY) is None


def test_realized_metrics_and_the_verdict(example_spec):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    good = np.clip(y * 0.6 + rng.random(1000) * 0.4, 0, 1)
    metrics = realized_metrics(example_spec, y, good)
    assert metrics["roc_auc"] > 0.9 and 0 <= metrics["brier"] < 0.25
    assert {"log_loss", "precision", "recall", "f1", "accuracy"} <= set(metrics)
    assert realized_metrics(example_spec, np.zeros(10), np.full(10, 0.2))["roc_auc"] is None  # one class
    ok = judge(example_spec, 0.80, 0.82, labeled_rows=500)
    assert ok["verdict"] == "ok" and not ok["retrain"]
    bad = judge(example_spec, 0.60, 0.82, labeled_rows=500)
    assert bad["verdict"] == "degraded" and bad["retrain"] and "max_relative_drop=10%" in bad["why"]
    few = judge(example_spec, 0.10, 0.82, labeled_rows=5)
    assert few["verdict"] == "not judged" and "min_labeled_rows=100" in few["why"]
    absolute = example_spec.model_copy(
        update={
            "performance": example_spec.performance.model_copy(
                update={"max_drop": 0.01, "max_relative_drop": None}
            )
        }
    )
    assert judge(absolute, 0.80, 0.82, labeled_rows=500)["verdict"] == "degraded"


def test_for_an_error_metric_a_rise_is_the_drop(example_spec):
    regression = example_spec.model_copy(
        update={
            "target": example_spec.target.model_copy(update={"task": "regression"}),
            "training": example_spec.training.model_copy(update={"metric": "rmse"}),
        }
    )
    assert judge(regression, 1.3, 1.0, labeled_rows=500)["verdict"] == "degraded"
    assert judge(regression, 0.9, 1.0, labeled_rows=500)["verdict"] == "ok"


def test_a_label_table_that_does_not_exist_fails_at_once_naming_target_source(late_spec, lake, tmp_path):
    """It was retried three times as if transient, with the driver's raw error and no spec field."""
    db = tmp_path / "warehouse.db"
    seed_sqlite(db, [date.fromisoformat(DAY)])  # no churn_labels table
    with pytest.raises(LabelSourceError) as raised:
        extract_labels(lambda: sqlite3.connect(db), late_spec, DAY, lake)
    assert "target.source: the label source churn_labels does not exist" in str(raised.value)
    assert "no such table" in str(raised.value) and not raised.value.retryable
    assert lake.manifest(labels_dataset(late_spec), DAY) is None


def test_a_source_table_that_does_not_exist_fails_at_once_naming_source_table(example_spec, lake, tmp_path):
    from cormorant.warehouse import SourceSchemaError

    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    with pytest.raises(SourceSchemaError, match="source.table: customer_activity does not exist") as raised:
        extract_partition(lambda: sqlite3.connect(db), example_spec, DAY, lake)
    assert not raised.value.retryable and lake.manifest(raw_dataset(example_spec), DAY) is None


def _late_day(late_spec, lake, tmp_path, change_labels):
    """The late spec's day landed with its label table changed by ``change_labels(conn)``; the labels
    suite's result."""
    db = tmp_path / "warehouse.db"
    seed_sqlite(db, [date.fromisoformat(DAY)], labels_table="churn_labels")
    with sqlite3.connect(db) as conn:
        change_labels(conn)
    connect = lambda: sqlite3.connect(db)  # noqa: E731
    extract_partition(connect, late_spec, DAY, lake)
    extract_labels(connect, late_spec, DAY, lake)
    return validate_labels(late_spec, lake, DAY)[0]


def test_labels_whose_keys_match_no_feature_row_fail_naming_the_keys(late_spec, lake, tmp_path):
    """They landed and validated green before; performance then said "0 labelled rows" at INFO only."""
    shifted = lambda c: c.execute("UPDATE churn_labels SET customer_id = customer_id + 10000000")  # noqa: E731
    result = _late_day(late_spec, lake, tmp_path, shifted)
    assert not result.success
    [failure] = [f for f in result.failures if f["expectation"] == "labels_match_feature_rows"]
    assert failure["column"] == "customer_id"
    assert "0 of the day's" in failure["detail"] and "source.key_columns ['customer_id']" in failure["detail"]
    with pytest.raises(PartitionNotValidated, match="labels_match_feature_rows") as refused:
        require_labels(late_spec, lake, DAY)
    assert not refused.value.retryable


def test_a_partly_labelled_day_passes_unless_the_spec_asks_for_a_larger_fraction(late_spec, lake, tmp_path):
    half = lambda c: c.execute("DELETE FROM churn_labels WHERE customer_id % 2 = 0")  # noqa: E731
    result = _late_day(late_spec, lake, tmp_path, half)
    assert result.success, result.failures
    assert {"expectation": "labels_match_feature_rows", "column": "customer_id", "success": True} in (
        result.expectations
    )
    strict = late_spec.model_copy(
        update={"target": late_spec.target.model_copy(update={"min_labelled_fraction": 0.9})}
    )
    [failure] = validate_labels(strict, lake, DAY)[0].failures
    assert failure["expectation"] == "labels_match_feature_rows"
    assert "expected at least 90.0%" in failure["detail"]


def test_inline_labels_are_not_matched_against_themselves(example_spec, lake, frame):
    _commit_features(example_spec, lake, frame)
    labels_from_features(example_spec, lake, DAY)
    result, _ = validate_labels(example_spec, lake, DAY)
    assert "labels_match_feature_rows" not in {e["expectation"] for e in result.expectations}


def test_rows_the_label_source_lists_without_an_outcome_are_counted_apart(late_spec, lake, tmp_path):
    """Cancelled flights, which never get a label, were reported as "not yet" labelled."""
    from cormorant.inference import predictions_dataset
    from cormorant.performance import scored_labels

    rules = late_spec.validation.model_copy(deep=True)
    rules.columns["churned"] = rules.columns["churned"].model_copy(update={"max_null_fraction": 0.5})
    spec = late_spec.model_copy(update={"validation": rules})

    def outcomes(conn):
        conn.execute("UPDATE churn_labels SET churned = NULL WHERE customer_id % 5 = 0")  # never
        conn.execute("DELETE FROM churn_labels WHERE customer_id % 5 = 1")  # not listed

    db = tmp_path / "warehouse.db"
    seed_sqlite(db, [date.fromisoformat(DAY)], labels_table="churn_labels")
    with sqlite3.connect(db) as conn:
        outcomes(conn)
        ids = [r[0] for r in conn.execute("SELECT customer_id FROM customer_activity")]
    connect = lambda: sqlite3.connect(db)  # noqa: E731
    extract_partition(connect, spec, DAY, lake)
    extract_labels(connect, spec, DAY, lake)
    assert validate_labels(spec, lake, DAY)[0].success
    keys = lake.read(raw_dataset(spec), DAY, columns=["customer_id"])
    scored = keys.append_column("score", pa.array([0.5] * keys.num_rows)).append_column(
        "model_version", pa.array(["1"] * keys.num_rows)
    )
    lake.write_partition(predictions_dataset(spec), DAY, scored.to_batches())
    known, joined = scored_labels(spec, lake, DAY)
    never = sum(1 for i in ids if i % 5 == 0)
    missing = sum(1 for i in ids if i % 5 == 1)
    assert joined["never_labeled_rows"] == never > 0
    assert joined["labeled_rows"] == known.num_rows == len(ids) - never - missing
