"""Benchmark: the spec's features suite on one lake partition, Cormorant's Great Expectations run
against the same rules written by hand in plain pandas and in pyarrow.

    .venv/bin/python scripts/benchmark_validation.py --rows 1000000

For each size it commits a partition shaped like the example's (nulls included) to a scratch lake,
then measures, each in a fresh process, from reading the partition to the verdict:

- ``cormorant``: what the validate DAG runs (read, :func:`cormorant.validation.validate_table` with the
  spec's expectations, the report's failures); its fixed start-up (imports and the first, empty run)
  is measured apart
- ``pandas`` and ``pyarrow``: every expectation of the same suite evaluated directly

It prints seconds, peak RSS and the ratio against ``pandas``, and keeps the results in
``benchmarks/results/validation-<timestamp>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

from bench_common import add_repeat, finish, median_run, peak_rss_mb, rss_mb, say, worker_result  # noqa: E402

METHODS = ("pyarrow", "pandas", "cormorant")
DAY = "2024-03-01"


def _kind(expectation) -> str:
    return type(expectation).__name__


def _pandas(frame, expectations) -> int:
    """Failed expectations of the suite, by hand in pandas."""
    failed = 0
    for e in expectations:
        kind = _kind(e)
        if kind == "ExpectTableRowCountToBeBetween":
            failed += len(frame) < e.min_value
        elif kind == "ExpectColumnToExist":
            failed += e.column not in frame.columns
        elif kind == "ExpectColumnValuesToBeUnique":
            failed += bool(frame[e.column].dropna().duplicated().any())
        elif kind == "ExpectColumnValuesToNotBeNull":
            failed += frame[e.column].notna().mean() < (e.mostly or 1.0)
        elif kind == "ExpectColumnValuesToBeBetween":
            values = frame[e.column].dropna()
            bad = (values < e.min_value) if e.min_value is not None else values != values
            if e.max_value is not None:
                bad |= values > e.max_value
            failed += bool(bad.any()) or bool(values.isna().any())
        elif kind == "ExpectColumnValuesToBeInSet":
            failed += bool((~frame[e.column].dropna().isin(e.value_set)).any())
    return int(failed)


def _pyarrow(table, expectations) -> int:
    """The same, in pyarrow compute."""
    import pyarrow as pa
    import pyarrow.compute as pc

    failed = 0
    for e in expectations:
        kind = _kind(e)
        column = table.column(e.column) if getattr(e, "column", None) in table.column_names else None
        if kind == "ExpectTableRowCountToBeBetween":
            failed += table.num_rows < e.min_value
        elif kind == "ExpectColumnToExist":
            failed += column is None
        elif kind == "ExpectColumnValuesToBeUnique":
            failed += pc.count_distinct(column).as_py() != len(column) - column.null_count
        elif kind == "ExpectColumnValuesToNotBeNull":
            failed += (1 - column.null_count / max(len(column), 1)) < (e.mostly or 1.0)
        elif kind == "ExpectColumnValuesToBeBetween":
            low = pc.min_max(column)
            bad = (e.min_value is not None and low["min"].as_py() < e.min_value) or (
                e.max_value is not None and low["max"].as_py() > e.max_value
            )
            nan = pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py()
            failed += bool(bad or nan)
        elif kind == "ExpectColumnValuesToBeInSet":
            present = pc.drop_null(column)
            failed += pc.any(pc.invert(pc.is_in(present, value_set=pa.array(e.value_set)))).as_py() or 0
    return int(failed)


def setup(work: Path, rows: list[int]) -> None:
    import pyarrow as pa
    from benchmark_inference import _frame, _spec

    from cormorant.lake import Lake
    from cormorant.warehouse import conform, lake_schema, raw_dataset, spec_types

    spec = _spec()
    for n in rows:
        table = pa.Table.from_pandas(_frame(n), preserve_index=False)
        schema = lake_schema(table.schema, spec_types(spec))
        Lake(work / f"lake-{n}").write_partition(
            raw_dataset(spec), DAY, (conform(b, schema) for b in table.to_batches(131_072)), schema=schema
        )


def worker(method: str, rows: int, work: Path) -> dict:
    from benchmark_inference import _spec

    from cormorant.lake import Lake
    from cormorant.validation import build_expectations, validate_frame, validate_table, validation_frame
    from cormorant.warehouse import raw_dataset

    spec = _spec()
    lake = Lake(work / f"lake-{rows}")
    expectations = build_expectations(spec, "features")
    startup = None
    if method == "cormorant":  # the fixed start-up: imports and one run on an empty frame
        began = time.perf_counter()
        with lake.opened(raw_dataset(spec), DAY) as part:  # the schema only: the run below reads it
            validate_frame(validation_frame(part.schema.empty_table()), spec, partition=DAY)
        startup = time.perf_counter() - began
    before = rss_mb()
    started = time.perf_counter()
    if method == "cormorant":  # as the validate task does: the partition's columns group by group
        with lake.opened(raw_dataset(spec), DAY) as part:
            result = validate_table(part, spec, partition=DAY)
        failed, evaluated = len(result.failures), result.evaluated
    elif method == "pandas":
        table = lake.read(raw_dataset(spec), DAY)
        failed, evaluated = _pandas(validation_frame(table), expectations), len(expectations)
    else:
        table = lake.read(raw_dataset(spec), DAY)
        failed, evaluated = _pyarrow(table, expectations), len(expectations)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    if method == "cormorant":  # its size, read after the measurement
        table = lake.read(raw_dataset(spec), DAY)
    return {
        "method": method,
        "rows": table.num_rows,
        "seconds": seconds,
        "startup_seconds": startup,
        "expectations": evaluated,
        "failed": failed,
        "peak_rss_mb": peak,
        "added_mb": peak - before,
        "partition_mb": table.nbytes / 2**20,
    }


def run(method: str, rows: int, work: Path) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--work", str(work), "--rows", str(rows)]
    return {"method": method, **worker_result(command)}


def render(results: list[dict]) -> str:
    lines = [
        "| rows | method | seconds | fixed start-up (s) | expectations (failed) | peak RSS (MB) | "
        "partition in memory (MB) | peak added by the run (MB) | added / partition | vs pandas |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(
                f"| {r['rows_requested']:,} | {r['method']} | – | – | – | – | – | – | – | {r['error']} |"
            )
            continue
        base = next(
            (
                x
                for x in results
                if x.get("method") == "pandas"
                and x["rows_requested"] == r["rows_requested"]
                and "error" not in x
            ),
            None,
        )
        ratio = f"{r['seconds'] / base['seconds']:.1f}x the time" if base else "–"
        startup = "–" if r["startup_seconds"] is None else f"{r['startup_seconds']:.1f}"
        name = f"**{r['method']}**" if r["method"] == "cormorant" else r["method"]
        lines.append(
            f"| {r['rows_requested']:,} | {name} | {r['seconds']:.2f} | {startup} | "
            f"{r['expectations']} ({r['failed']}) | {r['peak_rss_mb']:.0f} | {r['partition_mb']:.0f} | "
            f"{r['added_mb']:.0f} | {r['added_mb'] / r['partition_mb']:.1f}x | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    add_repeat(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.rows[0], Path(args.work))))
        sys.exit(0)

    results = []
    with tempfile.TemporaryDirectory(prefix="cormorant-bench-validation-") as tmp:
        work = Path(tmp)
        setup(work, args.rows)
        for n in args.rows:
            for method in METHODS:
                result = {
                    "rows_requested": n,
                    **median_run([run(method, n, work) for _ in range(args.repeat)]),
                }
                results.append(
                    say(
                        f"{n:>10,} {method:<10}",
                        result,
                        lambda r: (
                            f"{r['seconds']:>6.2f}s  {r['expectations']} expectations, {r['failed']} "
                            f"failed  peak RSS {r['peak_rss_mb']:>6.0f} MB (+{r['added_mb']:.0f} MB)"
                        ),
                    )
                )
    return finish("validation", results, render(results))


if __name__ == "__main__":
    main()
