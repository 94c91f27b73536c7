"""Warehouse to lake: select one data interval from a SQL source and commit it as a lake partition.

This is the generic path for any DB-API connection (the embedded SQLite warehouse, and any
``DbApiHook``'s ``get_conn()``): a cursor read with ``fetchmany`` so memory stays bounded by the batch
size, batches typed by the spec and streamed into the lake writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa

from cormorant import ledger
from cormorant.errors import CormorantError, closest, first_line
from cormorant.lake import Lake, Manifest
from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)

RAW = "raw"
TIMESTAMP = pa.timestamp("us", tz="UTC")


class SourceSchemaError(CormorantError, TypeError):
    """The source does not have the columns and types the spec expects (deterministic)."""


def raw_dataset(spec: ModelSpec) -> str:
    return f"{spec.name}/{RAW}"


def partition_bounds(partition: str, timezone: str = "UTC") -> tuple[datetime, datetime]:
    """The half-open day ``[start, end)`` that a daily partition ``YYYY-MM-DD`` covers: local midnight to
    the next local midnight in ``timezone``, as naive UTC datetimes (23 or 25 hours across a DST change)."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)
    day = date.fromisoformat(partition)

    def utc_midnight(d: date) -> datetime:
        local = datetime.combine(d, datetime.min.time(), tzinfo=zone)
        return local.astimezone(UTC).replace(tzinfo=None)

    return utc_midnight(day), utc_midnight(day + timedelta(days=1))


def day_params(spec: ModelSpec, partition: str) -> tuple[str, str]:
    """The bounds of a day as the extract queries' two parameters (UTC timestamps as text)."""
    start, end = partition_bounds(partition, spec.source.timezone)
    return start.strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%Y-%m-%d %H:%M:%S")


def source_relation(spec: ModelSpec) -> str:
    """The spec's table, or its SQL as a derived table."""
    return spec.source.table or f"({spec.source.sql}) AS cormorant_source"


def sort_columns(spec: ModelSpec) -> list[str]:
    """The order rows are extracted in: the partition column, then the key columns, then every other
    column the spec reads. Ties in the partition column would otherwise come back in whatever order
    the warehouse's sort leaves them, and the partition's content hash would change on every re-run."""
    source = spec.source
    return list(dict.fromkeys([source.partition_column, *source.key_columns, *spec.raw_columns]))


def build_extract_query(spec: ModelSpec, placeholder: str = "?") -> str:
    """The SQL selecting one interval of the source; identifiers were checked when the spec was parsed."""
    col = spec.source.partition_column
    order = ", ".join(sort_columns(spec))
    return (
        f"SELECT * FROM {source_relation(spec)} "
        f"WHERE {col} >= {placeholder} AND {col} < {placeholder} ORDER BY {order}"
    )


def relation_columns(conn: Any, relation: str) -> list[str]:
    """A table's (or a derived table's) column names, asked of the warehouse without reading a row."""
    cursor = conn.cursor()
    try:
        cursor.execute(f"SELECT * FROM {relation} WHERE 1 = 0")
        return [d[0] for d in cursor.description]
    finally:
        cursor.close()


def missing_relation(error: BaseException) -> bool:
    """Whether a driver's error says the table, view or schema does not exist (PostgreSQL and Redshift:
    SQLSTATE 42P01 or 3F000; SQLite: "no such table"): no retry will make it appear."""
    code = getattr(error, "pgcode", None) or getattr(getattr(error, "diag", None), "sqlstate", None)
    if code in ("42P01", "3F000"):
        return True
    text = str(error).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def source_columns(conn: Any, spec: ModelSpec) -> list[str]:
    """The source's column names; a source table that does not exist fails at once, naming the field."""
    relation = source_relation(spec)
    try:
        return relation_columns(conn, relation)
    except Exception as e:
        if missing_relation(e):
            where = "source.table" if spec.source.table else "source.sql"
            raise SourceSchemaError(
                f"spec {spec.name!r}: {where}: {relation} does not exist in connection "
                f"{spec.source.conn_id!r} ({first_line(e)})"
            ) from e
        raise


def query_batches(
    conn: Any, query: str, params: Sequence[Any], *, dialect: str, batch_size: int
) -> tuple[pa.Schema, Generator[pa.RecordBatch]]:
    """A query's schema and record batches: ``COPY ... TO STDOUT`` on PostgreSQL (``query`` uses ``%s``
    placeholders there), batched cursor reads anywhere else."""
    if dialect == "postgres":
        from cormorant.postgres import copy_batches

        return copy_batches(conn, query, params, block_size=max(batch_size * 160, 1 << 20))
    return cursor_batches(conn, query, params, batch_size)


def check_source_columns(spec: ModelSpec, found: Sequence[str]) -> None:
    """Fail before extracting when the source lacks a column the spec names, saying which spec field
    names it and the closest existing column (a driver error would name neither)."""
    problems = missing_column_problems(spec, found)
    if problems:
        where = spec.source.table or "the spec's source.sql"
        raise SourceSchemaError(
            f"spec {spec.name!r}, source {where}: {len(problems)} column(s) the spec names are missing "
            f"(the source has {', '.join(found)}):\n- " + "\n- ".join(problems)
        )


def missing_column_problems(spec: ModelSpec, found: Sequence[str]) -> list[str]:
    """One line per column the spec names that the source lacks: the spec field and the closest column."""
    fields: dict[str, str] = {spec.source.partition_column: "source.partition_column"}
    for column in spec.source.key_columns:
        fields.setdefault(column, "source.key_columns")
    for column in spec.features.numeric:
        fields.setdefault(column, "features.numeric")
    for column in spec.features.categorical:
        fields.setdefault(column, "features.categorical")
    if spec.labels_inline:  # labels that arrive later may come from elsewhere
        fields.setdefault(spec.target.column, "target.column")
    available = list(found)
    problems = []
    for column, field_name in fields.items():
        if column not in available:
            problems.append(
                f"{field_name}: column {column!r} does not exist in the source (dropped or renamed?)"
                + closest(column, available)
            )
    return problems


def spec_types(spec: ModelSpec) -> dict[str, pa.DataType]:
    """The Arrow type the lake stores for each column the spec knows."""
    types: dict[str, pa.DataType] = {spec.source.partition_column: TIMESTAMP}
    types.update({c: pa.float64() for c in spec.features.numeric})
    types.update({c: pa.string() for c in spec.features.categorical})
    types[spec.target.column] = pa.int64() if spec.is_classification else pa.float64()
    return types


def _to_arrow(name: str, values: Sequence[Any]) -> pa.Array:
    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        from collections import Counter

        kinds = Counter(type(v).__name__ for v in values if v is not None)
        usual = kinds.most_common(1)[0][0]
        odd = next(v for v in values if v is not None and type(v).__name__ != usual)
        raise SourceSchemaError(
            f"source column {name!r}: expected {usual} values, found {type(odd).__name__} {odd!r}"
        ) from e
    return array  # an all-null column stays null-typed; lake_schema and conform give it its type


def _cast(name: str, array: pa.Array, target: pa.DataType) -> pa.Array:
    if array.type == target:
        return array
    try:
        if pa.types.is_timestamp(target) and (
            pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
        ):
            import pandas as pd

            stamps = pd.to_datetime(pd.Series(array.to_pylist(), dtype=object), utc=True, format="mixed")
            return pa.array(stamps, type=target)
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError, TypeError) as e:
        sample = next((v for v in array.to_pylist() if v is not None), None)
        raise SourceSchemaError(
            f"source column {name!r}: expected {target}, found {array.type} values such as {sample!r}"
        ) from e


def lake_schema(source: pa.Schema, types: dict[str, pa.DataType]) -> pa.Schema:
    """The schema a partition is stored with: the spec's types for the columns it knows."""
    return pa.schema(
        [(f.name, types.get(f.name, pa.string() if pa.types.is_null(f.type) else f.type)) for f in source]
    )


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Cast a source batch to the lake schema, naming the column that cannot be cast."""
    arrays = [_cast(f.name, batch.column(i), f.type) for i, f in enumerate(schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def cursor_batches(
    conn: Any, query: str, params: Sequence[Any], batch_size: int
) -> tuple[pa.Schema, Generator[pa.RecordBatch]]:
    """The generic path: ``fetchmany`` through any DB-API cursor, typed from the first batch."""
    cursor = conn.cursor()
    cursor.execute(query, params)
    columns = [d[0] for d in cursor.description]

    def fetch() -> Iterator[pa.RecordBatch]:
        while rows := cursor.fetchmany(batch_size):
            data = list(zip(*rows, strict=True))
            yield pa.RecordBatch.from_arrays(
                [_to_arrow(c, data[i]) for i, c in enumerate(columns)], names=columns
            )

    stream = fetch()
    first = next(stream, None)

    def chained() -> Generator[pa.RecordBatch]:
        if first is not None:
            yield first
            yield from stream  # batches may differ in types (nulls, SQLite's dynamic typing): conform() casts

    if first is None:
        return pa.schema([(c, pa.null()) for c in columns]), chained()  # typed by the spec or as text
    return first.schema, chained()


def check_schema_contract(spec: ModelSpec, lake: Lake, partition: str, found: pa.Schema) -> None:
    """Fail on a dropped, renamed or retyped source column, naming it with the expected and found type.

    The contract is the source schema recorded by the latest committed partition (or, for the
    first partition, the columns the spec needs). New columns fail too unless the spec sets
    ``source.schema_evolution: additive``.
    """
    dataset = raw_dataset(spec)
    previous = [p for p in lake.partitions(dataset) if p != partition]
    recorded = lake.require(dataset, previous[-1]).source.get("schema") if previous else None
    found_types = {f.name: str(f.type) for f in found}
    problems = []
    if recorded:
        expected = {f["name"]: f["type"] for f in recorded}
        for name, type_ in expected.items():
            if name not in found_types:
                problems.append(
                    f"column {name!r} was dropped or renamed: expected {type_}, found no such column"
                )
            elif found_types[name] != type_ and "null" not in (type_, found_types[name]):
                problems.append(f"column {name!r} changed type: expected {type_}, found {found_types[name]}")
        added = [n for n in found_types if n not in expected]
        if added and spec.source.schema_evolution != "additive":
            problems.append(f"new column(s) {added} (set source.schema_evolution: additive to accept them)")
    else:
        problems += [
            f"column {c!r} is missing: expected by the spec, found no such column"
            for c in spec.raw_columns
            if c not in found_types
        ]
    if problems:
        where = spec.source.table or "the spec's SQL"
        raise SourceSchemaError(
            f"spec {spec.name!r}, source {where}, partition {partition}: the source schema "
            f"changed:\n- " + "\n- ".join(problems)
        )


@ledger.timed("extraction")
def extract_partition(
    connect: Callable[[], Any],
    spec: ModelSpec,
    partition: str,
    lake: Lake,
    *,
    dialect: str = "generic",
    placeholder: str = "?",
    batch_size: int = 50_000,
    lineage: dict[str, Any] | None = None,
    progress_every_s: float = 30.0,
) -> Manifest:
    """Select the rows of ``partition`` from the spec's source and commit them to the lake.

    ``connect`` returns a DB-API connection (a hook's ``get_conn``). ``dialect="postgres"`` streams
    with ``COPY ... TO STDOUT`` (:mod:`cormorant.postgres`); anything else reads with ``fetchmany``.
    Re-running replaces the partition exactly; any failure leaves the previous commit untouched.
    """
    query = build_extract_query(spec, "%s" if dialect == "postgres" else placeholder)
    params = day_params(spec, partition)
    began = time.monotonic()
    conn = connect()
    batches: Generator[pa.RecordBatch] | None = None
    try:
        check_source_columns(spec, source_columns(conn, spec))
        source_schema, batches = query_batches(conn, query, params, dialect=dialect, batch_size=batch_size)
        check_schema_contract(spec, lake, partition, source_schema)
        schema = lake_schema(source_schema, spec_types(spec))
        counters = {"rows": 0, "bytes": 0, "reported": time.monotonic()}

        def counted() -> Iterator[pa.RecordBatch]:
            for batch in batches:
                out = conform(batch, schema)
                counters["rows"] += out.num_rows
                counters["bytes"] += out.nbytes
                if time.monotonic() - counters["reported"] >= progress_every_s:
                    elapsed = time.monotonic() - began
                    log.info(
                        "extract %s: %d rows, %.1f MB, %.0f rows/s",
                        partition,
                        counters["rows"],
                        counters["bytes"] / 1e6,
                        counters["rows"] / elapsed,
                    )
                    counters["reported"] = time.monotonic()
                yield out

        manifest = lake.write_partition(
            raw_dataset(spec),
            partition,
            counted(),
            schema=schema,
            partition_column=spec.source.partition_column,
            source={
                "conn_id": spec.source.conn_id,
                "dialect": dialect,
                "query": query,
                "params": list(params),
                "schema": [{"name": f.name, "type": str(f.type)} for f in source_schema],
            },
            lineage=lineage,
        )
    finally:
        if batches is not None:
            batches.close()  # ends (and cancels) a COPY still streaming before its connection closes
        conn.close()
    elapsed = max(time.monotonic() - began, 1e-9)
    log.info(
        "extract %s: %d rows, %.1f MB in %.1fs (%.0f rows/s)",
        partition,
        manifest.row_count,
        counters["bytes"] / 1e6,
        elapsed,
        manifest.row_count / elapsed,
    )
    return manifest
