"""Operators with their hook replaced at the hook boundary: the shells read the context, call the
library and return small references."""

from __future__ import annotations

import sqlite3
from datetime import date

import pytest
from support import task_context

from cormorant.config import PROJECT_ROOT
from cormorant.synthetic import rows_for_day, seed_sqlite
from cormorant_provider.assets import spec_asset
from cormorant_provider.operators.ingest import WarehouseToLakeOperator
from cormorant_provider.operators.validation import DataValidationOperator

SPEC = str(PROJECT_ROOT / "include" / "specs" / "churn.yaml")


class SqliteTestHook:
    """Stands in for the connection's DbApiHook: a DB-API connection and its placeholder."""

    placeholder = "?"

    def __init__(self, path):
        self.path = path

    def get_conn(self):
        return sqlite3.connect(self.path)


@pytest.fixture
def operator_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CORMORANT_LAKE_URI", (tmp_path / "lake").as_uri())
    seed_sqlite(tmp_path / "w.db", [date(2024, 3, 1)])
    return tmp_path


def test_ingest_operator_commits_the_partition_and_announces_it(operator_env):
    raw = spec_asset("churn", "raw")
    op = WarehouseToLakeOperator(task_id="ingest", spec_path=SPEC, outlets=[raw])
    op.__dict__["hook"] = SqliteTestHook(operator_env / "w.db")
    context = task_context("2024-03-01")
    refs = op.execute(context)
    assert refs[0]["rows"] == rows_for_day(date(2024, 3, 1))
    assert refs[0]["uri"].endswith("churn/raw/ds=2024-03-01")
    assert context["outlet_events"][raw].extra == {"partitions": ["2024-03-01"]}
    assert op.lake.require("churn/raw", "2024-03-01").lineage["run_id"] == "manual__1"


def test_ingest_operator_templates_its_conn_id():
    assert "conn_id" in WarehouseToLakeOperator.template_fields
    assert "spec_path" in WarehouseToLakeOperator.template_fields


def test_validation_operator_fails_without_retry_and_keeps_the_report(operator_env):
    from airflow.sdk.exceptions import AirflowFailException

    with sqlite3.connect(operator_env / "w.db") as conn:
        conn.execute("UPDATE customer_activity SET contract_type = 'lifetime'")
    ingest = WarehouseToLakeOperator(task_id="ingest", spec_path=SPEC)
    ingest.__dict__["hook"] = SqliteTestHook(operator_env / "w.db")
    ingest.execute(task_context("2024-03-01"))
    validated = spec_asset("churn", "validated")
    op = DataValidationOperator(task_id="validate", spec_path=SPEC, outlets=[validated])
    context = task_context("2024-03-01")
    with pytest.raises(AirflowFailException, match="expect_column_values_to_be_in_set on contract_type"):
        op.execute(context)
    report = op.lake.read_json("churn/reports/validation/ds=2024-03-01/result.json")
    assert report["success"] is False
    assert context["outlet_events"][validated].extra == {}


def test_source_table_param_reads_another_table_with_the_same_columns(operator_env):
    with sqlite3.connect(operator_env / "w.db") as conn:
        conn.execute("CREATE TABLE staging_activity AS SELECT * FROM customer_activity LIMIT 10")
    op = WarehouseToLakeOperator(task_id="ingest", spec_path=SPEC, source_table="staging_activity")
    op.__dict__["hook"] = SqliteTestHook(operator_env / "w.db")
    refs = op.execute(task_context("2024-03-01"))
    assert refs[0]["rows"] == 10
    assert "FROM staging_activity" in op.lake.require("churn/raw", "2024-03-01").source["query"]
    bad = WarehouseToLakeOperator(task_id="ingest", spec_path=SPEC, source_table="x; DROP TABLE y")
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="not a plain SQL identifier"):  # no retry can fix it
        bad.execute(task_context("2024-03-01"))


def test_operators_name_what_they_read_and_wrote_for_openlineage(operator_env, monkeypatch):
    """The facets the openlineage provider's listener asks each operator for: warehouse table -> lake
    dataset -> model version -> predictions; a failed task reports what it read and nothing written."""
    import json

    from support import pg_connection, scratch_database

    from cormorant.lineage import lake_dataset, model_version
    from cormorant_provider.operators.inference import BatchInferenceOperator
    from cormorant_provider.operators.registry import RegisterAndPromoteOperator

    def names(datasets):
        return [(d.namespace, d.name) for d in datasets]

    lake = ("file", str(operator_env / "lake"))
    warehouse = {"conn_type": "sqlite", "host": str(operator_env / "w.db")}
    monkeypatch.setenv("AIRFLOW_CONN_CORMORANT_WAREHOUSE", json.dumps(warehouse))
    ingest = WarehouseToLakeOperator(task_id="ingest", spec_path=SPEC).get_openlineage_facets_on_complete(
        None
    )
    assert names(ingest.inputs) == [(f"sqlite://{operator_env / 'w.db'}", "customer_activity")]
    assert names(ingest.outputs) == [("file", f"{lake[1]}/churn/raw")]
    with scratch_database("cormorant_ol") as database:  # PostgreSQL: named by the provider's SQL parser
        monkeypatch.setenv("AIRFLOW_CONN_PG_WAREHOUSE", pg_connection(database))
        op = WarehouseToLakeOperator(task_id="ingest", spec_path=SPEC, conn_id="pg_warehouse")
        found = op.get_openlineage_facets_on_complete(None)
        assert names(found.inputs) == [("postgres://127.0.0.1:5432", f"{database}.public.customer_activity")]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://svc:s3cret@mlflow.internal:5000")
    register = RegisterAndPromoteOperator(task_id="register", spec_path=SPEC, plan={}, results=[])
    register.registered = "7"
    assert names(register.get_openlineage_facets_on_complete(None).outputs) == [
        ("http://mlflow.internal:5000", "models/cormorant.churn/7")  # no credentials in a name
    ]
    predict = BatchInferenceOperator(task_id="batch_inference", spec_path=SPEC)
    predict.scored_with = "7"
    scored = predict.get_openlineage_facets_on_complete(None)
    assert names(scored.inputs) == [
        ("file", f"{lake[1]}/churn/raw"),
        ("http://mlflow.internal:5000", "models/cormorant.churn/7"),
    ]
    assert names(scored.outputs) == [("file", f"{lake[1]}/churn/predictions")]
    failed = predict.get_openlineage_facets_on_failure(None)
    assert names(failed.inputs) == names(scored.inputs) and failed.outputs == []
    # the other stages: labels, their gate, validation, drift and performance
    from cormorant_provider.operators.drift import DriftCheckOperator
    from cormorant_provider.operators.labels import LabelValidationOperator, LandLabelsOperator
    from cormorant_provider.operators.performance import PerformanceCheckOperator

    def path(*parts):
        return ("file", "/".join([lake[1], "churn", *parts]))

    drift = DriftCheckOperator(task_id="drift_check", spec_path=SPEC)
    drift.checked_with = "7"
    stages = {
        LandLabelsOperator(task_id="land_labels", spec_path=SPEC): ([path("raw")], [path("labels")]),
        LabelValidationOperator(task_id="validate_labels", spec_path=SPEC): (
            [path("labels")],
            [path("reports", "labels")],
        ),
        DataValidationOperator(task_id="validate_partition", spec_path=SPEC): (
            [path("raw")],
            [path("reports", "validation")],
        ),
        drift: (
            [path("raw"), path("predictions"), ("http://mlflow.internal:5000", "models/cormorant.churn/7")],
            [path("reports", "drift")],
        ),
        PerformanceCheckOperator(task_id="performance_check", spec_path=SPEC): (
            [path("predictions"), path("labels")],
            [path("reports", "performance")],
        ),
    }
    for op, (inputs, outputs) in stages.items():
        found = op.get_openlineage_facets_on_complete(None)
        assert (names(found.inputs), names(found.outputs)) == (inputs, outputs), op.task_id
    assert lake_dataset("s3://bucket/lake/churn/raw") == ("s3://bucket", "lake/churn/raw")
    assert model_version("sqlite:////tmp/m.db", "m", 1) == ("sqlite:////tmp/m.db", "models/m/1")
