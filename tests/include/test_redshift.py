from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cormorant.redshift import unload_select, unload_statement

ROLE = "arn:aws:iam::123456789012:role/cormorant-unload"


def test_unload_statement_selects_the_interval_into_the_attempt_folder(example_spec):
    sql = unload_statement(
        example_spec, "2024-03-01", "s3://lake/churn/raw/ds=2024-03-01/run=abc", iam_role=ROLE
    )
    assert sql == (
        "UNLOAD ($$ SELECT * FROM customer_activity WHERE event_ts >= '2024-03-01 00:00:00' "
        "AND event_ts < '2024-03-02 00:00:00' $$)\n"
        "TO 's3://lake/churn/raw/ds=2024-03-01/run=abc/part-'\n"
        f"IAM_ROLE '{ROLE}'\n"
        "FORMAT AS PARQUET\nALLOWOVERWRITE\nMAXFILESIZE 256 MB"
    )


@pytest.mark.parametrize(
    ("partition", "prefix", "role", "words"),
    [
        ("2024-03-01'; DROP TABLE x; --", "s3://b/p", ROLE, "Invalid isoformat"),
        ("2024-03-01", "/local/path", ROLE, "s3:// prefix"),
        ("2024-03-01", "s3://b/p'", ROLE, "s3:// prefix"),
        ("2024-03-01", "s3://b/p", "admin", "IAM role ARN"),
    ],
)
def test_unload_refuses_anything_that_could_change_the_statement(
    example_spec, partition, prefix, role, words
):
    with pytest.raises(ValueError, match=words):
        unload_statement(example_spec, partition, prefix, iam_role=role)


def test_unload_of_a_sql_source_wraps_it(example_spec):
    spec = example_spec.model_copy(
        update={
            "source": example_spec.source.model_copy(
                update={"table": None, "sql": "SELECT * FROM a JOIN b USING (id)"}
            )
        }
    )
    assert unload_select(spec, "2024-03-01").startswith(
        "SELECT * FROM (SELECT * FROM a JOIN b USING (id)) AS cormorant_source WHERE event_ts >= "
    )


def test_files_written_by_unload_are_committed_by_a_manifest(lake):
    attempt, folder = lake.new_attempt("d", "2024-03-01")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):  # what UNLOAD leaves: several Parquet slices
        pq.write_table(
            pa.table({"id": list(range(i * 10, i * 10 + 10))}), str(folder / f"part-000{i}_part_00.parquet")
        )
    assert lake.partitions("d") == []
    manifest = lake.commit_files("d", "2024-03-01", attempt, partition_column="id")
    assert manifest.row_count == 30
    assert (manifest.partition_min, manifest.partition_max) == ("0", "29")
    assert len(manifest.files) == 3
    assert lake.read("d", "2024-03-01").num_rows == 30
