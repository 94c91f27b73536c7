"""The performance issue's goals, read off the benchmarks' kept results (`scripts/bench_goals.py`), and
`make bench` writing them above the latest run's sections in `docs/benchmarks.md`. These check the
verdicts' arithmetic and where the figures come from, on results made up here; no speed is measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts")]

import bench_goals  # noqa: E402

MACHINE = {"platform": "Linux-test", "python": "3.11", "cpus": 2, "memory_gb": 24}


def kept(name: str, at: str, results: list[dict]) -> dict:
    return {"benchmark": name, "at": at, "machine": MACHINE, "results": results, "table": ""}


def verdicts(sections: dict, results: Path | None = None) -> dict[str, bench_goals.Verdict]:
    return {v.goal: v for v in bench_goals.assess(sections, results)}


def sweep_row(ratio: float, *, warm: bool = True, cache: str = "filled by an earlier sweep", after=False):
    return {"parallel": 2, "warm": warm, "after_a_sweep": after, "graph_cache": cache, "vs_ideal": ratio}


@pytest.mark.parametrize(("later", "met"), [(1.25, True), (1.26, False)])
def test_the_warm_sweep_is_met_only_when_every_warm_sweep_is_within_the_limit(later, met):
    sections = {"sweep": kept("sweep", "T1", [sweep_row(1.2), sweep_row(later, after=True)])}

    verdict = verdicts(sections)["1. sweep, warm trainers (`cormorant run`)"]

    assert verdict.met is met
    assert f"{later:.2f}x (graph cache filled by an earlier sweep, after a sweep)" in verdict.measured
    assert verdict.source == "sweep-T1"


def test_a_trial_process_kind_is_not_met_when_one_family_pays_more_than_three_seconds():
    rows = [
        {"family": f, "process": "fresh", "tracking": "server", "graph": g, "fixed_seconds": s}
        for f, g, s in [
            ("linear", "converted", 2.0),
            ("mlp", "exported", 3.1),
            ("mlp", "from the cache", 2.9),
        ]
    ] + [{"family": "mlp", "process": "warm", "graph": "exported", "fixed_seconds": 0.7}]

    found = verdicts({"trial": kept("trial", "T2", rows)})

    pod = found["1. trial fixed cost, fresh process, MLflow server (a pod)"]
    assert pod.met is False
    assert "mlp (exported) 3.1 s" in pod.measured
    assert found["1. trial fixed cost, warm trainer"].met is True
    assert found["1. trial fixed cost, fresh process, SQLite store"].met is None  # none measured


def test_the_pipeline_goal_is_the_demos_ratio_not_a_larger_scales():
    rows = [
        {"scale": 1, "ratio": 3.0, "seconds": 18.0, "compute_seconds": 6.0},
        {"scale": 40, "ratio": 1.9, "seconds": 40.0, "compute_seconds": 21.0},
    ]

    verdict = verdicts({"pipeline": kept("pipeline", "T3", rows)})["2. pipeline (`make demo`)"]

    assert verdict.met is False
    assert "1.9x at 40x the demo's rows" in verdict.measured


def validation_rows(cormorant_seconds: float, added_mb: float) -> list[dict]:
    common = {"rows": 1_000_000, "partition_mb": 100.0}
    return [
        {**common, "method": "pandas", "seconds": 1.0, "startup_seconds": None, "added_mb": 300.0},
        {
            **common,
            "method": "cormorant",
            "seconds": cormorant_seconds,
            "startup_seconds": 0.1,
            "added_mb": added_mb,
        },
    ]


@pytest.mark.parametrize(
    ("seconds", "added", "met"), [(3.0, 200.0, True), (3.1, 150.0, False), (1.0, 201.0, False)]
)
def test_validation_is_held_to_its_time_and_its_memory(seconds, added, met):
    found = verdicts({"validation": kept("validation", "T4", validation_rows(seconds, added))})

    assert found["3. validation"].met is met


def inference_rows(n: int, ours: float, *, peak: float = 600.0, diff: float = 0.0) -> list[dict]:
    return [
        {"family": "xgboost", "rows": n, "method": "native", "rows_per_s": 100.0, "peak_rss_mb": 2000.0},
        {"family": "xgboost", "rows": n, "method": "cormorant", "rows_per_s": ours, "peak_rss_mb": peak}
        | {"max_abs_diff_vs_onnxruntime": diff},
    ]


def test_inference_needs_both_sizes_flat_memory_and_parity():
    def verdict(rows):
        return verdicts({"inference": kept("inference", "T5", rows)})["4. inference, XGBoost"]

    assert verdict(inference_rows(1_000_000, 120.0)).met is None  # 5M not in a quick run
    assert verdict(inference_rows(1_000_000, 120.0) + inference_rows(5_000_000, 101.0)).met is True
    assert verdict(inference_rows(1_000_000, 120.0) + inference_rows(5_000_000, 99.0)).met is False
    grows = inference_rows(1_000_000, 120.0) + inference_rows(5_000_000, 120.0, peak=900.0)
    assert verdict(grows).met is False
    drifts = inference_rows(1_000_000, 120.0, diff=2e-6) + inference_rows(5_000_000, 120.0)
    assert verdict(drifts).met is False


def test_drift_and_extraction_read_their_own_sizes():
    drift = kept(
        "drift",
        "T6",
        [
            {"rows": 1_000_000, "features": 10, "method": "evidently", "seconds": 21.0},
            {"rows": 1_000_000, "features": 10, "method": "cormorant", "seconds": 1.0},
        ],
    )
    memory = kept(
        "drift", "T7", [{"rows": 10_000_000, "features": 30, "method": "cormorant", "peak_rss_mb": 1100}]
    )
    extract = kept(
        "extract",
        "T8",
        [
            {"rows": 1_000_000, "method": "copy_devnull", "rows_per_s": 100.0, "peak_rss_mb": 25},
            {"rows": 1_000_000, "method": "cormorant", "rows_per_s": 90.0, "peak_rss_mb": 280},
        ],
    )

    found = verdicts({"drift": drift, "drift-memory": memory, "extract": extract})

    assert found["5. drift, speed"].met is True
    assert (found["5. drift, memory"].met, found["5. drift, memory"].source) == (False, "drift-T7")
    assert found["6. extraction"].met is None  # 0.90x COPY, but 10M not measured
    assert "0.90x COPY" in found["6. extraction"].measured


@pytest.mark.parametrize(("ours", "shown", "met"), [(84.8, "0.848x", False), (85.0, "0.85x", True)])
def test_a_ratio_rounding_to_its_limit_shows_which_side_it_is_on(ours, shown, met):
    rows = [
        {"rows": n, "method": m, "rows_per_s": rate, "peak_rss_mb": 280}
        for n in (1_000_000, 10_000_000)
        for m, rate in (("copy_devnull", 100.0), ("cormorant", ours))
    ]

    verdict = verdicts({"extract": kept("extract", "T9", rows)})["6. extraction"]

    assert (verdict.met, verdict.measured.split(";")[0]) == (met, f"1M: {shown} COPY")


def gpu_run(at: str, family: str, cpu: float, gpu: float) -> dict:
    rows = [
        {"family": family, "device": d, "rows": 10_000_000, "seconds": s, "fit_seconds": s}
        for d, s in (("cpu", cpu), ("cuda", gpu))
    ]
    return kept("gpu", at, rows)


def test_each_gpu_family_comes_from_the_newest_run_that_measured_it(tmp_path):
    for run in (
        gpu_run("20261101T000000Z", "mlp", 30.0, 2.0),
        gpu_run("20261102T000000Z", "xgboost", 50.0, 4.0),
    ):
        (tmp_path / f"gpu-{run['at']}.json").write_text(json.dumps(run))
    (tmp_path / "gpu-matrix-memory-20261103T000000Z.json").write_text(
        json.dumps(kept("gpu-matrix-memory", "x", []))
    )

    found = verdicts({}, tmp_path)

    assert (found["7. GPU, xgboost"].met, found["7. GPU, xgboost"].source) == (True, "gpu-20261102T000000Z")
    assert (found["7. GPU, mlp"].met, found["7. GPU, mlp"].source) == (True, "gpu-20261101T000000Z")
    assert "15.0x on Linux-test" in found["7. GPU, mlp"].measured
    assert verdicts({}, tmp_path / "none")["7. GPU, mlp"].met is None


def test_make_bench_writes_the_goals_above_the_sections_it_merged(tmp_path, monkeypatch):
    """A partial run keeps the other sections and works the goals out again from all of them."""
    import bench
    import bench_common

    results = tmp_path / "results"
    results.mkdir()
    earlier = kept("sweep", "20261201T000000Z", [sweep_row(1.2), sweep_row(1.24, after=True)])
    (results / "sweep-20261201T000000Z.json").write_text(json.dumps(earlier))
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\n<!-- latest-run:start -->\nLatest old run\n\n### goals\n\nstale verdicts\n\n"
        "### sweep\n\n| table |\n\n"
        "(`make bench`, 2026-12-01: `benchmarks/results/sweep-20261201T000000Z.json`)\n"
        "<!-- latest-run:end -->\n\nThe rest.\n"
    )
    monkeypatch.setattr(bench_common, "RESULTS", results)
    monkeypatch.setattr(bench, "DOC", doc)
    monkeypatch.setitem(bench.SIZES, "drift", {"quick": ["20000"], "full": ["20000"]})
    monkeypatch.setitem(bench.EXTRA, "drift", {"quick": ["--methods", "cormorant"], "full": []})

    assert bench.main(["--only", "drift", "--repeat", "1"]) == 0

    block = doc.read_text().split("<!-- latest-run:start -->")[1].split("<!-- latest-run:end -->")[0]
    assert "stale verdicts" not in block and block.count("### goals") == 1
    assert block.index("### goals") < block.index("### drift") < block.index("### sweep")  # the stages order
    goals = block.split("### goals")[1].split("### drift")[0]
    sweep_line = next(line for line in goals.splitlines() if line.startswith("| 1. sweep, warm"))
    assert "| met |" in sweep_line and "sweep-20261201T000000Z" in sweep_line
    drift_line = next(line for line in goals.splitlines() if line.startswith("| 5. drift, speed"))
    assert "not measured" in drift_line  # no Evidently in this run
    assert doc.read_text().endswith("The rest.\n")


def test_the_goals_can_be_written_again_from_the_sections_the_docs_show(tmp_path, monkeypatch):
    """`scripts/bench_goals.py --write` replaces the goals section alone, leaving every figure as it is."""
    import bench
    import bench_common

    (tmp_path / "sweep-20261201T000000Z.json").write_text(
        json.dumps(kept("sweep", "20261201T000000Z", [sweep_row(1.3)]))
    )
    sweep = "### sweep\n\n| table |\n\n(`make bench`: `benchmarks/results/sweep-20261201T000000Z.json`)\n"
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        f"<!-- latest-run:start -->\nLatest run\n\n### goals\n\nstale\n\n{sweep}<!-- latest-run:end -->\n"
    )
    monkeypatch.setattr(bench_common, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "DOC", doc)

    assert bench_goals.main(["--write"]) == 0

    text = doc.read_text()
    assert "stale" not in text and text.count("### goals") == 1
    assert text.endswith(f"{sweep}<!-- latest-run:end -->\n")
    line = next(x for x in text.splitlines() if x.startswith("| 1. sweep, warm"))
    assert "1.30x" in line and "**not met**" in line
