"""Registration and promotion in the MLflow model registry (MLflow 3: aliases, not stages).

The sweep's best trial is registered as a new version of ``cormorant.<spec>``. The ``champion``
alias moves to it only when it beats the current champion on the same holdout, both scored here
through ONNX Runtime. Registration is idempotent: a trained model (an MLflow run) is registered once,
whichever sweep selects it again (a re-run, a narrower ``families`` conf, a cached trial).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from cormorant.config import Settings
from cormorant.errors import CormorantError
from cormorant.lake import Lake
from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)

CHAMPION = "champion"


def holdout_scores(model_uri: str, feed: dict[str, Any]) -> Any:
    """The ONNX model at ``model_uri`` scored on the holdout's feed, in this process."""
    import mlflow.onnx

    from cormorant.export import onnx_scores, onnx_session

    return onnx_scores(onnx_session(mlflow.onnx.load_model(model_uri)), feed)


def current_champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


class SweepFailed(CormorantError):
    """No trial of a sweep succeeded; the message names every trial's cause."""


def _existing_version(client: Any, name: str, run_id: str) -> Any | None:
    """The version already registered from ``run_id`` (the earliest, if an older release made several)."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    return min(found, key=lambda v: int(v.version)) if found else None


def trial_failures(spec: ModelSpec, lake: Lake, plan: dict[str, Any], succeeded: set[str]) -> dict[str, str]:
    """Each planned trial that did not succeed -> its cause, from the trial records in the lake."""
    from cormorant.trainer import trial_record_key

    causes = {}
    for trial_id in plan.get("trial_ids") or []:
        if trial_id in succeeded:
            continue
        record = lake.read_json(trial_record_key(spec.name, plan["sweep_key"], trial_id)) or {}
        causes[trial_id] = (
            record.get("error") or "no outcome recorded (the trial task failed before the trainer ran)"
        )
    return causes


def training_drift(spec: ModelSpec, lake: Lake, plan: dict[str, Any]) -> dict[str, Any]:
    """The drift DAG's verdict on each day the version learnt from (each day against the serving model's
    training reference): what an approver reads as "has the data moved since the champion was
    trained?"."""
    from cormorant.drift import drift_report_prefix

    days: dict[str, Any] = {}
    for day in [*plan.get("train_partitions", []), *plan.get("holdout_partitions", [])]:
        report = lake.read_json(f"{drift_report_prefix(spec, day)}/report.json")
        days[day] = (
            {"verdict": "not checked"}
            if report is None
            else {"verdict": report["verdict"], "drifted_features": report.get("drifted_features") or []}
        )
    drifted = [d for d, r in days.items() if r["verdict"] not in ("stable", "not checked")]
    return {"days": days, "drifted_days": drifted}


def register_and_promote(
    spec: ModelSpec, settings: Settings, lake: Lake, plan: dict[str, Any], results: list[dict[str, Any]]
) -> dict[str, Any]:
    """Register the best trial and move ``champion`` if it wins and is blessed; returns a small summary.
    Where the spec asks for approval, a winner is tagged ``awaiting approval`` instead and the summary
    says so (``awaiting_approval``, ``decided_against``: the champion it was compared with); the train
    DAG's approval step then decides (:mod:`cormorant.approval`)."""
    import mlflow
    from mlflow import MlflowClient

    from cormorant.blessing import bless
    from cormorant.blessing import digest as blessing_digest
    from cormorant.blessing import keep as keep_blessing
    from cormorant.card import publish_card
    from cormorant.features import onnx_feed, target_vector
    from cormorant.metrics import compute_metric, is_improvement, select_best
    from cormorant.tracking import configure
    from cormorant.trainer import load_frames

    configure(settings)
    client = MlflowClient()
    name = spec.registered_model_name
    succeeded = {r["trial_id"] for r in results if r and r.get("status") == "ok"}
    causes = trial_failures(spec, lake, plan, succeeded)
    for trial_id, cause in causes.items():
        log.warning("trial %s failed and is left out of the selection: %s", trial_id, cause)
    if not succeeded:
        planned = len(plan.get("trial_ids") or []) or len(results)
        raise SweepFailed(
            f"spec {spec.name!r}: no trial succeeded out of {planned} (sweep {plan['sweep_key']}):\n- "
            + "\n- ".join(f"{t}: {c}" for t, c in causes.items())
        )
    failed = sorted(causes)
    best = select_best(results, higher_is_better=spec.metric_higher_is_better)
    tags = {
        "cormorant.spec": spec.name,
        "cormorant.sweep_key": plan["sweep_key"],
        "cormorant.trial_id": best["trial_id"],
        "cormorant.family": best["family"],
        "cormorant.run_id": best["run_id"],
        "cormorant.spec_fingerprint": spec.fingerprint,
    }
    metric = spec.training.metric
    # One registration and promotion of this model at a time, across processes and machines: two
    # trainings finishing at once would each compare with the same champion and both move the alias.
    with lake.exclusive(f"{spec.name}/registry/promotion.lock"):
        version = _existing_version(client, name, best["run_id"])
        if version is None:
            with contextlib.suppress(mlflow.exceptions.MlflowException):  # already registered
                client.create_registered_model(
                    name, tags={"cormorant.spec": spec.name}, description=spec.description or None
                )
            version = mlflow.register_model(best["model_uri"], name, tags=tags)
            log.info("registered %s version %s from trial %s", name, version.version, best["trial_id"])
        else:
            log.info(
                "trial %s's model (run %s) is already registered as %s version %s; reusing it",
                best["trial_id"],
                best["run_id"],
                name,
                version.version,
            )

        # Each model scored once here: the metrics below and the blessing's checks share the scores
        # (the blessing's infra validation scores the registered artifact again, in a fresh process).
        holdout = load_frames(spec, lake, plan["holdout_partitions"])
        feed, y = onnx_feed(holdout, spec), target_vector(holdout, spec)
        candidate_scores = holdout_scores(best["model_uri"], feed)
        candidate_metric = compute_metric(metric, y, candidate_scores)
        champion = current_champion(client, name)
        champion_metric = champion_scores = None
        if champion is not None and champion.version != version.version:
            champion_scores = holdout_scores(f"models:/{name}/{champion.version}", feed)
            champion_metric = compute_metric(metric, y, champion_scores)
        blessing = None
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
                else f"holdout {metric} {candidate_metric:.4f} vs champion {champion_metric:.4f}"
            )
            blessing = bless(
                spec,
                version=str(version.version),
                model_uri=f"models:/{name}/{version.version}",
                champion_uri=f"models:/{name}/{champion.version}" if champion is not None else None,
                holdout=holdout,
                feed=feed,
                y=y,
                trained=candidate_scores,
                champion=champion_scores,
            )
            blessing_uri = keep_blessing(spec, lake, client, version, blessing)
            if not blessing["passed"]:
                for failure in blessing["failures"]:
                    log.error("%s version %s is not blessed: %s", name, version.version, failure)
                if promoted:
                    promoted, reason = (
                        False,
                        f"blessing failed ({blessing_uri}): " + "; ".join(blessing["failures"]),
                    )
        client.set_model_version_tag(name, version.version, f"holdout_{metric}", f"{candidate_metric:.6f}")
        client.set_model_version_tag(
            name, version.version, "cormorant.holdout", ",".join(plan["holdout_partitions"])
        )
        awaiting = promoted and spec.promotion.approval == "required"
        if awaiting:
            promoted = False
            log.info("%s version %s awaits approval: %s", name, version.version, reason)
        decision = "awaiting approval" if awaiting else "promoted" if promoted else "not promoted"
        client.set_model_version_tag(name, version.version, "cormorant.promotion", f"{decision}: {reason}")
        selection = best.get("selection") or {}
        if selection:
            client.set_model_version_tag(
                name,
                version.version,
                "cormorant.selection",
                f"{selection['rule']} rule: best CV mean {selection['best_trial']} "
                f"{selection['best_mean']:.4f} (standard error {selection['standard_error']:.4f}); "
                f"candidates {', '.join(selection['candidates'])}; the simplest, {best['trial_id']}, chosen",
            )
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version.version)
            log.info("promoted %s version %s to %s: %s", name, version.version, CHAMPION, reason)
        elif not awaiting:
            log.info("kept %s; version %s not promoted: %s", CHAMPION, version.version, reason)
    champion_now = current_champion(client, name)
    card_uri = publish_card(spec, settings, lake, client, version)
    log.info("model card of %s version %s: %s", name, version.version, card_uri)
    return {
        "card_uri": card_uri,
        "model_name": name,
        "version": str(version.version),
        "promoted": promoted,
        "awaiting_approval": awaiting,
        "decided_against": None if champion is None else str(champion.version),
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
        "failure_causes": causes,
        "selection": best.get("selection"),
        "blessing": None
        if blessing is None
        else {**blessing_digest(blessing, spec.metric_higher_is_better), "uri": blessing_uri},
        "training_drift": training_drift(spec, lake, plan),
        "trials": len(results),
    }
