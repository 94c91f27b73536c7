"""Benchmark: batch inference (read a lake partition, score it, write the predictions), Cormorant's path
against the same model scored natively and through ONNX Runtime directly.

    .venv/bin/python scripts/benchmark_inference.py --rows 1000000 5000000 [--families xgboost mlp linear]

For each family it trains one model on 20k rows of the example churn data (the spec's preprocessing and
the family's defaults) and exports it to ONNX as a trial does. For each size it commits a partition of
that many rows to a scratch lake, then measures, each in a fresh process (imports before the clock), so
peak RSS is its own:

- ``cormorant``: :func:`cormorant.inference.predict_partition` (read + score + write, committed)
- ``native``: the family's own predictor with the same fitted preprocessing (scikit-learn's
  ColumnTransformer, then ``Booster.inplace_predict`` for XGBoost, the torch module or the scikit-learn
  model; fitted again before the clock, deterministically), over the whole partition, written to Parquet
- ``onnxruntime``: the same ONNX model through ``InferenceSession.run`` on the whole partition, written
- ``reasons`` and ``reasons-approx``: Cormorant's path with ``predict.reason_codes: 3``, exact and
  ``reason_method: approximate`` (the cost of per-row reason codes: XGBoost's ``pred_contribs``, the
  linear family's coefficients; the MLP has none, so it is not run), the explainer kept on a run of a
  scratch MLflow store as a trial keeps it. Exact TreeSHAP runs at a few thousand rows/s on 2 cores, so
  these run on a partition of their own (``--reason-rows``, 100k), beside ``native`` and ``cormorant``
  on the same partition

It prints rows/s, peak RSS and the ratio against ``native`` measured in the same run, checks that
Cormorant's scores equal ONNX Runtime's on the same model (max |difference|), and keeps the results in
``benchmarks/results/inference-<timestamp>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

from bench_common import add_repeat, finish, median_run, peak_rss_mb, say, worker_result  # noqa: E402

METHODS = ("native", "onnxruntime", "cormorant")
REASON_METHODS = ("native", "cormorant", "reasons", "reasons-approx")
EXPLAINED = ("xgboost", "linear")  # the families with per-row reason codes


def _tracking(work: Path) -> None:
    import os

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"


DAY = "2024-03-01"


def _spec():
    from cormorant.spec import load_spec

    return load_spec(ROOT / "include" / "specs" / "churn.yaml")


def _frame(rows: int):
    """``rows`` rows shaped like the example's: days of the generator, tiled, with fresh keys."""
    from datetime import date, timedelta

    import numpy as np
    import pandas as pd

    from cormorant.synthetic import generate_day

    base = pd.concat(
        [generate_day(date(2024, 1, 1) + timedelta(days=i)) for i in range(40)], ignore_index=True
    )
    reps = -(-rows // len(base))
    frame = pd.concat([base] * reps, ignore_index=True).iloc[:rows].copy()
    frame["customer_id"] = np.arange(rows, dtype="int64")
    frame["event_ts"] = pd.Timestamp(DAY, tz="UTC") + pd.to_timedelta(np.arange(rows) % 86_400, unit="s")
    return frame


PARAMS = {"xgboost": {"n_estimators": 100, "max_depth": 6}, "mlp": {"epochs": 3}, "linear": {}}


def fit_model(family: str, *, matrix: bool = False):
    """The benchmark's model of a family: 20k rows of the example data, fixed seed (deterministic)."""
    from cormorant import families as fam
    from cormorant.features import FittedPreprocessor, target_vector

    spec = _spec()
    train = _frame(20_000)
    pre = FittedPreprocessor(spec, train)
    X = pre.transform(train)
    trained = fam.fit(family, X, target_vector(train, spec), PARAMS[family], classification=True, seed=0)
    return (pre, trained, X.shape[1], X) if matrix else (pre, trained, X.shape[1])


def setup(work: Path, rows: list[int], families: list[str]) -> None:
    """The ONNX models (as MLflow models) and one lake partition per size."""
    import mlflow.onnx
    import pyarrow as pa

    from cormorant.explain import log_explainer
    from cormorant.export import export_model
    from cormorant.lake import Lake
    from cormorant.validation import validation_report_key
    from cormorant.warehouse import conform, lake_schema, raw_dataset, spec_types

    spec = _spec()
    _tracking(work)
    runs = {}
    experiment = mlflow.create_experiment("bench", artifact_location=(work / "artifacts").as_uri())
    for family in families:
        pre, trained, width, X = fit_model(family, matrix=True)
        mlflow.onnx.save_model(export_model(pre, trained, spec, width), work / f"model-{family}")
        if family in EXPLAINED:
            with mlflow.start_run(experiment_id=experiment) as run:
                log_explainer(spec, trained, pre, X)
            runs[family] = run.info.run_id
    (work / "runs.json").write_text(json.dumps(runs))
    for n in rows:
        lake = Lake(work / f"lake-{n}")
        table = pa.Table.from_pandas(_frame(n), preserve_index=False)
        schema = lake_schema(table.schema, spec_types(spec))
        manifest = lake.write_partition(
            raw_dataset(spec), DAY, (conform(b, schema) for b in table.to_batches(131_072)), schema=schema
        )
        # the benchmark scores data it generated; its validation verdict is recorded as a pass
        lake.write_json(
            validation_report_key(spec, DAY), {"success": True, "content_hash": manifest.content_hash}
        )


def _native_scores(family: str, trained, matrix):
    import numpy as np

    model = trained.model
    if family == "xgboost":
        return np.asarray(model.get_booster().inplace_predict(matrix))
    from cormorant import families as fam

    return fam.predict_score(trained, matrix)


def worker(method: str, family: str, rows: int, work: Path) -> dict:
    """One method, in this process; returns rows, seconds, peak RSS."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cormorant.export import onnx_scores, onnx_session
    from cormorant.features import model_frame, onnx_feed
    from cormorant.inference import predict_partition, predictions_dataset
    from cormorant.lake import Lake
    from cormorant.warehouse import raw_dataset

    spec = _spec()
    lake = Lake(work / f"lake-{rows}")
    columns = [*spec.source.key_columns, spec.source.partition_column, *spec.feature_columns]
    import mlflow.onnx
    import sklearn  # noqa: F401
    import torch  # noqa: F401
    import xgboost  # noqa: F401

    out = work / f"out-{method}-{family}-{rows}.parquet"
    if method == "native":  # the same model, fitted again (deterministic) before the clock
        pre, trained, _ = fit_model(family)
        native = {"preprocessor": pre.sklearn, "trained": trained}
    started = time.perf_counter()  # ONNX models are loaded on the clock, as a batch job does
    if method == "onnxruntime":
        session = onnx_session(mlflow.onnx.load_model(str(work / f"model-{family}")))
    if method in ("cormorant", "reasons", "reasons-approx"):
        model = {"name": "bench", "version": "1", "run_id": "bench", "uri": str(work / f"model-{family}")}
        if method.startswith("reasons"):
            from cormorant.spec import PredictSpec

            _tracking(work)
            model["run_id"] = json.loads((work / "runs.json").read_text())[family]
            how = "approximate" if method == "reasons-approx" else "exact"
            spec = spec.model_copy(update={"predict": PredictSpec(reason_codes=3, reason_method=how)})
        manifest = predict_partition(spec, lake, DAY, model)
        scores = lake.read(predictions_dataset(spec), DAY, columns=["score"]).column("score")
        seconds = time.perf_counter() - started
        pq.write_table(pa.table({"score": scores}), out)
        n = manifest.row_count
    else:
        frame = lake.read(raw_dataset(spec), DAY, columns=columns).to_pandas()
        if method == "native":
            matrix = native["preprocessor"].transform(model_frame(frame, spec)).astype(np.float32)
            scores = _native_scores(family, native["trained"], matrix)
        else:
            scores = onnx_scores(session, onnx_feed(frame, spec))
        table = pa.table({c: frame[c] for c in [*spec.source.key_columns, spec.source.partition_column]})
        pq.write_table(table.append_column("score", pa.array(scores, type=pa.float64())), out)
        seconds = time.perf_counter() - started
        n = len(frame)
    peak = peak_rss_mb()
    return {
        "method": method,
        "family": family,
        "rows": n,
        "seconds": seconds,
        "rows_per_s": n / seconds,
        "peak_rss_mb": peak,
    }


def run(method: str, family: str, rows: int, work: Path) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--family", family, "--work", str(work)]
    return {"method": method, "family": family, **worker_result([*command, "--rows", str(rows)])}


def parity(work: Path, family: str, rows: int) -> float:
    import numpy as np
    import pyarrow.parquet as pq

    ours = pq.read_table(work / f"out-cormorant-{family}-{rows}.parquet").column("score").to_numpy()
    theirs = pq.read_table(work / f"out-onnxruntime-{family}-{rows}.parquet").column("score").to_numpy()
    return float(np.max(np.abs(ours - theirs)))


def render(results: list[dict]) -> str:
    lines = [
        "| family | rows | method | rows/s | seconds | peak RSS (MB) | vs native |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(
                f"| {r['family']} | {r['rows_requested']:,} | {r['method']} | – | – | – | {r['error']} |"
            )
            continue
        base = next(
            (
                x
                for x in results
                if x.get("method") == "native"
                and x["family"] == r["family"]
                and x["rows_requested"] == r["rows_requested"]
                and "error" not in x
            ),
            None,
        )
        ratio = f"{r['rows_per_s'] / base['rows_per_s']:.2f}x" if base else "–"
        name = {
            "cormorant": "**cormorant**",
            "reasons": "cormorant + 3 reason codes (exact)",
            "reasons-approx": "cormorant + 3 reason codes (approximate)",
        }.get(r["method"], r["method"])
        lines.append(
            f"| {r['family']} | {r['rows_requested']:,} | {name} | {r['rows_per_s']:,.0f} | "
            f"{r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    add_repeat(parser)
    parser.add_argument("--families", nargs="+", default=["xgboost", "mlp", "linear"])
    parser.add_argument(
        "--reason-rows", type=int, default=100_000, help="rows of the reason codes' run (0: no such run)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.family, args.rows[0], Path(args.work))))
        sys.exit(0)

    results = []
    with tempfile.TemporaryDirectory(prefix="cormorant-bench-inference-") as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        sizes = [*args.rows, *([args.reason_rows] if args.reason_rows > 0 else [])]
        setup(work, sizes, args.families)
        print(f"models trained and partitions written in {time.perf_counter() - began:.0f}s", flush=True)
        for n in sizes:
            for family in args.families:
                methods = REASON_METHODS if n == args.reason_rows else METHODS
                if n == args.reason_rows and family not in EXPLAINED:
                    continue
                for method in methods:
                    runs = [run(method, family, n, work) for _ in range(args.repeat)]
                    result = {"rows_requested": n, **median_run(runs)}
                    results.append(
                        say(
                            f"{family:<8} {n:>10,} {method:<12}",
                            result,
                            lambda r: (
                                f"{r['rows_per_s']:>10,.0f} rows/s {r['seconds']:>6.2f}s  "
                                f"peak RSS {r['peak_rss_mb']:>6.0f} MB"
                            ),
                        )
                    )
                if n != args.reason_rows and all("error" not in r for r in results[-len(methods) :]):
                    diff = parity(work, family, n)
                    next(r for r in results[::-1] if r["method"] == "cormorant")[
                        "max_abs_diff_vs_onnxruntime"
                    ] = diff
                    print(
                        f"  {family:<8} {n:>10,} scores: max |cormorant - onnxruntime| = {diff:.2e}",
                        flush=True,
                    )
    return finish("inference", results, render(results))


if __name__ == "__main__":
    main()
