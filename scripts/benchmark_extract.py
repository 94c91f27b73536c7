"""Benchmark: PostgreSQL table -> Parquet, Cormorant's path against what people write by hand.

    .venv/bin/pip install -r requirements-bench.txt      # ConnectorX, optional
    .venv/bin/python scripts/benchmark_extract.py --rows 1000000 10000000

For each size it fills a realistic 20-column table (in a scratch database it drops afterwards) and
measures, each in a fresh process so peak RSS is its own:

- ``cormorant``: Cormorant's extraction (COPY TO STDOUT -> Arrow -> Parquet, committed to a lake)
- ``pandas``: ``pandas.read_sql`` + ``DataFrame.to_parquet``
- ``connectorx``: ``connectorx.read_sql(..., return_type="arrow")`` + ``pyarrow.parquet.write_table``
- ``copy_devnull``: ``COPY (query) TO STDOUT`` into /dev/null, the ceiling

It prints rows/s, peak RSS and the ratios measured in the same run, and keeps them in
``benchmarks/results/extract-<timestamp>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

from bench_common import add_repeat, finish, median_run, peak_rss_mb, say, worker_result  # noqa: E402

TABLE = "bench_events"
QUERY = f"SELECT * FROM {TABLE} WHERE event_ts >= '2024-03-01 00:00:00' AND event_ts < '2024-03-02 00:00:00'"
CREATE = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE UNLOGGED TABLE {TABLE} AS
SELECT g AS id,
       timestamptz '2024-03-01 00:00:00+00' + (g % 86400) * interval '1 second' AS event_ts,
       date '2024-03-01' AS event_day,
       g % 1000 AS customer_segment,
       (g * 7) % 100000 AS account_id,
       (g % 37)::smallint AS store_id,
       random() * 1000 AS amount,
       random() AS score_a,
       random() * 10 AS score_b,
       random() * 100 - 50 AS delta,
       sqrt(g::double precision) AS magnitude,
       CASE WHEN g % 17 = 0 THEN NULL ELSE random() END AS sparse_metric,
       round((random() * 10000)::numeric, 2)::numeric(12, 2) AS price,
       (ARRAY['north', 'south', 'east', 'west'])[1 + g % 4] AS region,
       (ARRAY['card', 'bank', 'paypal'])[1 + g % 3] AS payment_method,
       (ARRAY['monthly', 'annual', 'two_year'])[1 + g % 3] AS contract_type,
       CASE WHEN g % 11 = 0 THEN NULL ELSE 'channel_' || (g % 25) END AS channel,
       md5(g::text) AS session_id,
       g % 2 = 0 AS is_active,
       timestamp '2020-01-01' + (g % 100000) * interval '1 minute' AS signup_at
FROM generate_series(1, %(rows)s) AS g;
"""
METHODS = ("copy_devnull", "cormorant", "connectorx", "pandas")


def worker(method: str, dsn: str, out_dir: Path) -> dict:
    """Run one method in this process; returns rows, seconds and this process's peak RSS."""
    import psycopg2

    # Libraries are imported before the clock starts: the run measures extraction, not imports.
    if method == "cormorant":
        import cormorant.lake
        import cormorant.postgres  # noqa: F401
    elif method == "pandas":
        import pandas  # noqa: F401
        import pyarrow.parquet
    elif method == "connectorx":
        import connectorx  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    started = time.perf_counter()
    rows = 0
    if method == "copy_devnull":
        with psycopg2.connect(dsn) as conn, open(os.devnull, "wb") as sink:
            cur = conn.cursor()
            cur.copy_expert(f"COPY ({QUERY}) TO STDOUT WITH (FORMAT csv)", sink, size=1 << 20)
            rows = cur.rowcount
    elif method == "cormorant":
        from cormorant.lake import Lake
        from cormorant.postgres import copy_batches

        conn = psycopg2.connect(dsn)
        schema, batches = copy_batches(conn, QUERY, [])
        manifest = Lake(out_dir / "lake").write_partition(
            "bench/raw", "2024-03-01", batches, schema=schema, partition_column="event_ts"
        )
        rows = manifest.row_count
        conn.close()
    elif method == "pandas":
        import pandas as pd

        conn = psycopg2.connect(dsn)
        frame = pd.read_sql(QUERY, conn)
        frame.to_parquet(out_dir / "pandas.parquet", compression="zstd")
        rows = len(frame)
        conn.close()
    elif method == "connectorx":
        import connectorx as cx
        import pyarrow.parquet as pq

        params = dict(p.split("=") for p in dsn.split())
        user, host, port, db = (
            params.get("user", "postgres"),
            params["host"],
            params["port"],
            params["dbname"],
        )
        uri = f"postgresql://{user}@{host}:{port}/{db}"
        table = cx.read_sql(uri, QUERY, return_type="arrow")
        pq.write_table(table, out_dir / "cx.parquet", compression="zstd")
        rows = table.num_rows
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    return {
        "method": method,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": peak,
    }


def run_method(method: str, dsn: str, memory_limit_gb: float) -> dict:
    def limit() -> None:  # a method that needs more fails with MemoryError instead of swapping the machine
        cap = int(memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    with tempfile.TemporaryDirectory(prefix="cormorant-bench-") as tmp:
        command = [sys.executable, __file__, "--worker", method, "--dsn", dsn, "--tmp", tmp]
        return {"method": method, **worker_result(command, preexec_fn=limit)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    add_repeat(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="5432")
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--memory-limit-gb", type=float, default=16.0, help="address-space cap per method")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.dsn, Path(args.tmp))))
        sys.exit(0)

    import psycopg2

    database = f"cormorant_bench_{os.getpid()}"
    admin_dsn = f"host={args.host} port={args.port} user={args.user} dbname=postgres"
    admin = psycopg2.connect(admin_dsn)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    dsn = f"host={args.host} port={args.port} user={args.user} dbname={database}"
    results = []
    try:
        for n in args.rows:
            with psycopg2.connect(dsn) as conn:
                began = time.perf_counter()
                conn.cursor().execute(CREATE.replace("%(rows)s", str(int(n))))
                conn.cursor().execute(f"ANALYZE {TABLE}")
            print(f"\n{n:,} rows x 20 columns loaded in {time.perf_counter() - began:.0f}s", flush=True)
            for method in args.methods:
                runs = [run_method(method, dsn, args.memory_limit_gb) for _ in range(args.repeat)]
                result = {"rows_requested": n, **median_run(runs)}
                results.append(
                    say(
                        f"{method:<13}",
                        result,
                        lambda r: (
                            f"{r['rows_per_s']:>12,.0f} rows/s  {r['seconds']:>7.1f}s  "
                            f"peak RSS {r['peak_rss_mb']:>7.0f} MB"
                        ),
                        failed="not run",
                    )
                )
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()

    return finish("extract", results, render(results))


def render(results: list[dict]) -> str:
    lines = [
        "| rows | method | rows/s | seconds | peak RSS (MB) | vs COPY ceiling | vs pandas |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in sorted({r["rows_requested"] for r in results}):
        group = {r["method"]: r for r in results if r["rows_requested"] == n and "error" not in r}
        ceiling = group.get("copy_devnull", {}).get("rows_per_s")
        pandas = group.get("pandas", {}).get("rows_per_s")
        for method, r in group.items():
            vs_ceiling = f"{r['rows_per_s'] / ceiling:.2f}x" if ceiling else "-"
            vs_pandas = f"{r['rows_per_s'] / pandas:.2f}x" if pandas else "-"
            lines.append(
                f"| {n:,} | {method} | {r['rows_per_s']:,.0f} | {r['seconds']:.1f} | "
                f"{r['peak_rss_mb']:.0f} | {vs_ceiling} | {vs_pandas} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
