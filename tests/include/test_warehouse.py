from __future__ import annotations

import sqlite3
from datetime import date, datetime

import pyarrow as pa
import pytest

from cormorant.synthetic import generate_day, rows_for_day, seed_sqlite
from cormorant.warehouse import (
    SourceSchemaError,
    build_extract_query,
    extract_partition,
    partition_bounds,
    raw_dataset,
)

DAY = date(2024, 3, 1)


@pytest.fixture
def warehouse(tmp_path):
    path = tmp_path / "warehouse.db"
    seed_sqlite(path, [DAY, date(2024, 3, 2)], drift_start=date(2024, 3, 2))
    return path


def test_generator_is_deterministic_with_nulls_and_signal():
    a, b = generate_day(DAY), generate_day(DAY)
    assert a.equals(b)
    assert len(a) == rows_for_day(DAY)
    assert 0 < a["usage_gb"].isna().mean() < 0.2
    assert 0.1 < a["churned"].mean() < 0.6
    monthly = a[a["contract_type"] == "monthly"]["churned"].mean()
    two_year = a[a["contract_type"] == "two_year"]["churned"].mean()
    assert monthly > two_year + 0.1


def test_drift_knob_shifts_the_distribution():
    calm, drifted = generate_day(DAY), generate_day(DAY, drift=1.0)
    assert drifted["monthly_charges"].mean() > calm["monthly_charges"].mean() + 20
    assert (drifted["contract_type"] == "monthly").mean() > (calm["contract_type"] == "monthly").mean() + 0.15


def test_scale_multiplies_a_days_rows_with_unique_ids_and_the_same_distributions(tmp_path):
    big = generate_day(DAY, scale=20)
    assert len(big) == 20 * rows_for_day(DAY) == rows_for_day(DAY, scale=20)
    assert big["customer_id"].is_unique
    assert abs(big["churned"].mean() - generate_day(DAY)["churned"].mean()) < 0.05
    counts = seed_sqlite(tmp_path / "w.db", [DAY, date(2024, 3, 2)], scale=3)
    assert counts == {d.isoformat(): rows_for_day(d, scale=3) for d in (DAY, date(2024, 3, 2))}
    with sqlite3.connect(tmp_path / "w.db") as conn:
        (ids,) = conn.execute("SELECT COUNT(DISTINCT customer_id) FROM customer_activity").fetchone()
    assert ids == sum(counts.values())  # no id shared between days
    for bad in (0, 77):
        with pytest.raises(ValueError, match=f"scale={bad}: expected a whole number from 1 to 76"):
            rows_for_day(DAY, scale=bad)


def test_partition_bounds_are_a_half_open_utc_day():
    start, end = partition_bounds("2024-03-01")
    assert (start.isoformat(), end.isoformat()) == ("2024-03-01T00:00:00", "2024-03-02T00:00:00")


def test_query_selects_the_interval_with_the_hook_placeholder(example_spec):
    assert build_extract_query(example_spec, "%s") == (
        "SELECT * FROM customer_activity WHERE event_ts >= %s AND event_ts < %s ORDER BY event_ts, "
        "customer_id, tenure_months, monthly_charges, support_calls, usage_gb, contract_type, region, "
        "payment_method, churned"
    )


def test_extract_lands_exactly_the_generators_rows_with_spec_types(warehouse, example_spec, lake):
    manifest = extract_partition(
        lambda: sqlite3.connect(warehouse), example_spec, "2024-03-01", lake, batch_size=100
    )
    assert manifest.row_count == rows_for_day(DAY)
    table = lake.read(raw_dataset(example_spec), "2024-03-01")
    assert table.schema.field("event_ts").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("monthly_charges").type == pa.float64()
    assert table.schema.field("contract_type").type == pa.string()
    assert table.schema.field("churned").type == pa.int64()
    assert table.column("usage_gb").null_count > 0
    assert manifest.partition_min.startswith("2024-03-01") and manifest.partition_max.startswith("2024-03-01")
    assert manifest.source["params"] == ["2024-03-01 00:00:00", "2024-03-02 00:00:00"]


def test_rerun_of_a_date_yields_identical_data(warehouse, example_spec, lake):
    first = extract_partition(lambda: sqlite3.connect(warehouse), example_spec, "2024-03-01", lake)
    second = extract_partition(
        lambda: sqlite3.connect(warehouse), example_spec, "2024-03-01", lake, batch_size=77
    )
    assert second.row_count == first.row_count == rows_for_day(DAY)
    assert second.content_hash == first.content_hash  # same bytes, whatever the fetch size


def test_row_at_midnight_belongs_to_the_new_day(warehouse, example_spec, lake):
    with sqlite3.connect(warehouse) as conn:
        conn.execute(
            "UPDATE customer_activity SET event_ts = '2024-03-02 00:00:00' WHERE customer_id = "
            "(SELECT MIN(customer_id) FROM customer_activity WHERE event_ts >= '2024-03-02')"
        )
    day2 = extract_partition(lambda: sqlite3.connect(warehouse), example_spec, "2024-03-02", lake)
    day1 = extract_partition(lambda: sqlite3.connect(warehouse), example_spec, "2024-03-01", lake)
    assert day2.partition_min.startswith("2024-03-02 00:00:00")
    assert day1.row_count == rows_for_day(DAY)


def test_unreadable_column_is_named_in_the_error(warehouse, example_spec, lake):
    with sqlite3.connect(warehouse) as conn:
        conn.execute("UPDATE customer_activity SET monthly_charges = 'n/a' WHERE rowid = 1")
    with pytest.raises(
        SourceSchemaError, match="source column 'monthly_charges': expected float values, found str 'n/a'"
    ):
        extract_partition(lambda: sqlite3.connect(warehouse), example_spec, "2024-03-01", lake)
    assert lake.partitions(raw_dataset(example_spec)) == []


def test_all_null_column_and_empty_day_keep_the_spec_types(warehouse, example_spec, lake):
    extract_partition(lambda: sqlite3.connect(warehouse), example_spec, "2024-03-01", lake)
    with sqlite3.connect(warehouse) as conn:
        conn.execute("UPDATE customer_activity SET usage_gb = NULL WHERE event_ts >= '2024-03-02'")
    nulls = extract_partition(lambda: sqlite3.connect(warehouse), example_spec, "2024-03-02", lake)
    assert {"name": "usage_gb", "type": "double"} in nulls.schema
    empty = extract_partition(lambda: sqlite3.connect(warehouse), example_spec, "2024-03-09", lake)
    assert empty.row_count == 0
    assert {"name": "monthly_charges", "type": "double"} in empty.schema
    assert lake.read(raw_dataset(example_spec), "2024-03-09").num_rows == 0


def test_a_misspelled_partition_column_is_named_before_any_extraction(warehouse, example_spec, lake):
    spec = example_spec.model_copy(
        update={"source": example_spec.source.model_copy(update={"partition_column": "event_tz"})}
    )
    with pytest.raises(SourceSchemaError) as info:
        extract_partition(lambda: sqlite3.connect(warehouse), spec, "2024-03-01", lake)
    message = str(info.value)
    assert "source.partition_column: column 'event_tz' does not exist in the source" in message
    assert "did you mean 'event_ts'?" in message
    assert "customer_activity" in message and "'churn'" in message
    assert lake.partitions(raw_dataset(spec)) == []


def test_partition_bounds_are_local_days_across_dst_changes():
    assert partition_bounds("2024-03-10", "America/New_York") == (
        datetime(2024, 3, 10, 5),
        datetime(2024, 3, 11, 4),  # 23 hours: clocks go forward
    )
    assert partition_bounds("2024-11-03", "America/New_York") == (
        datetime(2024, 11, 3, 4),
        datetime(2024, 11, 4, 5),  # 25 hours: clocks go back
    )
    assert partition_bounds("2024-03-01", "Asia/Kolkata") == (
        datetime(2024, 2, 29, 18, 30),
        datetime(2024, 3, 1, 18, 30),
    )


def test_an_unknown_time_zone_is_refused_by_the_spec(example_spec):
    from cormorant.spec import SourceSpec

    with pytest.raises(ValueError, match="'Mars/Olympus' is not an IANA time zone"):
        SourceSpec(table="t", partition_column="ts", timezone="Mars/Olympus")
