from __future__ import annotations

from datetime import date

import pytest

from cormorant.synthetic import generate_day
from cormorant.validation import DataValidationError, build_expectations, validate_frame


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
    }
    assert {c for k, c in kinds if k == "ExpectColumnToExist"} == set(example_spec.required_columns)
    assert ("ExpectColumnValuesToBeInSet", "contract_type") in kinds


def test_good_partition_passes(example_spec, day):
    result = validate_frame(day, example_spec, partition="2024-03-01", content_hash="abc")
    assert result.success, result.failures
    assert result.evaluated == len(build_expectations(example_spec))
    assert result.row_count == len(day)


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
