"""The blessing: what a registered version must pass before the ``champion`` alias may move to it.

Beating the champion's holdout metric is necessary, not sufficient. Before any alias moves:

- **Infra validation** (TFX's InfraValidator): the registered ONNX artifact, downloaded back from the
  registry, is loaded by ONNX Runtime in a fresh process with the serving session options and scores
  the holdout; its scores must equal the trainer's (its run's logged model, scored here) to
  ``INFRA_TOLERANCE``; the latency per 10k rows is recorded.
- **Slices**: the metric per value of each categorical feature (and each column in
  ``promotion.slices``) for the challenger and the champion on the same holdout rows; with
  ``promotion.max_slice_regression`` set, a challenger worse than the champion by more than that on any
  slice of at least ``promotion.min_slice_rows`` rows is refused.
- **Calibration** (classifiers): Brier score and expected calibration error, with a reliability plot;
  ``promotion.max_ece`` optionally bounds the error.

The blessing is one JSON document, kept with the version (an artifact of its MLflow run and the version
tag ``cormorant.blessing``) and in the lake (``<spec>/reports/blessing/v<N>/``); a failed blessing names
each failure and leaves the alias where it was.

``python -m cormorant.blessing --model M.onnx --feed F.npz --output S.npz`` is the fresh process.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

INFRA_TOLERANCE = 1e-5
MISSING = "(missing)"


def blessing_prefix(spec_name: str, version: str) -> str:
    return f"{spec_name}/reports/blessing/v{version}"


# -- infra validation ------------------------------------------------------------------------------------
def registered_onnx_file(model_uri: str, into: Path) -> Path:
    """Download the registered model back from the registry; its ONNX file."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(into)))
    found = sorted(local.rglob("*.onnx"))
    if not found:
        raise FileNotFoundError(
            f"{model_uri} holds no .onnx file (found {sorted(p.name for p in local.rglob('*'))})"
        )
    return found[0]


def infra_validation(model_uri: str, feed: dict[str, np.ndarray], expected: np.ndarray) -> dict[str, Any]:
    """Score ``feed`` with the registered artifact in a fresh process; compare with ``expected``."""
    with tempfile.TemporaryDirectory(prefix="cormorant-infra-") as tmp:
        work = Path(tmp)
        try:
            model = registered_onnx_file(model_uri, work / "model")
        except Exception as exc:
            return {"passed": False, "failure": f"the registered artifact could not be downloaded: {exc}"}
        np.savez(work / "feed.npz", **feed)
        command = [sys.executable, "-m", "cormorant.blessing", "--model", str(model), "--feed",
                   str(work / "feed.npz"), "--output", str(work / "scores.npz")]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            cause = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            return {
                "passed": False,
                "failure": f"ONNX Runtime could not load or run the registered model: {cause}",
            }
        with np.load(work / "scores.npz") as out:
            scores, seconds = out["scores"], float(out["seconds"])
    rows = len(expected)
    diff = float(np.max(np.abs(scores - expected))) if rows else 0.0
    result = {
        "rows": rows,
        "max_abs_diff": diff,
        "tolerance": INFRA_TOLERANCE,
        "seconds": seconds,
        "ms_per_10k_rows": 1000 * seconds * 10_000 / rows if rows else None,
        "passed": bool(len(scores) == rows and diff <= INFRA_TOLERANCE),
    }
    if not result["passed"]:
        result["failure"] = (
            f"the registered artifact scores the holdout differently from the trained model: max |diff| "
            f"{diff:.2e} > {INFRA_TOLERANCE:g} over {rows} rows"
            if len(scores) == rows
            else f"the registered artifact returned {len(scores)} scores for {rows} rows"
        )
    return result


def _score_in_this_process(model: Path, feed: Path, output: Path) -> None:
    import onnx

    from cormorant.export import onnx_scores, onnx_session

    session = onnx_session(onnx.load(str(model)))  # the serving session options
    with np.load(feed) as arrays:
        inputs = {name: arrays[name] for name in arrays.files}
    rows = len(next(iter(inputs.values()))) if inputs else 0
    onnx_scores(session, {k: v[: min(rows, 100)] for k, v in inputs.items()})  # warm-up, off the clock
    started = time.perf_counter()
    scores = onnx_scores(session, inputs)
    np.savez(output, scores=scores, seconds=time.perf_counter() - started)


# -- slices and calibration ------------------------------------------------------------------------------
def slice_table(
    spec: Any, frame: Any, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray | None
) -> list[dict[str, Any]]:
    """The spec's metric per slice (each value of each categorical feature and promotion.slices column)."""
    from cormorant.metrics import compute_metric

    columns = list(dict.fromkeys([*spec.features.categorical, *spec.promotion.slices]))
    rows = []
    for column in columns:
        values = frame[column].astype("object").where(frame[column].notna(), MISSING).astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            n = int(mask.sum())
            row: dict[str, Any] = {"column": column, "value": value, "rows": n}
            try:
                row["challenger"] = float(compute_metric(spec.training.metric, y[mask], challenger[mask]))
                if champion is not None:
                    row["champion"] = float(compute_metric(spec.training.metric, y[mask], champion[mask]))
            except ValueError as exc:  # one class only, say: the metric is not defined on this slice
                row["undefined"] = str(exc).splitlines()[0][:200]
            rows.append(row)
    return rows


def slice_regressions(spec: Any, table: list[dict[str, Any]]) -> list[str]:
    """The slices on which the challenger is worse than the champion beyond the spec's bound."""
    bound = spec.promotion.max_slice_regression
    if bound is None:
        return []
    failures = []
    for row in table:
        if row["rows"] < spec.promotion.min_slice_rows or "champion" not in row or "challenger" not in row:
            continue
        loss = (
            row["champion"] - row["challenger"]
            if spec.metric_higher_is_better
            else row["challenger"] - row["champion"]
        )
        row["regression"] = loss
        if loss > bound:
            failures.append(
                f"slice {row['column']}={row['value']} ({row['rows']} rows): {spec.training.metric} "
                f"{row['challenger']:.4f} vs champion {row['champion']:.4f}, worse by {loss:.4f} > "
                f"promotion.max_slice_regression {bound}"
            )
    return failures


def calibration(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Brier score, expected calibration error (equal-width bins) and the reliability curve."""
    y = np.asarray(y, dtype="float64")
    scores = np.clip(np.asarray(scores, dtype="float64"), 0.0, 1.0)
    which = np.minimum((scores * bins).astype(int), bins - 1)
    curve, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        mean_score, observed = float(scores[mask].mean()), float(y[mask].mean())
        ece += mask.mean() * abs(mean_score - observed)
        curve.append({"bin": b, "rows": int(mask.sum()), "mean_score": mean_score, "observed_rate": observed})
    return {"brier": float(np.mean((scores - y) ** 2)), "ece": float(ece), "bins": bins, "curve": curve}


def reliability_png(spec_name: str, version: str, calib: dict[str, Any]) -> bytes:
    from cormorant.drift import figure_png, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="perfectly calibrated")
    xs = [p["mean_score"] for p in calib["curve"]]
    ax.plot(
        xs, [p["observed_rate"] for p in calib["curve"]], marker="o", color="#1f77b4", label=f"v{version}"
    )
    ax.set_xlabel("mean predicted score")
    ax.set_ylabel("observed positive rate")
    ax.set_title(f"{spec_name} v{version}: ECE {calib['ece']:.3f}, Brier {calib['brier']:.3f}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    return figure_png(fig)


# -- the blessing ----------------------------------------------------------------------------------------
def bless(
    spec: Any,
    *,
    version: str,
    model_uri: str,
    champion_uri: str | None,
    holdout: Any,
    feed: dict[str, np.ndarray],
    y: np.ndarray,
    trained: np.ndarray,
    champion: np.ndarray | None,
) -> dict[str, Any]:
    """Run every check for the version registered at ``model_uri`` against the champion at
    ``champion_uri`` on the ``holdout`` frame (its ONNX ``feed`` and targets ``y``), given the scores
    of the trained model and of the champion there; the blessing document."""
    checks: dict[str, Any] = {"infra": infra_validation(model_uri, feed, trained)}
    failures = [checks["infra"]["failure"]] if not checks["infra"]["passed"] else []

    table = slice_table(spec, holdout, y, trained, champion)
    slice_failures = slice_regressions(spec, table)
    checks["slices"] = {
        "max_slice_regression": spec.promotion.max_slice_regression,
        "min_slice_rows": spec.promotion.min_slice_rows,
        "slices": table,
        "passed": not slice_failures,
    }
    failures += slice_failures
    if spec.is_classification:
        calib = calibration(y, trained)
        bound = spec.promotion.max_ece
        calib.update(max_ece=bound, passed=bound is None or calib["ece"] <= bound)
        if not calib["passed"]:
            failures.append(f"expected calibration error {calib['ece']:.4f} > promotion.max_ece {bound}")
        checks["calibration"] = calib
    return {
        "spec": spec.name,
        "version": version,
        "model_uri": model_uri,
        "champion_uri": champion_uri,
        "holdout_rows": len(y),
        "passed": not failures,
        "failures": failures,
        "checks": checks,
    }


def digest(document: dict[str, Any], higher_is_better: bool = True, weakest: int = 3) -> dict[str, Any]:
    """What a person deciding on the version needs from its blessing: the verdict, infra validation,
    calibration, and the ``weakest`` slices (the largest loss against the champion, else the lowest
    metric)."""
    checks = document["checks"]
    sign = 1.0 if higher_is_better else -1.0
    rows = [r for r in checks["slices"]["slices"] if "challenger" in r]

    def weakness(row: dict[str, Any]) -> float:
        if "champion" in row:
            return sign * (row["challenger"] - row["champion"])
        return sign * row["challenger"]

    calib = checks.get("calibration") or {}
    return {
        "passed": document["passed"],
        "failures": document["failures"],
        "infra": {k: checks["infra"].get(k) for k in ("passed", "max_abs_diff", "ms_per_10k_rows")},
        "calibration": {k: calib[k] for k in ("brier", "ece") if k in calib},
        "weakest_slices": sorted(rows, key=weakness)[:weakest],
    }


def keep(spec: Any, lake: Any, client: Any, version: Any, document: dict[str, Any]) -> str:
    """Keep the blessing with the version (its run's artifacts, a tag) and in the lake; its lake URI."""
    prefix = blessing_prefix(spec.name, str(version.version))
    uri = lake.write_json(f"{prefix}/blessing.json", document)
    if "calibration" in document["checks"]:
        lake.write_bytes(
            f"{prefix}/reliability.png",
            reliability_png(spec.name, str(version.version), document["checks"]["calibration"]),
        )
    client.log_dict(version.run_id, document, f"blessing/v{version.version}.json")
    verdict = "passed" if document["passed"] else "failed: " + "; ".join(document["failures"])
    client.set_model_version_tag(
        spec.registered_model_name, version.version, "cormorant.blessing", verdict[:5000]
    )
    client.set_model_version_tag(spec.registered_model_name, version.version, "cormorant.blessing_uri", uri)
    return uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score a feed with an ONNX file in this fresh process.")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--feed", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    _score_in_this_process(args.model, args.feed, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
