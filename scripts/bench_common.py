"""What every benchmark shares: the machine it ran on, and keeping its results."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# where every run is kept; the tests' smoke runs point it at a temporary folder
RESULTS = Path(
    os.environ.get("CORMORANT_BENCH_RESULTS")
    or Path(__file__).resolve().parents[1] / "benchmarks" / "results"
)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM``, which starts afresh at exec. (``ru_maxrss``
    does not: a worker forked from a parent holding gigabytes would report the parent's pages.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now, in MB (``VmRSS``): a baseline for what a step adds."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_result(command: list[str], **kwargs: Any) -> dict[str, Any]:
    """Run a benchmark worker process; its result is the JSON on its last stdout line, or, when it
    failed, ``{"error": <its last stderr line>}``."""
    import subprocess

    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict[str, Any]], key: str = "seconds") -> dict[str, Any]:
    """Of repeated runs of one method, the one with the median ``key`` (the first error, if any run
    failed), with every run's ``key`` kept beside it: on a busy machine one run is not a figure."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[(len(ordered) - 1) // 2], f"{key}_runs": [round(r[key], 3) for r in runs]}


def add_repeat(parser: Any) -> None:
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; the median is kept")


def say(label: str, result: dict[str, Any], describe: Any, *, failed: str = "failed") -> dict[str, Any]:
    """Print one measured method's line, ``describe(result)`` or why it failed; returns ``result``."""
    print(
        f"  {label} " + (f"{failed}: {result['error']}" if "error" in result else describe(result)),
        flush=True,
    )
    return result


def finish(name: str, results: list[dict[str, Any]], table: str) -> dict[str, Any]:
    """Print the benchmark's table and keep its results."""
    print("\n" + table)
    return keep(name, results, table)


def keep(name: str, results: list[dict[str, Any]], table: str) -> dict[str, Any]:
    """Append ``<name>-<timestamp>.json`` and ``.md`` to benchmarks/results; returns what was kept."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = {"benchmark": name, "at": stamp, "machine": machine(), "results": results, "table": table}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(kept, indent=2, default=str))
    (RESULTS / f"{name}-{stamp}.md").write_text(f"Machine: {kept['machine']}\n\n{table}\n")
    print(f"\nKept in {RESULTS / name}-{stamp}.json and .md", flush=True)
    return kept
