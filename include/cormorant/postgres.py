"""The PostgreSQL fast path: ``COPY (query) TO STDOUT`` streamed into Arrow record batches.

The server renders CSV (in UTC) into a pipe; Arrow's multi-threaded CSV reader parses it in blocks
with the column types read from the query's result description, so memory stays bounded by the
block size whatever the table's size. Types map faithfully: integers, numeric(p, s) as decimals,
reals and doubles (including NaN and infinities), booleans, text, dates, and timestamps with and
without time zone (both in UTC), with NULLs kept apart from empty strings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Generator, Sequence
from typing import Any

import pyarrow as pa

log = logging.getLogger(__name__)

UNBOUNDED_NUMERIC = pa.string()  # numeric without precision keeps its exact text
_FIXED: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    26: pa.int64(),
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}


def arrow_type(type_oid: int, precision: int | None, scale: int | None) -> pa.DataType:
    """The Arrow type for a PostgreSQL result column (text for anything without a faithful match)."""
    if type_oid == 1700:
        if precision and 0 < precision <= 38:
            return pa.decimal128(precision, scale or 0)
        if precision and precision <= 76:
            return pa.decimal256(precision, scale or 0)
        return UNBOUNDED_NUMERIC
    return _FIXED.get(type_oid, pa.string())


def describe(cursor: Any, query: str, params: Sequence[Any]) -> pa.Schema:
    """The Arrow schema of a query's result, read from the server without fetching a row."""
    cursor.execute(f"SELECT * FROM ({query}) AS cormorant_describe LIMIT 0", params or None)
    return pa.schema([(d.name, arrow_type(d.type_code, d.precision, d.scale)) for d in cursor.description])


def copy_batches(
    conn: Any, query: str, params: Sequence[Any], *, block_size: int = 2 << 20
) -> tuple[pa.Schema, Generator[pa.RecordBatch]]:
    """Describe ``query`` and return its schema and a stream of its batches from ``COPY (query) TO STDOUT``.

    ``conn`` is a psycopg2 or psycopg 3 connection (``PostgresHook.get_conn()``). The COPY starts when
    the first batch is asked for, so a stream that is never read (say, the schema contract refused the
    source) sends nothing and leaves no thread on the connection. A server error, or a parse error, is
    raised from the iterator; the COPY is cancelled if the consumer stops early, and the stream's
    thread has finished by the time the iterator is closed.
    """
    import pyarrow.csv as csv

    cursor = conn.cursor()
    cursor.execute("SET TIME ZONE 'UTC'")
    schema = describe(cursor, query, params)
    psycopg3 = type(conn).__module__.split(".")[0] == "psycopg"
    if psycopg3:
        import psycopg

        bound = psycopg.ClientCursor(conn).mogrify(query, params or None)
    else:
        bound = cursor.mogrify(query, params or None).decode()
    copy_sql = f"COPY ({bound}) TO STDOUT WITH (FORMAT csv)"
    options = csv.ConvertOptions(
        column_types=dict(zip(schema.names, schema.types, strict=True)),
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )

    def batches() -> Generator[pa.RecordBatch]:
        read_fd, write_fd = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            sink = os.fdopen(write_fd, "wb", buffering=1 << 20)
            try:
                if psycopg3:
                    with cursor.copy(copy_sql) as copy:
                        for block in copy:
                            sink.write(block)
                else:
                    cursor.copy_expert(copy_sql, sink, size=1 << 20)
            except BaseException as e:  # handed to the consumer thread
                failure.append(e)
            finally:
                with contextlib.suppress(BrokenPipeError):  # the consumer stopped reading first
                    sink.close()

        producer = threading.Thread(target=produce, name="cormorant-copy", daemon=True)
        producer.start()
        source = os.fdopen(read_fd, "rb", buffering=1 << 20)
        completed = False
        try:
            # No rows (a holiday, a gap) is an empty stream, which Arrow refuses to open; a server error
            # also ends the stream early, and is raised below once the COPY thread has finished.
            if source.peek(1):
                reader = csv.open_csv(
                    source,
                    read_options=csv.ReadOptions(column_names=schema.names, block_size=block_size),
                    parse_options=csv.ParseOptions(newlines_in_values=True),
                    convert_options=options,
                )
                yield from reader
            completed = True
        except pa.ArrowInvalid as e:
            if not failure:
                raise ValueError(f"COPY output could not be parsed as {schema}: {e}") from e
        finally:
            if not completed and producer.is_alive():
                conn.cancel()
            source.close()
            producer.join()
        if failure:
            raise failure[0]

    return schema, batches()
