"""Benchmark: a drift check of one partition against its training reference, Cormorant's streamed check
against Evidently's DataDriftPreset on the same data.

    .venv/bin/python scripts/benchmark_drift.py --rows 1000000 --features 10
    .venv/bin/python scripts/benchmark_drift.py --rows 10000000 --features 30 --methods cormorant

The data: ``--features`` numeric columns (normal, a few shifted, 1% nulls) and a score, a 100k-row
reference (the training frame) and a current partition of ``--rows`` rows committed to a scratch lake.
Each method runs in a fresh process (imports before the clock), so peak RSS is its own:

- ``cormorant``: :func:`cormorant.drift.stream_compare` (PSI on the reference's bins and KS per feature
  and for the score, read in record batches), from the reference profile built at training time
- ``evidently``: ``Report([DataDriftPreset()])`` on the reference and current frames read from Parquet.
  Evidently does not import under pandas 3, so it runs in a virtual environment of its own
  (``.cormorant/bench-venvs/evidently``: evidently 0.7.23, pandas 2, the same numpy as Cormorant's),
  created on first use.

It prints seconds, peak RSS and the speed ratio against Evidently, and keeps the results in
``benchmarks/results/drift-<timestamp>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

from bench_common import add_repeat, finish, median_run, peak_rss_mb, say, worker_result  # noqa: E402

EVIDENTLY_VENV = ROOT / ".cormorant" / "bench-venvs" / "evidently"
EVIDENTLY = "evidently==0.7.23"
DAY = "2024-03-01"
REFERENCE_ROWS = 100_000

EVIDENTLY_WORKER = """
import json, sys, time
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
reference = pd.read_parquet(sys.argv[1]); current = pd.read_parquet(sys.argv[2])
started = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
result = snapshot.dict()
seconds = time.perf_counter() - started
print(json.dumps({"method": "evidently", "rows": len(current), "seconds": seconds,
                  "peak_rss_mb": [int(line.split()[1]) / 1024 for line in open("/proc/self/status")
                                  if line.startswith("VmHWM:")][0]}))
"""


def _spec(features: int):
    import yaml

    from cormorant.spec import parse_spec

    raw = yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())
    raw["name"] = "driftbench"
    raw["features"] = {"numeric": [f"x{i}" for i in range(features)], "categorical": []}
    raw["validation"]["columns"] = {}
    raw["drift"]["features"] = {}
    return parse_spec(yaml.safe_dump(raw))


def _columns(rows: int, features: int, seed: int, shift: float):
    import numpy as np

    rng = np.random.default_rng(seed)
    data = {}
    for i in range(features):
        values = rng.normal(shift if i % 5 == 0 else 0.0, 1.0, rows)
        values[rng.random(rows) < 0.01] = np.nan
        data[f"x{i}"] = values
    return data


def setup(work: Path, rows: int, features: int) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cormorant.drift import build_reference
    from cormorant.inference import predictions_dataset
    from cormorant.lake import Lake
    from cormorant.warehouse import raw_dataset

    spec = _spec(features)
    reference = pd.DataFrame(_columns(REFERENCE_ROWS, features, 0, 0.0))
    scores = np.random.default_rng(1).random(REFERENCE_ROWS)
    (work / "reference.json").write_text(json.dumps(build_reference(reference, scores, spec)))
    pq.write_table(
        pa.Table.from_pandas(reference.assign(score=scores), preserve_index=False), work / "reference.parquet"
    )
    lake = Lake(work / "lake")
    chunk = 1_000_000
    with pq.ParquetWriter(
        work / "current.parquet", pa.schema([(c, pa.float64()) for c in [*reference.columns, "score"]])
    ) as flat:

        def batches(with_score: bool):
            for start in range(0, rows, chunk):
                n = min(chunk, rows - start)
                data = _columns(n, features, 10 + start // chunk, 0.3)
                score = np.random.default_rng(start).random(n)
                # in the lake's usual layout: row groups of 128k rows, as ingest and predict write them
                if with_score:
                    flat.write_table(pa.table({**data, "score": score}))
                    yield from pa.table({"score": score}).to_batches(131_072)
                else:
                    yield from pa.table(data).to_batches(131_072)

        lake.write_partition(raw_dataset(spec), DAY, batches(False))
        lake.write_partition(predictions_dataset(spec), DAY, batches(True))


def worker(features: int, work: Path) -> dict:
    import pyarrow.compute  # noqa: F401  (imports before the clock, as for Evidently)
    import scipy.stats  # noqa: F401

    import cormorant.inference  # noqa: F401
    from cormorant.drift import stream_compare
    from cormorant.lake import Lake

    spec = _spec(features)
    reference = json.loads((work / "reference.json").read_text())
    started = time.perf_counter()
    report = stream_compare(reference, Lake(work / "lake"), spec, DAY)
    seconds = time.perf_counter() - started
    return {
        "method": "cormorant",
        "rows": report["rows"],
        "seconds": seconds,
        "drifted": len(report["drifted_features"]),
        "peak_rss_mb": peak_rss_mb(),
    }


def evidently_python() -> Path:
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        import numpy

        print(f"creating {EVIDENTLY_VENV} ({EVIDENTLY}, pandas 2, numpy {numpy.__version__})", flush=True)
        subprocess.run([sys._base_executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, EVIDENTLY, f"numpy=={numpy.__version__}", "pandas<3", "pyarrow"], check=True)
    return python


def run(method: str, features: int, work: Path) -> dict:
    if method == "cormorant":
        command = [sys.executable, __file__, "--worker", "--features", str(features), "--work", str(work)]
    else:
        code = EVIDENTLY_WORKER
        command = [
            str(evidently_python()),
            "-c",
            code,
            str(work / "reference.parquet"),
            str(work / "current.parquet"),
        ]
    return {"method": method, **worker_result(command)}


def render(results: list[dict]) -> str:
    lines = [
        "| rows x features | method | seconds | peak RSS (MB) | speed vs Evidently |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        size = f"{r['rows_requested']:,} x {r['features']}"
        if "error" in r:
            lines.append(f"| {size} | {r['method']} | – | – | {r['error']} |")
            continue
        same = [x for x in results if x["rows_requested"] == r["rows_requested"] and "error" not in x]
        base = next((x for x in same if x["method"] == "evidently"), None)
        ratio = f"{base['seconds'] / r['seconds']:.1f}x" if base else "–"
        name = f"**{r['method']}**" if r["method"] == "cormorant" else f"{r['method']} (own venv, pandas 2)"
        lines.append(f"| {size} | {name} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    add_repeat(parser)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=["evidently", "cormorant"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.features, Path(args.work))))
        sys.exit(0)

    results = []
    for n in args.rows:
        with tempfile.TemporaryDirectory(prefix="cormorant-bench-drift-") as tmp:
            work = Path(tmp)
            setup(work, n, args.features)
            for method in args.methods:
                runs = [run(method, args.features, work) for _ in range(args.repeat)]
                result = {"rows_requested": n, "features": args.features, **median_run(runs)}
                results.append(
                    say(
                        f"{n:>11,} x {args.features} {method:<10}",
                        result,
                        lambda r: f"{r['seconds']:>7.2f}s  peak RSS {r['peak_rss_mb']:>6.0f} MB",
                    )
                )
    return finish("drift", results, render(results))


if __name__ == "__main__":
    main()
