"""`make bench`'s stage scripts still run: each at a small size, once, in a process of its own, keeping its
results in a temporary folder (``CORMORANT_BENCH_RESULTS``). The figures are not checked here (speed
lives in the benchmarks, never in timed tests); what is: every method ran without an error, Cormorant's
inference scores equal ONNX Runtime's on the same model, and the validation anchors reach Cormorant's
verdict. The trial, sweep and view benchmarks are left out: they start MLflow servers and trainer pools
for minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RUNS = {  # the script's arguments, and the methods it measures with them
    "extract": (["--rows", "20000", "--methods", "copy_devnull", "cormorant"], {"copy_devnull", "cormorant"}),
    "inference": (
        ["--rows", "20000", "--families", "xgboost", "linear", "--reason-rows", "0"],
        {"native", "onnxruntime", "cormorant"},
    ),
    "validation": (["--rows", "20000"], {"pandas", "pyarrow", "cormorant"}),
    "drift": (["--rows", "20000", "--methods", "cormorant"], {"cormorant"}),
}


@pytest.mark.parametrize("stage", sorted(RUNS))
def test_a_stage_benchmark_runs_and_keeps_its_results(stage, tmp_path):
    arguments, methods = RUNS[stage]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"benchmark_{stage}.py"), *arguments, "--repeat", "1"],
        env={**os.environ, "CORMORANT_BENCH_RESULTS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (kept,) = tmp_path.glob(f"{stage}-*.json")
    assert (tmp_path / kept.name.replace(".json", ".md")).exists()
    results = json.loads(kept.read_text())["results"]
    assert results and all("error" not in r for r in results), results
    assert all(r["seconds"] > 0 and r["rows"] == 20000 for r in results), results
    assert {r["method"] for r in results} == methods
    if stage == "inference":
        cormorant = [r for r in results if r["method"] == "cormorant"]
        assert {r["family"] for r in cormorant} == {"xgboost", "linear"}
        assert all(r["max_abs_diff_vs_onnxruntime"] <= 1e-6 for r in cormorant), cormorant
    if stage == "validation":
        assert len({(r["expectations"], r["failed"]) for r in results}) == 1, results


def test_the_gpu_benchmarks_matrix_memory_runs_without_a_gpu_and_keeps_its_results(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark_gpu.py"), "--matrix-memory", "--rows", "20000"],
        env={**os.environ, "CORMORANT_BENCH_RESULTS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (kept,) = tmp_path.glob("gpu-matrix-memory-*.json")
    assert (tmp_path / kept.name.replace(".json", ".md")).exists()
    results = json.loads(kept.read_text())["results"]
    assert all("error" not in r for r in results), results
    assert {r["matrix"] for r in results} == {"arrays alone", "DMatrix", "QuantileDMatrix"}
    assert all(r["rows"] == 16000 and r["peak_mb"] >= r["arrays_mb"] > 0 for r in results), results
