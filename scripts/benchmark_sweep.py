"""Benchmark: a whole sweep on the embedded default, its wall time against the compute inside it.

    .venv/bin/python scripts/benchmark_sweep.py [--days 7] [--repeat 1]

Plans the example spec's sweep (its search space: four trials) over ``--days`` days of the example data
in a scratch lake and MLflow store, then runs it as the embedded default does
(``cormorant.sweep.run_trials_locally``: trainer processes side by side, each running its share of
the trials with its share of the CPUs), once one trial process at a time (the anchor: how ``dag.test()``
ran a sweep before), once at the machine's parallelism, and once on warm trainer processes started
ahead of it (``cormorant.sweep.TrainerPool``, what ``cormorant run`` does; their imports done before
the clock starts). Each trial reports its compute (CV fits, the
refit, scoring); the goal is a sweep wall time of at most 1.25x (sum of trial compute / parallelism).
Every run starts from an empty MLflow store, so no trial is a cache hit.
Results in ``benchmarks/results/sweep-<timestamp>.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

from bench_common import add_repeat, finish, median_run, say  # noqa: E402
from benchmark_trial import SPEC, _env, setup  # noqa: E402


def run(home: Path, days: list[str], parallel: int, *, warm: bool = False) -> dict:
    from cormorant.lake import Lake
    from cormorant.spec import load_spec
    from cormorant.sweep import TrainerPool, plan_sweep, run_trials_locally, trial_threads_when_sharing

    store = Path(tempfile.mkdtemp(prefix="store-", dir=home))  # a new MLflow store: no cache hits
    os.environ.update(
        {
            **_env(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
            "CORMORANT_MLFLOW_ARTIFACT_URI": (store / "artifacts").as_uri(),
        }
    )
    setup_mlflow_only()
    spec = load_spec(SPEC)
    plan = plan_sweep(spec, Lake((home / "lake").as_uri()), days[-1], window_days=len(days))
    pool = TrainerPool(parallel) if warm else None
    try:
        if pool:  # started ahead, as `cormorant run` does: their imports are done before the clock
            pool.wait_ready()
        started = time.perf_counter()
        results = run_trials_locally(SPEC, plan["trials"], parallel=parallel, pool=pool)
        wall = time.perf_counter() - started
    finally:
        if pool:
            pool.close()
    failed = [r for r in results if r.get("status") != "ok"]
    if failed or len(results) != len(plan["trials"]):
        return {
            "error": f"{len(failed)} failed, {len(results)} of {len(plan['trials'])} came back: {failed[:1]}"
        }
    compute = sum(r["compute_seconds"] for r in results)
    return {
        "parallel": parallel,
        "warm": warm,
        "threads_per_trial": trial_threads_when_sharing(parallel),
        "trials": len(results),
        "seconds": wall,
        "compute_seconds": compute,
        "ideal_seconds": compute / parallel,
        "vs_ideal": wall / (compute / parallel),
    }


def setup_mlflow_only() -> None:
    """The MLflow store with the spec's experiment (creating the store is a one-off, not a sweep's)."""
    from cormorant.config import Settings
    from cormorant.spec import load_spec
    from cormorant.tracking import ensure_experiment

    ensure_experiment(load_spec(SPEC), Settings.from_env())


def render(results: list[dict]) -> str:
    lines = [
        "| trial processes at once | started | threads each | trials | sweep wall (s) "
        "| trial compute, summed (s) | compute / parallelism (s) | wall vs that (goal <= 1.25x) "
        "| vs one at a time |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = next((r for r in results if r.get("parallel") == 1 and not r.get("warm")), None)
    for r in results:
        if "error" in r:
            lines.append(f"| – | – | – | – | – | – | – | {r['error']} | – |")
            continue
        speedup = f"{base['seconds'] / r['seconds']:.2f}x" if base else "–"
        lines.append(
            f"| {r['parallel']} | {'ahead, warm' if r.get('warm') else 'by the sweep'} | "
            f"{r['threads_per_trial']} | {r['trials']} | {r['seconds']:.1f} | "
            f"{r['compute_seconds']:.1f} | {r['ideal_seconds']:.1f} | **{r['vs_ideal']:.2f}x** | {speedup} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    add_repeat(parser)
    parser.add_argument("--rows", help=argparse.SUPPRESS)  # make bench passes sizes; sweeps use days
    args = parser.parse_args(argv)

    from cormorant.sweep import local_trial_parallelism

    days = [(date(2024, 3, 1) + timedelta(days=i)).isoformat() for i in range(args.days)]
    results = []
    with tempfile.TemporaryDirectory(prefix="cormorant-bench-sweep-") as tmp:
        home = Path(tmp)
        setup(home, days, validated=True)
        parallel = local_trial_parallelism()
        for at_once, warm in sorted({(1, False), (parallel, False), (parallel, True)}):
            results.append(
                say(
                    f"{at_once} at once{' (warm)' if warm else ''}:",
                    median_run([run(home, days, at_once, warm=warm) for _ in range(args.repeat)]),
                    lambda r: (
                        f"wall {r['seconds']:5.1f}s  compute {r['compute_seconds']:5.1f}s  "
                        f"vs compute/parallelism {r['vs_ideal']:.2f}x"
                    ),
                )
            )
    return finish("sweep", results, render(results))


if __name__ == "__main__":
    main()
