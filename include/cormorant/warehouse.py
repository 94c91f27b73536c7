"""Warehouse to lake: select one data interval from a SQL source and commit it as a lake partition.

This is the generic path for any DB-API connection (the embedded SQLite warehouse, and any
``DbApiHook``'s ``get_conn()``): a cursor read with ``fetchmany`` so memory stays bounded by the batch
size, batches typed by the spec and streamed into the lake writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa

from cormorant.lake import Lake, Manifest
from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)

RAW = "raw"
TIMESTAMP = pa.timestamp("us", tz="UTC")


class SourceSchemaError(TypeError):
    """A source column cannot be read as the type the spec expects."""


def raw_dataset(spec: ModelSpec) -> str:
    return f"{spec.name}/{RAW}"


def partition_bounds(partition: str) -> tuple[datetime, datetime]:
    """The half-open UTC day ``[start, end)`` that a daily partition ``YYYY-MM-DD`` covers."""
    start = datetime.combine(date.fromisoformat(partition), datetime.min.time())
    return start, start + timedelta(days=1)


def build_extract_query(spec: ModelSpec, placeholder: str = "?") -> str:
    """The SQL selecting one interval of the source; identifiers were checked when the spec was parsed."""
    source = spec.source
    relation = source.table or f"({source.sql}) AS cormorant_source"
    col = source.partition_column
    return f"SELECT * FROM {relation} WHERE {col} >= {placeholder} AND {col} < {placeholder} ORDER BY {col}"


def spec_types(spec: ModelSpec) -> dict[str, pa.DataType]:
    """The Arrow type the lake stores for each column the spec knows."""
    types: dict[str, pa.DataType] = {spec.source.partition_column: TIMESTAMP}
    types.update({c: pa.float64() for c in spec.features.numeric})
    types.update({c: pa.string() for c in spec.features.categorical})
    types[spec.target.column] = pa.int64() if spec.is_classification else pa.float64()
    return types


def _to_arrow(name: str, values: Sequence[Any], target: pa.DataType | None) -> pa.Array:
    try:
        if target == TIMESTAMP:
            import pandas as pd

            stamps = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="mixed")
            return pa.array(stamps, type=TIMESTAMP)
        array = pa.array(values, from_pandas=True)
        if target is None:
            return array.cast(pa.string()) if pa.types.is_null(array.type) else array
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as e:
        sample = next((v for v in values if v is not None), None)
        raise SourceSchemaError(
            f"source column {name!r}: expected {target or 'a consistent type'}, "
            f"found {type(sample).__name__} values such as {sample!r}"
        ) from e


def _batches(
    cursor: Any, columns: list[str], types: dict[str, pa.DataType], batch_size: int
) -> Iterator[pa.RecordBatch]:
    schema: pa.Schema | None = None
    while rows := cursor.fetchmany(batch_size):
        data = list(zip(*rows, strict=True))
        arrays = [
            _to_arrow(name, data[i], types.get(name) or (schema.field(name).type if schema else None))
            for i, name in enumerate(columns)
        ]
        batch = pa.RecordBatch.from_arrays(arrays, names=columns)
        schema = schema or batch.schema
        yield batch.cast(schema) if not batch.schema.equals(schema) else batch


def extract_partition(
    connect: Callable[[], Any],
    spec: ModelSpec,
    partition: str,
    lake: Lake,
    *,
    placeholder: str = "?",
    batch_size: int = 50_000,
    lineage: dict[str, Any] | None = None,
    progress_every_s: float = 30.0,
) -> Manifest:
    """Select the rows of ``partition`` from the spec's source and commit them to the lake.

    ``connect`` returns a DB-API connection (a hook's ``get_conn``). Re-running replaces the
    partition exactly; a failure leaves the previous commit untouched.
    """
    query = build_extract_query(spec, placeholder)
    start, end = partition_bounds(partition)
    params = (start.strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%Y-%m-%d %H:%M:%S"))
    types = spec_types(spec)
    conn = connect()
    try:
        cursor = conn.cursor()
        cursor.execute(query, params)
        columns = [d[0] for d in cursor.description]
        batches = _batches(cursor, columns, types, batch_size)
        first = next(batches, None)
        schema = (
            first.schema
            if first is not None
            else pa.schema([(c, types.get(c, pa.string())) for c in columns])
        )
        began, last_report, rows = time.monotonic(), time.monotonic(), 0

        def counted() -> Iterator[pa.RecordBatch]:
            nonlocal last_report, rows
            for batch in ([first] if first is not None else []), batches:
                for b in batch:
                    rows += b.num_rows
                    if time.monotonic() - last_report >= progress_every_s:
                        elapsed = time.monotonic() - began
                        log.info("extract %s: %d rows, %.0f rows/s", partition, rows, rows / elapsed)
                        last_report = time.monotonic()
                    yield b

        manifest = lake.write_partition(
            raw_dataset(spec),
            partition,
            counted(),
            schema=schema,
            partition_column=spec.source.partition_column,
            source={"conn_id": spec.source.conn_id, "query": query, "params": list(params)},
            lineage=lineage,
        )
    finally:
        conn.close()
    elapsed = max(time.monotonic() - began, 1e-9)
    log.info(
        "extract %s: %d rows in %.1fs (%.0f rows/s)",
        partition,
        manifest.row_count,
        elapsed,
        manifest.row_count / elapsed,
    )
    return manifest
