"""The COPY fast path against the real PostgreSQL server on 127.0.0.1:5432."""

from __future__ import annotations

import math
import threading
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
from support import PG_DSN, scratch_database, task_context

from cormorant.postgres import copy_batches
from cormorant.synthetic import rows_for_day, seed_postgres
from cormorant.warehouse import SourceSchemaError, extract_partition, raw_dataset

psycopg2 = pytest.importorskip("psycopg2")
DSN = PG_DSN
DAYS = [date(2024, 3, 1), date(2024, 3, 2)]


@pytest.fixture(scope="module")
def database():
    with scratch_database("cormorant_test") as name:
        yield name


@pytest.fixture
def connect(database):
    return lambda: psycopg2.connect(f"{DSN} dbname={database}")


@pytest.fixture
def churn_table(connect):
    conn = connect()
    seed_postgres(conn, DAYS)
    conn.close()


def test_types_map_faithfully(connect):
    conn = connect()
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS typed")
    cur.execute("""CREATE TABLE typed (i2 smallint, i4 integer, i8 bigint, n numeric(12,2), nu numeric,
        f4 real, f8 double precision, b boolean, t text, d date, ts timestamp, tstz timestamptz)""")
    cur.execute("""INSERT INTO typed VALUES
        (1, 2, 9000000000, 12.50, 3.14159265358979323846, 1.5, 'NaN', true, 'a,"b"' || E'\\n' || 'c',
         '2024-03-01', '2024-03-01 10:00:00.123456', '2024-03-01 12:00:00+02'),
        (NULL, NULL, NULL, NULL, NULL, NULL, 'Infinity', false, '', NULL, NULL, NULL),
        (-1, 0, 0, -0.01, 0, 0, '-Infinity', NULL, NULL, '1999-12-31', '1999-12-31 23:59:59',
         '1999-12-31 23:59:59Z')""")
    conn.commit()
    schema, batches = copy_batches(conn, "SELECT * FROM typed ORDER BY i8 NULLS LAST", [])
    table = pa.Table.from_batches(list(batches), schema=schema)
    conn.close()
    assert [str(t) for t in schema.types] == [
        "int16",
        "int32",
        "int64",
        "decimal128(12, 2)",
        "string",
        "float",
        "double",
        "bool",
        "string",
        "date32[day]",
        "timestamp[us]",
        "timestamp[us, tz=UTC]",
    ]
    rows = table.to_pylist()
    zero, big, nulls = rows
    assert big["i8"] == 9_000_000_000 and big["n"] == Decimal("12.50") and big["f4"] == 1.5
    assert big["nu"] == "3.14159265358979323846"
    assert math.isnan(big["f8"]) and nulls["f8"] == math.inf and zero["f8"] == -math.inf
    assert big["b"] is True and nulls["b"] is False and zero["b"] is None
    assert big["t"] == 'a,"b"\nc' and nulls["t"] == "" and zero["t"] is None
    assert big["d"] == date(2024, 3, 1) and nulls["d"] is None
    assert big["ts"] == datetime(2024, 3, 1, 10, 0, 0, 123456)
    assert big["tstz"] == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert zero["n"] == Decimal("-0.01") and nulls["i2"] is None


def test_copy_streams_in_bounded_batches(connect, churn_table):
    conn = connect()
    schema, batches = copy_batches(conn, "SELECT * FROM customer_activity", [], block_size=1 << 14)
    sizes = [b.num_rows for b in batches]
    conn.close()
    assert sum(sizes) == sum(rows_for_day(d) for d in DAYS)
    assert len(sizes) > 5


def test_consumer_stopping_early_cancels_the_copy(connect, churn_table):
    conn = connect()
    _, batches = copy_batches(
        conn, "SELECT a.* FROM customer_activity a, generate_series(1, 50)", [], block_size=1 << 16
    )
    next(batches)
    batches.close()
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()


def test_server_error_during_copy_is_raised(connect, churn_table):
    conn = connect()
    _, batches = copy_batches(conn, "SELECT 1 / (customer_id % 1000 - 500) AS x FROM customer_activity", [])
    with pytest.raises(psycopg2.errors.DivisionByZero):
        list(batches)
    conn.close()


def test_postgres_extract_lands_the_same_rows_as_the_generic_path(
    connect, churn_table, example_spec, tmp_path
):
    from cormorant.lake import Lake

    fast, slow = Lake(tmp_path / "fast"), Lake(tmp_path / "slow")
    a = extract_partition(connect, example_spec, "2024-03-01", fast, dialect="postgres")
    b = extract_partition(connect, example_spec, "2024-03-01", slow, placeholder="%s")
    assert a.row_count == b.row_count == rows_for_day(DAYS[0])
    left = fast.read(raw_dataset(example_spec), "2024-03-01")
    right = slow.read(raw_dataset(example_spec), "2024-03-01")
    assert left.schema.field("event_ts").type == pa.timestamp("us", tz="UTC")
    assert left.column("customer_id").to_pylist() == right.column("customer_id").to_pylist()
    for column in example_spec.feature_columns:
        assert left.column(column).to_pylist() == right.column(column).to_pylist(), column
    assert a.source["dialect"] == "postgres"


def test_rerun_yields_identical_data(connect, churn_table, example_spec, lake):
    first = extract_partition(connect, example_spec, "2024-03-02", lake, dialect="postgres")
    second = extract_partition(connect, example_spec, "2024-03-02", lake, dialect="postgres")
    assert first.content_hash == second.content_hash


@pytest.mark.parametrize(
    ("ddl", "words"),
    [
        (
            "ALTER TABLE customer_activity DROP COLUMN region",
            "features.categorical: column 'region' does not exist in the source (dropped or renamed?)",
        ),
        (
            "ALTER TABLE customer_activity RENAME COLUMN usage_gb TO usage_gigabytes",
            "column 'usage_gb' does not exist in the source (dropped or renamed?); did you mean "
            "'usage_gigabytes'?",
        ),
        (
            "ALTER TABLE customer_activity ALTER COLUMN support_calls TYPE text",
            "column 'support_calls' changed type: expected double, found string",
        ),
        ("ALTER TABLE customer_activity ADD COLUMN plan text", "new column(s) ['plan']"),
    ],
)
def test_source_schema_change_fails_naming_the_column(connect, churn_table, example_spec, lake, ddl, words):
    extract_partition(connect, example_spec, "2024-03-01", lake, dialect="postgres")
    conn = connect()
    conn.cursor().execute(ddl)
    conn.commit()
    conn.close()
    with pytest.raises(SourceSchemaError) as info:
        extract_partition(connect, example_spec, "2024-03-02", lake, dialect="postgres")
    assert words in str(info.value)
    assert "customer_activity" in str(info.value)
    assert lake.partitions(raw_dataset(example_spec)) == ["2024-03-01"]
    # Refused before reading: no COPY was started, so no thread is left using the closed connection.
    assert not [t for t in threading.enumerate() if t.name == "cormorant-copy"]


def test_a_stream_never_read_starts_no_copy_and_one_abandoned_ends_it(connect, churn_table, database):
    def copies_running():
        with psycopg2.connect(f"{DSN} dbname=postgres") as admin, admin.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND state = 'active' AND query LIKE 'COPY (%%'",
                (database,),
            )
            return cur.fetchone()[0]

    conn = connect()
    query = "SELECT a.* FROM customer_activity a, generate_series(1, 50)"
    _, unread = copy_batches(conn, query, [], block_size=1 << 16)
    assert copies_running() == 0
    unread.close()
    _, abandoned = copy_batches(conn, query, [], block_size=1 << 16)
    next(abandoned)
    assert copies_running() == 1
    abandoned.close()  # cancels the COPY and joins its thread
    assert not [t for t in threading.enumerate() if t.name == "cormorant-copy"]
    conn.rollback()
    assert copies_running() == 0
    conn.close()


def test_additive_evolution_accepts_a_new_column(connect, churn_table, example_spec, lake):
    spec = example_spec.model_copy(
        update={"source": example_spec.source.model_copy(update={"schema_evolution": "additive"})}
    )
    extract_partition(connect, spec, "2024-03-01", lake, dialect="postgres")
    conn = connect()
    conn.cursor().execute("ALTER TABLE customer_activity ADD COLUMN plan text DEFAULT 'gold'")
    conn.commit()
    conn.close()
    manifest = extract_partition(connect, spec, "2024-03-02", lake, dialect="postgres")
    assert {"name": "plan", "type": "string"} in manifest.schema


def test_ingest_operator_uses_copy_for_a_postgres_connection(database, churn_table, tmp_path, monkeypatch):

    from cormorant.config import PROJECT_ROOT
    from cormorant_provider.operators.ingest import WarehouseToLakeOperator

    monkeypatch.setenv("AIRFLOW_CONN_PG_WAREHOUSE", f"postgresql://postgres@127.0.0.1:5432/{database}")
    monkeypatch.setenv("CORMORANT_LAKE_URI", (tmp_path / "lake").as_uri())
    op = WarehouseToLakeOperator(
        task_id="ingest",
        conn_id="pg_warehouse",
        spec_path=str(PROJECT_ROOT / "include" / "specs" / "churn.yaml"),
    )
    refs = op.execute(task_context("2024-03-02"))
    assert op.dialect == "postgres"
    assert refs[0]["rows"] == rows_for_day(DAYS[1])
    assert op.lake.require("churn/raw", "2024-03-02").source["dialect"] == "postgres"


def test_seeding_works_through_psycopg3_too(database):
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={database}") as conn:
        counts = seed_postgres(conn, DAYS, table="seeded_v3")
        count = conn.execute("SELECT count(*) FROM seeded_v3").fetchone()[0]
    assert count == sum(counts.values()) == sum(rows_for_day(d) for d in DAYS)


def test_an_empty_day_commits_an_empty_partition_with_the_full_schema(
    connect, churn_table, example_spec, lake
):
    """Used to fail with 'COPY output could not be parsed ... Empty CSV file', retry, and leave run=
    folders behind."""
    full = extract_partition(connect, example_spec, "2024-03-01", lake, dialect="postgres")
    empty = extract_partition(connect, example_spec, "2024-03-05", lake, dialect="postgres")
    assert empty.row_count == 0
    assert empty.schema == full.schema
    assert lake.read(raw_dataset(example_spec), "2024-03-05").num_rows == 0
    folder = lake.path(lake.partition_key(raw_dataset(example_spec), "2024-03-05"))
    assert {p.name for p in folder.iterdir() if p.name.startswith("run=")} == empty.attempts


def test_ties_in_the_partition_column_give_the_same_hash_on_every_rerun(connect, example_spec, lake):
    """Every row of a day at the same instant; rows moved physically between runs (an UPDATE writes new
    tuple versions at the end of the heap). The hash must not follow the heap's order."""
    conn = connect()
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS customer_activity")
    conn.commit()
    seed_postgres(conn, [date(2024, 3, 1)])
    cur.execute("UPDATE customer_activity SET event_ts = '2024-03-01 12:00:00'")
    conn.commit()
    hashes = set()
    for step in range(4):
        hashes.add(
            extract_partition(connect, example_spec, "2024-03-01", lake, dialect="postgres").content_hash
        )
        cur.execute(f"UPDATE customer_activity SET usage_gb = usage_gb WHERE customer_id % 4 = {step}")
        conn.commit()
    conn.close()
    assert len(hashes) == 1


def test_a_missing_partition_column_is_named_with_the_spec_field(connect, churn_table, example_spec, lake):
    spec = example_spec.model_copy(
        update={"source": example_spec.source.model_copy(update={"partition_column": "evnt_ts"})}
    )
    with pytest.raises(SourceSchemaError) as info:
        extract_partition(connect, spec, "2024-03-01", lake, dialect="postgres")
    assert "source.partition_column: column 'evnt_ts' does not exist" in str(info.value)
    assert "did you mean 'event_ts'?" in str(info.value)
    assert lake.partitions(raw_dataset(spec)) == []


@pytest.mark.parametrize("column_type", ["timestamp (UTC)", "timestamptz"])
def test_local_days_across_dst_changes_hold_what_sql_counts_for_them(
    connect, example_spec, lake, column_type
):
    """A partition is a calendar day in source.timezone: rows after 19:00 in New York (midnight UTC) belong
    to that New York day, and the 23- and 25-hour days of the DST changes hold exactly their rows."""
    conn = connect()
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS customer_activity")
    conn.commit()
    days = [date(2024, 3, d) for d in (9, 10, 11)] + [date(2024, 11, d) for d in (2, 3, 4)]
    seed_postgres(conn, days)
    table = "customer_activity"
    if column_type == "timestamptz":
        cur.execute("DROP TABLE IF EXISTS activity_tz")
        cur.execute(
            "CREATE TABLE activity_tz AS SELECT * FROM customer_activity; "
            "ALTER TABLE activity_tz ALTER COLUMN event_ts TYPE timestamptz USING event_ts AT TIME ZONE 'UTC'"
        )
        conn.commit()
        table = "activity_tz"
    spec = example_spec.model_copy(
        update={
            "source": example_spec.source.model_copy(update={"timezone": "America/New_York", "table": table})
        }
    )
    local = (
        "(event_ts AT TIME ZONE 'America/New_York')"
        if column_type == "timestamptz"
        else "(event_ts AT TIME ZONE 'UTC' AT TIME ZONE 'America/New_York')"
    )
    for day in ("2024-03-10", "2024-11-03", "2024-03-09"):
        cur.execute(f"SELECT count(*) FROM {table} WHERE {local}::date = %s", (day,))
        expected = cur.fetchone()[0]
        manifest = extract_partition(connect, spec, day, lake, dialect="postgres")
        assert manifest.row_count == expected > 0, day
        lo, hi = (
            datetime.fromisoformat(manifest.partition_min),
            datetime.fromisoformat(manifest.partition_max),
        )
        from zoneinfo import ZoneInfo

        assert lo.astimezone(ZoneInfo("America/New_York")).date().isoformat() == day
        assert hi.astimezone(ZoneInfo("America/New_York")).date().isoformat() == day
    conn.close()


def test_a_missing_table_or_schema_fails_at_once_naming_the_field(connect, example_spec, lake):
    """PostgreSQL says 42P01 (no such relation) or 3F000 (no such schema): no retry makes them appear."""
    from cormorant.labels import LabelSourceError, extract_labels
    from cormorant.spec import ModelSpec

    raw = example_spec.model_dump(by_alias=True)
    missing = ModelSpec.model_validate({**raw, "source": {**raw["source"], "table": "no_such_table"}})
    with pytest.raises(SourceSchemaError, match="source.table: no_such_table does not exist") as raised:
        extract_partition(connect, missing, "2024-03-01", lake, dialect="postgres")
    assert not raised.value.retryable
    late = ModelSpec.model_validate(
        {
            **raw,
            "target": {
                **raw["target"],
                "available_after_days": 2,
                "source": {"table": "nowhere.churn_labels", "partition_column": "event_ts"},
            },
        }
    )
    with pytest.raises(LabelSourceError, match="target.source: the label source nowhere.churn_labels"):
        extract_labels(connect, late, "2024-03-01", lake, dialect="postgres")
