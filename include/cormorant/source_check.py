"""Checking a spec against its live source before anything runs (``cormorant check``).

Every problem is gathered and reported at once: the columns the spec names exist, a sample of recent
rows converts to the types the lake stores, the partition column holds instants and its recent days in
``source.timezone``, ``source.key_columns`` are unique within a day of the sample, and the target has
the values its task needs. Nothing is written anywhere.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
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
    _check_target(spec, typed, report)
    return report


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
