"""Checking a spec against its live source before anything runs (``cormorant check``).

Every problem is gathered and reported at once: the columns the spec names exist, a sample of recent
rows converts to the types the lake stores, the partition column holds instants and its recent days in
``source.timezone``, ``source.key_columns`` are unique within a day of the sample, and the target has
the values its task needs. Nothing is written anywhere.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa

from cormorant.spec import ModelSpec
from cormorant.warehouse import (
    SourceSchemaError,
    _cast,
    _to_arrow,
    missing_column_problems,
    source_columns,
    source_relation,
    spec_types,
)


@dataclass
class SourceReport:
    """What the check found: ``problems`` (each a line naming the spec field or column) and ``facts``."""

    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    # Not wrong, but likely to surprise (the check still passes): each a line naming the field.
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _sample(conn: Any, spec: ModelSpec, rows: int) -> dict[str, pa.Array]:
    """The most recent ``rows`` rows of the columns the spec reads, as Arrow arrays (untyped)."""
    columns = ", ".join(spec.raw_columns)
    cursor = conn.cursor()
    try:
        cursor.execute(
            f"SELECT {columns} FROM {source_relation(spec)} "
            f"ORDER BY {spec.source.partition_column} DESC LIMIT {int(rows)}"
        )
        fetched = cursor.fetchall()
    finally:
        cursor.close()
    data = list(zip(*fetched, strict=True)) if fetched else [[] for _ in spec.raw_columns]
    return {c: _to_arrow(c, list(data[i])) for i, c in enumerate(spec.raw_columns)}


def check_source(conn: Any, spec: ModelSpec, *, sample_rows: int = 10_000) -> SourceReport:
    """Check ``spec`` against the source behind the DB-API connection ``conn``."""
    report = SourceReport()
    found = source_columns(conn, spec)
    report.facts.append(f"source {spec.source.table or 'source.sql'}: {len(found)} columns")
    report.problems += missing_column_problems(spec, found)
    report.problems += _label_source_problems(conn, spec)
    if report.problems:
        return report  # the sample query would fail on the missing columns
    sample = _sample(conn, spec, sample_rows)
    types = spec_types(spec)
    typed: dict[str, pa.Array] = {}
    for column, array in sample.items():
        try:
            typed[column] = _cast(column, array, types.get(column, array.type))
        except SourceSchemaError as e:
            report.problems.append(str(e))
    rows = len(next(iter(sample.values()))) if sample else 0
    report.facts.append(f"sample: the {rows} most recent rows")
    if rows == 0:
        report.problems.append(f"source {spec.source.table or 'source.sql'} has no rows to check")
        return report
    partition = spec.source.partition_column
    if partition in typed:
        zone = ZoneInfo(spec.source.timezone)
        days = [v.astimezone(zone).date().isoformat() for v in typed[partition].to_pylist() if v is not None]
        if days:
            report.facts.append(
                f"{partition}: local days {min(days)}..{max(days)} in {spec.source.timezone} in the sample"
            )
        if len(days) < rows:
            report.problems.append(
                f"source.partition_column {partition!r}: {rows - len(days)} null(s) in the sample"
            )
        _check_keys(spec, typed, days, report)
        _check_constant_within_days(spec, typed, days, report)
    _check_target(spec, typed, report)
    if spec.target.source is not None and not report.problems:
        _label_source_facts(conn, spec, max(days) if days else None, report)
    return report


def _check_constant_within_days(
    spec: ModelSpec, typed: dict[str, pa.Array], days: list[str], report: SourceReport
) -> None:
    """Warn about features that take one value within every day of the sample but differ across days
    (a day of week, a month): a partition is one day, so drift compares a single value against the
    training window's spread and flags it every day."""
    if len(set(days)) < 2:
        return
    excluded = set(spec.drift.exclude)
    for column in spec.feature_columns:
        if column not in typed or column in excluded or len(typed[column]) != len(days):
            continue
        per_day: dict[str, set[Any]] = {}
        for day, value in zip(days, typed[column].to_pylist(), strict=True):
            per_day.setdefault(day, set()).add(value)
        if all(len(v) == 1 for v in per_day.values()) and len(set().union(*per_day.values())) > 1:
            report.warnings.append(
                f"feature {column!r} is constant within each day of the sample ({len(per_day)} days): a "
                "partition is one day, so drift will flag it every day; add it to drift.exclude (or "
                "derive a feature that varies within a day)"
            )


def _label_source_facts(
    conn: Any, spec: ModelSpec, last_feature_day: str | None, report: SourceReport
) -> None:
    """What the label source holds: rows, the class counts over its most recent rows, and how far its
    latest labelled day lags the features' latest day (against ``target.available_after_days``)."""
    from cormorant.labels import label_conn_id, label_relation

    if label_conn_id(spec) != spec.source.conn_id:
        report.facts.append("target.source: on another connection, not checked here")
        return
    relation, column = label_relation(spec)
    target = spec.target.column
    cursor = conn.cursor()
    try:
        cursor.execute(f"SELECT count(*), max({column}) FROM {relation}")
        rows, latest = cursor.fetchone()
        cursor.execute(f"SELECT {target} FROM {relation} ORDER BY {column} DESC LIMIT 10000")
        sample = [r[0] for r in cursor.fetchall()]
    finally:
        cursor.close()
    counts = Counter(sample)
    shown = dict(sorted(counts.items(), key=lambda kv: str(kv[0])))
    report.facts.append(
        f"target.source {relation}: {rows} rows; {target!r} over the {len(sample)} most recent: {shown}"
    )
    if rows == 0:
        report.warnings.append(
            f"target.source {relation} has no rows yet: nothing can be trained until it has"
        )
        return
    if spec.is_classification and len({v for v in counts if v is not None}) < 2:
        report.warnings.append(f"target.source {relation}: one class of {target!r} in its most recent rows")
    if latest is None or last_feature_day is None:
        return
    # the label source's instant, typed as the lake types the partition column (naive: UTC)
    partition_type = spec_types(spec)[spec.source.partition_column]
    try:
        instant = _cast(column, _to_arrow(column, [latest]), partition_type).to_pylist()[0]
    except SourceSchemaError:
        return
    labelled = instant.astimezone(ZoneInfo(spec.source.timezone)).date()
    lag = (date.fromisoformat(last_feature_day) - labelled).days
    k = spec.target.available_after_days
    report.facts.append(
        f"target.source: the latest labelled day is {labelled}, {lag} day(s) behind the features' "
        f"latest ({last_feature_day}); the spec reads a day's labels {k} day(s) after it"
    )
    if lag > k:
        report.warnings.append(
            f"target.available_after_days {k}: the label source lags the features by {lag} day(s), so "
            f"each day's labels would be read before they are there; raise it to at least {lag}"
        )


def _label_source_problems(conn: Any, spec: ModelSpec) -> list[str]:
    """A separate label source on the same connection: its columns (labels arriving later are not
    sampled: recent days have none by design)."""
    from cormorant.errors import first_line
    from cormorant.labels import LabelSourceError, check_label_columns, label_conn_id, label_relation
    from cormorant.warehouse import relation_columns

    if spec.target.source is None or label_conn_id(spec) != spec.source.conn_id:
        return []
    relation, _ = label_relation(spec)
    try:
        found = relation_columns(conn, relation)
    except Exception as e:  # a relation that does not exist
        return [f"target.source {relation}: cannot be read: {first_line(e)}"]
    try:
        check_label_columns(spec, found)
    except LabelSourceError as e:
        return str(e).splitlines()[1:]
    return []


def _check_keys(spec: ModelSpec, typed: dict[str, pa.Array], days: list[str], report: SourceReport) -> None:
    keys = spec.source.key_columns
    if not keys or not all(k in typed for k in keys) or len(days) != len(typed[keys[0]]):
        return
    values = zip(days, *(typed[k].to_pylist() for k in keys), strict=True)
    repeated = {k: n for k, n in Counter(values).items() if n > 1}
    if repeated:
        example = next(iter(repeated))
        report.problems.append(
            f"source.key_columns {keys}: {sum(repeated.values())} rows of the sample share a key within "
            f"a day, e.g. day {example[0]}, key {list(example[1:])}"
        )


def _check_target(spec: ModelSpec, typed: dict[str, pa.Array], report: SourceReport) -> None:
    target = spec.target.column
    if target not in typed:
        return
    values = typed[target].to_pylist()
    counts = Counter(values)
    report.facts.append(f"target {target!r}: {dict(sorted(counts.items(), key=lambda kv: str(kv[0])))}")
    if counts.get(None):
        report.problems.append(f"target.column {target!r}: {counts[None]} null(s) in the sample")
    if spec.is_classification:
        classes = {v for v in counts if v is not None}
        if not classes <= {0, 1}:
            report.problems.append(
                f"target.column {target!r}: binary_classification needs 0/1 labels; found {sorted(classes)}"
            )
        elif len(classes) < 2:
            report.problems.append(f"target.column {target!r}: one class in the sample: {sorted(classes)}")
