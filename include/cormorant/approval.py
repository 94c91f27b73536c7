"""A person's approval before the ``champion`` alias moves, where the spec asks for it
(``promotion.approval: required``).

The train DAG then registers and blesses the version as always, but instead of moving the alias it
tags the version ``awaiting approval`` and hands the decision to Airflow's human-in-the-loop step (the
standard provider's ``ApprovalOperator``), which shows :func:`approval_request` in the UI's required
actions and over the REST API. An approval moves the alias (:func:`promote_approved`), unless the
champion changed while the version waited; a rejection, or no answer within
``promotion.approval_timeout_minutes`` (rejected by default), leaves it and records who or what decided
(:func:`record_rejection`). The version's ``cormorant.approval`` tag and its model card say so.
"""

from __future__ import annotations

import logging
from typing import Any

from cormorant.config import Settings
from cormorant.lake import Lake
from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)


def approval_request(summary: dict[str, Any]) -> tuple[str, str]:
    """The subject and Markdown body an approver sees for a version awaiting approval."""
    metric = summary["metric"]
    champion = summary.get("decided_against")
    against = (
        f"the champion v{champion}'s {summary['champion_holdout_metric']:.4f}"
        if champion
        else "no champion yet"
    )
    blessing = summary.get("blessing") or {}
    drift = summary.get("training_drift") or {"days": {}, "drifted_days": []}
    checked = [d for d, r in drift["days"].items() if r["verdict"] != "not checked"]
    lines = [
        f"**{summary['model_name']} v{summary['version']}** ({summary['family']}, trial "
        f"{summary['best_trial']}) scored holdout {metric} **{summary['holdout_metric']:.4f}** "
        f"against {against}.",
        "",
        f"- CV {metric}: {summary['cv_mean']:.4f} ± {summary['cv_std']:.4f} over {summary['trials']} trial(s)"
        + (f"; failed trials: {', '.join(summary['failed_trials'])}" if summary.get("failed_trials") else ""),
        f"- Blessing: {'passed' if blessing.get('passed') else 'failed'} "
        "(infra validation, slices, calibration)"
        + (": " + "; ".join(blessing["failures"]) if blessing.get("failures") else ""),
        *_blessing_lines(blessing, metric),
        f"- Drift of the training data: {len(checked)} of {len(drift['days'])} day(s) checked by the drift "
        "DAG"
        + (f"; drifted: {', '.join(drift['drifted_days'])}" if drift["drifted_days"] else "; none drifted"),
        f"- Model card: {summary.get('card_uri', '–')}",
        f"- Blessing report: {blessing.get('uri', '–')}",
        f"- MLflow run: {summary['run_id']}",
        "",
        "Approve to make it the champion; Reject (or no answer in time) keeps the current champion.",
    ]
    return f"Promote {summary['model_name']} v{summary['version']} to champion?", "\n".join(lines)


def _blessing_lines(blessing: dict[str, Any], metric: str) -> list[str]:
    lines = []
    infra = blessing.get("infra") or {}
    if infra.get("max_abs_diff") is not None:
        lines.append(
            f"  - Infra validation: the registered artifact scores as trained (max |diff| "
            f"{infra['max_abs_diff']:.1e}), {infra.get('ms_per_10k_rows') or 0:.1f} ms per 10k rows"
        )
    calib = blessing.get("calibration") or {}
    if calib:
        lines.append(f"  - Calibration: Brier {calib['brier']:.4f}, ECE {calib['ece']:.4f}")
    for row in blessing.get("weakest_slices") or []:
        against = f" (champion {row['champion']:.4f})" if "champion" in row else ""
        lines.append(
            f"  - Slice {row['column']}={row['value']} ({row['rows']} rows): {metric} "
            f"{row['challenger']:.4f}{against}"
        )
    return lines


def _responder(answer: dict[str, Any] | None) -> str:
    user = (answer or {}).get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or "") if isinstance(user, dict) else str(user)


def promote_approved(
    spec: ModelSpec, settings: Settings, lake: Lake, summary: dict[str, Any], answer: dict[str, Any]
) -> dict[str, Any]:
    """Move the alias to an approved version, unless the champion changed while it awaited approval."""
    from mlflow import MlflowClient

    from cormorant.card import publish_card
    from cormorant.registry import CHAMPION, current_champion
    from cormorant.tracking import configure

    configure(settings)
    client = MlflowClient()
    name, version = summary["model_name"], summary["version"]
    who, when = _responder(answer) or "an approver", str(answer.get("responded_at", ""))
    approval = f"approved by {who} at {when}"
    with lake.exclusive(f"{spec.name}/registry/promotion.lock"):
        champion = current_champion(client, name)
        now = None if champion is None else str(champion.version)
        if now != summary.get("decided_against"):
            promoted = False
            decision = (
                f"not promoted: {approval}, but the champion changed from "
                f"{'v' + summary['decided_against'] if summary.get('decided_against') else 'none'} to v{now} "
                "while it awaited approval; train again to compare with it"
            )
            log.error("%s version %s %s", name, version, decision)
        else:
            promoted = True
            client.set_registered_model_alias(name, CHAMPION, version)
            decision = f"promoted: {summary['reason']} ({approval})"
            log.info("promoted %s version %s to %s (%s)", name, version, CHAMPION, approval)
        client.set_model_version_tag(name, version, "cormorant.approval", approval)
        client.set_model_version_tag(name, version, "cormorant.promotion", decision)
    publish_card(spec, settings, lake, client, client.get_model_version(name, version))
    return {"version": version, "promoted": promoted, "decision": decision, "approval": approval}


def record_rejection(
    spec: ModelSpec, settings: Settings, lake: Lake, summary: dict[str, Any], answer: dict[str, Any] | None
) -> str:
    """Record on the version that it was rejected, by whom, or that nobody answered in time."""
    from mlflow import MlflowClient

    from cormorant.card import publish_card
    from cormorant.tracking import configure

    configure(settings)
    client = MlflowClient()
    name, version = summary["model_name"], summary["version"]
    who = _responder(answer)
    if answer is None:
        approval = "no answer recorded (the approval step did not finish)"
    elif who:
        approval = f"rejected by {who} at {answer.get('responded_at', '')}"
    else:
        approval = (
            f"no answer within promotion.approval_timeout_minutes={spec.promotion.approval_timeout_minutes}: "
            "rejected by default"
        )
    client.set_model_version_tag(name, version, "cormorant.approval", approval)
    client.set_model_version_tag(name, version, "cormorant.promotion", f"not promoted: {approval}")
    log.warning("%s version %s not promoted: %s", name, version, approval)
    publish_card(spec, settings, lake, client, client.get_model_version(name, version))
    return approval
