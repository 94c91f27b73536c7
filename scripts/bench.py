"""``make bench``: every benchmark, each figure a ratio against an anchor measured in the same run.

    make bench                       # quick sizes (1M rows)
    make bench ARGS=--full           # the full sizes (10M extraction, 5M inference and validation,
                                     # 10M x 30 drift memory)
    .venv/bin/python scripts/bench.py --only inference validation

Each benchmark keeps its JSON and Markdown in ``benchmarks/results/``; this command also keeps the
combined run there (``bench-<timestamp>.{json,md}``) and writes it into ``docs/benchmarks.md`` between
the ``latest-run`` markers, so the figures the docs show are those of the latest recorded run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

SIZES = {
    "extract": {"quick": ["1000000"], "full": ["1000000", "10000000"]},
    "inference": {"quick": ["1000000"], "full": ["1000000", "5000000"]},
    "validation": {"quick": ["1000000"], "full": ["1000000", "5000000"]},
    "drift": {"quick": ["1000000"], "full": ["1000000"]},
    "trial": {"quick": [], "full": []},  # one trial per family on three days of the example
    "sweep": {"quick": [], "full": []},  # the example's sweep over seven days, one and several at once
    "gpu": {"quick": ["1000000"], "full": ["10000000"]},  # skipped where no NVIDIA GPU is visible
    "view": {"quick": [], "full": []},  # the Cormorant view's server time: 365 days, 50 versions
    "pipeline": {"quick": [], "full": []},  # make demo's cormorant run, at the scales below
}
# a stage's other arguments, by size: drift's width; the pipeline's sizes, its rows a day as multiples of
# the demo's (1: make demo itself)
EXTRA = {
    "drift": {"quick": ["--features", "10"], "full": ["--features", "10"]},
    "pipeline": {"quick": ["--scale", "1", "20"], "full": ["--scale", "1", "20", "60"]},
}
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- latest-run:start -->", "<!-- latest-run:end -->"


def main(argv: list[str] | None = None) -> int:
    import bench_goals
    import benchmark_drift
    import benchmark_extract
    import benchmark_gpu
    import benchmark_inference
    import benchmark_pipeline
    import benchmark_sweep
    import benchmark_trial
    import benchmark_validation
    import benchmark_view
    from bench_common import RESULTS, keep, machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full sizes")
    parser.add_argument("--only", nargs="+", choices=sorted(SIZES), default=sorted(SIZES))
    parser.add_argument("--no-docs", action="store_true", help="keep the results, leave the docs as they are")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method, the median kept (default 3)")
    args = parser.parse_args(argv)
    size = "full" if args.full else "quick"
    modules = {
        "extract": benchmark_extract,
        "inference": benchmark_inference,
        "validation": benchmark_validation,
        "drift": benchmark_drift,
        "trial": benchmark_trial,
        "sweep": benchmark_sweep,
        "gpu": benchmark_gpu,
        "view": benchmark_view,
        "pipeline": benchmark_pipeline,
    }
    kept = {}
    began = time.perf_counter()
    for name in modules:
        if name in args.only:
            print(f"\n== {name} ({size}) ==", flush=True)
            extra = EXTRA.get(name, {}).get(size, [])
            rows = ["--rows", *SIZES[name][size]] if SIZES[name][size] else []
            if (result := modules[name].main([*rows, *extra, "--repeat", str(args.repeat)])) is not None:
                kept[name] = result
    if args.full and "drift" in args.only:  # the memory target: 10M rows x 30 features, Cormorant alone
        print("\n== drift memory (full) ==", flush=True)
        kept["drift-memory"] = benchmark_drift.main(
            ["--rows", "10000000", "--features", "30", "--methods", "cormorant", "--repeat", "1"]
        )
    everything = set(args.only) == set(SIZES)
    command = "make bench" if everything else f"scripts/bench.py --only {' '.join(args.only)}"
    command += " --full" if args.full and not everything else " ARGS=--full" if args.full else ""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = (
        f"Latest `{command}` (each method run {args.repeat} times, the median kept): {when}, "
        f"{time.perf_counter() - began:.0f}s, on {machine()}. Each section names the run it comes from."
    )
    sections = {
        name: f"### {name}\n\n{k['table']}\n\n(`{command}`, {when}: "
        f"`benchmarks/results/{k['benchmark']}-{k['at']}.json`)"
        for name, k in kept.items()
    }
    # this run's goals: from its own results (and the newest GPU run kept, where it has none)
    goals = bench_goals.section(bench_goals.assess(kept, RESULTS), "this run's sections")
    print(f"\n{goals}", flush=True)
    keep(
        "bench",
        [{"benchmark": n, "at": k["at"]} for n, k in kept.items()],
        "\n\n".join([header, goals, *sections.values()]),
    )
    doc = DOC.read_text()
    if START in doc and END in doc and not args.no_docs:
        # a partial run replaces its own sections and keeps the others (each says which run it is from)
        block = doc[doc.index(START) + len(START) : doc.index(END)]
        previous = dict(bench_goals.SECTIONS.findall(block))
        previous.pop(bench_goals.SECTION, None)  # worked out again below, from the sections as merged
        merged = {**{n: f"### {n}\n{t.rstrip()}" for n, t in previous.items()}, **sections}
        if everything:
            merged = sections
        order = [n for n in modules if n in merged] + [n for n in merged if n not in modules]
        shown = "\n\n".join(merged[n] for n in order)
        verdicts = bench_goals.assess(bench_goals.sections_of(shown, RESULTS), RESULTS)
        text = "\n\n".join([header, bench_goals.section(verdicts, "the sections below"), shown])
        doc = doc.replace(block, f"\n{text}\n")
        DOC.write_text(doc)
        print(f"docs/benchmarks.md: this run's sections written between the {START} markers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
