"""Data validation: Great Expectations suites built from the spec gate every lake partition.

Two suites. The features suite gates scoring: every column the model reads exists, the row count, key
uniqueness, null fractions, finite numeric features, numeric ranges and allowed categorical values; the
target is not its business, so a day is scored before its labels exist. The labels suite gates
training and performance monitoring: keys, and the target's nulls (none by default), range and
values. All failed expectations of a suite are gathered into one report (and one error) that names
each expectation and column.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from cormorant.errors import CormorantError, PartitionNotValidated
from cormorant.lake import Lake, Manifest, OpenPartition
from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)


class DataValidationError(CormorantError, ValueError):
    """A partition failed its spec's expectations; ``result`` holds every failure."""

    def __init__(self, result: ValidationResult):
        self.result = result
        lines = [
            f"- {f['expectation']} on {f['column'] or 'the table'}: {f['detail']}" for f in result.failures
        ]
        what = "labels of partition" if result.suite == "labels" else "partition"
        super().__init__(
            f"spec {result.spec!r}, {what} {result.partition}: {len(result.failures)} of "
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
    suite: str = "features"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Why an expectation is in the suite (kept in its meta), so its failure reads in the spec's words.
PURPOSE = "cormorant_purpose"


SUITES = ("features", "labels")


def suite_columns(spec: ModelSpec, suite: str) -> list[str]:
    """The columns a suite judges: the features suite everything but the target, the labels suite the
    keys, the partition column and the target."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {SUITES}")
    if suite == "labels":
        return spec.label_columns
    return [c for c in spec.required_columns if c != spec.target.column]


def build_expectations(spec: ModelSpec, suite: str = "features") -> list[Any]:
    """The Great Expectations 1.x expectations a spec implies for one suite, in a stable order.

    The features suite gates scoring (row count, keys, nulls, finite numbers, ranges, categories); the
    labels suite gates training and performance monitoring (the target's nulls, range and classes)."""
    import great_expectations.expectations as gxe

    rules = spec.validation
    columns = suite_columns(spec, suite)
    expectations: list[Any] = []
    if suite == "features":
        expectations.append(
            gxe.ExpectTableRowCountToBeBetween(min_value=rules.min_rows, meta={PURPOSE: "min_rows"})
        )
    for column in columns:
        expectations.append(gxe.ExpectColumnToExist(column=column))
    keys = spec.source.key_columns
    if rules.unique_keys and len(keys) == 1:
        expectations.append(gxe.ExpectColumnValuesToBeUnique(column=keys[0], meta={PURPOSE: "unique_keys"}))
    elif rules.unique_keys and keys:
        expectations.append(
            gxe.ExpectCompoundColumnsToBeUnique(column_list=keys, meta={PURPOSE: "unique_keys"})
        )
    judged = [spec.target.column] if suite == "labels" else columns
    for column in judged:
        rule = rules.columns.get(column)
        if rule and rule.max_null_fraction is not None:
            max_null = rule.max_null_fraction
        else:
            # A label row without its label is no label: no nulls by default.
            max_null = 0.0 if column == spec.target.column else rules.default_max_null_fraction
        if max_null < 1:
            expectations.append(
                gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=round(1 - max_null, 6))
            )
        if rules.finite_numbers and column in spec.features.numeric:
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=column,
                    min_value=-sys.float_info.max,  # NaN and +/-inf fall outside; nulls are not judged
                    max_value=sys.float_info.max,
                    meta={PURPOSE: "finite"},
                )
            )
        if rule and (rule.min is not None or rule.max is not None):
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=rule.min, max_value=rule.max)
            )
        if rule and rule.allowed_values is not None:
            expectations.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=rule.allowed_values))
    return expectations


def _examples(r: dict[str, Any]) -> str:
    values = r.get("partial_unexpected_list") or []
    return f", e.g. {values[:5]!r}" if values else ""


def _detail(result: Any, spec: ModelSpec) -> str:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        message = str(info.get("exception_message") or "error").splitlines()[0]
        return f"could not be evaluated: {message}"
    r = result.result or {}
    purpose = (result.expectation_config.meta or {}).get(PURPOSE)
    if purpose == "min_rows":
        return (
            f"{r.get('observed_value')} rows; the spec asks for at least min_rows={spec.validation.min_rows}"
        )
    if purpose == "finite":
        return (
            f"{r.get('unexpected_count')} non-finite value(s) (NaN or +/-inf){_examples(r)}; numeric "
            f"features must be finite (validation.finite_numbers)"
        )
    if purpose == "unique_keys":
        return (
            f"{r.get('unexpected_count')} rows share their key {spec.source.key_columns}{_examples(r)}; "
            f"source.key_columns must be unique within a partition (validation.unique_keys)"
        )
    parts = []
    if "observed_value" in r and r["observed_value"] is not None:
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


def validation_frame(table: pa.Table) -> pd.DataFrame:
    """The partition as the suite sees it, NaN told apart from null (a value from a missing value).

    numpy-backed pandas turns both into NaN, so a floating column that holds a NaN stays Arrow-backed;
    the others (the usual case) are numpy-backed, where Great Expectations' column checks run
    vectorized (on Arrow-backed columns its range check calls Python per value: ten times slower).
    """
    import pyarrow.compute as pc

    def has_nan(column: pa.ChunkedArray) -> bool:
        return pa.types.is_floating(column.type) and bool(pc.any(pc.is_nan(column)).as_py())

    frame = table.to_pandas()
    for name, column in zip(table.column_names, table.columns, strict=True):
        if has_nan(column):
            frame[name] = pd.Series(pd.arrays.ArrowExtensionArray(column), index=frame.index)
    return frame


def _column_groups(expectations: list[Any], present: list[str]) -> dict[tuple[str, ...] | None, list[int]]:
    """Expectation indexes by the columns they read (``None``: the schema, for column existence and
    for checks of a column the partition lacks, which then fail naming it); in suite order."""
    groups: dict[tuple[str, ...] | None, list[int]] = {}
    first = present[0] if present else None
    for i, e in enumerate(expectations):
        kind = type(e).__name__
        if kind == "ExpectTableRowCountToBeBetween":
            key = (first,) if first is not None else None
        elif kind == "ExpectColumnToExist":
            key = None
        else:
            columns = tuple(getattr(e, "column_list", None) or [e.column])
            key = columns if all(c in present for c in columns) else None
        groups.setdefault(key, []).append(i)
    return groups


@contextlib.contextmanager
def _no_batch_fingerprint() -> Iterator[None]:
    """Great Expectations does not hash the batches' frames inside this block.

    Its pandas engine fingerprints each batch below ``HASH_THRESHOLD`` bytes (an md5 of
    ``hash_pandas_object``: half the suite's time on 1M rows); the fingerprint only feeds the batch
    markers of its own result, which Cormorant does not keep (the lake's content hash names the
    partition). The threshold is that engine's switch for frames too big to hash; 0 means none. It is
    a module global: restored on the way out, so other validations in the process keep GE's default."""
    from great_expectations.execution_engine import pandas_execution_engine

    before = pandas_execution_engine.HASH_THRESHOLD
    pandas_execution_engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        pandas_execution_engine.HASH_THRESHOLD = before


def _config_key(config: Any) -> str:
    """An expectation's identity within a suite: its type, arguments and meta."""
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}  # results carry the batch's
    return json.dumps([config.type, kwargs, config.meta or {}], sort_keys=True, default=str)


def validate_partition(
    lake: Lake, dataset: str, partition: str, spec: ModelSpec, *, suite: str = "features"
) -> ValidationResult:
    """One of the spec's suites over a lake partition's current commit, read column by column
    (:func:`validate_table`), its report naming that commit's content hash. A commit that lands while
    it is read (a re-run of the day) is validated instead, whole (:meth:`cormorant.lake.Lake.with_opened`)."""
    return lake.with_opened(
        dataset,
        partition,
        lambda part: validate_table(
            part, spec, partition=partition, content_hash=part.manifest.content_hash, suite=suite
        ),
    )


def validate_table(
    part: OpenPartition, spec: ModelSpec, *, partition: str, content_hash: str = "", suite: str = "features"
) -> ValidationResult:
    """:func:`validate_frame` over an open lake partition (:meth:`cormorant.lake.Lake.opened`), never
    whole in pandas: each group of expectations gets :func:`validation_frame` of only the columns it
    reads, read from the partition's files when the group runs, so memory stays near one group's
    columns, not the partition's."""

    def view(columns: tuple[str, ...] | None) -> pd.DataFrame:
        if columns is None:
            return validation_frame(part.schema.empty_table())
        return validation_frame(part.read(list(columns)))

    return _validate(
        view,
        part.column_names,
        part.num_rows,
        spec,
        partition=partition,
        content_hash=content_hash,
        suite=suite,
    )


def validate_frame(
    frame: pd.DataFrame, spec: ModelSpec, *, partition: str, content_hash: str = "", suite: str = "features"
) -> ValidationResult:
    """Run one of the spec's suites over ``frame`` and return every outcome (never raises on bad data).

    Every expectation runs with Great Expectations' ``BOOLEAN_ONLY`` result format (the verdict, no
    examples); the ones that fail run again with ``SUMMARY``, whose observed values, counts and
    examples make the report's messages. A partition that passes pays for no examples."""

    def view(columns: tuple[str, ...] | None) -> pd.DataFrame:
        return frame.iloc[:0] if columns is None else frame[list(columns)]

    return _validate(
        view,
        list(frame.columns),
        len(frame),
        spec,
        partition=partition,
        content_hash=content_hash,
        suite=suite,
    )


def _validate(
    view: Any,
    present: list[str],
    row_count: int,
    spec: ModelSpec,
    *,
    partition: str,
    content_hash: str,
    suite: str,
) -> ValidationResult:
    """The suite over a partition whose columns ``present`` are handed out by ``view(columns)`` (a
    frame of those columns; ``None``: no rows, every column)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(name=f"cormorant_{spec.name}")
    whole = source.add_dataframe_asset(name="partition").add_batch_definition_whole_dataframe("whole")
    expectations = build_expectations(spec, suite)
    results: list[Any] = [None] * len(expectations)
    with _no_batch_fingerprint():
        for group, (columns, members) in enumerate(_column_groups(expectations, present).items()):
            # Each group of expectations sees only the columns it reads: Great Expectations filters the
            # batch's whole frame once per column check, so a narrow frame is what keeps it fast.
            batch = whole.get_batch(batch_parameters={"dataframe": view(columns)})
            for result_format in ("BOOLEAN_ONLY", "SUMMARY"):
                if not members:
                    break
                group_suite = gx.ExpectationSuite(name=f"{spec.name}_{suite}_{group}")
                slots: dict[str, list[int]] = {}
                for i in members:
                    group_suite.add_expectation(expectations[i])
                    slots.setdefault(_config_key(expectations[i].configuration), []).append(i)
                outcome = batch.validate(group_suite, result_format=result_format)
                for r in outcome.results:  # not in the suite's order: erroring ones come first
                    results[slots[_config_key(r.expectation_config)].pop(0)] = r
                members = [i for i in members if not results[i].success]
    failures, evaluated = [], []
    for r in results:
        kwargs = r.expectation_config.kwargs
        entry = {
            "expectation": r.expectation_config.type,
            "column": kwargs.get("column")
            or (", ".join(kwargs["column_list"]) if kwargs.get("column_list") else None),
            "success": bool(r.success),
        }
        evaluated.append(entry)
        if not r.success:
            missing = kwargs.get("column") is not None and kwargs["column"] not in present
            detail = "column is missing from the partition" if missing else _detail(r, spec)
            failures.append({**entry, "detail": detail})
    result = ValidationResult(
        spec=spec.name,
        partition=partition,
        success=not failures,
        evaluated=len(evaluated),
        row_count=row_count,
        content_hash=content_hash,
        failures=failures,
        expectations=evaluated,
        suite=suite,
    )
    log.info(
        "validation %s/%s (%s): %d expectations, %d failed",
        spec.name,
        partition,
        suite,
        len(evaluated),
        len(failures),
    )
    return result


def validation_report_key(spec: ModelSpec, partition: str) -> str:
    return f"{spec.name}/reports/validation/ds={partition}/result.json"


def validation_report_uri(spec: ModelSpec, lake: Lake, partition: str) -> str:
    return lake.uri(validation_report_key(spec, partition))


def require_validated(spec: ModelSpec, lake: Lake, partition: str) -> tuple[Manifest, dict[str, Any]]:
    """The partition's current commit and the validation verdict recorded for exactly that commit.

    Raises :class:`PartitionNotValidated`: deterministic when the commit failed validation (naming the
    failed expectations and the report), retryable when it is not validated yet or was re-ingested
    since (validation of the new commit is on its way). A missing partition raises
    :class:`cormorant.lake.PartitionNotFound` (retryable: it may still land).
    """
    from cormorant.warehouse import raw_dataset

    manifest = lake.require(raw_dataset(spec), partition)
    report = lake.read_json(validation_report_key(spec, partition))
    where = f"spec {spec.name!r}, partition {partition}"
    uri = validation_report_uri(spec, lake, partition)
    if report is None:
        raise PartitionNotValidated(
            f"{where} has not been validated yet (no report at {uri})", retryable=True
        )
    if report.get("content_hash") != manifest.content_hash:
        raise PartitionNotValidated(
            f"{where} was re-ingested since its validation (validated content "
            f"{str(report.get('content_hash'))[:12]}, committed {manifest.content_hash[:12]}); "
            f"validate it again",
            retryable=True,
        )
    if not report.get("success"):
        failed = "; ".join(
            f"{f['expectation']} on {f['column'] or 'the table'}: {f['detail']}"
            for f in report.get("failures", [])
        )
        raise PartitionNotValidated(
            f"{where} failed validation, so it is not used: {failed} (report {uri})", retryable=False
        )
    return manifest, report
