"""Labels: what actually happened to each scored row, landed as a lake dataset of its own.

Features are known when a day ends; outcomes (did the customer churn?) often weeks later. A spec says
which: ``target.available_after_days: k`` (the label of day D is final on day D + k, and is read then)
and, optionally, ``target.source`` (a table or SQL keyed like the features). Either way the labels of
day D are one partition of ``<spec>/labels``: the key columns, the partition column and the target.

- Labels that come with the features (``k = 0`` and no label source) are taken from the feature
  partition itself when it is validated (:func:`labels_from_features`).
- Labels that arrive later are extracted from the label source (:func:`extract_labels`) by the spec's
  labels DAG, on day D + k.

The labels suite (:mod:`cormorant.validation`) gates them. Training joins features and labels by key
and leaves out the rows whose label is not known (yet), counting them (:func:`training_table`);
performance monitoring joins predictions and labels the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from cormorant import ledger
from cormorant.errors import CormorantError, NothingToDo, PartitionNotValidated
from cormorant.lake import Lake, Manifest
from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)

LABELS = "labels"


class LabelsNotLanded(NothingToDo, LookupError):
    """The labels of a day are not in the lake (yet: they are final ``available_after_days`` later)."""


class LabelSourceError(CormorantError, ValueError):
    """The label source lacks a column the spec names, or its keys cannot be matched (deterministic)."""


def labels_dataset(spec: ModelSpec) -> str:
    return f"{spec.name}/{LABELS}"


def label_report_key(spec: ModelSpec, partition: str) -> str:
    return f"{spec.name}/reports/labels/ds={partition}/result.json"


def label_types(spec: ModelSpec) -> dict[str, pa.DataType]:
    """The lake's types for the label columns the spec types (the partition column and the target)."""
    from cormorant.warehouse import spec_types

    return {c: t for c, t in spec_types(spec).items() if c in spec.label_columns}


def labels_from_features(
    spec: ModelSpec, lake: Lake, partition: str, *, lineage: dict[str, Any] | None = None
) -> Manifest:
    """Labels that come with the features: the feature partition's keys, partition column and target,
    committed as the day's label partition (recording the feature commit they were taken from)."""
    from cormorant.warehouse import raw_dataset

    raw = lake.require(raw_dataset(spec), partition)
    present = {f["name"] for f in raw.schema}
    if spec.target.column not in present:
        raise LabelSourceError(
            f"spec {spec.name!r}, partition {partition}: target.column {spec.target.column!r} is not in "
            f"the feature source; if labels arrive separately, set target.source (and "
            f"target.available_after_days)"
        )
    table = lake.read(raw_dataset(spec), partition, columns=spec.label_columns)
    schema = pa.schema([table.schema.field(c) for c in spec.label_columns])
    return lake.write_partition(
        labels_dataset(spec),
        partition,
        table.to_batches(),
        schema=schema,
        partition_column=spec.source.partition_column,
        source={"from": "features", "raw_content_hash": raw.content_hash},
        lineage=lineage,
    )


def label_relation(spec: ModelSpec) -> tuple[str, str]:
    """(the label source as a relation, the label source's partition column)."""
    from cormorant.warehouse import source_relation

    own = spec.target.source
    if own is None:
        return source_relation(spec), spec.source.partition_column
    relation = own.table or f"({own.sql}) AS cormorant_labels"
    return relation, own.partition_column or spec.source.partition_column


def label_conn_id(spec: ModelSpec) -> str:
    own = spec.target.source
    return (own.conn_id if own is not None else None) or spec.source.conn_id


def build_label_query(spec: ModelSpec, placeholder: str = "?") -> str:
    """One day of labels, ordered by the partition column and the keys (a stable content hash)."""
    relation, column = label_relation(spec)
    keys = spec.source.key_columns
    partition = spec.source.partition_column
    select = [*keys, column if column == partition else f"{column} AS {partition}", spec.target.column]
    return (
        f"SELECT {', '.join(select)} FROM {relation} "
        f"WHERE {column} >= {placeholder} AND {column} < {placeholder} "
        f"ORDER BY {', '.join([column, *keys])}"
    )


def check_label_columns(spec: ModelSpec, found: list[str]) -> None:
    from cormorant.errors import closest

    _, column = label_relation(spec)
    problems = [
        f"{field}: column {name!r} does not exist in the label source" + closest(name, found)
        for name, field in [
            *((k, "source.key_columns") for k in spec.source.key_columns),
            (column, "target.source.partition_column"),
            (spec.target.column, "target.column"),
        ]
        if name not in found
    ]
    if problems:
        relation, _ = label_relation(spec)
        raise LabelSourceError(
            f"spec {spec.name!r}, label source {relation}: {len(problems)} column(s) the spec names are "
            f"missing (it has {', '.join(found)}):\n- " + "\n- ".join(problems)
        )


@ledger.timed("extraction")
def extract_labels(
    connect: Callable[[], Any],
    spec: ModelSpec,
    partition: str,
    lake: Lake,
    *,
    dialect: str = "generic",
    placeholder: str = "?",
    batch_size: int = 50_000,
    lineage: dict[str, Any] | None = None,
) -> Manifest:
    """Read one day of labels from the label source and commit them (atomically) to the lake."""
    from cormorant.errors import first_line
    from cormorant.warehouse import (
        conform,
        day_params,
        lake_schema,
        missing_relation,
        query_batches,
        relation_columns,
    )

    query = build_label_query(spec, "%s" if dialect == "postgres" else placeholder)
    params = day_params(spec, partition)
    relation, _ = label_relation(spec)
    conn = connect()
    batches = None
    try:
        try:
            found = relation_columns(conn, relation)
        except Exception as e:
            if not missing_relation(e):
                raise  # a lost connection, say: the task's retries apply
            raise LabelSourceError(
                f"spec {spec.name!r}: target.source: the label source {relation} does not exist in "
                f"connection {label_conn_id(spec)!r} ({first_line(e)})"
            ) from e
        check_label_columns(spec, found)
        source_schema, batches = query_batches(conn, query, params, dialect=dialect, batch_size=batch_size)
        schema = lake_schema(source_schema, label_types(spec))
        manifest = lake.write_partition(
            labels_dataset(spec),
            partition,
            (conform(batch, schema) for batch in batches),
            schema=schema,
            partition_column=spec.source.partition_column,
            source={"from": "label_source", "conn_id": label_conn_id(spec), "query": query, "params": params},
            lineage=lineage,
        )
    finally:
        if batches is not None:
            batches.close()
        conn.close()
    log.info("labels %s/%s: %d rows from %s", spec.name, partition, manifest.row_count, relation)
    return manifest


def validate_labels(spec: ModelSpec, lake: Lake, partition: str) -> tuple[Any, str]:
    """Run the labels suite on the day's label partition and keep its report; (result, report URI)."""
    from cormorant.validation import validate_partition

    result = validate_partition(lake, labels_dataset(spec), partition, spec, suite="labels")
    if not spec.labels_inline:
        _check_key_match(spec, lake, partition, result)
    return result, lake.write_json(label_report_key(spec, partition), result.to_dict())


KEY_MATCH = "labels_match_feature_rows"


def _check_key_match(spec: ModelSpec, lake: Lake, partition: str, result: Any) -> None:
    """Add to ``result`` whether the day's labels belong to its feature rows: labels keyed by values
    that match none of the rows scored that day (a wrong key column, a join on the wrong day) pass
    every per-column check, and would leave performance and training with nothing, silently. Fails
    when no feature row has a label, or fewer than ``target.min_labelled_fraction`` of them do."""
    import pyarrow.compute as pc

    from cormorant.warehouse import raw_dataset

    keys = spec.source.key_columns
    if lake.manifest(raw_dataset(spec), partition) is None:
        return  # no features that day to match (the features suite says why)
    features = lake.read(raw_dataset(spec), partition, columns=keys)
    if features.num_rows == 0:
        return
    marker = "__cormorant_labelled"
    try:
        joined = join_labels(spec, lake, partition, features, matched=marker)
    except LabelSourceError as e:
        matched, detail = 0, str(e)
    else:
        matched, detail = int(pc.sum(pc.is_valid(joined.column(marker))).as_py() or 0), ""
    fraction = matched / features.num_rows
    wanted = spec.target.min_labelled_fraction
    ok = matched > 0 and fraction >= wanted
    entry = {"expectation": KEY_MATCH, "column": ", ".join(keys), "success": ok}
    result.expectations.append(entry)
    result.evaluated += 1
    if ok:
        return
    detail = detail or (
        f"{matched} of the day's {features.num_rows} feature rows have a label "
        f"({fraction:.1%}; expected {'at least ' + format(wanted, '.1%') if wanted else 'some'}), "
        f"matched on source.key_columns {keys}"
    )
    result.failures.append({**entry, "detail": detail})
    result.success = False


def require_labels(spec: ModelSpec, lake: Lake, partition: str) -> Manifest:
    """The day's label commit if it passed the labels suite for exactly this commit (and, for labels
    taken from the features, for the current feature commit).

    Raises :class:`LabelsNotLanded` when there are none yet, and :class:`PartitionNotValidated`
    otherwise: retryable when not validated yet or the features were re-ingested since, deterministic
    when the labels failed their suite (naming the failed expectations)."""
    from cormorant.warehouse import raw_dataset

    where = f"spec {spec.name!r}, labels of {partition}"
    manifest = lake.manifest(labels_dataset(spec), partition)
    if manifest is None:
        k = spec.target.available_after_days
        when = f"; they are final {k} day(s) after the day" if k else ""
        raise LabelsNotLanded(f"{where}: not in the lake yet{when}")
    if manifest.source.get("from") == "features":
        raw = lake.manifest(raw_dataset(spec), partition)
        if raw is None or raw.content_hash != manifest.source.get("raw_content_hash"):
            raise PartitionNotValidated(
                f"{where}: taken from an earlier commit of the features; validate the day again",
                retryable=True,
            )
    report = lake.read_json(label_report_key(spec, partition))
    if report is None or report.get("content_hash") != manifest.content_hash:
        raise PartitionNotValidated(f"{where}: not validated yet (labels suite)", retryable=True)
    if not report.get("success"):
        failed = "; ".join(
            f"{f['expectation']} on {f['column'] or 'the table'}: {f['detail']}"
            for f in report.get("failures", [])
        )
        raise PartitionNotValidated(
            f"{where} failed validation, so they are not used: {failed} "
            f"(report {lake.uri(label_report_key(spec, partition))})",
            retryable=False,
        )
    return manifest


def _align_keys(spec: ModelSpec, labels: pa.Table, like: pa.Schema, partition: str) -> pa.Table:
    """Cast the labels' key columns to the features' types, naming a key that cannot be matched."""
    for key in spec.source.key_columns:
        wanted = like.field(key).type
        column = labels.column(key)
        if column.type != wanted:
            try:
                labels = labels.set_column(labels.schema.get_field_index(key), key, column.cast(wanted))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise LabelSourceError(
                    f"spec {spec.name!r}, partition {partition}: key column {key!r} is {column.type} in "
                    f"the labels and {wanted} in the features; they cannot be matched"
                ) from e
    return labels


def join_labels(
    spec: ModelSpec, lake: Lake, partition: str, table: pa.Table, *, matched: str | None = None
) -> pa.Table:
    """``table`` (rows of day ``partition`` with the key columns) with the day's target column added
    from its labels, in ``table``'s row order; rows without a label get a null target. ``matched``:
    also add a column of that name, true where the label source has a row for the key (whose target
    may be null: the source says the row has no outcome), null where it has none."""
    import pyarrow.compute as pc

    keys = spec.source.key_columns
    labels = lake.read(labels_dataset(spec), partition, columns=[*keys, spec.target.column])
    labels = _align_keys(spec, labels, table.schema, partition)
    if matched:
        labels = labels.append_column(matched, pa.array([True] * labels.num_rows, type=pa.bool_()))
    position = "__cormorant_row"
    left = table.drop_columns([c for c in [spec.target.column] if c in table.column_names])
    left = left.append_column(position, pa.array(range(left.num_rows), type=pa.int64()))
    joined = left.join(labels, keys=keys, join_type="left outer", use_threads=False)
    joined = joined.take(pc.sort_indices(joined.column(position)))
    return joined.drop_columns([position])


def training_table(spec: ModelSpec, lake: Lake, partition: str) -> pa.Table:
    """One day's rows for training: features with their labels; rows whose label is not known (no
    label row, or a null one) are left out and counted in the log."""
    import pyarrow.compute as pc

    from cormorant.warehouse import raw_dataset

    if spec.labels_inline:
        table = lake.read(raw_dataset(spec), partition, columns=spec.required_columns)
    else:
        features = lake.read(raw_dataset(spec), partition, columns=spec.raw_columns)
        table = join_labels(spec, lake, partition, features)
    unknown = table.column(spec.target.column).null_count
    if unknown:
        log.info(
            "spec %s, partition %s: %d of %d rows have no known label (the label source lists them "
            "without an outcome, or not at all) and are left out of training",
            spec.name,
            partition,
            unknown,
            table.num_rows,
        )
        table = table.filter(pc.is_valid(table.column(spec.target.column)))
    return table
