"""Registration and promotion in the MLflow model registry (MLflow 3: aliases, not stages).

The sweep's best trial is registered as a new version of ``cormorant.<spec>``. The ``champion``
alias moves to it only when it beats the current champion on the same holdout, both scored here
through ONNX Runtime. Registration is idempotent: a sweep already registered (same sweep key and
trial) reuses its version.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from cormorant.config import Settings
from cormorant.lake import Lake
from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)

CHAMPION = "champion"


def holdout_metric(spec: ModelSpec, model_uri: str, holdout: Any) -> float:
    import mlflow.onnx

    from cormorant.export import onnx_scores, onnx_session
    from cormorant.features import onnx_feed, target_vector
    from cormorant.metrics import compute_metric

    session = onnx_session(mlflow.onnx.load_model(model_uri))
    return compute_metric(
        spec.training.metric, target_vector(holdout, spec), onnx_scores(session, onnx_feed(holdout, spec))
    )


def current_champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _existing_version(client: Any, name: str, sweep_key: str, trial_id: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(
            f"name = '{name}' and tags.`cormorant.sweep_key` = '{sweep_key}'"
        )
    except MlflowException:
        return None
    matches = [v for v in found if v.tags.get("cormorant.trial_id") == trial_id]
    return max(matches, key=lambda v: int(v.version)) if matches else None


def register_and_promote(
    spec: ModelSpec, settings: Settings, lake: Lake, plan: dict[str, Any], results: list[dict[str, Any]]
) -> dict[str, Any]:
    """Register the best trial and move ``champion`` if it wins; returns a small summary."""
    import mlflow
    from mlflow import MlflowClient

    from cormorant.metrics import is_improvement, select_best
    from cormorant.tracking import configure
    from cormorant.trainer import load_frames

    configure(settings)
    client = MlflowClient()
    name = spec.registered_model_name
    best = select_best(results, higher_is_better=spec.metric_higher_is_better)
    succeeded = {r["trial_id"] for r in results if r and r.get("status") == "ok"}
    failed = sorted(set(plan.get("trial_ids") or []) - succeeded)
    tags = {
        "cormorant.spec": spec.name,
        "cormorant.sweep_key": plan["sweep_key"],
        "cormorant.trial_id": best["trial_id"],
        "cormorant.family": best["family"],
        "cormorant.run_id": best["run_id"],
        "cormorant.spec_fingerprint": spec.fingerprint,
    }
    version = _existing_version(client, name, plan["sweep_key"], best["trial_id"])
    if version is None:
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # already registered
            client.create_registered_model(
                name, tags={"cormorant.spec": spec.name}, description=spec.description or None
            )
        version = mlflow.register_model(best["model_uri"], name, tags=tags)
        log.info("registered %s version %s from trial %s", name, version.version, best["trial_id"])
    else:
        log.info(
            "sweep %s already registered as %s version %s; reusing it",
            plan["sweep_key"],
            name,
            version.version,
        )

    holdout = load_frames(spec, lake, plan["holdout_partitions"])
    candidate_metric = holdout_metric(spec, f"models:/{name}/{version.version}", holdout)
    champion = current_champion(client, name)
    champion_metric = None
    if champion is not None and champion.version != version.version:
        champion_metric = holdout_metric(spec, f"models:/{name}@{CHAMPION}", holdout)
    if champion is not None and champion.version == version.version:
        promoted = False
        reason = "already the champion"
    else:
        promoted = is_improvement(
            candidate_metric,
            champion_metric,
            higher_is_better=spec.metric_higher_is_better,
            min_improvement=spec.training.min_improvement,
        )
        reason = (
            "no champion yet"
            if champion is None
            else f"holdout {spec.training.metric} {candidate_metric:.4f} vs champion {champion_metric:.4f}"
        )
    metric = spec.training.metric
    client.set_model_version_tag(name, version.version, f"holdout_{metric}", f"{candidate_metric:.6f}")
    client.set_model_version_tag(
        name, version.version, "cormorant.holdout", ",".join(plan["holdout_partitions"])
    )
    client.set_model_version_tag(
        name,
        version.version,
        "cormorant.promotion",
        f"{'promoted' if promoted else 'not promoted'}: {reason}",
    )
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        log.info("promoted %s version %s to %s: %s", name, version.version, CHAMPION, reason)
    else:
        log.info("kept %s; version %s not promoted: %s", CHAMPION, version.version, reason)
    champion_now = current_champion(client, name)
    return {
        "model_name": name,
        "version": str(version.version),
        "promoted": promoted,
        "reason": reason,
        "champion_version": str(champion_now.version) if champion_now else None,
        "best_trial": best["trial_id"],
        "family": best["family"],
        "metric": metric,
        "cv_mean": best["cv_mean"],
        "cv_std": best["cv_std"],
        "holdout_metric": candidate_metric,
        "champion_holdout_metric": champion_metric,
        "run_id": best["run_id"],
        "failed_trials": failed,
        "selection": best.get("selection"),
        "trials": len(results),
    }
