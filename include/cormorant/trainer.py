"""The trainer: one sweep trial, as a CLI, so the same code runs in a Kubernetes pod or locally.

    python -m cormorant.trainer --spec include/specs/churn.yaml --trial trial.json --output result.json

A trial reads its training partitions from the lake, cross-validates one family and parameter set,
refits on the whole training window, exports the model with its preprocessing to ONNX, scores the
holdout through ONNX Runtime, and logs everything to an MLflow child run of the sweep. The result
JSON (a reference: run id, model URI, metrics) is what the orchestrator reads back.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cormorant import __version__
from cormorant.config import Settings
from cormorant.lake import Lake
from cormorant.spec import ModelSpec, load_spec

log = logging.getLogger("cormorant.trainer")

PARITY_TOLERANCE = 1e-4


@dataclass
class Trial:
    """What one trial needs; built by the sweep plan and passed to the CLI as JSON."""

    trial_id: str
    family: str
    params: dict[str, Any]
    train_partitions: list[str]
    holdout_partitions: list[str]
    folds: int
    seed: int
    sweep_key: str = ""
    parent_run_id: str | None = None
    manifest_hashes: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)  # for the pod; the trainer ignores it
    cache_key: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        return cls(**data)


def load_frames(spec: ModelSpec, lake: Lake, partitions: list[str]) -> Any:
    from cormorant.warehouse import raw_dataset

    columns = spec.required_columns
    return lake.read_many(raw_dataset(spec), partitions, columns=columns).to_pandas()


def cross_validate(spec: ModelSpec, trial: Trial, frame: Any, device: str) -> list[float]:
    """Per-fold metric values; preprocessing is fitted inside each fold (no leakage)."""
    from cormorant import families
    from cormorant.features import FittedPreprocessor, target_vector
    from cormorant.metrics import compute_metric, cv_splits

    y = target_vector(frame, spec)
    scores = []
    for train_idx, test_idx in cv_splits(y, trial.folds, trial.seed, stratified=spec.is_classification):
        train, test = frame.iloc[train_idx], frame.iloc[test_idx]
        pre = FittedPreprocessor(spec, train)
        model = families.fit(
            trial.family,
            pre.transform(train),
            y[train_idx],
            trial.params,
            classification=spec.is_classification,
            seed=trial.seed,
            device=device,
        )
        scores.append(
            compute_metric(
                spec.training.metric, y[test_idx], families.predict_score(model, pre.transform(test))
            )
        )
    return scores


def run_trial(spec: ModelSpec, trial: Trial, settings: Settings) -> dict[str, Any]:
    """Run one trial end to end and return its result contract (see the module docstring)."""
    import mlflow

    from cormorant import families
    from cormorant.drift import build_reference
    from cormorant.export import export_model, onnx_scores, onnx_session
    from cormorant.features import FittedPreprocessor, onnx_feed, target_vector
    from cormorant.metrics import compute_metric
    from cormorant.tracking import ensure_experiment

    started = time.monotonic()
    device = "cuda" if families.gpu_available() else "cpu"
    log.info("trial %s: %s %s on %s", trial.trial_id, trial.family, trial.params, device)
    lake = Lake(settings.lake_uri)
    train = load_frames(spec, lake, trial.train_partitions)
    holdout = load_frames(spec, lake, trial.holdout_partitions)
    experiment_id = ensure_experiment(spec, settings)

    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{trial.trial_id}",
        parent_run_id=trial.parent_run_id,
        nested=trial.parent_run_id is not None,
        tags={
            "cormorant.spec": spec.name,
            "cormorant.family": trial.family,
            "cormorant.trial_id": trial.trial_id,
            "cormorant.sweep_key": trial.sweep_key,
            "cormorant.spec_fingerprint": spec.fingerprint,
            "cormorant.trainer_version": __version__,
            "cormorant.device": device,
            "cormorant.cache_key": trial.cache_key,
        },
    ) as run:
        mlflow.log_params({**trial.params, "family": trial.family, "folds": trial.folds, "seed": trial.seed})
        mlflow.log_dict(
            {
                "train": trial.train_partitions,
                "holdout": trial.holdout_partitions,
                "manifest_hashes": trial.manifest_hashes,
            },
            "inputs.json",
        )
        cv_started = time.monotonic()
        fold_scores = cross_validate(spec, trial, train, device)
        metric = spec.training.metric
        for i, value in enumerate(fold_scores):
            mlflow.log_metric(f"cv_{metric}", value, step=i)
        cv_mean, cv_std = float(np.mean(fold_scores)), float(np.std(fold_scores, ddof=1))
        cv_seconds = time.monotonic() - cv_started

        pre = FittedPreprocessor(spec, train)
        y_train = target_vector(train, spec)
        X_train = pre.transform(train)
        fitted = families.fit(
            trial.family,
            X_train,
            y_train,
            trial.params,
            classification=spec.is_classification,
            seed=trial.seed,
            device=device,
        )
        onnx_model = export_model(pre, fitted, spec, X_train.shape[1])
        session = onnx_session(onnx_model)
        holdout_scores = onnx_scores(session, onnx_feed(holdout, spec))
        native = families.predict_score(fitted, pre.transform(holdout))
        parity = float(np.max(np.abs(holdout_scores - native))) if len(native) else 0.0
        if parity > PARITY_TOLERANCE:
            raise RuntimeError(
                f"ONNX export of {trial.family} differs from the native model by {parity:.2e} "
                f"(> {PARITY_TOLERANCE}) on the holdout"
            )
        holdout_metric = compute_metric(metric, target_vector(holdout, spec), holdout_scores)
        train_scores = onnx_scores(session, onnx_feed(train, spec))
        mlflow.log_metrics(
            {
                f"cv_{metric}_mean": cv_mean,
                f"cv_{metric}_std": cv_std,
                f"holdout_{metric}": holdout_metric,
                "onnx_parity_max_abs_diff": parity,
                "cv_seconds": cv_seconds,
                "train_rows": len(train),
                "holdout_rows": len(holdout),
            }
        )
        mlflow.log_dict(build_reference(train, train_scores, spec), "reference.json")
        info = mlflow.onnx.log_model(onnx_model, name="model")
        seconds = time.monotonic() - started
        mlflow.log_metric("trial_seconds", seconds)
        result = {
            "trial_id": trial.trial_id,
            "family": trial.family,
            "params": trial.params,
            "status": "ok",
            "run_id": run.info.run_id,
            "model_uri": info.model_uri,
            "metric": metric,
            "cv_mean": cv_mean,
            "cv_std": cv_std,
            "cv_folds": fold_scores,
            "holdout_metric": holdout_metric,
            "onnx_parity": parity,
            "device": device,
            "seconds": round(seconds, 2),
        }
        mlflow.log_dict(result, "result.json")  # what a cache hit returns
    log.info(
        "trial %s: cv %s %.4f ± %.4f, holdout %.4f (%.1fs)",
        trial.trial_id,
        metric,
        cv_mean,
        cv_std,
        holdout_metric,
        seconds,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cormorant-trainer", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, type=Path, help="the model spec YAML file")
    parser.add_argument("--trial", required=True, help="the trial as JSON, or @FILE to read it from a file")
    parser.add_argument("--output", type=Path, help="where to write the result JSON (default: stdout)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    raw = Path(args.trial[1:]).read_text() if args.trial.startswith("@") else args.trial
    trial = Trial.from_dict(json.loads(raw))
    result = run_trial(load_spec(args.spec), trial, Settings.from_env())
    text = json.dumps(result, sort_keys=True)
    if args.output:
        args.output.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
