"""Benchmark: a trial's compute on the GPU against the CPUs of the same machine (XGBoost and the MLP).

    python scripts/benchmark_gpu.py [--rows 10000000] [--families xgboost mlp] [--repeat 1]

Builds ``--rows`` rows shaped like the example (the generator's days, tiled, as the inference benchmark
does) and the spec's design matrix, then times what a trial's fitting and scoring do, through the
trainer's own functions (``cormorant.families.fit`` and ``predict_score``): fit on 80% of the rows,
score the other 20%, once with ``device="cpu"`` (every CPU of the machine: ``trial_threads()``) and once
with ``device="cuda"``. The GPU's one-off start (the CUDA context, a first tiny fit) is timed apart and
left out of the ratio; the holdout ROC AUC of both runs is kept, so a fast run that learnt nothing shows.

Needs an NVIDIA GPU and CUDA builds of xgboost and torch (the trainer image has both); on a machine
without one it says so and keeps nothing. Results in ``benchmarks/results/gpu-<timestamp>.{json,md}``.

``--matrix-memory`` measures instead, on any machine, what XGBoost's training matrix adds to a trial's
host memory: a DMatrix (a GPU trial's) against a QuantileDMatrix (the CPU path's), each in a fresh
process (``gpu-matrix-memory-<timestamp>``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

from bench_common import add_repeat, finish, median_run, peak_rss_mb, rss_mb, say, worker_result  # noqa: E402

# A production-sized trial of each family (the example spec's search space is sized for a 2-core demo).
PARAMS = {
    "xgboost": {"max_depth": 8, "n_estimators": 400, "learning_rate": 0.05},
    "mlp": {"hidden_units": 256, "layers": 3, "epochs": 2, "learning_rate": 0.001, "batch_size": 4096},
}


def design(rows: int):
    """The trial's inputs at ``rows`` rows: the spec's preprocessing fitted on the training part."""
    import numpy as np
    from benchmark_inference import _frame, _spec

    from cormorant.features import build_preprocessor, model_frame, target_vector

    spec = _spec()
    frame = _frame(rows)
    cut = int(rows * 0.8)
    train, test = frame.iloc[:cut], frame.iloc[cut:]
    pre = build_preprocessor(spec).fit(model_frame(train, spec))
    as_matrix = lambda part: np.ascontiguousarray(pre.transform(model_frame(part, spec)), dtype=np.float32)  # noqa: E731
    return as_matrix(train), target_vector(train, spec), as_matrix(test), target_vector(test, spec)


def cuda_ready(families: list[str]) -> str | None:
    """Why the GPU cannot be measured here, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    if "xgboost" not in families:
        return None
    try:
        import xgboost
    except ImportError:
        return "xgboost is not installed"
    if not xgboost.build_info().get("USE_CUDA"):
        return "this xgboost build has no CUDA"
    return None


def warm_up(families_: list[str]) -> float:
    """The GPU's one-off start-up in a trial process: the CUDA context and a first fit of each family."""
    import numpy as np

    from cormorant import families

    started = time.perf_counter()
    X = np.random.default_rng(0).random((1000, 8), dtype=np.float32)
    y = (X[:, 0] > 0.5).astype("float32")
    for family in families_:
        families.fit(family, X, y, {"n_estimators": 2} if family == "xgboost" else {"epochs": 1},
                     classification=True, seed=0, device="cuda")  # fmt: skip
    return time.perf_counter() - started


def run(family: str, device: str, data) -> dict:
    from sklearn.metrics import roc_auc_score

    from cormorant import families

    X_train, y_train, X_test, y_test = data
    started = time.perf_counter()
    trained = families.fit(
        family, X_train, y_train, PARAMS[family], classification=True, seed=7, device=device
    )
    fitted = time.perf_counter()
    scores = families.predict_score(trained, X_test)
    done = time.perf_counter()
    return {
        "family": family,
        "device": device,
        "fit_seconds": fitted - started,
        "score_seconds": done - fitted,
        "seconds": done - started,
        "holdout_roc_auc": float(roc_auc_score(y_test, scores)),
    }


def xgboost_phases(data) -> dict:
    """Where XGBoost's GPU fit and score go, timed apart through XGBoost's own API with the trial's
    parameters: the training matrix built from host arrays, the boosting rounds on it, and prediction
    from host arrays; the matrix as scikit-learn's wrapper builds it (a QuantileDMatrix: its quantiles
    sketched on the CPU) and as a trial builds it on a GPU (a DMatrix: the GPU sketches them). Where
    cupy is installed (the device machine's image has it; the trainer does not depend on it), the same
    from arrays already on the GPU, for comparison."""
    import xgboost as xgb

    from cormorant.families import trial_threads

    X_train, y_train, X_test, _ = data
    params = dict(PARAMS["xgboost"])
    rounds = params.pop("n_estimators")
    booster_params = {
        **params,
        "objective": "binary:logistic",
        "tree_method": "hist",
        "device": "cuda",
        "seed": 7,
        "nthread": trial_threads(),
    }

    def timed(make_matrix, test) -> dict:
        started = time.perf_counter()
        matrix = make_matrix()
        built = time.perf_counter()
        booster = xgb.train(booster_params, matrix, rounds)
        boosted = time.perf_counter()
        booster.inplace_predict(test)
        return {
            "matrix_s": built - started,
            "boost_s": boosted - built,
            "predict_s": time.perf_counter() - boosted,
        }

    phases = {"family": "xgboost-phases", "device": "cuda"}
    phases["host"] = timed(lambda: xgb.QuantileDMatrix(X_train, y_train, nthread=trial_threads()), X_test)
    phases["host_dmatrix"] = timed(lambda: xgb.DMatrix(X_train, y_train, nthread=trial_threads()), X_test)
    try:
        import cupy
    except ImportError:
        return phases
    on_device = cupy.asarray(X_train), cupy.asarray(y_train), cupy.asarray(X_test)
    cupy.cuda.Device().synchronize()
    phases["gpu_arrays"] = timed(lambda: xgb.QuantileDMatrix(on_device[0], on_device[1]), on_device[2])
    return phases


def render_phases(phases: dict) -> str:
    def line(p: dict) -> str:
        matrix, boost, predict = p["matrix_s"], p["boost_s"], p["predict_s"]
        return f"training matrix {matrix:.2f} s, boosting {boost:.2f} s, predict {predict:.2f} s"

    text = (
        f"XGBoost on the GPU by phase, from host arrays: as a QuantileDMatrix (scikit-learn's wrapper) "
        f"{line(phases['host'])}; as a DMatrix (a trial's path) {line(phases['host_dmatrix'])}"
    )
    if "gpu_arrays" in phases:
        text += f"; from arrays already on the GPU (cupy): {line(phases['gpu_arrays'])}"
    return text


def render(results: list[dict], rows: int, threads: int, gpu: str, warm: float) -> str:
    lines = [
        f"{rows:,} rows (fit on 80%, score 20%); CPU: {threads} threads; GPU: {gpu} "
        f"(one-off CUDA start and first fits: {warm:.1f} s, not in the ratio)",
        "",
        "| family | params | CPU (s) | GPU (s) | GPU speed-up | AUC CPU / GPU | vs 10x goal |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    by = {(r["family"], r["device"]): r for r in results}
    for family, params in PARAMS.items():
        cpu, gpu_run = by.get((family, "cpu")), by.get((family, "cuda"))
        if not cpu or not gpu_run:
            continue
        ratio = cpu["seconds"] / gpu_run["seconds"]
        lines.append(
            f"| {family} | `{params}` | {cpu['seconds']:.1f} | {gpu_run['seconds']:.1f} | **{ratio:.1f}x** | "
            f"{cpu['holdout_roc_auc']:.4f} / {gpu_run['holdout_roc_auc']:.4f} | "
            f"{'met' if ratio >= 10 else 'not met'} |"
        )
    return "\n".join(lines)


MATRICES = ("arrays alone", "DMatrix", "QuantileDMatrix")


def matrix_worker(kind: str, rows: int) -> None:
    """In its own process: ``rows`` x 17 random float32 rows and a label, then the training matrix of
    ``kind`` built from them as a trial builds it; prints the arrays' and the peak resident memory."""
    import json

    import numpy as np
    import xgboost as xgb

    from cormorant.families import trial_threads

    X = np.random.default_rng(0).random((rows, 17), dtype=np.float32)
    y = (X[:, 0] > 0.5).astype(np.float32)
    arrays = rss_mb()
    if kind == "DMatrix":
        matrix = xgb.DMatrix(X, y, nthread=trial_threads())
    elif kind == "QuantileDMatrix":
        matrix = xgb.QuantileDMatrix(X, y, nthread=trial_threads())
    else:
        matrix = None
    print(json.dumps({"matrix": kind, "rows": rows, "arrays_mb": arrays, "peak_mb": peak_rss_mb()}))
    del matrix


def matrix_memory(rows: int) -> dict:
    """What XGBoost's training matrix adds to a trial's host memory, per kind, each in a fresh process
    (no GPU needed: both are built on the host). A GPU trial builds a DMatrix; the CPU path and
    scikit-learn's wrapper a QuantileDMatrix."""
    results = []
    for kind in MATRICES:
        command = [sys.executable, __file__, "--matrix-worker", kind, "--rows", str(rows)]
        result = say(
            f"{kind:<16}",
            worker_result(command),
            lambda r: f"arrays {r['arrays_mb']:.0f} MB  peak {r['peak_mb']:.0f} MB",
        )
        results.append(result)
    alone = next((r["peak_mb"] for r in results if r.get("matrix") == MATRICES[0]), None)
    lines = [
        f"XGBoost's training matrix from {rows:,} x 17 random float32 rows, each in a fresh process",
        "",
        "| matrix | peak RSS (MB) | added to the arrays alone (MB) |",
        "|---|---:|---:|",
    ]
    for r in results:
        if "error" not in r:
            added = r["peak_mb"] - alone if alone is not None else float("nan")
            lines.append(f"| {r['matrix']} | {r['peak_mb']:.0f} | {added:.0f} |")
    return finish("gpu-matrix-memory", results, "\n".join(lines))


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000])
    parser.add_argument("--families", nargs="+", choices=list(PARAMS), default=list(PARAMS))
    parser.add_argument(
        "--matrix-memory",
        action="store_true",
        help="only the host memory of XGBoost's training matrices at 80%% of --rows (no GPU needed)",
    )
    parser.add_argument("--matrix-worker", choices=MATRICES, help=argparse.SUPPRESS)
    add_repeat(parser)
    args = parser.parse_args(argv)
    if args.matrix_worker:
        return matrix_worker(args.matrix_worker, args.rows[0])
    if args.matrix_memory:
        return matrix_memory(int(args.rows[0] * 0.8))
    if reason := cuda_ready(args.families):
        print(f"  skipped: {reason}", flush=True)
        return None
    import torch

    from cormorant.families import trial_threads

    warm = warm_up(args.families)
    gpu = torch.cuda.get_device_name(0)
    results, tables = [], []
    for rows in args.rows:
        started = time.perf_counter()
        data = design(rows)
        print(
            f"  {rows:,} rows: design matrix {data[0].shape} in {time.perf_counter() - started:.0f}s",
            flush=True,
        )
        sized = []
        for family in args.families:
            for device in ("cpu", "cuda"):
                result = median_run([run(family, device, data) for _ in range(args.repeat)])
                sized.append({**result, "rows": rows, "threads": trial_threads(), "gpu": gpu})
                say(
                    f"{family:<8} {device:<5}",
                    result,
                    lambda r: (
                        f"fit {r['fit_seconds']:7.1f}s  score {r['score_seconds']:5.1f}s  "
                        f"AUC {r['holdout_roc_auc']:.4f}"
                    ),
                )
        results += sized
        tables.append(render(sized, rows, trial_threads(), gpu, warm))
        if "xgboost" in args.families:
            phases = {**xgboost_phases(data), "rows": rows}
            results.append(phases)
            tables.append(render_phases(phases))
    return finish("gpu", results, "\n\n".join(tables))


if __name__ == "__main__":
    main()
