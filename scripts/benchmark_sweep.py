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
Every run starts from an empty MLflow store, so no trial is a cache hit, and from an empty ONNX graph
cache (``cormorant.graph_cache``: the MLP's export, kept per architecture), as a spec's first sweep;
the runs on processes at the machine's parallelism run again with the graph cache an earlier sweep
of the spec filled, as every later sweep finds it; and the warm trainers once more after they have run a
sweep (over the window a day earlier, in the same store), as every sweep after the first of a
``cormorant run`` finds them.
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


def run(
    home: Path,
    days: list[str],
    parallel: int,
    *,
    warm: bool = False,
    graphs: Path | None = None,
    after_a_sweep: bool = False,
) -> dict:
    """One sweep; ``graphs``: an ONNX graph cache an earlier sweep filled (None: a new, empty one);
    ``after_a_sweep``: on warm trainers that have run a sweep already (over the window a day earlier,
    unmeasured, in the same store: no trial of the measured one is a cache hit), as every sweep after
    the first of a ``cormorant run`` finds them."""
    from cormorant.lake import Lake
    from cormorant.spec import load_spec
    from cormorant.sweep import TrainerPool, plan_sweep, run_trials_locally, trial_threads_when_sharing

    store = Path(tempfile.mkdtemp(prefix="store-", dir=home))  # a new MLflow store: no cache hits
    os.environ.update(
        {
            **_env(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
            "CORMORANT_MLFLOW_ARTIFACT_URI": (store / "artifacts").as_uri(),
            "CORMORANT_GRAPH_CACHE": str(graphs or store / "graphs"),
        }
    )
    setup_mlflow_only()
    spec = load_spec(SPEC)
    plan = plan_sweep(spec, Lake((home / "lake").as_uri()), days[-1], window_days=len(days))
    pool = TrainerPool(parallel) if warm else None
    try:
        if pool:  # started ahead, as `cormorant run` does: their imports are done before the clock
            pool.wait_ready()
        if pool and after_a_sweep:
            earlier = plan_sweep(spec, Lake((home / "lake").as_uri()), days[-2], window_days=len(days) - 1)
            run_trials_locally(SPEC, earlier["trials"], parallel=parallel, pool=pool)
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
        "after_a_sweep": after_a_sweep,
        "graph_cache": "kept" if graphs else "empty",
        "graphs": os.environ["CORMORANT_GRAPH_CACHE"],
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
        "| trial processes at once | started | ONNX graph cache | threads each | trials | sweep wall (s) "
        "| trial compute, summed (s) | compute / parallelism (s) | wall vs that (goal <= 1.25x) "
        "| vs one at a time |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = next(
        (
            r
            for r in results
            if r.get("parallel") == 1 and not r.get("warm") and r.get("graph_cache") == "empty"
        ),
        None,
    )
    for r in results:
        if "error" in r:
            lines.append(f"| – | – | – | – | – | – | – | – | {r['error']} | – |")
            continue
        speedup = f"{base['seconds'] / r['seconds']:.2f}x" if base else "–"
        started = "by the sweep"
        if r.get("warm"):
            started = "ahead, warm; after a sweep" if r.get("after_a_sweep") else "ahead, warm"
        lines.append(
            f"| {r['parallel']} | {started} | "
            f"{'filled by an earlier sweep' if r.get('graph_cache') == 'kept' else 'empty'} | "
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
        kept = None  # the graph cache of the first sweep at the machine's parallelism
        methods = sorted({(1, False), (parallel, False), (parallel, True)})
        for at_once, warm, cached, after in [(*m, False, False) for m in methods] + [
            (parallel, False, True, False),
            (parallel, True, True, False),
            (parallel, True, True, True),
        ]:
            label = (
                f"{at_once} at once{' (warm)' if warm else ''}{', graphs kept' if cached else ''}"
                f"{', after a sweep' if after else ''}:"
            )
            runs = [
                run(home, days, at_once, warm=warm, graphs=kept if cached else None, after_a_sweep=after)
                for _ in range(args.repeat)
            ]
            if at_once == parallel and not cached and kept is None and "graphs" in runs[0]:
                kept = Path(runs[0]["graphs"])
            results.append(
                say(
                    label,
                    median_run(runs),
                    lambda r: (
                        f"wall {r['seconds']:5.1f}s  compute {r['compute_seconds']:5.1f}s  "
                        f"vs compute/parallelism {r['vs_ideal']:.2f}x"
                    ),
                )
            )
    return finish("sweep", results, render(results))


if __name__ == "__main__":
    main()
