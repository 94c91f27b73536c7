"""Where a pipeline run's time goes: the compute inside it, against its wall time.

When ``CORMORANT_COMPUTE_LEDGER`` names a file (``cormorant run`` sets it), the stages that do a
pipeline's real work append one line of JSON per piece of it: extraction from the warehouse, a
trial's cross-validation, refit and scoring, batch scoring. Each line holds the piece's start and end
on the wall clock, so pieces that ran side by side (a sweep's trials) count once, as the wall time
they covered. Everything else (process start-up, imports, Airflow's bookkeeping, MLflow calls,
validation, drift) is the pipeline's overhead. Nothing is written when the variable is unset.
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
