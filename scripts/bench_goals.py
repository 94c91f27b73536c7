"""Where each goal of the performance issue (#11) stands, read off the benchmarks' kept results.

    .venv/bin/python scripts/bench_goals.py     # the goals of the run docs/benchmarks.md shows

``make bench`` writes this table at the top of the ``latest-run`` block of ``docs/benchmarks.md`` and
prints it at the end, from the same JSON files the block's sections name, so a verdict is never older
or newer than the figures beside it. A goal whose sizes a run did not measure (the 5M and 10M ones need
``--full``; the GPU needs an NVIDIA GPU) says so instead of a verdict; the GPU goal falls back to the
latest GPU run kept in ``benchmarks/results/`` and says which machine that was.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SWEEP_MAX = 1.25  # sweep wall time / (summed trial compute / parallelism)
TRIAL_FIXED_MAX = 3.0  # seconds of a trial beyond its fitting and scoring
PIPELINE_MAX = 2.0  # the demo's pipeline time / the compute inside it
VALIDATION_TIME_MAX = 3.0  # against the same rules in plain pandas
VALIDATION_STARTUP_MAX = 3.0  # seconds
VALIDATION_MEMORY_MAX = 2.0  # memory the run adds / the partition's in-memory size
INFERENCE_MIN = 1.0  # rows/s against native XGBoost inplace_predict
FLAT_MEMORY_MAX = 1.25  # peak RSS at the largest size / at the smallest
PARITY_MAX = 1e-6  # Cormorant's scores against ONNX Runtime's on the same model
DRIFT_SPEED_MIN = 20.0  # against Evidently's DataDriftPreset
DRIFT_MEMORY_MB = 1024.0  # 10M rows x 30 features
EXTRACT_MIN = 0.85  # rows/s against the raw COPY ceiling
GPU_MIN = 10.0  # a 10M-row trial's CPU time / its GPU time
GPU_ROWS = 10_000_000


@dataclass(frozen=True)
class Verdict:
    goal: str
    target: str
    measured: str
    met: bool | None  # None: the run did not measure what the goal asks
    source: str


def _rows(kept: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [r for r in (kept or {}).get("results", []) if "error" not in r]


def _source(kept: dict[str, Any] | None) -> str:
    return f"{kept['benchmark']}-{kept['at']}" if kept else "not in this run"


def _all(checks: Iterable[bool | None]) -> bool | None:
    """False if any check failed; else None if there were none or any was not measured; else True."""
    checks = list(checks)
    if False in checks:
        return False
    return None if not checks or None in checks else True


def _x(ratio: float, limit: float, digits: int) -> str:
    """``ratio`` as ``1.23x``, with as many more digits as it takes to show which side of ``limit`` it
    is on (0.848 against 0.85 reads 0.848x, not 0.85x)."""
    while round(ratio, digits) == limit and ratio != limit and digits < 6:
        digits += 1
    return f"{ratio:.{digits}f}x"


def _rows_text(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n:,}"


def sweep(kept: dict[str, Any] | None) -> list[Verdict]:
    rows = _rows(kept)

    def label(r: dict[str, Any]) -> str:
        if not r["warm"]:
            return f"{r['parallel']} at once, graph cache {r['graph_cache']}"
        after = ", after a sweep" if r.get("after_a_sweep") else ""
        return f"graph cache {r['graph_cache']}{after}"

    out = []
    kinds = ((True, "1. sweep, warm trainers (`cormorant run`)"), (False, "1. sweep, a process per trial"))
    for warm, goal in kinds:
        mine = [r for r in rows if r["warm"] == warm and (warm or r["parallel"] > 1)]
        out.append(
            Verdict(
                goal,
                f"wall <= {SWEEP_MAX}x (trial compute / parallelism)",
                "; ".join(f"{_x(r['vs_ideal'], SWEEP_MAX, 2)} ({label(r)})" for r in mine) or "not measured",
                _all(r["vs_ideal"] <= SWEEP_MAX for r in mine),
                _source(kept),
            )
        )
    return out


TRIAL_PROCESSES = {
    ("warm", None): "warm trainer",
    ("fresh", "sqlite"): "fresh process, SQLite store",
    ("fresh", "server"): "fresh process, MLflow server (a pod)",
}


def trial(kept: dict[str, Any] | None) -> list[Verdict]:
    rows = _rows(kept)
    out = []
    for (process, tracking), name in TRIAL_PROCESSES.items():
        mine = [r for r in rows if r["process"] == process and r.get("tracking") == tracking]

        def label(r: dict[str, Any]) -> str:
            return r["family"] + (f" ({r['graph']})" if r["family"] == "mlp" else "")

        out.append(
            Verdict(
                f"1. trial fixed cost, {name}",
                f"<= {TRIAL_FIXED_MAX:g} s beyond fitting and scoring",
                ", ".join(f"{label(r)} {r['fixed_seconds']:.1f} s" for r in mine) or "not measured",
                _all(r["fixed_seconds"] <= TRIAL_FIXED_MAX for r in mine),
                _source(kept),
            )
        )
    return out


def pipeline(kept: dict[str, Any] | None) -> list[Verdict]:
    rows = _rows(kept)
    demo = [r for r in rows if r["scale"] == 1]
    measured = "; ".join(
        f"{_x(r['ratio'], PIPELINE_MAX, 1)} at {r['scale']}x the demo's rows "
        f"({r['seconds']:.1f} s against {r['compute_seconds']:.1f} s)"
        for r in rows
    )
    return [
        Verdict(
            "2. pipeline (`make demo`)",
            f"pipeline time <= {PIPELINE_MAX:g}x the compute inside it",
            measured or "not measured",
            _all(r["ratio"] <= PIPELINE_MAX for r in demo),
            _source(kept),
        )
    ]


def validation(kept: dict[str, Any] | None) -> list[Verdict]:
    rows = _rows(kept)
    checks, parts = [], []
    for n in sorted({r["rows"] for r in rows}):
        by = {r["method"]: r for r in rows if r["rows"] == n}
        if "cormorant" not in by or "pandas" not in by:
            continue
        c = by["cormorant"]
        time_ratio = c["seconds"] / by["pandas"]["seconds"]
        memory = c["added_mb"] / c["partition_mb"]
        checks += [
            time_ratio <= VALIDATION_TIME_MAX,
            c["startup_seconds"] <= VALIDATION_STARTUP_MAX,
            memory <= VALIDATION_MEMORY_MAX,
        ]
        parts.append(
            f"{_rows_text(n)}: {_x(time_ratio, VALIDATION_TIME_MAX, 1)} pandas' time, "
            f"{c['startup_seconds']:.1f} s start-up, "
            f"{_x(memory, VALIDATION_MEMORY_MAX, 1)} the partition"
        )
    return [
        Verdict(
            "3. validation",
            f"<= {VALIDATION_TIME_MAX:g}x pandas, <= {VALIDATION_STARTUP_MAX:g} s start-up, "
            f"<= {VALIDATION_MEMORY_MAX:g}x the partition's memory",
            "; ".join(parts) or "not measured",
            _all(checks),
            _source(kept),
        )
    ]


def _flat(by_size: dict[int, float]) -> bool:
    sizes = sorted(by_size)
    return by_size[sizes[-1]] <= FLAT_MEMORY_MAX * by_size[sizes[0]]


def inference(kept: dict[str, Any] | None) -> list[Verdict]:
    rows = _rows(kept)
    xgb = [r for r in rows if r.get("family") == "xgboost" and r["rows"] >= 1_000_000]
    checks, parts, peaks = [], [], {}
    for n in (1_000_000, 5_000_000):
        by = {r["method"]: r for r in xgb if r["rows"] == n}
        if "cormorant" not in by or "native" not in by:
            checks.append(None)
            parts.append(f"{_rows_text(n)}: not measured")
            continue
        c = by["cormorant"]
        ratio = c["rows_per_s"] / by["native"]["rows_per_s"]
        anchors = [r["peak_rss_mb"] for m, r in by.items() if m != "cormorant"]
        peaks[n] = c["peak_rss_mb"]
        checks += [ratio >= INFERENCE_MIN, all(c["peak_rss_mb"] < a for a in anchors)]
        parts.append(f"{_rows_text(n)}: {_x(ratio, INFERENCE_MIN, 2)} native, {c['peak_rss_mb']:.0f} MB")
    checks.append(_flat(peaks) if len(peaks) > 1 else None)
    diffs = [r["max_abs_diff_vs_onnxruntime"] for r in rows if "max_abs_diff_vs_onnxruntime" in r]
    checks.append(all(d <= PARITY_MAX for d in diffs) if diffs else None)
    return [
        Verdict(
            "4. inference, XGBoost",
            f">= {INFERENCE_MIN:g}x native at 1M and 5M rows, flat memory below the anchors', "
            f"scores within {PARITY_MAX:g} of ONNX Runtime's",
            "; ".join(parts),
            _all(checks),
            _source(kept),
        )
    ]


def drift(kept: dict[str, Any] | None, memory: dict[str, Any] | None) -> list[Verdict]:
    rows = _rows(kept)
    by = {r["method"]: r for r in rows if r["rows"] == 1_000_000}
    both = {"evidently", "cormorant"} <= set(by)
    speed = by["evidently"]["seconds"] / by["cormorant"]["seconds"] if both else None
    wide = [r for r in _rows(memory) if r["rows"] >= 10_000_000 and r["features"] >= 30]
    return [
        Verdict(
            "5. drift, speed",
            f">= {DRIFT_SPEED_MIN:g}x Evidently's DataDriftPreset at 1M rows",
            _x(speed, DRIFT_SPEED_MIN, 1) if speed else "not measured",
            None if speed is None else speed >= DRIFT_SPEED_MIN,
            _source(kept),
        ),
        Verdict(
            "5. drift, memory",
            f"<= {DRIFT_MEMORY_MB:g} MB peak at 10M rows x 30 features",
            ", ".join(f"{r['peak_rss_mb']:.0f} MB" for r in wide) or "not measured (`--full`)",
            _all(r["peak_rss_mb"] <= DRIFT_MEMORY_MB for r in wide),
            _source(memory),
        ),
    ]


def extract(kept: dict[str, Any] | None) -> list[Verdict]:
    rows = _rows(kept)
    ours = {r["rows"]: r for r in rows if r["method"] == "cormorant"}
    ceiling = {r["rows"]: r for r in rows if r["method"] == "copy_devnull"}
    checks, parts = [], []
    if 1_000_000 in ours and 1_000_000 in ceiling:
        ratio = ours[1_000_000]["rows_per_s"] / ceiling[1_000_000]["rows_per_s"]
        checks.append(ratio >= EXTRACT_MIN)
        parts.append(f"1M: {_x(ratio, EXTRACT_MIN, 2)} COPY")
    else:
        checks.append(None)
        parts.append("1M: not measured")
    if 10_000_000 in ours and 1_000_000 in ours:
        peaks = {n: ours[n]["peak_rss_mb"] for n in (1_000_000, 10_000_000)}
        checks.append(_flat(peaks))
        parts.append(f"peak {peaks[1_000_000]:.0f} MB at 1M, {peaks[10_000_000]:.0f} MB at 10M")
    else:
        checks.append(None)
        parts.append("10M: not measured (`--full`)")
    return [
        Verdict(
            "6. extraction",
            f">= {EXTRACT_MIN:g}x the raw COPY rate at 1M rows, flat memory at 10M",
            "; ".join(parts),
            _all(checks),
            _source(kept),
        )
    ]


GPU_FAMILIES = ("xgboost", "mlp")


def _gpu_ratio(kept: dict[str, Any], family: str) -> float | None:
    by = {
        r["device"]: r
        for r in _rows(kept)
        if r.get("family") == family and r.get("rows", 0) >= GPU_ROWS and "fit_seconds" in r
    }
    return by["cpu"]["seconds"] / by["cuda"]["seconds"] if {"cpu", "cuda"} <= set(by) else None


def gpu(kepts: list[dict[str, Any]]) -> list[Verdict]:
    """Each family's ratio from the newest of ``kepts`` (newest first) that measured it."""
    out = []
    for family in GPU_FAMILIES:
        found = next(((k, r) for k in kepts if (r := _gpu_ratio(k, family)) is not None), None)
        kept, ratio = found or (None, None)
        out.append(
            Verdict(
                f"7. GPU, {family}",
                f">= {GPU_MIN:g}x the CPU on a 10M-row trial",
                f"{_x(ratio, GPU_MIN, 1)} on {kept['machine']['platform']}"
                if kept
                else "not measured (no NVIDIA GPU)",
                None if ratio is None else ratio >= GPU_MIN,
                _source(kept),
            )
        )
    return out


def kept_runs(name: str, results: Path | None) -> list[dict[str, Any]]:
    """Every kept ``<name>-<timestamp>.json`` in ``results``, newest first."""
    if results is None:
        return []
    paths = sorted(results.glob(f"{name}-*.json"), reverse=True)
    pattern = rf"{re.escape(name)}-\d{{8}}T\d{{6}}Z\.json"
    return [json.loads(p.read_text()) for p in paths if re.fullmatch(pattern, p.name)]


def assess(sections: dict[str, dict[str, Any]], results: Path | None = None) -> list[Verdict]:
    """Every goal's verdict from the kept results of a run's sections (by section name: extract,
    inference, validation, drift, drift-memory, trial, sweep, gpu, pipeline). A GPU family the run's GPU
    section lacks (or every one, where it has none) comes from the newest GPU run kept in ``results``
    that measured it, named as such."""
    gpu_runs = [sections["gpu"]] if "gpu" in sections else []
    return [
        *sweep(sections.get("sweep")),
        *trial(sections.get("trial")),
        *pipeline(sections.get("pipeline")),
        *validation(sections.get("validation")),
        *inference(sections.get("inference")),
        *drift(sections.get("drift"), sections.get("drift-memory")),
        *extract(sections.get("extract")),
        *gpu(gpu_runs + kept_runs("gpu", results)),
    ]


VERDICT = {True: "met", False: "**not met**", None: "not measured"}
SECTION = "goals"  # the latest-run block's first section


def render(verdicts: list[Verdict]) -> str:
    lines = ["| goal | target | measured | verdict | results |", "|---|---|---|---|---|"]
    lines += [f"| {v.goal} | {v.target} | {v.measured} | {VERDICT[v.met]} | `{v.source}` |" for v in verdicts]
    return "\n".join(lines)


def section(verdicts: list[Verdict], read_off: str) -> str:
    """The ``### goals`` section: every goal with its verdict, as read off ``read_off``."""
    return (
        f"### {SECTION}\n\nIssue #11's goals as {read_off} measured them (`scripts/bench_goals.py`; "
        f"a goal whose sizes the run did not measure says so):\n\n{render(verdicts)}"
    )


# a latest-run block's sections as (name, text): how bench.py merges a run into the block, too
SECTIONS = re.compile(r"(?ms)^### (\S+)\n(.*?)(?=^### |\Z)")


def sections_of(block: str, results: Path) -> dict[str, dict[str, Any]]:
    """The kept results each section of a ``latest-run`` block names, by section name."""
    found = {}
    for name, text in SECTIONS.findall(block):
        named = re.search(r"`benchmarks/results/([\w.-]+\.json)`", text)
        if named and (results / named.group(1)).exists():
            found[name] = json.loads((results / named.group(1)).read_text())
    return found


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench import DOC, END, START
    from bench_common import RESULTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write", action="store_true", help="also write the goals into docs/benchmarks.md's latest-run block"
    )
    args = parser.parse_args(argv)
    doc = DOC.read_text()
    block = doc[doc.index(START) + len(START) : doc.index(END)]
    verdicts = assess(sections_of(block, RESULTS), RESULTS)
    print(render(verdicts))
    if args.write:
        shown = dict(SECTIONS.findall(block))
        if SECTION not in shown:
            raise SystemExit(f"{DOC}: no ### {SECTION} section in the latest-run block to replace")
        old = f"### {SECTION}\n{shown[SECTION]}"
        DOC.write_text(doc.replace(old, section(verdicts, "the sections below") + "\n\n", 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
