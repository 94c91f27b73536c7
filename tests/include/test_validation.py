from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest

from cormorant.errors import PartitionNotValidated
from cormorant.lake import PartitionNotFound
from cormorant.synthetic import generate_day
from cormorant.validation import (
    DataValidationError,
    build_expectations,
    require_validated,
    validate_frame,
    validate_table,
    validation_frame,
    validation_report_key,
)
from cormorant.warehouse import raw_dataset


@pytest.fixture(scope="module")
def day():
    return generate_day(date(2024, 3, 1))


def test_suite_is_built_from_the_spec(example_spec):
    kinds = [(type(e).__name__, getattr(e, "column", None)) for e in build_expectations(example_spec)]
    assert {k for k, _ in kinds} == {
        "ExpectColumnToExist",
        "ExpectColumnValuesToNotBeNull",
        "ExpectColumnValuesToBeInSet",
        "ExpectColumnValuesToBeBetween",
        "ExpectTableRowCountToBeBetween",
        "ExpectColumnValuesToBeUnique",
    }
    features = set(example_spec.required_columns) - {"churned"}  # the target is the labels suite's
    assert {c for k, c in kinds if k == "ExpectColumnToExist"} == features
    assert ("ExpectColumnValuesToBeInSet", "contract_type") in kinds


def test_good_partition_passes(example_spec, day):
    result = validate_frame(day, example_spec, partition="2024-03-01", content_hash="abc")
    assert result.success, result.failures
    assert result.evaluated == len(build_expectations(example_spec))
    assert result.row_count == len(day)


def test_validation_leaves_great_expectations_batch_fingerprints_as_it_found_them(example_spec, day):
    """Cormorant's suites skip GE's per-batch frame hash (a module global of its pandas engine); other
    validations in the same worker process keep GE's own setting."""
    from great_expectations.execution_engine import pandas_execution_engine

    before = pandas_execution_engine.HASH_THRESHOLD
    assert before > 0
    assert validate_frame(day, example_spec, partition="2024-03-01").success
    assert before == pandas_execution_engine.HASH_THRESHOLD


def test_dropped_column_and_null_feature_are_all_reported(example_spec, day):
    broken = day.drop(columns=["region"])
    broken["usage_gb"] = None
    result = validate_frame(broken, example_spec, partition="2024-03-01")
    assert not result.success
    failed = {(f["expectation"], f["column"]) for f in result.failures}
    assert ("expect_column_to_exist", "region") in failed
    assert ("expect_column_values_to_not_be_null", "usage_gb") in failed
    message = str(DataValidationError(result))
    assert "expect_column_to_exist on region: column is missing from the partition" in message
    assert "usage_gb: 100.0% unexpected" in message


def test_the_report_lists_every_expectation_in_the_suites_order_with_its_own_verdict(example_spec, day):
    # Great Expectations returns a suite's results erroring ones first; each verdict must stay with its
    # own expectation, and a failure's message comes from the detailed (SUMMARY) rerun.
    broken = day.drop(columns=["region"])
    broken.loc[:3, "support_calls"] = -3
    result = validate_frame(broken, example_spec, partition="2024-03-01")
    suite = build_expectations(example_spec)
    assert [e["expectation"] for e in result.expectations] == [x.expectation_type for x in suite]
    assert [e["column"] for e in result.expectations] == [getattr(x, "column", None) for x in suite]
    failed = {(e["expectation"], e["column"]) for e in result.expectations if not e["success"]}
    region = {("expect_column_to_exist", "region"), ("expect_column_values_to_not_be_null", "region")}
    region |= {(x.expectation_type, "region") for x in suite if getattr(x, "column", None) == "region"}
    assert failed == region | {("expect_column_values_to_be_between", "support_calls")}
    (calls,) = [f for f in result.failures if f["column"] == "support_calls"]
    assert calls["detail"] == (
        "0.4% unexpected; e.g. [-3.0, -3.0, -3.0, -3.0]; expected {'min_value': 0.0, 'max_value': 100.0}"
    )


def test_a_lake_partition_read_column_by_column_gets_the_same_report_as_the_whole_frame(
    example_spec, lake, day
):
    broken = day.drop(columns=["region"])
    broken.loc[:3, "support_calls"] = -3
    broken.loc[5:9, "customer_id"] = broken.loc[0, "customer_id"]  # shared keys
    table = pa.Table.from_pandas(broken, preserve_index=False)
    usage = table.column("usage_gb").to_pylist()
    usage[:2] = [float("nan"), float("inf")]  # a NaN is a value, told apart from a null (kept as None)
    table = table.set_column(table.schema.get_field_index("usage_gb"), "usage_gb", pa.array(usage))
    manifest = lake.write_partition(raw_dataset(example_spec), "2024-03-01", table.to_batches())
    whole = validate_frame(validation_frame(table), example_spec, partition="2024-03-01", content_hash="h")
    with lake.opened(raw_dataset(example_spec), "2024-03-01") as part:
        assert part.manifest == manifest
        by_column = validate_table(part, example_spec, partition="2024-03-01", content_hash="h")
    assert by_column.to_dict() == whole.to_dict()
    failed = {(f["expectation"], f["column"]) for f in whole.failures}
    assert {
        ("expect_column_to_exist", "region"),
        ("expect_column_values_to_be_unique", "customer_id"),
        ("expect_column_values_to_be_between", "usage_gb"),
        ("expect_column_values_to_be_between", "support_calls"),
    } <= failed
    (finite,) = [f for f in whole.failures if f["column"] == "usage_gb"]
    assert finite["detail"].startswith("2 non-finite value(s) (NaN or +/-inf)")


def test_out_of_set_category_and_range_are_reported(example_spec, day):
    broken = day.copy()
    broken.loc[:100, "contract_type"] = "lifetime"
    broken.loc[:5, "support_calls"] = -3
    result = validate_frame(broken, example_spec, partition="2024-03-01")
    failed = {(f["expectation"], f["column"]) for f in result.failures}
    assert failed == {
        ("expect_column_values_to_be_in_set", "contract_type"),
        ("expect_column_values_to_be_between", "support_calls"),
    }


def _with_column(day, column, values):
    """The day as an Arrow table with ``column`` replaced by ``values`` (NaN kept as a value)."""
    table = pa.Table.from_pandas(day, preserve_index=False)
    array = pa.array(values, type=table.schema.field(column).type, from_pandas=False)
    return validation_frame(table.set_column(table.schema.get_field_index(column), column, array))


def test_non_finite_numbers_fail_and_are_counted_apart_from_nulls(example_spec, day):
    values = day["usage_gb"].tolist()
    values[:4] = [float("inf"), float("-inf"), float("nan"), None]
    result = validate_frame(_with_column(day, "usage_gb", values), example_spec, partition="2024-03-01")
    (failure,) = [f for f in result.failures if f["column"] == "usage_gb"]
    assert failure["expectation"] == "expect_column_values_to_be_between"
    assert failure["detail"].startswith("3 non-finite value(s) (NaN or +/-inf)")
    assert "validation.finite_numbers" in failure["detail"]
    relaxed = example_spec.model_copy(
        update={"validation": example_spec.validation.model_copy(update={"finite_numbers": False})}
    )
    assert validate_frame(_with_column(day, "usage_gb", values), relaxed, partition="2024-03-01").success


def test_duplicate_keys_fail_naming_the_key(example_spec, day):
    ids = day["customer_id"].tolist()
    ids[1] = ids[0]
    result = validate_frame(_with_column(day, "customer_id", ids), example_spec, partition="2024-03-01")
    (failure,) = result.failures
    assert failure["column"] == "customer_id"
    assert failure["detail"].startswith("2 rows share their key ['customer_id']")


def test_the_target_may_have_no_nulls_by_default(example_spec, day):
    rules = {k: v for k, v in example_spec.validation.columns.items() if k != "churned"}
    spec = example_spec.model_copy(
        update={"validation": example_spec.validation.model_copy(update={"columns": rules})}
    )
    labels = day["churned"].tolist()
    labels[0] = None  # one cancelled event of ~1000: far below the 20% default for features
    frame = _with_column(day, "churned", labels)
    assert validate_frame(frame, spec, partition="2024-03-01").success  # the features can be scored
    result = validate_frame(frame, spec, partition="2024-03-01", suite="labels")
    assert [(f["expectation"], f["column"]) for f in result.failures] == [
        ("expect_column_values_to_not_be_null", "churned")
    ]


def test_an_empty_partition_fails_saying_how_many_rows_the_spec_asks_for(example_spec, day):
    result = validate_frame(validation_frame(pa.Table.from_pandas(day.iloc[:0])), example_spec, partition="d")
    (failure,) = result.failures
    assert failure["detail"] == "0 rows; the spec asks for at least min_rows=200"


def test_only_a_commit_that_passed_validation_is_required_as_validated(example_spec, lake, day):
    table = pa.Table.from_pandas(day, preserve_index=False)
    with pytest.raises(PartitionNotFound) as missing:
        require_validated(example_spec, lake, "2024-03-01")
    assert missing.value.retryable
    manifest = lake.write_partition(raw_dataset(example_spec), "2024-03-01", table.to_batches())
    with pytest.raises(PartitionNotValidated, match="has not been validated yet") as pending:
        require_validated(example_spec, lake, "2024-03-01")
    assert pending.value.retryable
    failed = validate_frame(
        validation_frame(table.slice(0, 10)),
        example_spec,
        partition="2024-03-01",
        content_hash=manifest.content_hash,
    )
    lake.write_json(validation_report_key(example_spec, "2024-03-01"), failed.to_dict())
    with pytest.raises(PartitionNotValidated) as refused:
        require_validated(example_spec, lake, "2024-03-01")
    assert not refused.value.retryable
    assert "partition 2024-03-01 failed validation" in str(refused.value)
    assert "10 rows; the spec asks for at least min_rows=200" in str(refused.value)
    assert "reports/validation/ds=2024-03-01/result.json" in str(refused.value)
    passed = validate_frame(
        validation_frame(table), example_spec, partition="2024-03-01", content_hash=manifest.content_hash
    )
    lake.write_json(validation_report_key(example_spec, "2024-03-01"), passed.to_dict())
    assert require_validated(example_spec, lake, "2024-03-01")[0] == manifest
    lake.write_partition(raw_dataset(example_spec), "2024-03-01", table.slice(1).to_batches())
    with pytest.raises(PartitionNotValidated, match="re-ingested since its validation") as stale:
        require_validated(example_spec, lake, "2024-03-01")
    assert stale.value.retryable
