"""A starting spec drafted from a table's columns and types (``cormorant init``).

Timestamps become the partition column (the first one, unless named), columns named ``id``, ``key``,
``*_id`` or ``*_key`` the key, numbers numeric features, text categorical features; the target's type
picks the task and the metric. Labels may live in a table of their own (:class:`LabelDraft`): the target
is then read there, joined to the features by the key. The draft is YAML with comments saying what was
inferred and what to review, and it parses as a spec (``cormorant check`` then checks it against the live
source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from cormorant.spec import SPEC_NAME, parse_spec
from cormorant.warehouse import _to_arrow


def sample_schema(conn: Any, table: str, rows: int = 1_000) -> pa.Schema:
    """The table's columns with Arrow types inferred from a sample of rows (nulls-only columns: null)."""
    cursor = conn.cursor()
    try:
        cursor.execute(f"SELECT * FROM {table} LIMIT {int(rows)}")
        names = [d[0] for d in cursor.description]
        fetched = cursor.fetchall()
    finally:
        cursor.close()
    data = list(zip(*fetched, strict=True)) if fetched else [[] for _ in names]
    return pa.schema([(n, _to_arrow(n, list(data[i])).type) for i, n in enumerate(names)])


def _kind(data_type: pa.DataType) -> str:
    if pa.types.is_timestamp(data_type) or pa.types.is_date(data_type):
        return "time"
    if pa.types.is_boolean(data_type) or pa.types.is_integer(data_type):
        return "integer"
    if pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "number"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "text"
    return "other"


@dataclass(frozen=True)
class LabelDraft:
    """Labels in a table of their own: its sampled columns, and the days after a day its labels are
    final (``target.available_after_days``)."""

    table: str
    schema: pa.Schema
    after_days: int = 1


def is_key_column(name: str) -> bool:
    """A column a draft takes as part of the key: ``id``, ``key``, ``*_id``, ``*_key``."""
    lowered = name.lower()
    return lowered in ("id", "key") or lowered.endswith(("_id", "_key"))


def draft_spec(
    name: str,
    *,
    table: str,
    schema: pa.Schema,
    target: str,
    conn_id: str,
    partition_column: str | None = None,
    timezone: str = "UTC",
    labels: LabelDraft | None = None,
) -> str:
    """The YAML text of a starting spec; raises ``ValueError`` naming what cannot be inferred."""
    if not SPEC_NAME.match(name):
        raise ValueError(f"spec name {name!r}: use lower-case letters, digits and underscores (<= 40)")
    kinds = {f.name: _kind(f.type) for f in schema}
    label_kinds = {f.name: _kind(f.type) for f in labels.schema} if labels else kinds
    where = labels.table if labels else table
    if target not in label_kinds:
        raise ValueError(
            f"--target {target!r} is not a column of {where} (columns: {', '.join(label_kinds)})"
        )
    times = [c for c, k in kinds.items() if k == "time"]
    partition = partition_column or (times[0] if times else None)
    if partition is None or partition not in kinds:
        raise ValueError(f"no timestamp column in {table} to partition by; name one with --partition-column")
    keys = [c for c in kinds if is_key_column(c) and c not in (target, partition)]
    rest = [c for c in kinds if c not in (target, partition, *keys)]
    numeric = [c for c in rest if kinds[c] in ("number", "integer")]
    categorical = [c for c in rest if kinds[c] == "text"]
    skipped = [c for c in rest if c not in numeric and c not in categorical]
    classification = label_kinds[target] == "integer"
    label_lines = _label_source(labels, keys, partition) if labels else []
    task, metric = ("binary_classification", "roc_auc") if classification else ("regression", "rmse")
    lines = [
        f"# A starting spec for {table}, drafted by `cormorant init` from the table's columns and types.",
        "# Review every line, then: cormorant check <this file>",
        f"name: {name}",
        f"description: Drafted from {table}.",
        "owner: ml-platform",
        "tags: [drafted]",
        "",
        "source:",
        f"  conn_id: {conn_id}",
        f"  table: {table}",
        f"  partition_column: {partition}      # one partition per calendar day of this column",
        f"  key_columns: [{', '.join(keys)}]      # unique within a day (columns named id, key, *_id, *_key)",
        f"  timezone: {timezone}",
        "",
        "features:",
        f"  numeric: [{', '.join(numeric)}]",
        f"  categorical: [{', '.join(categorical)}]",
    ]
    if skipped:
        lines.append(f"  # not used (neither number nor text): {', '.join(skipped)}")
    lines += [
        "",
        "target:",
        f"  column: {target}",
        f"  task: {task}      # from the target's type; check it",
        *label_lines,
        "",
        "validation:",
        "  min_rows: 1            # raise it to the fewest rows a normal day has",
        "  default_max_null_fraction: 0.2",
        "",
        "training:",
        "  window_days: 7",
        "  holdout_days: 1",
        "  folds: 3",
        f"  metric: {metric}",
        "  search_space:",
        "    linear: {C: [0.1, 1.0]}" if classification else "    linear: {alpha: [0.1, 1.0]}",
        "    xgboost: {max_depth: [3, 6], n_estimators: [100], learning_rate: [0.1]}",
        "",
    ]
    text = "\n".join(lines)
    parse_spec(text)  # the draft is a valid spec
    return text


def _label_source(labels: LabelDraft, keys: list[str], partition: str) -> list[str]:
    """The ``target`` lines of a label table: its lag, the table, and its partition column when it is
    not the features' (the label table's first timestamp)."""
    kinds = {f.name: _kind(f.type) for f in labels.schema}
    if not keys:
        raise ValueError(
            f"--label-table {labels.table}: labels are joined to the features by key, and no column of the "
            "feature table is named id, key, *_id or *_key; rename one in a view, or write key_columns"
        )
    missing = [k for k in keys if k not in kinds]
    if missing:
        raise ValueError(
            f"--label-table {labels.table} lacks the key column(s) {missing} of the features "
            f"(its columns: {', '.join(kinds)})"
        )
    lines = [
        f"  available_after_days: {labels.after_days}   # a day's labels are final this many days later",
        "  source:                  # the outcomes, in their own table, keyed like the features",
        f"    table: {labels.table}",
    ]
    if partition not in kinds:
        times = [c for c, k in kinds.items() if k == "time"]
        if not times:
            raise ValueError(
                f"--label-table {labels.table} has no {partition!r} column and no timestamp saying which "
                "day's row a label belongs to"
            )
        lines.append(f"    partition_column: {times[0]}   # the scored row's instant; check it")
    return lines


def columns_summary(schema: Sequence[pa.Field]) -> str:
    return ", ".join(f"{f.name} ({_kind(f.type)})" for f in schema)
