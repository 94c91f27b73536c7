"""The lake on S3 through Airflow's ObjectStoragePath and an amazon connection, against a real
S3-compatible HTTP endpoint on loopback (moto's standalone server)."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pyarrow as pa
import pytest
from support import new_bucket, task_context

from cormorant.lake import Lake

SCHEMA = pa.schema([("id", pa.int64())])


@pytest.fixture
def s3_lake(s3_endpoint, monkeypatch):
    bucket = new_bucket(s3_endpoint)
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CORMORANT_S3", json.dumps(conn))
    monkeypatch.setenv("CORMORANT_LAKE_URI", f"s3://{bucket}/lake")
    monkeypatch.setenv("CORMORANT_LAKE_CONN_ID", "cormorant_s3")
    from airflow.sdk import ObjectStoragePath

    return Lake(ObjectStoragePath(f"s3://{bucket}/lake", conn_id="cormorant_s3")), bucket, s3_endpoint


def _objects(endpoint, bucket):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def _batches(n, start=0):
    for i in range(start, start + n, 10):
        yield pa.RecordBatch.from_pydict({"id": list(range(i, min(i + 10, start + n)))}, schema=SCHEMA)


def test_commit_puts_data_then_manifest_on_s3(s3_lake):
    lake, bucket, endpoint = s3_lake
    manifest = lake.write_partition("d", "2024-03-01", _batches(35), schema=SCHEMA)
    keys = _objects(endpoint, bucket)
    assert "lake/d/ds=2024-03-01/_manifest.json" in keys
    assert any(k.startswith("lake/d/ds=2024-03-01/run=") and k.endswith(".parquet") for k in keys)
    assert lake.partitions("d") == ["2024-03-01"]
    assert lake.read("d", "2024-03-01").num_rows == manifest.row_count == 35


def test_rerun_on_s3_replaces_the_partition_and_removes_the_old_attempt(s3_lake):
    lake, bucket, endpoint = s3_lake
    lake.write_partition("d", "2024-03-01", _batches(35), schema=SCHEMA)
    lake.write_partition("d", "2024-03-01", _batches(5, start=100), schema=SCHEMA)
    assert lake.read("d", "2024-03-01").column("id").to_pylist() == list(range(100, 105))
    data = [k for k in _objects(endpoint, bucket) if k.endswith(".parquet")]
    assert len(data) == 1


def test_failed_write_on_s3_keeps_readers_on_the_last_commit(s3_lake):
    lake, _, _ = s3_lake
    lake.write_partition("d", "2024-03-01", _batches(35), schema=SCHEMA)

    def broken():
        yield from _batches(10)
        raise ConnectionError("killed")

    with pytest.raises(ConnectionError):
        lake.write_partition("d", "2024-03-01", broken(), schema=SCHEMA)
    assert lake.read("d", "2024-03-01").num_rows == 35
    with pytest.raises(ConnectionError):
        lake.write_partition("d", "2024-03-02", broken(), schema=SCHEMA)
    assert lake.partitions("d") == ["2024-03-01"]


def test_ingest_operator_writes_the_lake_on_s3(s3_lake, tmp_path, monkeypatch):
    from cormorant.config import PROJECT_ROOT
    from cormorant.synthetic import rows_for_day, seed_sqlite
    from cormorant_provider.operators.ingest import WarehouseToLakeOperator

    seed_sqlite(tmp_path / "w.db", [date(2024, 3, 1)])
    monkeypatch.setenv(
        "AIRFLOW_CONN_S3_TEST_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    )
    op = WarehouseToLakeOperator(
        task_id="ingest",
        conn_id="s3_test_warehouse",
        spec_path=str(PROJECT_ROOT / "include" / "specs" / "churn.yaml"),
    )
    refs = op.execute(task_context("2024-03-01"))
    assert refs[0]["uri"].startswith("s3://")
    assert refs[0]["rows"] == rows_for_day(date(2024, 3, 1))
    assert op.dialect == "generic"
    assert s3_lake[0].partitions("churn/raw") == ["2024-03-01"]


def test_redshift_connection_unloads_into_the_s3_lake_and_commits(s3_lake):
    import re

    import pyarrow.parquet as pq
    from airflow.providers.amazon.aws.hooks.redshift_sql import RedshiftSQLHook

    from cormorant.config import PROJECT_ROOT
    from cormorant_provider.operators.ingest import WarehouseToLakeOperator

    lake = s3_lake[0]

    class RecordingRedshift(RedshiftSQLHook):
        """Runs nothing on a cluster: records the statement and writes the Parquet slices UNLOAD would."""

        statements: list[str] = []

        def run(self, sql, *args, **kwargs):
            self.statements.append(sql)
            target = re.search(r"TO '(s3://[^']+)part-'", sql).group(1)
            folder = lake.root.joinpath(*target.removeprefix(str(lake.root)).strip("/").split("/"))
            for i in range(2):
                table = pa.table(
                    {
                        "customer_id": [i * 2, i * 2 + 1],
                        "event_ts": pa.array([0, 1], pa.timestamp("us", tz="UTC")),
                    }
                )
                with (folder / f"part-000{i}_part_00.parquet").open("wb") as f:
                    pq.write_table(table, f)

    hook = RecordingRedshift()
    op = WarehouseToLakeOperator(
        task_id="ingest",
        spec_path=str(PROJECT_ROOT / "include" / "specs" / "churn.yaml"),
        redshift_iam_role="arn:aws:iam::123456789012:role/unload",
    )
    op.__dict__["hook"] = hook
    refs = op.execute(task_context("2024-03-01"))
    (statement,) = hook.statements
    assert statement.startswith(
        "UNLOAD ($$ SELECT * FROM customer_activity WHERE event_ts >= '2024-03-01 00:00:00'"
    )
    assert "IAM_ROLE 'arn:aws:iam::123456789012:role/unload'" in statement
    assert refs[0]["rows"] == 4
    manifest = lake.require("churn/raw", "2024-03-01")
    assert manifest.source["dialect"] == "redshift"
    assert len(manifest.files) == 2


def test_the_view_reads_its_panels_from_the_s3_lake_through_the_connection(s3_lake, example_spec):
    """The compose deployment's lake: the view plugin builds it as the operators do (ObjectStoragePath
    and the lake connection) and reads days, verdicts and reports from S3."""
    from cormorant.synthetic import land_days, rows_for_day
    from cormorant.view import report, timeline, use_cases
    from cormorant_provider.view import _settings_and_lake

    lake, _, _ = s3_lake
    days = ["2024-03-01", "2024-03-02"]
    land_days(example_spec, lake, days)
    settings, served = _settings_and_lake()  # the plugin's own lake, from the environment
    assert [(d["day"], d["rows"], d["validation"]) for d in timeline(example_spec, served)] == [
        (d, rows_for_day(date.fromisoformat(d)), "passed") for d in days
    ]
    content, media_type = report(example_spec, served, "validation", days[0])
    assert media_type == "application/json" and json.loads(content)["success"] is True
    assert report(example_spec, served, "drift", days[0]) is None
    (case,) = [u for u in use_cases(settings, served)["use_cases"] if u["name"] == example_spec.name]
    assert (case["days"], case["latest"]["validated"], case["latest"]["scored"]) == (2, days[-1], None)


def test_validating_a_day_that_a_rerun_replaces_midway_judges_the_new_commit_whole(
    s3_lake, example_spec, monkeypatch
):
    """Validation reads a partition's columns when their expectations run; on S3 every read is a
    request. A re-run of the day that commits (and removes the first commit's files) before the first
    column is read made that read fail with FileNotFoundError; now the suite runs again, on the commit
    that replaced it, and its report names that commit."""
    from cormorant.lake import OpenPartition
    from cormorant.synthetic import generate_day
    from cormorant.validation import validate_partition
    from cormorant.warehouse import raw_dataset

    lake, _bucket, _endpoint = s3_lake
    # A few weeks of rows: a file beyond the footer's first read (64 kB), as a real partition is.
    weeks = pa.Table.from_pandas(
        pd.concat([generate_day(date(2024, 3, d)) for d in range(1, 22)]), preserve_index=False
    )
    dataset = raw_dataset(example_spec)
    first = lake.write_partition(dataset, "2024-03-01", weeks.to_batches())
    read, rerun = OpenPartition.read, []

    def read_after_a_rerun_landed(part, columns=None):
        if not rerun:
            rerun.append(lake.write_partition(dataset, "2024-03-01", weeks.slice(0, 5_000).to_batches()))
        return read(part, columns)

    monkeypatch.setattr(OpenPartition, "read", read_after_a_rerun_landed)
    result = validate_partition(lake, dataset, "2024-03-01", example_spec)
    (second,) = rerun
    assert first.content_hash != second.content_hash
    assert (result.content_hash, result.row_count) == (second.content_hash, 5_000)
    assert lake.require(dataset, "2024-03-01").attempts == second.attempts  # the first's files are gone


def test_reading_the_s3_lake_calls_its_python_files_from_the_reading_thread_only(s3_lake):
    """On S3 too (s3fs's Python file objects), pyarrow fetches and decodes the lake's files on the
    calling thread, so none of its own threads holds a Python-backed buffer that it could drop while
    the process exits (which aborts the process: see the local lake's test of the same)."""
    from support import python_file_calls

    lake, _, _ = s3_lake
    schema = pa.schema([("id", pa.int64()), ("value", pa.float64())])
    batches = (
        pa.RecordBatch.from_pydict({"id": list(range(i, i + 500)), "value": [0.5] * 500}, schema=schema)
        for i in range(0, 5_000, 500)
    )
    lake.write_partition("two", "2024-03-01", batches, schema=schema)
    with python_file_calls() as calls:
        whole = lake.read("two", "2024-03-01")
        streamed = sum(b.num_rows for b in lake.iter_batches("two", "2024-03-01"))
        with lake.opened("two", "2024-03-01") as part:
            opened = part.read(["id", "value"])
    assert calls, "no Python file was read: the test no longer covers the S3 path"
    assert all(on_main for _, on_main in calls), [c for c in calls if not c[1]][:5]
    assert whole.num_rows == streamed == opened.num_rows == 5_000


def test_a_trainer_process_reads_the_s3_lake_with_the_lake_connection(s3_lake, tmp_path):
    """A trial on the local backend is a trainer process outside Airflow: it had the worker's environment,
    which holds the lake connection but no AWS credentials or endpoint (NoCredentialsError in the compose
    stack). The operator now hands it the connection's, through the environment only."""
    import os
    import subprocess
    import sys

    from cormorant.config import Settings
    from cormorant_provider.operators.sweep import SweepTrialOperator

    lake, bucket, endpoint = s3_lake
    lake.write_partition("d", "2024-03-01", _batches(12), schema=SCHEMA)
    spec = tmp_path / "churn.yaml"
    spec.write_text((Settings.from_env().specs_dir / "churn.yaml").read_text())
    operator = SweepTrialOperator(task_id="trial", spec_path=str(spec), trial={"trial_id": "t"})
    env = operator.trainer_environment()
    assert env["AWS_ACCESS_KEY_ID"] == "testing" and env["AWS_ENDPOINT_URL_S3"] == endpoint
    assert "testing" not in " ".join(operator.trainer_command(tmp_path / "out.json"))
    probe = (
        "from cormorant.lake import Lake; "
        f"print(Lake('s3://{bucket}/lake').require('d', '2024-03-01').row_count)"
    )
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW_CONN_"))}
    worker = subprocess.run(
        [sys.executable, "-c", probe],
        env={**bare, **{k: v for k, v in env.items() if k.startswith("AWS_")}},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr[-2000:]
    assert worker.stdout.strip() == "12"
    before = subprocess.run(
        [sys.executable, "-c", probe], env=bare, capture_output=True, text=True, timeout=120
    )
    assert before.returncode != 0  # what the trainer had before: the worker's environment alone
