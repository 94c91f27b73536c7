"""Benchmark: the Cormorant view's server time for a use case with a year of days and 50 model versions.

    .venv/bin/python scripts/benchmark_view.py [--days 365] [--versions 50]

Builds, in a scratch folder, what a year of the pipeline leaves: per day a committed raw partition and a
predictions partition (genuine lake commits of a few rows: the view reads manifests, never data), the
validation, drift (every feature, with its bins), labels and performance reports, shaped and sized as
the pipeline writes them; and in a scratch MLflow store (SQLite) a registered model with ``--versions``
versions tagged as registration tags them, and a sweep of 12 trials. Then, each in a fresh process
(imports before the clock), it times the panels the plugin serves, first call and warm (median of 5):

- ``use case page``: :func:`cormorant.view.use_case` (what ``/cormorant/api/use-cases/<name>`` returns)
- ``use case list``: :func:`cormorant.view.use_cases` (``/cormorant/api/use-cases``)
- anchor ``summary``: :func:`cormorant.summary.pipeline_summary` (``cormorant summary``: the same days
  read one after another, with every trial run)

Target: under 1 s of server time for the page. Results in ``benchmarks/results/view-<timestamp>.*``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

from bench_common import finish, say, worker_result  # noqa: E402

SPEC = ROOT / "include" / "specs" / "churn.yaml"
METHODS = ("use case page", "use case list", "summary")


def _environment(work: Path) -> dict[str, str]:
    return {
        "CORMORANT_HOME": str(work),
        "CORMORANT_LAKE_URI": (work / "lake").as_uri(),
        "CORMORANT_SPECS_DIR": str(ROOT / "include" / "specs"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "CORMORANT_MLFLOW_ARTIFACT_URI": (work / "artifacts").as_uri(),
    }


def setup(work: Path, days: int, versions: int) -> None:
    import pyarrow as pa
    from mlflow import MlflowClient

    from cormorant.config import Settings
    from cormorant.lake import Lake
    from cormorant.spec import load_spec
    from cormorant.tracking import configure, ensure_experiment

    os.environ.update(_environment(work))
    spec, settings = load_spec(SPEC), Settings.from_env()
    lake = Lake(settings.lake_uri)
    features, metric = list(spec.feature_columns), spec.training.metric
    first = date(2024, 1, 1)
    for i in range(days):
        day = (first + timedelta(days=i)).isoformat()
        lineage = {"dag_id": f"{spec.name}__ingest", "run_id": f"scheduled__{day}T00:00:00+00:00"}
        table = pa.table({"customer_id": [1, 2, 3], "score": [0.1, 0.5, 0.9]})
        raw = lake.write_partition(f"{spec.name}/raw", day, table.to_batches(), lineage=lineage)
        model = {"name": spec.registered_model_name, "version": str(1 + i * versions // days)}
        lake.write_partition(f"{spec.name}/predictions", day, table.to_batches(), source={"model": model})
        failed = i % 97 == 13
        lake.write_json(
            f"{spec.name}/reports/validation/ds={day}/result.json",
            {
                "success": not failed,
                "content_hash": raw.content_hash,
                "evaluated": 26,
                "results": [
                    {"expectation": f"expect_{k}", "column": c, "success": True}
                    for k, c in enumerate(features * 3)
                ],  # fmt: skip
                "failures": [
                    {
                        "expectation": "expect_column_values_to_not_be_null",
                        "column": "usage_gb",
                        "message": "4% nulls",
                    }
                ]
                if failed
                else [],  # fmt: skip
            },
        )
        drift = {
            c: {"psi": 0.01 + 0.3 * (i % 30 == 0), "drifted": i % 30 == 0, "ks_pvalue": 0.5,
                "distribution": {"bins": list(range(21)), "reference": [0.05] * 20, "current": [0.05] * 20}}
            for c in features
        }  # fmt: skip
        lake.write_json(
            f"{spec.name}/reports/drift/ds={day}/report.json",
            {"spec": spec.name, "partition": day, "features": drift, "prediction": drift[features[0]],
             "verdict": "drift" if i % 30 == 0 else "stable", "model": model,
             "drifted_features": features[:2] if i % 30 == 0 else []},
        )  # fmt: skip
        lake.write_json(f"{spec.name}/reports/labels/ds={day}/result.json", {"success": True, "row_count": 3})
        lake.write_json(
            f"{spec.name}/reports/performance/ds={day}/report.json",
            {"metrics": {metric: 0.78 - 0.0001 * i}, "holdout": 0.77, "verdict": "ok", "model": model},
        )
    configure(settings)
    client = MlflowClient()
    experiment = ensure_experiment(spec, settings)
    client.create_registered_model(spec.registered_model_name)
    sweep = client.create_run(experiment, tags={"cormorant.sweep_key": "k", "mlflow.runName": "sweep"})
    for t in range(12):
        run = client.create_run(
            experiment,
            tags={"cormorant.sweep_key": "k", "cormorant.trial_id": f"linear-{t}",
                  "cormorant.family": "linear", "mlflow.parentRunId": sweep.info.run_id},
        )  # fmt: skip
        client.log_metric(run.info.run_id, f"cv_{metric}_mean", 0.7 + t / 100)
        client.log_metric(run.info.run_id, f"cv_{metric}_std", 0.01)
        client.log_param(run.info.run_id, "C", t)
        client.set_terminated(run.info.run_id)
    for v in range(1, versions + 1):
        version = client.create_model_version(
            spec.registered_model_name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
            tags={"cormorant.family": "linear", f"holdout_{metric}": "0.77", "cormorant.blessing": "passed",
                  "cormorant.promotion": "promoted: holdout better",
                  "cormorant.selection": "one standard error"},
        )  # fmt: skip
        if v == versions:
            client.set_registered_model_alias(spec.registered_model_name, "champion", version.version)


def worker(method: str, work: Path) -> dict:
    os.environ.update(_environment(work))
    from cormorant import summary, view
    from cormorant.config import Settings
    from cormorant.lake import Lake
    from cormorant.spec import load_spec

    spec, settings = load_spec(SPEC), Settings.from_env()
    lake = Lake(settings.lake_uri)
    call = {
        "use case page": lambda: view.use_case(spec, settings, lake),
        "use case list": lambda: view.use_cases(settings, lake),
        "summary": lambda: summary.pipeline_summary(spec, lake, settings),
    }[method]
    started = time.perf_counter()
    call()
    first = time.perf_counter() - started
    warm = []
    for _ in range(5):
        started = time.perf_counter()
        document = call()
        warm.append(time.perf_counter() - started)
    return {
        "first_s": first,
        "warm_s": statistics.median(warm),
        "bytes": len(json.dumps(document, default=str)),
    }


def render(results: list[dict], days: int, versions: int) -> str:
    base = next((r for r in results if r["method"] == "summary" and "error" not in r), None)
    lines = [
        f"{days} days, {versions} model versions, 12 trials:",
        "",
        "| panel | first call (s) | warm, median of 5 (s) | JSON (kB) | warm time vs summary |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | – | – | – | {r['error']} |")
            continue
        ratio = f"{r['warm_s'] / base['warm_s']:.2f}x" if base else "–"
        lines.append(
            f"| {r['method']} | {r['first_s']:.2f} | {r['warm_s']:.3f} | {r['bytes'] / 1000:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)  # bench.py passes it
    parser.add_argument("--rows", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.work))))
        sys.exit(0)
    with tempfile.TemporaryDirectory(prefix="cormorant-bench-view-") as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        setup(work, args.days, args.versions)
        print(f"a year of days and {args.versions} versions written in {time.perf_counter() - began:.0f}s")
        results = []
        for method in METHODS:
            command = [sys.executable, __file__, "--worker", method, "--work", str(work)]
            results.append(
                say(
                    f"{method:<14}",
                    {"method": method, **worker_result(command)},
                    lambda r: (
                        f"first {r['first_s']:.2f}s, warm {r['warm_s']:.3f}s, {r['bytes'] / 1000:.0f} kB"
                    ),
                )
            )
    return finish("view", results, render(results, args.days, args.versions))


if __name__ == "__main__":
    main()
