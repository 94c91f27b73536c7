"""Benchmark: the whole pipeline (``make demo``'s ``cormorant run``) against the compute inside it, at
the demo's size and at larger days.

    .venv/bin/python scripts/benchmark_pipeline.py [--scale 1 20] [--repeat 1]

Each run is ``scripts/demo.py`` in a fresh process and a fresh home: it seeds the embedded warehouse
(before the clock), then runs the real DAGs day by day as ``make demo`` does, with ``--scale`` times the
example's 900-1299 rows a day (scale 1 is the demo itself). What the run kept (``pipeline-time.json``,
written by ``cormorant run``) gives the pipeline's wall time; the compute inside it, the anchor measured
in the same run (extraction, a trial's fitting and scoring, batch scoring; :mod:`cormorant.ledger`);
their ratio (goal 2: at most 2x on the demo); and where the rest went: the tasks, the sweeps run
ahead of the train runs (and their wait for the warm trainers' warm-up), Airflow's bookkeeping around
each ``dag.test()``. The pipeline's fixed overhead is its wall time less its compute.
Results in ``benchmarks/results/pipeline-<timestamp>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

from bench_common import add_repeat, finish, median_run, say  # noqa: E402


def run(scale: int) -> dict:
    """One demo run at ``scale`` in a fresh home; its figures, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(prefix="cormorant-bench-pipeline-") as tmp:
        home = Path(tmp) / "demo"
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "demo.py"), "--home", str(home), "--scale", str(scale)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
        return figures(home, done.stdout, scale)


def figures(home: Path, stdout: str, scale: int) -> dict:
    """A finished demo run's figures: what ``cormorant run`` kept in ``home`` and the rows the demo
    says (``stdout``) it seeded."""
    kept = json.loads((home / "pipeline-time.json").read_text())
    seeded = re.search(r"Seeded the embedded warehouse: (\d+) rows over (\d+) days", stdout)
    compute, spent = kept["compute"], kept["spent"]
    wall, covered = compute["wall_seconds"], compute["compute_seconds"]
    return {
        "scale": scale,
        "rows": int(seeded.group(1)),
        "days": int(seeded.group(2)),
        "dag_runs": spent["runs"],
        "seconds": wall,
        "compute_seconds": covered,
        "ratio": compute["ratio"],
        "overhead_seconds": wall - covered,
        "compute_kinds": compute["kinds"],
        **{key: value for key, value in spent.items() if key != "runs"},
        "airflow_vs_compute": spent["airflow_seconds"] / covered,
    }


def render(results: list[dict]) -> str:
    lines = [
        "| rows a day (scale) | DAG runs | pipeline (s) | compute (s) | pipeline / compute (goal <= 2x on "
        "the demo) | overhead: pipeline - compute (s) | tasks (s) | sweeps ahead (s) | of which waiting "
        "for warm-up (s) | Airflow's bookkeeping (s) | Airflow's bookkeeping / compute |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| – | – | – | – | {r['error']} | – | – | – | – | – | – |")
            continue
        lines.append(
            f"| {r['rows'] // r['days']:,} ({r['scale']}x{', the demo' if r['scale'] == 1 else ''}) | "
            f"{r['dag_runs']} | {r['seconds']:.1f} | {r['compute_seconds']:.1f} | **{r['ratio']:.1f}x** | "
            f"{r['overhead_seconds']:.1f} | {r['task_seconds']:.1f} | {r['sweep_seconds']:.1f} | "
            f"{r['warm_up_wait_seconds']:.1f} | {r['airflow_seconds']:.1f} | {r['airflow_vs_compute']:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=int, nargs="+", default=[1, 20], help="rows a day, times the example's (1: the demo)"
    )
    add_repeat(parser)
    args = parser.parse_args(argv)
    results = [
        say(
            f"{scale}x the demo's rows:",
            median_run([run(scale) for _ in range(args.repeat)]),
            lambda r: (
                f"pipeline {r['seconds']:5.1f}s  compute {r['compute_seconds']:5.1f}s  "
                f"ratio {r['ratio']:.1f}x  Airflow's bookkeeping {r['airflow_seconds']:.1f}s"
            ),
        )
        for scale in args.scale
    ]
    return finish("pipeline", results, render(results))


if __name__ == "__main__":
    main()
