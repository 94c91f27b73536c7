"""Data validation: a Great Expectations suite built from the spec gates every lake partition.

The suite checks that every column the pipeline uses exists, null fractions, numeric ranges,
allowed categorical values and the row count. All failed expectations are gathered into one
report (and one error) that names each expectation and column.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)


class DataValidationError(ValueError):
    """A partition failed its spec's expectations; ``result`` holds every failure."""

    def __init__(self, result: ValidationResult):
        self.result = result
        lines = [
            f"- {f['expectation']} on {f['column'] or 'the table'}: {f['detail']}" for f in result.failures
        ]
        super().__init__(
            f"spec {result.spec!r}, partition {result.partition}: {len(result.failures)} of "
            f"{result.evaluated} expectations failed\n" + "\n".join(lines)
        )


@dataclass
class ValidationResult:
    spec: str
    partition: str
    success: bool
    evaluated: int
    row_count: int
    content_hash: str
    failures: list[dict[str, Any]] = field(default_factory=list)
    expectations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_expectations(spec: ModelSpec) -> list[Any]:
    """The Great Expectations 1.x expectations a spec implies, in a stable order."""
    import great_expectations.expectations as gxe

    rules = spec.validation
    expectations: list[Any] = [gxe.ExpectTableRowCountToBeBetween(min_value=rules.min_rows)]
    for column in spec.required_columns:
        expectations.append(gxe.ExpectColumnToExist(column=column))
    for column in spec.required_columns:
        rule = rules.columns.get(column)
        max_null = (
            rule.max_null_fraction
            if rule and rule.max_null_fraction is not None
            else (rules.default_max_null_fraction)
        )
        if max_null < 1:
            expectations.append(
                gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=round(1 - max_null, 6))
            )
        if rule and (rule.min is not None or rule.max is not None):
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=rule.min, max_value=rule.max)
            )
        if rule and rule.allowed_values is not None:
            expectations.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=rule.allowed_values))
    return expectations


def _detail(result: Any) -> str:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        message = str(info.get("exception_message") or "error").splitlines()[0]
        return f"could not be evaluated: {message}"
    r = result.result or {}
    parts = []
    if "observed_value" in r:
        parts.append(f"observed {r['observed_value']!r}")
    if r.get("unexpected_percent") is not None:
        parts.append(f"{r['unexpected_percent']:.1f}% unexpected")
    if r.get("partial_unexpected_list"):
        parts.append(f"e.g. {r['partial_unexpected_list'][:5]!r}")
    kwargs = {
        k: v
        for k, v in result.expectation_config.kwargs.items()
        if k in ("min_value", "max_value", "value_set", "mostly") and v is not None
    }
    if kwargs:
        parts.append(f"expected {kwargs}")
    return "; ".join(parts) or "failed"


def validate_frame(
    frame: pd.DataFrame, spec: ModelSpec, *, partition: str, content_hash: str = ""
) -> ValidationResult:
    """Run the spec's suite over ``frame`` and return every outcome (this never raises on bad data)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(name=f"cormorant_{spec.name}")
    asset = source.add_dataframe_asset(name="partition")
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": frame}
    )
    suite = gx.ExpectationSuite(name=f"{spec.name}_suite")
    for expectation in build_expectations(spec):
        suite.add_expectation(expectation)
    outcome = batch.validate(suite, result_format="SUMMARY")
    failures, evaluated = [], []
    for r in outcome.results:
        entry = {
            "expectation": r.expectation_config.type,
            "column": r.expectation_config.kwargs.get("column"),
            "success": bool(r.success),
        }
        evaluated.append(entry)
        if not r.success:
            missing = entry["column"] is not None and entry["column"] not in frame.columns
            detail = "column is missing from the partition" if missing else _detail(r)
            failures.append({**entry, "detail": detail})
    result = ValidationResult(
        spec=spec.name,
        partition=partition,
        success=not failures,
        evaluated=len(evaluated),
        row_count=len(frame),
        content_hash=content_hash,
        failures=failures,
        expectations=evaluated,
    )
    log.info(
        "validation %s/%s: %d expectations, %d failed", spec.name, partition, len(evaluated), len(failures)
    )
    return result


def validation_report_key(spec: ModelSpec, partition: str) -> str:
    return f"{spec.name}/reports/validation/ds={partition}/result.json"
