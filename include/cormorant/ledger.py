"""Where a pipeline run's time goes: the compute inside it, against its wall time.

When ``CORMORANT_COMPUTE_LEDGER`` names a file (``cormorant run`` sets it), the stages that do a
pipeline's real work append one line of JSON per piece of it: extraction from the warehouse, a
trial's cross-validation, refit and scoring, batch scoring. Each line holds the piece's start and end
on the wall clock, so pieces that ran side by side (a sweep's trials) count once, as the wall time
they covered. Everything else (process start-up, imports, Airflow's bookkeeping, MLflow calls,
validation, drift) is the pipeline's overhead. Nothing is written when the variable is unset.

:func:`time_spent` splits the same wall time the other way, by where the runner spent it: inside the
DAG runs' tasks, in sweeps run ahead of a train run's tasks (and, of those, waiting for the warm
trainers' warm-up), in Airflow's own bookkeeping around the tasks, and in the runner itself between runs.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

LEDGER_ENV = "CORMORANT_COMPUTE_LEDGER"
F = TypeVar("F", bound=Callable[..., Any])


def add(kind: str, start: float, end: float, **detail: Any) -> None:
    """Record ``kind`` of work between ``start`` and ``end`` (``time.time()`` values)."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    line = json.dumps({"kind": kind, "start": start, "end": end, "pid": os.getpid(), **detail})
    with open(path, "a") as ledger:  # one short append per line: whole lines under concurrent writers
        ledger.write(line + "\n")


def timed(kind: str) -> Callable[[F], F]:
    """Decorate a function whose every call is ``kind`` of work."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return function(*args, **kwargs)
            finally:
                add(kind, start, time.time())

        return wrapper  # type: ignore[return-value]

    return decorate


def covered_seconds(spans: list[tuple[float, float]]) -> float:
    """The wall time the spans cover together (overlaps counted once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def summarize(path: Path | str, wall_seconds: float) -> dict[str, Any]:
    """Per kind, the summed seconds and the wall time covered; overall, the covered compute and the
    ratio of the run's wall time to it."""
    entries = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    kinds: dict[str, dict[str, float]] = {}
    for kind in sorted({e["kind"] for e in entries}):
        spans = [(e["start"], e["end"]) for e in entries if e["kind"] == kind]
        kinds[kind] = {
            "seconds": sum(end - start for start, end in spans),
            "covered_seconds": covered_seconds(spans),
            "pieces": len(spans),
        }
    compute = covered_seconds([(e["start"], e["end"]) for e in entries])
    return {
        "wall_seconds": wall_seconds,
        "compute_seconds": compute,
        "ratio": wall_seconds / compute if compute else None,
        "kinds": kinds,
    }


def time_spent(wall_seconds: float, runs: list[dict[str, float]]) -> dict[str, float]:
    """Where a pipeline's ``wall_seconds`` went, from its DAG runs, each ``{"seconds", "task_seconds",
    "sweep_seconds", "warm_up_wait_seconds"}``: the tasks' time, the sweeps run ahead of train runs
    (``warm_up_wait_seconds`` of it waiting for warm trainers), Airflow's bookkeeping (each run's time
    outside its tasks and sweep) and the rest (the runner's own work between runs)."""
    in_runs = sum(r["seconds"] for r in runs)
    tasks = sum(r["task_seconds"] for r in runs)
    sweeps = sum(r["sweep_seconds"] for r in runs)
    return {
        "runs": len(runs),
        "task_seconds": tasks,
        "sweep_seconds": sweeps,
        "warm_up_wait_seconds": sum(r["warm_up_wait_seconds"] for r in runs),
        "airflow_seconds": max(0.0, in_runs - tasks - sweeps),
        "between_runs_seconds": max(0.0, wall_seconds - in_runs),
    }


def format_time_spent(spent: dict[str, float]) -> str:
    runs = spent["runs"]
    waited = spent["warm_up_wait_seconds"]
    return (
        f"Where it went: the tasks {spent['task_seconds']:.1f} s; sweeps run ahead of their train runs' "
        f"tasks {spent['sweep_seconds']:.1f} s"
        + (f" ({waited:.1f} s of it waiting for the warm trainers' warm-up)" if waited >= 0.05 else "")
        + f"; Airflow's bookkeeping around the tasks of {runs} run(s) {spent['airflow_seconds']:.1f} s"
        + (f" ({spent['airflow_seconds'] / runs:.2f} s a run)" if runs else "")
        + f"; the runner between runs {spent['between_runs_seconds']:.1f} s"
    )


def format_summary(summary: dict[str, Any]) -> str:
    parts = ", ".join(
        f"{kind} {k['seconds']:.1f} s in {k['pieces']}"
        + (
            f" (side by side: {k['covered_seconds']:.1f} s of wall time)"
            if k["covered_seconds"] < k["seconds"] - 0.05
            else ""
        )
        for kind, k in summary["kinds"].items()
    )
    ratio = summary["ratio"]
    return (
        f"Pipeline time {summary['wall_seconds']:.0f} s; the compute inside it "
        f"{summary['compute_seconds']:.1f} s ({parts}); pipeline time / compute: {ratio:.1f}x"
        if ratio
        else f"Pipeline time {summary['wall_seconds']:.0f} s; no compute recorded"
    )
